//! The world loop: one simulated clock, every party a plain value, and a seeded scheduler
//! that jumps from one deadline to the next and decides where faults strike.

use std::time::Duration;

use crate::codec;
use crate::connection::{
    ApiKey, AttachOptions, Auth, ChannelState, Config, Connection, ConnectionState, Endpoint,
    Event, Output, Transmit,
};
use crate::ids::ChannelName;
use crate::protocol::{Action, MessageAction, ProtocolMessage};
use crate::time::Instant;

use super::check::{self, Violation};
use super::model::ModelAnswer;
use super::net::{Down, LinkId, Net, Up};
use super::plan::{Faults, Plan};
use super::publisher::Publisher;
use super::rng::SimRng;
use super::service::{self, Service};
use super::trace::{clip, short, Actor, Trace};
use super::viewer::{HistoryRead, Viewer};
use super::{Failure, Summary};

/// The rewind every viewer attaches with, as the page does.
const REWIND: u32 = 100;
/// How long past the fault horizon the world may take to quiesce.
const SETTLE_LIMIT: Duration = Duration::from_secs(600);
/// A bound on loop iterations, against a livelock.
const MAX_STEPS: u64 = 2_000_000;

/// Runs one seed.
pub(super) fn run(seed: u64, faults: Faults) -> Result<Summary, Box<Failure>> {
    let mut root = SimRng::new(seed);
    let plan = Plan::draw(&mut root.fork(), faults, seed);
    let mut world = match World::new(seed, plan.clone(), &mut root) {
        Some(world) => world,
        None => {
            return Err(Box::new(Failure {
                seed,
                faults,
                plan: plan.to_string(),
                violation: "could not build the world's connection settings".to_owned(),
                trace: String::new(),
            }))
        }
    };
    world.run();
    let summary = Summary {
        seed,
        sim_ms: world.now.as_millis(),
        frames: world.frames,
        steps: world.steps,
        over_rate: world.service.over_rate,
        publishes: world.service.accepted + world.service.over_rate,
    };
    match world.violation.take() {
        None => Ok(summary),
        Some(v) => Err(Box::new(Failure {
            seed,
            faults,
            plan: plan.to_string(),
            trace: world.trace.render(v.viewer, v.serial.as_ref(), 120),
            violation: v.to_string(),
        })),
    }
}

struct World {
    now: Instant,
    plan: Plan,
    channel: ChannelName,
    models: Vec<ModelAnswer>,
    net: Net,
    net_rng: SimRng,
    fault_rng: SimRng,
    viewer_rng: SimRng,
    service: Service,
    publisher: Publisher,
    viewers: Vec<Viewer>,
    /// The current link of each client: 0 is the publisher, 1 + v viewer v.
    links: Vec<Option<LinkId>>,
    cuts: Vec<(Instant, LinkId, bool)>,
    faults_on: bool,
    trace: Trace,
    violation: Option<Violation>,
    frames: u64,
    steps: u64,
}

