//! OpenAI Responses client: the streaming request with retries, and the SSE stream around it.
//! (Interface stub; replaced by the real client.)

use std::time::Duration;

use shared::openai::{RetryPolicy, StreamEvent};

pub struct OpenAiConfig {
    pub base_url: String,
    pub api_key: Option<String>,
    pub retry: RetryPolicy,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ResponseRequest {
    pub model: String,
    pub input: serde_json::Value,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
}

#[derive(Clone)]
pub struct OpenAi;

impl OpenAi {
    pub fn new(_config: OpenAiConfig) -> Result<Self, OpenAiError> {
        Ok(Self)
    }
    pub async fn stream(&self, _request: &ResponseRequest) -> Result<ResponseStream, OpenAiError> {
        Err(OpenAiError::Stub)
    }
}

pub struct ResponseStream;

impl ResponseStream {
    pub async fn next(&mut self) -> Option<Result<StreamEvent, StreamError>> {
        None
    }
    pub fn retries(&self) -> u32 {
        0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenAiError {
    #[error("stub")]
    Stub,
}

impl OpenAiError {
    pub fn status(&self) -> Option<u16> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("malformed {0}")]
    Malformed(String),
}

impl StreamError {
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::Malformed(_))
    }
}
