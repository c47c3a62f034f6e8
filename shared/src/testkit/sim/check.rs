//! The two properties every seed must keep: a viewer's live text is always a prefix of the
//! model's (unless a told continuity loss is not yet repaired), and at quiescence every text,
//! in every viewer and in history, is the model's exactly, with a terminal status.

use std::fmt;

use crate::headers::{self, Status};
use crate::ids::Serial;
use crate::protocol::Message;
use crate::time::Instant;

use super::model::ModelAnswer;
use super::trace::{clip, short};
use super::viewer::Viewer;

/// A broken property.
#[derive(Clone, Debug)]
pub struct Violation {
    /// When it was found (simulated ms).
    pub at: Instant,
    /// The viewer it was found in, if any.
    pub viewer: Option<usize>,
    /// The answer it concerns, if any.
    pub serial: Option<Serial>,
    /// What went wrong.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}ms", self.at.as_millis())?;
        if let Some(v) = self.viewer {
            write!(f, " in viewer v{v}")?;
        }
        if let Some(s) = &self.serial {
            write!(f, " for answer {}", short(s))?;
        }
        write!(f, ": {}", self.what)
    }
}

/// Property 1, after a delivery touched `serial` in `viewer`.
pub(super) fn prefix(
    now: Instant,
    index: usize,
    viewer: &Viewer,
    serial: &Serial,
    models: &[ModelAnswer],
) -> Option<Violation> {
    let answer = viewer.assembler.answer(serial)?;
    let violation = |what: String| Violation {
        at: now,
        viewer: Some(index),
        serial: Some(serial.clone()),
        what,
    };
    let Some(model) = answer
        .header(headers::PROMPT)
        .and_then(|p| models.iter().find(|m| m.prompt == p))
    else {
        return Some(violation(format!(
            "answer without a known prompt header: {:?}",
            answer.headers()
        )));
    };
    if viewer.is_exempt(serial) || model.text.starts_with(answer.text()) {
        return None;
    }
    let text = answer.text();
    let at = common_prefix(text, &model.text);
    Some(violation(format!(
        "live text is not a prefix of the model's: {} bytes held, {} in the model; they part at byte {at}: held {} where the model has {}",
        text.len(),
        model.text.len(),
        clip(text.get(at..).unwrap_or("")),
        clip(model.text.get(at..).unwrap_or("")),
    )))
}

/// Property 2 for one viewer, at quiescence.
pub(super) fn final_viewer(
    now: Instant,
    index: usize,
    viewer: &Viewer,
    models: &[ModelAnswer],
) -> Option<Violation> {
    for model in models {
        let found = viewer
            .assembler
            .answers()
            .find(|a| a.header(headers::PROMPT) == Some(model.prompt.as_str()));
        let what = match found {
            None => Some(format!("no answer for {}", model.prompt)),
            Some(a) if a.text() != model.text => Some(format!(
                "final text of {} differs: {} bytes held, {} in the model; they part at byte {}",
                model.prompt,
                a.text().len(),
                model.text.len(),
                common_prefix(a.text(), &model.text)
            )),
            Some(a) if !a.status().is_terminal() => {
                Some(format!("{} ends with status {}", model.prompt, a.status()))
            }
            Some(_) => None,
        };
        if let Some(what) = what {
            return Some(Violation {
                at: now,
                viewer: Some(index),
                serial: found.map(|a| a.serial().clone()),
                what,
            });
        }
    }
    None
}

/// Property 2 for the service's history, at quiescence.
pub(super) fn final_history(
    now: Instant,
    history: &[Message],
    models: &[ModelAnswer],
) -> Option<Violation> {
    for model in models {
        let found = history
            .iter()
            .find(|m| m.header(headers::PROMPT) == Some(model.prompt.as_str()));
        let what = match found {
            None => Some(format!("history has no answer for {}", model.prompt)),
            Some(m) if m.text().ok().as_deref() != Some(model.text.as_str()) => Some(format!(
                "history's text of {} differs from the model's",
                model.prompt
            )),
            Some(m)
                if !m
                    .header(headers::STATUS)
                    .and_then(Status::parse)
                    .is_some_and(Status::is_terminal) =>
            {
                Some(format!(
                    "history's {} has status {:?}",
                    model.prompt,
                    m.header(headers::STATUS)
                ))
            }
            Some(_) => None,
        };
        if let Some(what) = what {
            return Some(Violation {
                at: now,
                viewer: None,
                serial: found.and_then(|m| m.serial.clone()),
                what,
            });
        }
    }
    None
}

/// The length of the longest common prefix of `a` and `b`, on a char boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}