impl World {
    fn new(seed: u64, plan: Plan, root: &mut SimRng) -> Option<Self> {
        let channel = ChannelName::new("ai:sim");
        let endpoint = Endpoint::parse("http://sim.invalid:80").ok()?;
        let mut model_rng = root.fork();
        let models: Vec<ModelAnswer> = (0..plan.answers)
            .map(|i| {
                let start = model_rng.range(0, 1_500);
                ModelAnswer::draw(&mut model_rng, i, start)
            })
            .collect();
        let mut config = Config::new(
            endpoint.clone(),
            Auth::Key(ApiKey::parse("sim.publisher:secret").ok()?),
            format!("pub{seed}"),
        );
        config.echo = false;
        config.jitter_seed = root.next_u64();
        if plan.attach_silence > 0 {
            // Client options short enough for an unanswered ATTACH to suspend the channel
            // while answers stream, and for the retry to come before they end.
            config.realtime_request_timeout = Duration::from_millis(800);
            config.channel_retry_timeout = Duration::from_millis(1_500);
        }
        let publisher = Publisher::new(
            Connection::new(config),
            channel.clone(),
            plan.window_ms,
            &models,
        );
        let mut viewer_rng = root.fork();
        let viewers = (0..plan.viewers)
            .map(|v| {
                let join_at = if v == 0 || plan.late_join_until == 0 {
                    0
                } else {
                    viewer_rng.range(0, plan.late_join_until)
                };
                let expires = plan
                    .token_ttl
                    .map(|ttl| Instant::from_millis(join_at + ttl));
                let mut config = Config::new(
                    endpoint.clone(),
                    Auth::Token(service::token(v, 1, expires)),
                    format!("v{v}"),
                );
                config.jitter_seed = viewer_rng.next_u64();
                Viewer::new(Connection::new(config), Instant::from_millis(join_at))
            })
            .collect::<Vec<_>>();
        let service = Service::new(channel.clone(), plan.clone(), root.fork());
        let mut trace = Trace::default();
        trace.note(
            Instant::default(),
            Actor::Net,
            None,
            format!("seed {seed}: {plan}"),
        );
        for (i, m) in models.iter().enumerate() {
            trace.note(
                Instant::default(),
                Actor::Publisher,
                None,
                format!(
                    "answer {i} ({}): {} events from {}ms, {} bytes",
                    m.prompt,
                    m.events.len(),
                    m.events.first().map_or(0, |(at, _)| at.as_millis()),
                    m.text.len()
                ),
            );
        }
        Some(Self {
            now: Instant::default(),
            links: vec![None; viewers.len() + 1],
            plan,
            channel,
            models,
            net: Net::default(),
            net_rng: root.fork(),
            fault_rng: root.fork(),
            viewer_rng,
            service,
            publisher,
            viewers,
            cuts: Vec::new(),
            faults_on: true,
            trace,
            violation: None,
            frames: 0,
            steps: 0,
        })
    }

    fn run(&mut self) {
        self.publisher.start(self.now);
        self.drain_client(0);
        let horizon = Instant::from_millis(self.plan.horizon);
        while self.violation.is_none() {
            self.steps += 1;
            if self.faults_on && self.now >= horizon {
                self.faults_on = false;
                self.service.stop_faults();
                self.trace.note(
                    self.now,
                    Actor::Net,
                    None,
                    "fault horizon: no more faults".to_owned(),
                );
            }
            if !self.faults_on && self.is_quiescent() {
                self.final_checks();
                return;
            }
            let Some(next) = self.next_deadline() else {
                self.fail(
                    None,
                    None,
                    "nothing is scheduled but the world has not quiesced".to_owned(),
                );
                return;
            };
            self.now = self.now.max(next);
            if self.steps > MAX_STEPS || self.now > horizon + SETTLE_LIMIT {
                let why = self.why_busy();
                self.fail(None, None, format!("did not quiesce: {why}"));
                return;
            }
            self.step();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let horizon = self
            .faults_on
            .then(|| Instant::from_millis(self.plan.horizon));
        let mut all = vec![
            horizon,
            self.net.next_arrival(),
            self.service.poll_timeout(),
            self.publisher.poll_timeout(),
            self.publisher.conn.poll_timeout(),
            self.cuts.iter().map(|(at, _, _)| *at).min(),
        ];
        for v in &self.viewers {
            all.push(v.poll_timeout());
            if v.joined {
                all.push(v.conn.poll_timeout());
            }
        }
        all.into_iter().flatten().min()
    }

    fn step(&mut self) {
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.cuts)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.cuts = later;
        for (_, link, silent) in due {
            if let Some(cut) = self.net.cut(&mut self.net_rng, now, link, silent) {
                let who = self.net.client(link).map_or("?".to_owned(), client_name);
                self.trace.note(
                    now,
                    Actor::Net,
                    None,
                    format!(
                        "CUT link {} ({who}){}: up kept {} lost {}, down kept {} lost {}",
                        link.0,
                        if silent { " silently" } else { "" },
                        cut.kept_up,
                        cut.lost_up,
                        cut.kept_down,
                        cut.lost_down
                    ),
                );
            }
        }
        while let Some((link, item)) = self.net.pop_up(now) {
            let item = match item {
                Up::Frame(frame) => match self.wire(frame) {
                    Some(frame) => Up::Frame(frame),
                    None => return,
                },
                other => other,
            };
            self.service.handle_up(now, link, item, &mut self.trace);
            self.drain_service();
        }
        if self.service.poll_timeout().is_some_and(|at| at <= now) {
            self.service.handle_timeout(now, &mut self.trace);
            self.drain_service();
        }
        while let Some((link, item)) = self.net.pop_down(now) {
            let Some(client) = self.net.client(link) else {
                continue;
            };
            if self.links.get(client).copied().flatten() != Some(link) {
                continue;
            }
            match item {
                Down::Frame(frame) => self.deliver_down(client, frame),
                Down::Closed => {
                    let conn = self.conn_mut(client);
                    conn.handle_transport_closed(now, None);
                }
            }
            self.drain_client(client);
            if self.violation.is_some() {
                return;
            }
        }
        for (index, id) in self.publisher.due_lookups(now) {
            let found = self
                .service
                .history()
                .into_iter()
                .find(|m| m.id.as_ref() == Some(&id))
                .and_then(|m| m.serial);
            self.publisher
                .handle_lookup(now, index, found, &mut self.trace);
            self.drain_client(0);
        }
        if self.publisher.poll_timeout().is_some_and(|at| at <= now) {
            self.publisher.handle_timeout(now, &mut self.trace);
            self.drain_client(0);
        }
        for client in 0..self.links.len() {
            let joined = client == 0 || self.viewers.get(client - 1).is_some_and(|v| v.joined);
            if joined
                && self
                    .conn_mut(client)
                    .poll_timeout()
                    .is_some_and(|at| at <= now)
            {
                self.conn_mut(client).handle_timeout(now);
                self.drain_client(client);
            }
        }
        for v in 0..self.viewers.len() {
            self.viewer_chores(v);
            if self.violation.is_some() {
                return;
            }
        }
    }

