//! Property test: answers published through a [`SimChannel`] under random delivery schedules
//! (conflation, duplicates, drops repaired by a resume, disconnections, late joiners with
//! either rewind style, interleaved answers) are rebuilt exactly by every subscriber.
//!
//! The final full update would hide most bugs, so the check runs at every drain too: once a
//! subscriber's queue is drained, each answer it holds must equal the channel's current
//! aggregate (text, headers, status), unless a drop for that serial still awaits its resync.

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

use super::*;
use crate::testkit::{self, RewindStyle, SimChannel, SubscriberId};

/// What a UI holds for one entry, rebuilt only from [`Change`]s.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(super) struct ViewEntry {
    prompt: bool,
    text: String,
    status: Status,
    deleted: bool,
    partial: bool,
}

/// A UI's state rebuilt from changes alone, to check that changes are self-contained.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub(super) struct View {
    entries: BTreeMap<Serial, ViewEntry>,
}

impl View {
    /// Applies one change as a UI would.
    pub(super) fn apply(&mut self, change: &Change) {
        match change {
            Change::Created {
                serial,
                text,
                partial,
            } => {
                self.entries.insert(
                    serial.clone(),
                    ViewEntry {
                        prompt: false,
                        text: text.clone(),
                        status: Status::Streaming,
                        deleted: false,
                        partial: *partial,
                    },
                );
            }
            Change::PromptAdded { serial, text } => {
                self.entries.insert(
                    serial.clone(),
                    ViewEntry {
                        prompt: true,
                        text: text.clone(),
                        status: Status::Streaming,
                        deleted: false,
                        partial: false,
                    },
                );
            }
            Change::Appended { serial, delta } => {
                if let Some(entry) = self.entries.get_mut(serial) {
                    entry.text.push_str(delta);
                }
            }
            Change::Replaced { serial, text } => {
                if let Some(entry) = self.entries.get_mut(serial) {
                    entry.text.clone_from(text);
                    entry.deleted = false;
                    entry.partial = false;
                }
            }
            Change::StatusChanged { serial, status } => {
                if let Some(entry) = self.entries.get_mut(serial) {
                    entry.status = *status;
                }
            }
            Change::Deleted { serial } => {
                if let Some(entry) = self.entries.get_mut(serial) {
                    entry.deleted = true;
                }
            }
            Change::Evicted { serial } => {
                self.entries.remove(serial);
            }
            Change::Truncated { .. } | Change::Gap { .. } => {}
        }
    }

    /// The view an assembler's current state should produce.
    pub(super) fn of(asm: &Assembler) -> Self {
        let mut entries = BTreeMap::new();
        for answer in asm.answers() {
            entries.insert(
                answer.serial().clone(),
                ViewEntry {
                    prompt: false,
                    text: answer.text().to_owned(),
                    status: answer.status(),
                    deleted: answer.is_deleted(),
                    partial: answer.is_partial(),
                },
            );
        }
        for prompt in asm.prompts() {
            entries.insert(
                prompt.serial().clone(),
                ViewEntry {
                    prompt: true,
                    text: prompt.text().to_owned(),
                    status: Status::Streaming,
                    deleted: prompt.is_deleted(),
                    partial: prompt.is_partial(),
                },
            );
        }
        Self { entries }
    }
}

/// Characters of one, two, three and four bytes, and a combining mark.
const ALPHABET: &[char] = &['a', 'b', ' ', '.', 'é', 'ß', '€', '中', '😀', '\u{301}'];

/// One answer the publisher streams.
#[derive(Clone, Debug)]
struct Plan {
    /// The deltas, some empty; the published text is their concatenation.
    deltas: Vec<String>,
    /// Whether the create carries the first delta (otherwise it is empty, as in the guide).
    create_with_first: bool,
    /// Whether the create and appends carry headers (the guide's publisher sends none).
    headers_on_appends: bool,
    /// Whether a prompt is published first.
    with_prompt: bool,
    terminal: Status,
}

