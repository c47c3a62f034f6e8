//! Decoding of one OpenAI Responses stream event from its SSE `data` field.
//!
//! Decoding goes through [`serde_json::Value`] and dispatches on `data.type`. Unknown fields
//! are ignored, optional fields of the wrong type read as absent, and unknown event types
//! become [`StreamEvent::Unknown`]. Only a known event whose required payload is unusable
//! (a delta that is not a string, a lifecycle event without a `response` object) is an
//! [`EventError`].

use serde_json::{Map, Value};

use crate::headers::Status;

/// What one SSE `data` field held.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// A stream event.
    Event(StreamEvent),
    /// The `[DONE]` sentinel that some compatible servers send after the terminal event.
    /// It is not an error and not an event; the stream is over.
    DoneSentinel,
}

/// Why an SSE `data` field could not be decoded into a [`StreamEvent`].
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum EventError {
    /// The data is not JSON at all.
    #[error("event data is not JSON: {0}")]
    NotJson(String),
    /// The data is JSON but not an object.
    #[error("event data is JSON but not an object")]
    NotAnObject,
    /// The object has no `type`, or its `type` is not a string.
    #[error("event data has no string `type` field")]
    MissingType,
    /// A known event type lacks a field it cannot do without.
    #[error("`{kind}` event has no `{field}` field")]
    MissingField {
        /// The event type.
        kind: String,
        /// The missing field.
        field: &'static str,
    },
    /// A known event type carries a required field of the wrong JSON type.
    #[error("`{kind}` event field `{field}` is not {expected}")]
    WrongType {
        /// The event type.
        kind: String,
        /// The offending field.
        field: &'static str,
        /// What the field should have been, such as "a string".
        expected: &'static str,
    },
}

/// One event of a Responses stream.
///
/// Every payload keeps the `sequence_number` when the server sent one; servers such as
/// llama.cpp omit it, and the indices too.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// `response.created`: the first event of a response.
    Created(ResponseEvent),
    /// `response.queued`: a background response waits for capacity.
    Queued(ResponseEvent),
    /// `response.in_progress`: generation started.
    InProgress(ResponseEvent),
    /// `response.completed`: terminal, the response finished normally.
    Completed(ResponseEvent),
    /// `response.incomplete`: terminal, the response stopped early (see
    /// [`ResponseInfo::incomplete_reason`]).
    Incomplete(ResponseEvent),
    /// `response.failed`: terminal, the response failed (see [`ResponseInfo::error`]).
    Failed(ResponseEvent),
    /// `response.done`, which Codex-style backends send; it is terminal according to its
    /// `response.status` (see [`StreamEvent::terminal_status`]).
    Done(ResponseEvent),
    /// `response.output_item.added`: a new output item (message, reasoning, function call…).
    OutputItemAdded(OutputItemEvent),
    /// `response.output_item.done`: an output item is complete.
    OutputItemDone(OutputItemEvent),
    /// `response.content_part.added`: a new content part within an item.
    ContentPartAdded(ContentPartEvent),
    /// `response.content_part.done`: a content part is complete, with its full text.
    ContentPartDone(ContentPartEvent),
    /// `response.output_text.delta`: a fragment of answer text.
    OutputTextDelta(TextDelta),
    /// `response.output_text.done`: the full text of one output-text part.
    OutputTextDone(TextDone),
    /// `response.refusal.delta`: a fragment of a refusal.
    RefusalDelta(TextDelta),
    /// `response.refusal.done`: the full refusal text of one part.
    RefusalDone(TextDone),
    /// `response.reasoning_summary_text.delta`: a fragment of a reasoning summary.
    ReasoningSummaryTextDelta(TextDelta),
    /// `response.reasoning_summary_text.done`: the full text of one reasoning summary part.
    ReasoningSummaryTextDone(TextDone),
    /// `response.reasoning_text.delta`: raw reasoning, as vLLM-style servers stream it.
    ReasoningTextDelta(TextDelta),
    /// `response.reasoning_text.done`: the full raw reasoning text of one part.
    ReasoningTextDone(TextDone),
    /// `response.function_call_arguments.delta`: a fragment of a call's JSON arguments.
    FunctionCallArgumentsDelta(TextDelta),
    /// `response.function_call_arguments.done`: a call's complete JSON arguments.
    FunctionCallArgumentsDone(ArgumentsDone),
    /// `error`, in the nested (live API) or the flat (documented) shape. Terminal.
    Error(ErrorEvent),
    /// Any other event type, kept whole so that it can be logged; never fatal.
    Unknown {
        /// The event's `type`.
        kind: String,
        /// The whole event object.
        raw: Value,
    },
}