    /// A frame as it reaches its receiver: through the codec on JSON seeds.
    fn wire(&mut self, frame: ProtocolMessage) -> Option<ProtocolMessage> {
        self.frames += 1;
        if !self.plan.wire_json {
            return Some(frame);
        }
        match codec::encode(&frame).and_then(|text| codec::decode(&text)) {
            Ok(frame) => Some(frame),
            Err(err) => {
                self.fail(
                    None,
                    None,
                    format!("a frame did not survive the codec: {err}"),
                );
                None
            }
        }
    }

    fn deliver_down(&mut self, client: usize, frame: ProtocolMessage) {
        let Some(frame) = self.wire(frame) else {
            return;
        };
        let now = self.now;
        if client > 0 {
            self.note_down(client - 1, &frame);
        }
        self.conn_mut(client).handle_frame(now, frame);
    }

    fn note_down(&mut self, v: usize, frame: &ProtocolMessage) {
        let now = self.now;
        match frame.action {
            Action::MESSAGE => {}
            Action::HEARTBEAT | Action::ACK => return,
            other => {
                let flags = frame.flags.map_or(0, |f| f.0 & 0xff);
                self.trace.note(
                    now,
                    Actor::Viewer(v),
                    None,
                    format!(
                        "<- {other:?} flags={flags:#x} {}{}",
                        frame.channel_serial.as_ref().map_or("", |s| s.as_str()),
                        frame
                            .error
                            .as_ref()
                            .map_or(String::new(), |e| format!(" error {}", e.code))
                    ),
                );
                return;
            }
        }
        for m in frame.messages.iter().flatten() {
            self.trace.note(
                now,
                Actor::Viewer(v),
                m.serial.as_ref(),
                format!(
                    "<- {:?} {} v{} {} @{}",
                    m.action(),
                    m.serial.as_ref().map_or("-".to_owned(), short),
                    m.version_serial().map_or("-".to_owned(), short),
                    clip(&m.text().unwrap_or_default()),
                    frame.channel_serial.as_ref().map_or("", |s| s.as_str()),
                ),
            );
        }
    }