fn plan() -> impl Strategy<Value = Plan> {
    let delta = vec(select(ALPHABET), 0..5).prop_map(|chars| chars.into_iter().collect::<String>());
    (
        vec(delta, 0..8),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        select(vec![
            Status::Completed,
            Status::Incomplete,
            Status::Failed,
            Status::Cancelled,
        ]),
    )
        .prop_map(
            |(deltas, create_with_first, headers_on_appends, with_prompt, terminal)| Plan {
                deltas,
                create_with_first,
                headers_on_appends,
                with_prompt,
                terminal,
            },
        )
}

/// One step of a schedule. Small numbers pick a subscriber, a queue index or a delay.
#[derive(Clone, Debug)]
enum Step {
    /// Publish the next operation of one answer (picked among those with operations left).
    Publish(u8),
    Drain(u8),
    /// Conflate a window: start, length.
    Conflate(u8, u8, u8),
    /// Duplicate a queued delivery: index, destination.
    Duplicate(u8, u8, u8),
    /// Drop a queued delivery: index, publish steps until the resume resyncs its serial.
    Drop(u8, u8, u8),
    /// Disconnect for this many publish steps.
    Blip(u8, u8),
    /// A late joiner: rewind (0 = none), Sockudo-style replay.
    Join(u8, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => any::<u8>().prop_map(Step::Publish),
        3 => any::<u8>().prop_map(Step::Drain),
        2 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, c)| Step::Conflate(a, b, c)),
        2 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, c)| Step::Duplicate(a, b, c)),
        2 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, c)| Step::Drop(a, b, c)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Step::Blip(a, b)),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(a, b)| Step::Join(a, b)),
    ]
}

/// One subscriber and what the harness knows about it.
struct Sub {
    id: SubscriberId,
    asm: Assembler,
    view: View,
    /// Resyncs owed after drops: serial and the publish step at which the resume happens.
    owed: Vec<(Serial, usize)>,
    /// The publish step at which a disconnected subscriber comes back.
    back_at: Option<usize>,
    /// The publish step at which it attached.
    joined_at: usize,
}

/// Publisher progress on one answer.
struct Run {
    plan: Plan,
    next_op: usize,
    prompt: Option<Serial>,
    serial: Option<Serial>,
    /// The publish step of the final update.
    finished_at: Option<usize>,
}

impl Run {
    /// The create's text, then the appended fragments.
    fn parts(&self) -> (String, &[String]) {
        match (self.plan.create_with_first, self.plan.deltas.split_first()) {
            (true, Some((first, rest))) => (first.clone(), rest),
            _ => (String::new(), self.plan.deltas.as_slice()),
        }
    }

    fn op_count(&self) -> usize {
        usize::from(self.plan.with_prompt) + 2 + self.parts().1.len()
    }

    fn done(&self) -> bool {
        self.next_op >= self.op_count()
    }

    fn full_text(&self) -> String {
        self.plan.deltas.concat()
    }
}

/// Which operation of an answer was published.
enum OpKind {
    Prompt,
    Create,
    Append,
    Final,
}

struct Harness {
    sim: SimChannel,
    subs: Vec<Sub>,
    runs: Vec<Run>,
    clock: usize,
}

fn fail(message: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(message.into())
}

impl Harness {
    fn new(plans: Vec<Plan>, initial_rewind: bool) -> Self {
        let mut sim = SimChannel::new();
        let live = sim.subscribe(None);
        let rewinding = sim.subscribe(initial_rewind.then_some(10));
        let subs = [live, rewinding]
            .into_iter()
            .map(|id| Sub {
                id,
                asm: Assembler::new(),
                view: View::default(),
                owed: Vec::new(),
                back_at: None,
                joined_at: 0,
            })
            .collect();
        let runs = plans
            .into_iter()
            .map(|plan| Run {
                plan,
                next_op: 0,
                prompt: None,
                serial: None,
                finished_at: None,
            })
            .collect();
        Self {
            sim,
            subs,
            runs,
            clock: 0,
        }
    }

    fn sub_index(&self, pick: u8) -> usize {
        usize::from(pick) % self.subs.len()
    }

