//! The page: subscribes to a channel over Ably WebSockets with the shared protocol core and
//! renders every answer live, its Markdown through [`markdown`], a safe subset that never
//! interprets HTML. Compiled to wasm and served by trunk (see `Trunk.toml`).

pub mod api;
pub mod app;
pub mod live;
pub mod markdown;
pub mod render;
pub mod rows;

pub use app::start;