/// The payload of a lifecycle event (`response.created`, `.completed`, …).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponseEvent {
    /// The event's position in the stream, when the server numbers events.
    pub sequence_number: Option<u64>,
    /// What the event says about the response.
    pub response: ResponseInfo,
}

/// The parts of a Response object this system uses. Every field is optional because
/// compatible servers send minimal objects (llama.cpp sends only `id`, `object`, `status`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponseInfo {
    /// OpenAI's id for the response (`resp_…`).
    pub id: Option<String>,
    /// The response's status.
    pub status: Option<ResponseStatus>,
    /// The model that produces the response.
    pub model: Option<String>,
    /// Whether the response runs in background mode.
    pub background: Option<bool>,
    /// `incomplete_details.reason`, such as `max_output_tokens` or `content_filter`.
    pub incomplete_reason: Option<String>,
    /// The `error` object of a failed response.
    pub error: Option<ResponseError>,
}

/// The `error` object of a failed Response.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct ResponseError {
    /// The error code; integers are turned into their decimal text.
    pub code: Option<String>,
    /// The human-readable message.
    pub message: Option<String>,
}

/// The `status` of a Response object.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum ResponseStatus {
    /// `queued`.
    Queued,
    /// `in_progress`.
    InProgress,
    /// `completed`.
    Completed,
    /// `incomplete`.
    Incomplete,
    /// `failed`.
    Failed,
    /// `cancelled`.
    Cancelled,
    /// A value this system does not know.
    Other(String),
}

/// The payload of `response.output_item.added` and `.done`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputItemEvent {
    /// The event's position in the stream, when the server numbers events.
    pub sequence_number: Option<u64>,
    /// The item's position in the response's output (llama.cpp omits it).
    pub output_index: Option<u64>,
    /// The item.
    pub item: OutputItem,
}

/// An output item, with the fields this system reads and the whole object.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputItem {
    /// The item id (`msg_…`, `rs_…`, `fc_…`), used as `item_id` by later events.
    pub id: Option<String>,
    /// The item's type, if it has one.
    pub kind: Option<ItemKind>,
    /// `in_progress`, `completed` or `incomplete`, when present.
    pub status: Option<String>,
    /// The whole item object.
    pub raw: Value,
}

/// The type of an output item.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum ItemKind {
    /// `message`: holds answer text and refusals.
    Message,
    /// `reasoning`: the model's reasoning, never part of the answer.
    Reasoning,
    /// `function_call`: a tool call, never part of the answer.
    FunctionCall,
    /// Any other type (web search calls, MCP calls, …).
    Other(String),
}

/// The payload of `response.content_part.added` and `.done`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContentPartEvent {
    /// The event's position in the stream, when the server numbers events.
    pub sequence_number: Option<u64>,
    /// Which item and part this is.
    pub position: Position,
    /// The part; some servers leave it out of `content_part.added`.
    pub part: Option<ContentPart>,
}

/// A content part of a message item.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct ContentPart {
    /// The part's type, if it has one.
    pub kind: Option<PartKind>,
    /// The part's text: `text` for output text and reasoning, `refusal` for a refusal.
    pub text: Option<String>,
}

/// The type of a content part.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub enum PartKind {
    /// `output_text`: answer text.
    OutputText,
    /// `refusal`: the model declined.
    Refusal,
    /// `reasoning_text`: raw reasoning.
    ReasoningText,
    /// Any other type.
    Other(String),
}

/// Where a delta or part belongs. Every field is optional: llama.cpp sends only `item_id`.
#[derive(Clone, Debug, Default, Eq, Hash, PartialEq)]
pub struct Position {
    /// The id of the output item.
    pub item_id: Option<String>,
    /// The item's position in the response's output.
    pub output_index: Option<u64>,
    /// The part's position in the item's content.
    pub content_index: Option<u64>,
    /// The part's position in a reasoning item's summary.
    pub summary_index: Option<u64>,
}

