//! The protocol brain shared by the daemon and the page: sans-IO, clock-free, wasm-ready.
//!
//! ```text
//!  OpenAI SSE events ──► openai::StreamEvent ──► relay::Relay ──► PublishOp (create/append/update)
//!                                                                   │
//!                                                  connection::Connection (Ably realtime, sans-IO)
//!                                                     ▲ frames in          │ frames out, events, deadline
//!                                              driver (tokio / browser)  ◄─┘
//!                                                                   │ delivered messages
//!                                                  assembler::Assembler ──► Change (per answer)
//! ```
//!
//! Nothing here performs IO, spawns tasks or reads a clock: time arrives as a
//! [`time::Instant`] argument and every output is a value the driver acts on.

#![deny(clippy::disallowed_methods)]

pub mod assembler;
pub mod auth;
pub mod codec;
pub mod connection;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod ids;
pub mod lease;
pub mod openai;
pub mod protocol;
pub mod recovery;
pub mod relay;
pub mod session;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod time;

pub use ids::{
    ChannelName, ChannelSerial, ConnectionId, ConnectionKey, MessageId, MsgSerial, Serial,
};
pub use time::Instant;
