//! OpenAI Responses API streams: typed, tolerant stream events and the recorded-stream format.
//!
//! [`StreamEvent::from_data`] turns one SSE `data` field into an event. It dispatches on the
//! JSON `type` (never on the SSE event name, which some servers omit), ignores unknown fields,
//! keeps every field optional that a compatible server may leave out, and surfaces unknown
//! event types as [`StreamEvent::Unknown`] instead of failing. [`recording`] parses the
//! JSON-lines fixtures and renders the bytes a replay server writes for them; [`retry`] decides
//! whether a request that failed before its stream began is tried again; [`resume`] whether a
//! background response whose stream broke is streamed again, and from where.
//!
//! Nothing here performs IO.

pub mod events;
pub mod recording;
pub mod resume;
pub mod retry;

pub use events::{
    ArgumentsDone, ContentPart, ContentPartEvent, Decoded, ErrorEvent, EventError, ItemKind,
    OutputItem, OutputItemEvent, PartKind, Position, ResponseError, ResponseEvent, ResponseInfo,
    ResponseStatus, StreamEvent, TextDelta, TextDone,
};
pub use recording::{Attempt, Recording, RecordingError, RecordingErrorKind, Replay, Step};
pub use resume::{Resume, Resumption};
pub use retry::{ApiError, Decision, Failure, RetryPolicy};
