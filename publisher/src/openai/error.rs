//! Why a `POST /responses` failed before any stream began, in sentences fit for the people
//! watching the answer.

use shared::openai::ApiError;

/// A request that never got a stream. Every variant displays as a readable sentence.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum OpenAiError {
    /// The client's configuration cannot work (bad base URL, unusable API key).
    #[error("invalid OpenAI client configuration: {0}")]
    Config(String),
    /// The request could not be encoded as JSON.
    #[error("could not encode the OpenAI request: {0}")]
    Request(String),
    /// The server answered with an error status, after `attempts` tries.
    #[error("{}", http_sentence(error, *attempts))]
    Http {
        /// What the server said.
        error: ApiError,
        /// How many times the request was sent.
        attempts: u32,
    },
    /// No response arrived: the connection failed or the server did not answer in time.
    #[error("could not reach OpenAI at {base_url} after {}: {reason}", attempts_text(*attempts))]
    Unreachable {
        /// The configured base URL.
        base_url: String,
        /// How many times the request was sent.
        attempts: u32,
        /// What went wrong with the last attempt.
        reason: String,
    },
    /// A success status, but the body is not an event stream (the server ignored
    /// `"stream": true`, or it is not an OpenAI-compatible endpoint).
    #[error("expected an event stream, got {}", content_type.as_deref().unwrap_or("no content type"))]
    NotAStream {
        /// The HTTP status.
        status: u16,
        /// The `content-type` the server sent, if any.
        content_type: Option<String>,
    },
}

impl OpenAiError {
    /// The HTTP status the server answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { error, .. } => Some(error.status),
            Self::NotAStream { status, .. } => Some(*status),
            Self::Config(_) | Self::Request(_) | Self::Unreachable { .. } => None,
        }
    }

    /// How many times the request was sent (0 when it never was).
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Http { attempts, .. } | Self::Unreachable { attempts, .. } => *attempts,
            Self::NotAStream { .. } => 1,
            Self::Config(_) | Self::Request(_) => 0,
        }
    }

    /// The same error, counted as having taken `attempts` tries.
    pub(crate) fn after_attempts(mut self, count: u32) -> Self {
        if let Self::Http { attempts, .. } | Self::Unreachable { attempts, .. } = &mut self {
            *attempts = count;
        }
        self
    }
}

/// "OpenAI refused the request (HTTP 401 invalid_api_key): Incorrect API key provided".
fn http_sentence(error: &ApiError, attempts: u32) -> String {
    let verdict = if error.status >= 500 {
        "OpenAI failed to answer the request"
    } else {
        "OpenAI refused the request"
    };
    let status = match given(&error.code).or(given(&error.error_type)) {
        Some(label) => format!("HTTP {} {label}", error.status),
        None => format!("HTTP {}", error.status),
    };
    let tries = if attempts > 1 {
        format!(" after {}", attempts_text(attempts))
    } else {
        String::new()
    };
    let message =
        given(&error.message).map_or_else(|| "no details given".to_owned(), |m| shorten(m, 500));
    format!("{verdict} ({status}){tries}: {message}")
}

/// A field's text, unless it is missing or blank.
fn given(text: &Option<String>) -> Option<&str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

fn attempts_text(attempts: u32) -> String {
    if attempts == 1 {
        "1 attempt".to_owned()
    } else {
        format!("{attempts} attempts")
    }
}

/// At most `max` characters, marking a cut with an ellipsis.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