    fn conn_mut(&mut self, client: usize) -> &mut Connection {
        match client.checked_sub(1).and_then(|v| self.viewers.get_mut(v)) {
            Some(viewer) => &mut viewer.conn,
            None => &mut self.publisher.conn,
        }
    }

    /// Acts on everything a client's connection wants done.
    fn drain_client(&mut self, client: usize) {
        let now = self.now;
        let mut sent = false;
        while let Some(output) = self.conn_mut(client).poll_output() {
            match output {
                Output::Transmit(Transmit::Open { url }) => {
                    if let Some(old) = self.links.get_mut(client).and_then(Option::take) {
                        self.net.close_by_client(now, old);
                    }
                    let link = self.net.open(&mut self.net_rng, now, client, url);
                    self.trace.note(
                        now,
                        client_actor(client),
                        None,
                        format!("opens link {}", link.0),
                    );
                    if let Some(slot) = self.links.get_mut(client) {
                        *slot = Some(link);
                    }
                }
                Output::Transmit(Transmit::Frame(frame)) => {
                    if let Some(link) = self.links.get(client).copied().flatten() {
                        self.net.send_up(now, link, Up::Frame(frame));
                        sent = true;
                    }
                }
                Output::Transmit(Transmit::Close) => {
                    if let Some(old) = self.links.get_mut(client).and_then(Option::take) {
                        self.trace.note(
                            now,
                            client_actor(client),
                            None,
                            format!("closes link {}", old.0),
                        );
                        self.net.close_by_client(now, old);
                    }
                }
                Output::Event(event) => match client.checked_sub(1) {
                    None => self.publisher.handle_event(now, event, &mut self.trace),
                    Some(v) => self.viewer_event(v, event),
                },
            }
        }
        if sent {
            if let Some(link) = self.links.get(client).copied().flatten() {
                self.maybe_cut(link);
            }
        }
    }

    fn drain_service(&mut self) {
        let now = self.now;
        let mut touched = Vec::new();
        while let Some((link, item)) = self.service.poll_transmit() {
            match item {
                Down::Frame(frame) => {
                    let outcome = frame.action == Action::ACK || frame.action == Action::NACK;
                    if outcome && !self.net.is_live(link) {
                        self.trace.note(
                            now,
                            Actor::Net,
                            None,
                            format!(
                                "{:?} msgSerial {} lost: link {} is cut",
                                frame.action,
                                frame.msg_serial.map_or(0, |m| m.0),
                                link.0
                            ),
                        );
                    }
                    self.net.send_down(now, link, Down::Frame(frame));
                    if !touched.contains(&link) {
                        touched.push(link);
                    }
                }
                Down::Closed => self.net.close_by_service(now, link),
            }
        }
        for link in touched {
            self.maybe_cut(link);
        }
    }

    /// After a batch was put on `link`, perhaps cut it soon: before, inside or after the
    /// batch, depending on where the cut falls against the frames in flight.
    fn maybe_cut(&mut self, link: LinkId) {
        if !self.faults_on || !self.net.is_live(link) || !self.fault_rng.chance(self.plan.cut) {
            return;
        }
        let at = self.now + Duration::from_millis(self.fault_rng.range(0, 30));
        let silent = self.fault_rng.chance(self.plan.silent_cut);
        self.cuts.push((at, link, silent));
    }