    /// Publishes the next operation of the `pick`-th unfinished answer; false when all are done.
    fn publish(&mut self, pick: u8) -> Result<bool, TestCaseError> {
        let open: Vec<usize> = (0..self.runs.len())
            .filter(|&i| !self.runs[i].done())
            .collect();
        let Some(&index) = open.get(usize::from(pick) % open.len().max(1)) else {
            return Ok(false);
        };
        let (msg, kind) = self.next_message(index)?;
        let serial = self.sim.publish(msg).map_err(|e| fail(e.to_string()))?;
        let run = &mut self.runs[index];
        match kind {
            OpKind::Prompt => run.prompt = Some(serial),
            OpKind::Create => run.serial = Some(serial),
            OpKind::Append => {}
            OpKind::Final => run.finished_at = Some(self.clock),
        }
        self.tick();
        Ok(true)
    }

    /// The next operation of answer `index`, and what kind it is.
    fn next_message(&mut self, index: usize) -> Result<(Message, OpKind), TestCaseError> {
        let run = &mut self.runs[index];
        let mut op = run.next_op;
        run.next_op += 1;
        if run.plan.with_prompt {
            if op == 0 {
                let text = format!("question {index}");
                return Ok((testkit::create(headers::PROMPT_NAME, &text), OpKind::Prompt));
            }
            op -= 1;
        }
        let streaming: &[(&str, &str)] = &[("status", "streaming"), ("model", "m")];
        let with_streaming = |msg: Message| {
            if run.plan.headers_on_appends {
                testkit::with_headers(msg, streaming)
            } else {
                msg
            }
        };
        let (first, fragments) = run.parts();
        if op == 0 {
            return Ok((
                with_streaming(testkit::create(headers::ANSWER_NAME, &first)),
                OpKind::Create,
            ));
        }
        let Some(serial) = &run.serial else {
            return Err(fail("an answer operation came before its create"));
        };
        if let Some(fragment) = fragments.get(op - 1) {
            // Some appends repeat the headers, others rely on the previous ones.
            let msg = testkit::append(serial, fragment);
            let msg = if op.is_multiple_of(2) {
                with_streaming(msg)
            } else {
                msg
            };
            return Ok((msg, OpKind::Append));
        }
        let terminal = [("status", run.plan.terminal.as_str()), ("model", "m")];
        Ok((
            testkit::with_headers(testkit::update(serial, &run.full_text()), &terminal),
            OpKind::Final,
        ))
    }