/// The payload of a `*.delta` event.
#[derive(Clone, Debug, PartialEq)]
pub struct TextDelta {
    /// The event's position in the stream, when the server numbers events.
    pub sequence_number: Option<u64>,
    /// Which item and part the fragment belongs to.
    pub position: Position,
    /// The fragment.
    pub delta: String,
    /// Token log probabilities, when present.
    pub logprobs: Option<Value>,
}

/// The payload of a `*.done` event that carries a part's full text.
#[derive(Clone, Debug, PartialEq)]
pub struct TextDone {
    /// The event's position in the stream, when the server numbers events.
    pub sequence_number: Option<u64>,
    /// Which item and part the text belongs to.
    pub position: Position,
    /// The full text (`text`, or `refusal` for `response.refusal.done`).
    pub text: String,
    /// Token log probabilities, when present.
    pub logprobs: Option<Value>,
}

/// The payload of `response.function_call_arguments.done`.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgumentsDone {
    /// The event's position in the stream, when the server numbers events.
    pub sequence_number: Option<u64>,
    /// Which item the arguments belong to.
    pub position: Position,
    /// The function's name (required by the spec, omitted by some SDK types and servers).
    pub name: Option<String>,
    /// The complete arguments, as a JSON string.
    pub arguments: String,
}

/// The payload of an `error` event, from either shape.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct ErrorEvent {
    /// The event's position in the stream, when the server numbers events.
    pub sequence_number: Option<u64>,
    /// The error's `type`, such as `server_error` (only the nested shape has one).
    pub error_type: Option<String>,
    /// The error code; integer codes (vLLM, llama.cpp) are turned into their decimal text.
    pub code: Option<String>,
    /// The human-readable message.
    pub message: Option<String>,
    /// The request parameter the error concerns.
    pub param: Option<String>,
}

impl StreamEvent {
    /// Decodes one SSE `data` field. `[DONE]` gives [`Decoded::DoneSentinel`].
    pub fn from_data(data: &str) -> Result<Decoded, EventError> {
        let trimmed = data.trim_start_matches('\u{feff}').trim();
        if trimmed.starts_with("[DONE]") {
            return Ok(Decoded::DoneSentinel);
        }
        let value: Value =
            serde_json::from_str(trimmed).map_err(|e| EventError::NotJson(e.to_string()))?;
        Self::from_value(value).map(Decoded::Event)
    }

    /// Decodes an event that is already JSON, such as the `data` of a recorded frame.
    pub fn from_value(value: Value) -> Result<Self, EventError> {
        let Value::Object(obj) = value else {
            return Err(EventError::NotAnObject);
        };
        let Some(kind) = obj.get("type").and_then(Value::as_str) else {
            return Err(EventError::MissingType);
        };
        let f = Fields { kind, obj: &obj };
        let event = match kind {
            "response.created" => Self::Created(f.response_event()?),
            "response.queued" => Self::Queued(f.response_event()?),
            "response.in_progress" => Self::InProgress(f.response_event()?),
            "response.completed" => Self::Completed(f.response_event()?),
            "response.incomplete" => Self::Incomplete(f.response_event()?),
            "response.failed" => Self::Failed(f.response_event()?),
            "response.done" => Self::Done(f.response_event()?),
            "response.output_item.added" => Self::OutputItemAdded(f.output_item_event()?),
            "response.output_item.done" => Self::OutputItemDone(f.output_item_event()?),
            "response.content_part.added" => Self::ContentPartAdded(f.content_part_event()?),
            "response.content_part.done" => Self::ContentPartDone(f.content_part_event()?),
            "response.output_text.delta" => Self::OutputTextDelta(f.delta()?),
            "response.output_text.done" => Self::OutputTextDone(f.done("text")?),
            "response.refusal.delta" => Self::RefusalDelta(f.delta()?),
            "response.refusal.done" => Self::RefusalDone(f.done("refusal")?),
            "response.reasoning_summary_text.delta" => Self::ReasoningSummaryTextDelta(f.delta()?),
            "response.reasoning_summary_text.done" => {
                Self::ReasoningSummaryTextDone(f.done("text")?)
            }
            "response.reasoning_text.delta" => Self::ReasoningTextDelta(f.delta()?),
            "response.reasoning_text.done" => Self::ReasoningTextDone(f.done("text")?),
            "response.function_call_arguments.delta" => {
                Self::FunctionCallArgumentsDelta(f.delta()?)
            }
            "response.function_call_arguments.done" => {
                Self::FunctionCallArgumentsDone(ArgumentsDone {
                    sequence_number: f.sequence_number(),
                    position: f.position(),
                    name: f.opt_str("name"),
                    arguments: f.req_str("arguments")?,
                })
            }
            "error" => Self::Error(f.error_event()),
            _ => {
                let kind = kind.to_owned();
                return Ok(Self::Unknown {
                    kind,
                    raw: Value::Object(obj),
                });
            }
        };
        Ok(event)
    }

