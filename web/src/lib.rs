//! The page: subscribes to a channel over Ably WebSockets with the shared protocol core and
//! renders every answer live. Compiled to wasm and served by trunk (see `Trunk.toml`).

pub mod api;
pub mod app;
pub mod live;
pub mod render;
pub mod rows;

pub use app::start;