    /// Advances the publish clock and performs the resumes that fall due.
    fn tick(&mut self) {
        self.clock += 1;
        let clock = self.clock;
        for sub in &mut self.subs {
            if sub.back_at.is_some_and(|at| at <= clock) {
                self.sim.reconnect(sub.id);
                sub.back_at = None;
            }
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut sub.owed)
                .into_iter()
                .partition(|(_, at)| *at <= clock);
            sub.owed = later;
            for (serial, _) in due {
                self.sim.resync(sub.id, &serial);
            }
        }
    }

    fn run_step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match *step {
            Step::Publish(pick) => {
                self.publish(pick)?;
            }
            Step::Drain(pick) => self.drain(self.sub_index(pick))?,
            Step::Conflate(pick, start, len) => {
                let id = self.subs[self.sub_index(pick)].id;
                let start = usize::from(start % 8);
                self.sim
                    .conflate_window(id, start..start + usize::from(len % 12));
            }
            Step::Duplicate(pick, index, to) => {
                let id = self.subs[self.sub_index(pick)].id;
                let len = self.sim.pending(id).len();
                if len > 0 {
                    let index = usize::from(index) % len;
                    self.sim
                        .duplicate(id, index, index + 1 + usize::from(to % 6));
                }
            }
            Step::Drop(pick, index, delay) => {
                let at = self.sub_index(pick);
                let id = self.subs[at].id;
                let len = self.sim.pending(id).len();
                if len > 0 {
                    if let Some(serial) = self
                        .sim
                        .drop_delivery(id, usize::from(index) % len)
                        .and_then(|m| m.serial)
                    {
                        let due = self.clock + usize::from(delay % 4);
                        self.subs[at].owed.push((serial, due));
                    }
                }
            }
            Step::Blip(pick, delay) => {
                let at = self.sub_index(pick);
                if self.subs[at].back_at.is_none() {
                    self.sim.disconnect(self.subs[at].id);
                    self.subs[at].back_at = Some(self.clock + 1 + usize::from(delay % 3));
                }
            }
            Step::Join(rewind, per_version) => {
                if self.subs.len() < 6 {
                    let rewind = usize::from(rewind % 10);
                    let style = if per_version {
                        RewindStyle::PerVersion
                    } else {
                        RewindStyle::Aggregate
                    };
                    let id = self
                        .sim
                        .subscribe_with((rewind > 0).then_some(rewind), style);
                    self.subs.push(Sub {
                        id,
                        asm: Assembler::new(),
                        view: View::default(),
                        owed: Vec::new(),
                        back_at: None,
                        joined_at: self.clock,
                    });
                }
            }
        }
        Ok(())
    }

    /// Feeds one subscriber its queue, then checks it against the channel.
    fn drain(&mut self, at: usize) -> Result<(), TestCaseError> {
        let sub = &mut self.subs[at];
        for msg in self.sim.drain(sub.id) {
            let changes = sub.asm.apply(&msg).map_err(|e| fail(e.to_string()))?;
            for change in &changes {
                sub.view.apply(change);
            }
        }
        prop_assert_eq!(
            &sub.view,
            &View::of(&sub.asm),
            "changes do not rebuild the state"
        );
        if sub.back_at.is_some() {
            // Disconnected: what changed meanwhile has not arrived yet.
            return Ok(());
        }
        let blind: BTreeSet<&Serial> = sub.owed.iter().map(|(serial, _)| serial).collect();
        for answer in sub.asm.answers() {
            if blind.contains(answer.serial()) {
                continue;
            }
            let Some(stored) = self.sim.message(answer.serial()) else {
                return Err(fail(format!(
                    "answer {} was never published",
                    answer.serial()
                )));
            };
            prop_assert_eq!(stored.name.as_deref(), Some(headers::ANSWER_NAME));
            prop_assert_eq!(
                answer.text(),
                stored.text().map_err(|e| fail(e.to_string()))?
            );
            let headers = stored.headers().unwrap_or_default();
            prop_assert_eq!(answer.headers(), &headers);
            let status = headers.get(headers::STATUS).and_then(|v| Status::parse(v));
            prop_assert_eq!(answer.status(), status.unwrap_or(Status::Streaming));
            prop_assert!(
                !answer.is_partial(),
                "answer {} still partial",
                answer.serial()
            );
        }
        for prompt in sub.asm.prompts() {
            let Some(stored) = self.sim.message(prompt.serial()) else {
                return Err(fail(format!(
                    "prompt {} was never published",
                    prompt.serial()
                )));
            };
            prop_assert_eq!(stored.name.as_deref(), Some(headers::PROMPT_NAME));
            prop_assert_eq!(
                prompt.text(),
                stored.text().map_err(|e| fail(e.to_string()))?
            );
        }
        Ok(())
    }

    /// Publishes what is left, lets every resume happen, drains everyone, and checks the end.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        while self.publish(0)? {}
        for sub in &mut self.subs {
            if sub.back_at.take().is_some() {
                self.sim.reconnect(sub.id);
            }
            for (serial, _) in std::mem::take(&mut sub.owed) {
                self.sim.resync(sub.id, &serial);
            }
        }
        for at in 0..self.subs.len() {
            self.drain(at)?;
        }
        for sub in &self.subs {
            for run in &self.runs {
                let Some(serial) = &run.serial else {
                    return Err(fail("an answer was never created"));
                };
                let expected_known = sub.joined_at == 0 || run.finished_at >= Some(sub.joined_at);
                match sub.asm.answer(serial) {
                    Some(answer) => {
                        prop_assert_eq!(answer.text(), run.full_text());
                        prop_assert_eq!(answer.status(), run.plan.terminal);
                    }
                    None => prop_assert!(!expected_known, "subscriber misses answer {}", serial),
                }
                if let (Some(prompt), true) = (&run.prompt, sub.joined_at == 0) {
                    prop_assert!(sub.asm.prompt(prompt).is_some());
                    prop_assert!(sub.asm.answer(prompt).is_none());
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_subscriber_rebuilds_every_answer(
        plans in vec(plan(), 1..5),
        steps in vec(step(), 0..120),
        initial_rewind in any::<bool>(),
    ) {
        let mut harness = Harness::new(plans, initial_rewind);
        for step in &steps {
            harness.run_step(step)?;
        }
        harness.finish()?;
    }
}
