//! OpenAI Responses client: the streaming request with retries, and the SSE stream around it.
//!
//! [`OpenAi::stream`] posts a [`ResponseRequest`] and, once a 2xx event stream has begun,
//! returns a [`ResponseStream`] of decoded [`StreamEvent`]s. Failures before that point are
//! [`OpenAiError`]s (retried per the shared policy first); failures while reading are
//! [`StreamError`]s. The SSE layer ([`events`]) works on any byte stream, without HTTP.

mod client;
mod error;
mod sse;

pub use client::{OpenAi, OpenAiConfig, ResponseRequest, ResponseStream};
pub use error::OpenAiError;
pub use shared::openai::{RetryPolicy, StreamEvent};
pub use sse::{events, Events, StreamError};