    /// The event's `type`, as it appeared on the wire.
    pub fn kind(&self) -> &str {
        match self {
            Self::Created(_) => "response.created",
            Self::Queued(_) => "response.queued",
            Self::InProgress(_) => "response.in_progress",
            Self::Completed(_) => "response.completed",
            Self::Incomplete(_) => "response.incomplete",
            Self::Failed(_) => "response.failed",
            Self::Done(_) => "response.done",
            Self::OutputItemAdded(_) => "response.output_item.added",
            Self::OutputItemDone(_) => "response.output_item.done",
            Self::ContentPartAdded(_) => "response.content_part.added",
            Self::ContentPartDone(_) => "response.content_part.done",
            Self::OutputTextDelta(_) => "response.output_text.delta",
            Self::OutputTextDone(_) => "response.output_text.done",
            Self::RefusalDelta(_) => "response.refusal.delta",
            Self::RefusalDone(_) => "response.refusal.done",
            Self::ReasoningSummaryTextDelta(_) => "response.reasoning_summary_text.delta",
            Self::ReasoningSummaryTextDone(_) => "response.reasoning_summary_text.done",
            Self::ReasoningTextDelta(_) => "response.reasoning_text.delta",
            Self::ReasoningTextDone(_) => "response.reasoning_text.done",
            Self::FunctionCallArgumentsDelta(_) => "response.function_call_arguments.delta",
            Self::FunctionCallArgumentsDone(_) => "response.function_call_arguments.done",
            Self::Error(_) => "error",
            Self::Unknown { kind, .. } => kind,
        }
    }

    /// The event's `sequence_number`, when the server sent one.
    pub fn sequence_number(&self) -> Option<u64> {
        match self {
            Self::Created(e)
            | Self::Queued(e)
            | Self::InProgress(e)
            | Self::Completed(e)
            | Self::Incomplete(e)
            | Self::Failed(e)
            | Self::Done(e) => e.sequence_number,
            Self::OutputItemAdded(e) | Self::OutputItemDone(e) => e.sequence_number,
            Self::ContentPartAdded(e) | Self::ContentPartDone(e) => e.sequence_number,
            Self::OutputTextDelta(e)
            | Self::RefusalDelta(e)
            | Self::ReasoningSummaryTextDelta(e)
            | Self::ReasoningTextDelta(e)
            | Self::FunctionCallArgumentsDelta(e) => e.sequence_number,
            Self::OutputTextDone(e)
            | Self::RefusalDone(e)
            | Self::ReasoningSummaryTextDone(e)
            | Self::ReasoningTextDone(e) => e.sequence_number,
            Self::FunctionCallArgumentsDone(e) => e.sequence_number,
            Self::Error(e) => e.sequence_number,
            Self::Unknown { raw, .. } => raw.get("sequence_number").and_then(Value::as_u64),
        }
    }

    /// The response information of a lifecycle event, `None` for other events.
    pub fn response(&self) -> Option<&ResponseInfo> {
        match self {
            Self::Created(e)
            | Self::Queued(e)
            | Self::InProgress(e)
            | Self::Completed(e)
            | Self::Incomplete(e)
            | Self::Failed(e)
            | Self::Done(e) => Some(&e.response),
            _ => None,
        }
    }

