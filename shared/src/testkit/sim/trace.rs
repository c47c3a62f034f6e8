//! The schedule as it happened: faults, connection and channel events, deliveries, so a
//! failing seed can be read without rerunning it.

use std::fmt::Write as _;

use crate::ids::Serial;
use crate::time::Instant;

/// Who a trace line is about.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Actor {
    Service,
    Publisher,
    Viewer(usize),
    Net,
}

#[derive(Clone, Debug)]
struct Line {
    at: Instant,
    actor: Actor,
    serial: Option<Serial>,
    text: String,
}

/// Every line of one run (runs are short, so nothing is dropped).
#[derive(Clone, Debug, Default)]
pub(super) struct Trace {
    lines: Vec<Line>,
}

impl Trace {
    /// Records one line.
    pub(super) fn note(
        &mut self,
        at: Instant,
        actor: Actor,
        serial: Option<&Serial>,
        text: String,
    ) {
        self.lines.push(Line {
            at,
            actor,
            serial: serial.cloned(),
            text,
        });
    }

    /// The lines about `viewer` and `serial` (and everything not about a particular viewer
    /// or answer: faults, the service's decisions), at most `max` of the latest.
    pub(super) fn render(
        &self,
        viewer: Option<usize>,
        serial: Option<&Serial>,
        max: usize,
    ) -> String {
        let relevant: Vec<&Line> = self
            .lines
            .iter()
            .filter(|l| match (l.actor, viewer) {
                (Actor::Viewer(v), Some(want)) => v == want,
                _ => true,
            })
            .filter(|l| match (&l.serial, serial) {
                (Some(s), Some(want)) => s == want,
                _ => true,
            })
            .collect();
        let skip = relevant.len().saturating_sub(max);
        let mut out = String::new();
        if skip > 0 {
            let _ = writeln!(out, "  … {skip} earlier lines");
        }
        for l in relevant.into_iter().skip(skip) {
            let who = match l.actor {
                Actor::Service => "ably".to_owned(),
                Actor::Publisher => "pub".to_owned(),
                Actor::Viewer(v) => format!("v{v}"),
                Actor::Net => "net".to_owned(),
            };
            let _ = writeln!(out, "  {:>6}ms {who:>4}  {}", l.at.as_millis(), l.text);
        }
        out
    }
}

/// A serial as the trace shows it: the service mints `<tick>@sim`, shown as `#tick`.
pub(super) fn short(serial: &Serial) -> String {
    let s = serial.as_str();
    match s.split_once('@') {
        Some((tick, _)) => format!("#{}", tick.trim_start_matches('0')),
        None => s.to_owned(),
    }
}

/// Text cut to a readable length for the trace.
pub(super) fn clip(text: &str) -> String {
    const MAX: usize = 24;
    if text.chars().count() <= MAX {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head:?}…({}B)", text.len())
    }
}
