//! The daemon's library: the OpenAI client, the tokio driver of the shared Ably connection,
//! the answer runner, the HTTP API, the local model and the local replay server, behind the
//! `publisher` CLI.

pub mod ably;
pub mod answer;
pub mod ask;
pub mod cancel;
pub mod channel;
pub mod cli;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod model;
pub mod openai;
pub mod recovery;
pub mod replay;
pub mod serve;
pub mod setup;
mod wait;