    /// The item of an `output_item.added` or `.done` event, `None` for other events.
    pub fn output_item(&self) -> Option<&OutputItem> {
        match self {
            Self::OutputItemAdded(e) | Self::OutputItemDone(e) => Some(&e.item),
            _ => None,
        }
    }

    /// How the response ended, if this event ends it: `completed`, `incomplete`, `failed`
    /// (also for `error` events) or, for `response.done`, whatever its status says. A
    /// `response.done` without a status counts as completed; one whose status is not final
    /// (`queued`, `in_progress`) does not end the response.
    pub fn terminal_status(&self) -> Option<Status> {
        match self {
            Self::Completed(_) => Some(Status::Completed),
            Self::Incomplete(_) => Some(Status::Incomplete),
            Self::Failed(_) | Self::Error(_) => Some(Status::Failed),
            Self::Done(e) => match &e.response.status {
                None | Some(ResponseStatus::Completed) => Some(Status::Completed),
                Some(ResponseStatus::Incomplete) => Some(Status::Incomplete),
                Some(ResponseStatus::Failed) => Some(Status::Failed),
                Some(ResponseStatus::Cancelled) => Some(Status::Cancelled),
                Some(
                    ResponseStatus::Queued | ResponseStatus::InProgress | ResponseStatus::Other(_),
                ) => None,
            },
            _ => None,
        }
    }

    /// Whether this event ends the response (see [`StreamEvent::terminal_status`]).
    pub fn is_terminal(&self) -> bool {
        self.terminal_status().is_some()
    }
}

