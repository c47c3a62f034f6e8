//! A viewer: a subscriber [`Connection`] feeding an [`Assembler`], reacting to channel events
//! the way the page does (history on the first attach, history again after a continuity
//! loss, a new token when asked), and remembering which answers a told continuity loss left
//! unrepaired.

use std::collections::BTreeSet;

use crate::assembler::Assembler;
use crate::connection::Connection;
use crate::ids::Serial;
use crate::protocol::Message;
use crate::time::Instant;

/// A history read: taken from the service at `snapshot_at`, applied at `deliver_at`.
#[derive(Debug)]
pub(super) struct HistoryRead {
    pub(super) snapshot_at: Instant,
    pub(super) deliver_at: Instant,
    /// Newest first, as REST history pages come.
    pub(super) snapshot: Option<Vec<Message>>,
}

/// One viewer.
#[derive(Debug)]
pub(super) struct Viewer {
    pub(super) conn: Connection,
    pub(super) assembler: Assembler,
    pub(super) join_at: Instant,
    pub(super) joined: bool,
    pub(super) attached_once: bool,
    /// A continuity loss was announced and not every answer has had a full version since.
    loss: bool,
    /// Answers that had a full version since the last announced loss.
    repaired: BTreeSet<Serial>,
    /// Tokens issued so far.
    pub(super) tokens: u32,
    /// When the page's token fetch completes.
    pub(super) renew_at: Option<Instant>,
    pub(super) history: Vec<HistoryRead>,
}

impl Viewer {
    /// A viewer that joins at `join_at`.
    pub(super) fn new(conn: Connection, join_at: Instant) -> Self {
        Self {
            conn,
            assembler: Assembler::new(),
            join_at,
            joined: false,
            attached_once: false,
            loss: false,
            repaired: BTreeSet::new(),
            tokens: 1,
            renew_at: None,
            history: Vec::new(),
        }
    }

    /// The connection told us messages may have been missed.
    pub(super) fn continuity_lost(&mut self) {
        self.loss = true;
        self.repaired.clear();
    }

    /// A full version (create, update, delete) of `serial` was delivered.
    pub(super) fn full_version(&mut self, serial: &Serial) {
        self.repaired.insert(serial.clone());
    }

    /// Whether `serial`'s text may legitimately be wrong now: a told loss not yet repaired
    /// for it by a full version.
    pub(super) fn is_exempt(&self, serial: &Serial) -> bool {
        self.loss && !self.repaired.contains(serial)
    }

    /// The earliest instant this viewer has something to do besides its connection.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let join = (!self.joined).then_some(self.join_at);
        let history = self
            .history
            .iter()
            .map(|h| {
                if h.snapshot.is_none() {
                    h.snapshot_at
                } else {
                    h.deliver_at
                }
            })
            .min();
        [join, self.renew_at, history].into_iter().flatten().min()
    }
}
