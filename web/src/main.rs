//! The page's entry point: mounts the app.

fn main() {
    web::start();
}
