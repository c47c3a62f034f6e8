//! The replay server's view of a Responses create request, and its OpenAI-shaped errors.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The parts of a `POST /responses` body the replay server uses.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CreateRequest {
    /// The requested model: a recording's name, a `synth` spec or anything else.
    pub model: String,
    /// The text of the last user message (or the bare string input), if there is any.
    pub last_input_text: Option<String>,
    /// A rough count of input tokens (about four bytes each), for the usage report.
    pub input_tokens: u64,
    /// Whether `background: true` asks for a response that outlives its connection.
    pub background: bool,
}

impl CreateRequest {
    /// Reads a create request. The body must be a JSON object with a string `model`,
    /// `stream: true` (only streams are served), and an `input` that, when present, is a
    /// string or an array of items. Other fields are ignored.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let fields = json_object(body)?;
        let model = match fields.get("model") {
            Some(Value::String(model)) => model.clone(),
            None | Some(Value::Null) => {
                return Err(RequestError::bad(
                    "Missing required parameter: 'model'.",
                    "missing_required_parameter",
                ))
            }
            Some(_) => {
                return Err(RequestError::bad(
                    "Invalid type for 'model': expected a string.",
                    "invalid_type",
                ))
            }
        };
        let input = fields.get("input").unwrap_or(&Value::Null);
        if !matches!(input, Value::Null | Value::String(_) | Value::Array(_)) {
            return Err(RequestError::bad(
                "Invalid type for 'input': expected a string or an array of input items.",
                "invalid_type",
            ));
        }
        match fields.get("stream") {
            Some(Value::Bool(true)) => {}
            None | Some(Value::Null | Value::Bool(false)) => {
                return Err(RequestError::bad(
                    "The local replay server only serves streams: set 'stream' to true.",
                    "unsupported_value",
                ))
            }
            Some(_) => {
                return Err(RequestError::bad(
                    "Invalid type for 'stream': expected a boolean.",
                    "invalid_type",
                ))
            }
        }
        let background = match fields.get("background") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(background)) => *background,
            Some(_) => {
                return Err(RequestError::bad(
                    "Invalid type for 'background': expected a boolean.",
                    "invalid_type",
                ))
            }
        };
        let input_bytes = input.to_string().len() as u64;
        Ok(Self {
            model,
            last_input_text: last_input_text(input),
            input_tokens: input_bytes.div_ceil(4).max(1),
            background,
        })
    }
}

/// A request body that must be a JSON object, or the 400 that says why it is not.
pub(crate) fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, RequestError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        RequestError::bad(
            format!("We could not parse the JSON body of your request: {error}."),
            "invalid_json",
        )
    })?;
    match value {
        Value::Object(fields) => Ok(fields),
        _ => Err(RequestError::bad(
            "The request body must be a JSON object.",
            "invalid_json",
        )),
    }
}

/// The text a person last typed: the input itself when it is a string, else the content of
/// the last `user` message that has any text (a string, or its `input_text` parts joined by
/// newlines).
fn last_input_text(input: &Value) -> Option<String> {
    match input {
        Value::String(text) => Some(text.clone()).filter(|t| !t.trim().is_empty()),
        Value::Array(items) => items.iter().rev().find_map(|item| {
            if item.get("role").and_then(Value::as_str) != Some("user") {
                return None;
            }
            let text = match item.get("content")? {
                Value::String(text) => text.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter(|part| {
                        matches!(
                            part.get("type").and_then(Value::as_str),
                            None | Some("input_text")
                        )
                    })
                    .filter_map(|part| part.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => return None,
            };
            Some(text).filter(|t| !t.trim().is_empty())
        }),
        _ => None,
    }
}

/// An error answer in OpenAI's shape:
/// `{"error":{"message","type":"invalid_request_error","param":null,"code"}}`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RequestError {
    pub status: StatusCode,
    pub message: String,
    pub code: &'static str,
}

impl RequestError {
    pub fn new(status: StatusCode, message: impl Into<String>, code: &'static str) -> Self {
        Self {
            status,
            message: message.into(),
            code,
        }
    }

    /// A 400 Bad Request.
    pub fn bad(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, code)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": "invalid_request_error",
                "param": null,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body().to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}