    fn viewer_event(&mut self, v: usize, event: Event) {
        let now = self.now;
        match event {
            Event::Message { message, .. } => {
                let Some(viewer) = self.viewers.get_mut(v) else {
                    return;
                };
                if let Err(err) = viewer.assembler.apply(&message) {
                    self.fail(
                        Some(v),
                        message.serial.clone(),
                        format!("the assembler refused a delivery: {err}"),
                    );
                    return;
                }
                let Some(serial) = message.serial.clone() else {
                    return;
                };
                if message.action() != MessageAction::APPEND {
                    viewer.full_version(&serial);
                }
                self.check_prefix(v, &serial);
            }
            Event::ChannelStateChanged {
                current,
                previous,
                resumed,
                reason,
                ..
            } => {
                self.trace.note(
                    now,
                    Actor::Viewer(v),
                    None,
                    format!(
                        "channel {previous} → {current} resumed={resumed}{}",
                        reason.map_or(String::new(), |r| format!(" ({})", r.code))
                    ),
                );
                let Some(viewer) = self.viewers.get_mut(v) else {
                    return;
                };
                if current != ChannelState::Attached {
                    return;
                }
                if !viewer.attached_once {
                    viewer.attached_once = true;
                    self.read_history(v);
                } else if !resumed {
                    viewer.continuity_lost();
                    self.trace.note(
                        now,
                        Actor::Viewer(v),
                        None,
                        "told: continuity lost (not resumed)".to_owned(),
                    );
                    self.read_history(v);
                }
            }
            Event::ResumeFailed { reason } => {
                self.trace.note(
                    now,
                    Actor::Viewer(v),
                    None,
                    format!("told: resume failed ({})", reason.map_or(0, |r| r.code)),
                );
                if let Some(viewer) = self.viewers.get_mut(v) {
                    viewer.continuity_lost();
                }
            }
            Event::TokenRequired { reason } => {
                let delay = self.viewer_rng.range(5, 300);
                self.trace.note(
                    now,
                    Actor::Viewer(v),
                    None,
                    format!(
                        "token required ({}); renewing in {delay}ms",
                        reason.map_or(0, |r| r.code)
                    ),
                );
                if let Some(viewer) = self.viewers.get_mut(v) {
                    viewer.renew_at = Some(now + Duration::from_millis(delay));
                }
            }
            Event::StateChanged {
                previous,
                current,
                reason,
            } => {
                self.trace.note(
                    now,
                    Actor::Viewer(v),
                    None,
                    format!(
                        "connection {previous} → {current}{}",
                        reason.map_or(String::new(), |r| format!(" ({})", r.code))
                    ),
                );
            }
            Event::Published { .. } => {}
        }
    }

    fn read_history(&mut self, v: usize) {
        let delay = self.plan.history_delay;
        let snapshot_at = self.now + Duration::from_millis(self.viewer_rng.range(0, delay));
        let deliver_at = snapshot_at + Duration::from_millis(self.viewer_rng.range(0, delay));
        self.trace.note(
            self.now,
            Actor::Viewer(v),
            None,
            format!(
                "reads history (taken at {}ms, applied at {}ms)",
                snapshot_at.as_millis(),
                deliver_at.as_millis()
            ),
        );
        if let Some(viewer) = self.viewers.get_mut(v) {
            viewer.history.push(HistoryRead {
                snapshot_at,
                deliver_at,
                snapshot: None,
            });
        }
    }

