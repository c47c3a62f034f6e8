//! Stopping answers wherever they stream: a registry of this process's running answers,
//! stopped by a local request or by a `cancel` message (data: the answer's serial) on a
//! channel the process listens to. Any replica, page or Ably client can cancel that way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use shared::connection::Event;
use shared::headers::CANCEL_NAME;
use shared::Serial;
use tokio::sync::watch;

use crate::ably::Realtime;
use crate::answer::{Observer, Stop};

/// This process's running answers.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    next: u64,
    answers: HashMap<u64, Entry>,
    /// Every answer was stopped, and answers registered from now on start stopped.
    stopped: Option<Stop>,
}

struct Entry {
    serial: Option<Serial>,
    stop: watch::Sender<Stop>,
}

/// One registered answer; unregistered when dropped.
pub struct Registration {
    registry: Registry,
    id: u64,
}

impl Registry {
    /// Registers a new answer; its stop signal is the returned receiver.
    pub fn register(&self) -> (Registration, watch::Receiver<Stop>) {
        let (id, rx) = self.with(|inner| {
            let (tx, rx) = watch::channel(inner.stopped.unwrap_or(Stop::No));
            inner.next += 1;
            let id = inner.next;
            inner.answers.insert(
                id,
                Entry {
                    serial: None,
                    stop: tx,
                },
            );
            (id, rx)
        });
        (
            Registration {
                registry: self.clone(),
                id,
            },
            rx,
        )
    }

    /// Stops the answer with this serial, if it runs here.
    pub fn stop(&self, serial: &Serial, why: Stop) -> bool {
        self.with(|inner| {
            let mut found = false;
            for entry in inner.answers.values() {
                if entry.serial.as_ref() == Some(serial) {
                    entry.stop.send_replace(why);
                    found = true;
                }
            }
            found
        })
    }

    /// Stops every running answer, and every answer registered from now on; returns how
    /// many were running.
    pub fn stop_all(&self, why: Stop) -> usize {
        self.with(|inner| {
            inner.stopped = Some(why);
            for entry in inner.answers.values() {
                entry.stop.send_replace(why);
            }
            inner.answers.len()
        })
    }

    /// How many answers run here.
    pub fn len(&self) -> usize {
        self.with(|inner| inner.answers.len())
    }

    /// Whether no answer runs here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops answers named by `cancel` messages arriving on the connection's channels.
    pub fn listen(&self, realtime: &Realtime) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        let mut events = realtime.subscribe();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Some(serial) = cancel_request(&event) {
                    if registry.stop(&serial, Stop::Cancel) {
                        tracing::info!(%serial, "answer cancelled by a cancel message");
                    }
                }
            }
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = match self.0.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut inner)
    }
}

impl Registration {
    /// Records the answer's serial once its create is ACKed.
    pub fn set_serial(&self, serial: &Serial) {
        self.registry.with(|inner| {
            if let Some(entry) = inner.answers.get_mut(&self.id) {
                entry.serial = Some(serial.clone());
            }
        });
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.with(|inner| inner.answers.remove(&self.id));
    }
}

/// Records the serial in the cancel registry, then passes events on.
pub struct Registering<'a> {
    pub registration: &'a Registration,
    pub inner: &'a mut (dyn Observer + 'a),
}

impl Observer for Registering<'_> {
    fn created(&mut self, result: Result<&Serial, &str>) {
        if let Ok(serial) = result {
            self.registration.set_serial(serial);
        }
        self.inner.created(result);
    }

    fn text(&mut self, text: &str) {
        self.inner.text(text);
    }

    fn wants_text(&self) -> bool {
        self.inner.wants_text()
    }
}

/// The serial a `cancel` message asks to stop.
pub fn cancel_request(event: &Event) -> Option<Serial> {
    let Event::Message { message, .. } = event else {
        return None;
    };
    if message.name.as_deref() != Some(CANCEL_NAME) {
        return None;
    }
    match &message.data {
        Some(Value::String(serial)) if !serial.trim().is_empty() => {
            Some(Serial::from(serial.trim()))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