impl ResponseStatus {
    /// Reads a status value; unknown values are kept as [`ResponseStatus::Other`].
    pub fn parse(value: &str) -> Self {
        match value {
            "queued" => Self::Queued,
            "in_progress" => Self::InProgress,
            "completed" => Self::Completed,
            "incomplete" => Self::Incomplete,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl ItemKind {
    /// Reads an item type; unknown values are kept as [`ItemKind::Other`].
    pub fn parse(value: &str) -> Self {
        match value {
            "message" => Self::Message,
            "reasoning" => Self::Reasoning,
            "function_call" => Self::FunctionCall,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl PartKind {
    /// Reads a part type; unknown values are kept as [`PartKind::Other`].
    pub fn parse(value: &str) -> Self {
        match value {
            "output_text" => Self::OutputText,
            "refusal" => Self::Refusal,
            "reasoning_text" => Self::ReasoningText,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl ResponseInfo {
    /// The error message of a failed response, when it has one.
    pub fn error_message(&self) -> Option<&str> {
        self.error.as_ref()?.message.as_deref()
    }

    /// The error code of a failed response, when it has one.
    pub fn error_code(&self) -> Option<&str> {
        self.error.as_ref()?.code.as_deref()
    }

    fn from_object(obj: &Map<String, Value>) -> Self {
        let error = obj
            .get("error")
            .and_then(Value::as_object)
            .map(|e| ResponseError {
                code: e.get("code").and_then(code_text),
                message: string(e.get("message")),
            });
        Self {
            id: string(obj.get("id")),
            status: obj
                .get("status")
                .and_then(Value::as_str)
                .map(ResponseStatus::parse),
            model: string(obj.get("model")),
            background: obj.get("background").and_then(Value::as_bool),
            incomplete_reason: obj
                .get("incomplete_details")
                .and_then(|d| d.get("reason"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            error,
        }
    }
}

impl ErrorEvent {
    /// A message fit for a person: the message, else the code, else a fixed sentence.
    pub fn describe(&self) -> String {
        match (&self.message, &self.code) {
            (Some(message), _) if !message.is_empty() => message.clone(),
            (_, Some(code)) if !code.is_empty() => format!("error event with code {code}"),
            _ => "the server sent an error event without a message".to_owned(),
        }
    }
}

/// Typed reads from one event object, naming the event type in errors.
struct Fields<'a> {
    kind: &'a str,
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn sequence_number(&self) -> Option<u64> {
        self.opt_u64("sequence_number")
    }

    fn opt_str(&self, name: &str) -> Option<String> {
        string(self.obj.get(name))
    }

    fn opt_u64(&self, name: &str) -> Option<u64> {
        self.obj.get(name).and_then(Value::as_u64)
    }

    fn req_str(&self, field: &'static str) -> Result<String, EventError> {
        match self.obj.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) => Err(self.missing(field)),
            Some(_) => Err(self.wrong(field, "a string")),
        }
    }

    fn req_object(&self, field: &'static str) -> Result<&Map<String, Value>, EventError> {
        match self.obj.get(field) {
            Some(Value::Object(map)) => Ok(map),
            None | Some(Value::Null) => Err(self.missing(field)),
            Some(_) => Err(self.wrong(field, "an object")),
        }
    }

    fn missing(&self, field: &'static str) -> EventError {
        EventError::MissingField {
            kind: self.kind.to_owned(),
            field,
        }
    }

    fn wrong(&self, field: &'static str, expected: &'static str) -> EventError {
        EventError::WrongType {
            kind: self.kind.to_owned(),
            field,
            expected,
        }
    }

    fn position(&self) -> Position {
        Position {
            item_id: self.opt_str("item_id"),
            output_index: self.opt_u64("output_index"),
            content_index: self.opt_u64("content_index"),
            summary_index: self.opt_u64("summary_index"),
        }
    }

    fn response_event(&self) -> Result<ResponseEvent, EventError> {
        Ok(ResponseEvent {
            sequence_number: self.sequence_number(),
            response: ResponseInfo::from_object(self.req_object("response")?),
        })
    }

    fn output_item_event(&self) -> Result<OutputItemEvent, EventError> {
        let item = self.req_object("item")?;
        Ok(OutputItemEvent {
            sequence_number: self.sequence_number(),
            output_index: self.opt_u64("output_index"),
            item: OutputItem {
                id: string(item.get("id")),
                kind: item
                    .get("type")
                    .and_then(Value::as_str)
                    .map(ItemKind::parse),
                status: string(item.get("status")),
                raw: Value::Object(item.clone()),
            },
        })
    }

    fn content_part_event(&self) -> Result<ContentPartEvent, EventError> {
        let part = match self.obj.get("part") {
            None | Some(Value::Null) => None,
            Some(Value::Object(part)) => {
                let kind = part
                    .get("type")
                    .and_then(Value::as_str)
                    .map(PartKind::parse);
                let text_field = if kind == Some(PartKind::Refusal) {
                    "refusal"
                } else {
                    "text"
                };
                Some(ContentPart {
                    kind,
                    text: string(part.get(text_field)),
                })
            }
            Some(_) => return Err(self.wrong("part", "an object")),
        };
        Ok(ContentPartEvent {
            sequence_number: self.sequence_number(),
            position: self.position(),
            part,
        })
    }

    fn delta(&self) -> Result<TextDelta, EventError> {
        Ok(TextDelta {
            sequence_number: self.sequence_number(),
            position: self.position(),
            delta: self.req_str("delta")?,
            logprobs: self.obj.get("logprobs").filter(|v| !v.is_null()).cloned(),
        })
    }

    fn done(&self, field: &'static str) -> Result<TextDone, EventError> {
        Ok(TextDone {
            sequence_number: self.sequence_number(),
            position: self.position(),
            text: self.req_str(field)?,
            logprobs: self.obj.get("logprobs").filter(|v| !v.is_null()).cloned(),
        })
    }

    /// Reads the nested shape `{"error": {type, code, message, param}}` when an `error`
    /// object is present, falling back field by field to the flat shape with top-level
    /// `code`, `message` and `param`. An error event always decodes, so that a failure is
    /// never lost to a decoding error.
    fn error_event(&self) -> ErrorEvent {
        let nested = self.obj.get("error").and_then(Value::as_object);
        let pick = |name: &str| {
            nested
                .and_then(|n| n.get(name))
                .filter(|v| !v.is_null())
                .or_else(|| self.obj.get(name))
        };
        ErrorEvent {
            sequence_number: self.sequence_number(),
            error_type: nested.and_then(|n| string(n.get("type"))),
            code: pick("code").and_then(code_text),
            message: string(pick("message")),
            param: string(pick("param")),
        }
    }
}

/// A string field, absent when missing or not a string.
fn string(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

/// An error code as text: strings as they are, numbers in decimal, anything else absent.
pub(crate) fn code_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
