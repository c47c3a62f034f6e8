//! The conversation as the page shows it: one row per prompt or answer, in serial order,
//! each with its own signals, so that a token updates one answer's text and not the list.

use leptos::prelude::*;
use shared::assembler::{Assembler, Change};
use shared::headers::{self, Status};
use shared::lease;
use shared::Serial;

/// Whether a row is a prompt or an answer.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Kind {
    Prompt,
    Answer,
}

/// One prompt or answer on screen.
#[derive(Clone, Debug)]
pub struct Row {
    pub serial: Serial,
    pub kind: Kind,
    pub text: RwSignal<String>,
    pub status: RwSignal<Status>,
    /// The beginning of the text is missing (the page joined mid-stream).
    pub partial: RwSignal<bool>,
    /// Why an answer ended as it did: the `error` header, or the `reason` one.
    pub detail: RwSignal<Option<String>>,
    pub deleted: RwSignal<bool>,
    /// The answer's liveness lease (ms since the Unix epoch, the publisher's clock), if
    /// it carries one: past it, a streaming answer has lost its publisher.
    pub lease: RwSignal<Option<i64>>,
}

impl Row {
    fn new(serial: Serial, kind: Kind, text: String, partial: bool) -> Self {
        Self {
            serial,
            kind,
            text: RwSignal::new(text),
            status: RwSignal::new(Status::Streaming),
            partial: RwSignal::new(partial),
            detail: RwSignal::new(None),
            deleted: RwSignal::new(false),
            lease: RwSignal::new(None),
        }
    }
}

/// Every row, in serial order; the list signal changes only when rows come or go.
#[derive(Clone, Copy)]
pub struct Rows {
    pub list: RwSignal<Vec<Row>>,
}

impl Default for Rows {
    fn default() -> Self {
        Self {
            list: RwSignal::new(Vec::new()),
        }
    }
}

impl Rows {
    /// Applies the assembler's changes; `view` is the assembler they came from (for the
    /// details a status change implies).
    pub fn apply(&self, changes: &[Change], view: &Assembler) {
        for change in changes {
            match change {
                Change::Created {
                    serial,
                    text,
                    partial,
                } => self.insert(Row::new(
                    serial.clone(),
                    Kind::Answer,
                    text.clone(),
                    *partial,
                )),
                Change::PromptAdded { serial, text } => {
                    self.insert(Row::new(serial.clone(), Kind::Prompt, text.clone(), false));
                }
                Change::Appended { serial, delta } => self.with_row(serial, |row| {
                    row.text.update(|text| text.push_str(delta));
                }),
                Change::Replaced { serial, text } => self.with_row(serial, |row| {
                    row.text.set(text.clone());
                    row.partial.set(false);
                    row.deleted.set(false);
                }),
                Change::StatusChanged { serial, status } => self.with_row(serial, |row| {
                    row.status.set(*status);
                    let detail = view.answer(serial).and_then(|answer| {
                        answer
                            .header(headers::ERROR)
                            .or_else(|| answer.header(headers::REASON))
                            .map(str::to_owned)
                    });
                    row.detail.set(detail);
                }),
                Change::Deleted { serial } => self.with_row(serial, |row| row.deleted.set(true)),
                Change::Evicted { serial } => self
                    .list
                    .update(|rows| rows.retain(|row| &row.serial != serial)),
                Change::Truncated { .. } | Change::Gap { .. } => {}
            }
        }
    }

    /// Takes the answer's latest lease from `view` after a message to `serial`, which may
    /// change nothing else (an empty append is a heartbeat).
    pub fn refresh_lease(&self, serial: &Serial, view: &Assembler) {
        let Some(answer) = view.answer(serial) else {
            return;
        };
        let lease = lease::lease_of(answer.headers());
        self.with_row(serial, |row| {
            if row.lease.get_untracked() != lease {
                row.lease.set(lease);
            }
        });
    }

    /// How many rows there are.
    pub fn len(&self) -> usize {
        self.list.with(Vec::len)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, row: Row) {
        self.list.update(
            |rows| match rows.binary_search_by(|r| r.serial.cmp(&row.serial)) {
                Ok(_) => {}
                Err(at) => rows.insert(at, row),
            },
        );
    }

    fn with_row(&self, serial: &Serial, f: impl FnOnce(&Row)) {
        // Read without tracking: the list itself does not change.
        let row = self.list.with_untracked(|rows| {
            rows.binary_search_by(|r| r.serial.cmp(serial))
                .ok()
                .and_then(|at| rows.get(at).cloned())
        });
        if let Some(row) = row {
            f(&row);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