    /// Joins, token renewals and history reads due now.
    fn viewer_chores(&mut self, v: usize) {
        let now = self.now;
        let channel = self.channel.clone();
        let ttl = self.plan.token_ttl;
        let history = self.service.history();
        let Some(viewer) = self.viewers.get_mut(v) else {
            return;
        };
        if !viewer.joined && viewer.join_at <= now {
            viewer.joined = true;
            viewer.conn.connect(now);
            let _ = viewer
                .conn
                .attach(now, channel, AttachOptions::rewind(REWIND));
            self.trace.note(
                now,
                Actor::Viewer(v),
                None,
                format!("joins with rewind {REWIND}"),
            );
        }
        if viewer.renew_at.is_some_and(|at| at <= now) {
            viewer.renew_at = None;
            viewer.tokens += 1;
            let expires = ttl.map(|t| now + Duration::from_millis(t));
            viewer
                .conn
                .set_token(now, service::token(v, viewer.tokens, expires));
        }
        for read in &mut viewer.history {
            if read.snapshot.is_none() && read.snapshot_at <= now {
                read.snapshot = Some(history.clone());
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut viewer.history)
            .into_iter()
            .partition(|r| r.snapshot.is_some() && r.deliver_at <= now);
        viewer.history = later;
        self.drain_client(v + 1);
        for read in due {
            let messages = read.snapshot.unwrap_or_default();
            self.trace.note(
                now,
                Actor::Viewer(v),
                None,
                format!("history applied: {} messages", messages.len()),
            );
            for message in messages.iter().rev() {
                let Some(viewer) = self.viewers.get_mut(v) else {
                    return;
                };
                let Some(serial) = message.serial.clone() else {
                    continue;
                };
                self.trace.note(
                    now,
                    Actor::Viewer(v),
                    Some(&serial),
                    format!(
                        "history {} v{} {}",
                        short(&serial),
                        message.version_serial().map_or("-".to_owned(), short),
                        clip(&message.text().unwrap_or_default())
                    ),
                );
                if let Err(err) = viewer.assembler.apply(message) {
                    self.fail(
                        Some(v),
                        Some(serial),
                        format!("the assembler refused history: {err}"),
                    );
                    return;
                }
                viewer.full_version(&serial);
                self.check_prefix(v, &serial);
                if self.violation.is_some() {
                    return;
                }
            }
        }
    }

    fn check_prefix(&mut self, v: usize, serial: &crate::ids::Serial) {
        let Some(viewer) = self.viewers.get(v) else {
            return;
        };
        if let Some(violation) = check::prefix(self.now, v, viewer, serial, &self.models) {
            self.violation.get_or_insert(violation);
        }
    }

    fn is_quiescent(&self) -> bool {
        self.why_busy().is_empty()
    }

    /// What keeps the world from being quiescent, in words (empty when it is).
    fn why_busy(&self) -> String {
        let mut busy = Vec::new();
        if !self.publisher.is_done() {
            busy.push("the publisher has answers or publishes pending".to_owned());
        }
        if !self.net.is_idle() {
            busy.push("frames in flight".to_owned());
        }
        if !self.service.is_quiet() {
            busy.push("the service has held or deferred work".to_owned());
        }
        if !self.cuts.is_empty() {
            busy.push("cuts scheduled".to_owned());
        }
        for (client, link) in self.links.iter().enumerate() {
            // A silent cut leaves a client on a dead link until its idle timer fires.
            if link.is_some_and(|l| !self.net.is_live(l)) {
                busy.push(format!("{} is on a dead link", client_name(client)));
            }
        }
        for (v, viewer) in self.viewers.iter().enumerate() {
            let attached = viewer.conn.channel_state(&self.channel) == ChannelState::Attached;
            if !viewer.joined
                || viewer.renew_at.is_some()
                || !viewer.history.is_empty()
                || viewer.conn.state() != ConnectionState::Connected
                || !attached
            {
                busy.push(format!(
                    "v{v} is {} / channel {}",
                    viewer.conn.state(),
                    viewer.conn.channel_state(&self.channel)
                ));
            }
        }
        busy.join("; ")
    }

    fn final_checks(&mut self) {
        let now = self.now;
        let problems = self.publisher.problems.join("; ");
        // Liveness: the connection comes back once the faults stop, and every publish it was
        // handed gets its outcome, so no answer may end by giving up on one.
        if let Some(first) = self.publisher.gave_up.first() {
            let what = format!("an answer gave up waiting for its outcomes: {first}");
            self.fail(None, None, what);
            return;
        }
        for (v, viewer) in self.viewers.iter().enumerate() {
            if let Some(mut violation) = check::final_viewer(now, v, viewer, &self.models) {
                if !problems.is_empty() {
                    violation
                        .what
                        .push_str(&format!(" (publisher: {problems})"));
                }
                self.violation = Some(violation);
                return;
            }
        }
        if let Some(violation) = check::final_history(now, &self.service.history(), &self.models) {
            self.violation = Some(violation);
        }
    }

    fn fail(&mut self, viewer: Option<usize>, serial: Option<crate::ids::Serial>, what: String) {
        self.violation.get_or_insert(Violation {
            at: self.now,
            viewer,
            serial,
            what,
        });
    }
}

fn client_actor(client: usize) -> Actor {
    match client.checked_sub(1) {
        None => Actor::Publisher,
        Some(v) => Actor::Viewer(v),
    }
}

fn client_name(client: usize) -> String {
    match client.checked_sub(1) {
        None => "publisher".to_owned(),
        Some(v) => format!("v{v}"),
    }
}
