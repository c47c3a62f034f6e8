//! The daemon's library: the OpenAI client, the tokio driver of the shared Ably connection,
//! the answer runner, the HTTP API and the local replay server, behind the `publisher` CLI.

pub mod openai;
pub mod replay;
