//! A loopback TCP proxy that breaks the network on purpose, for chaos tests.
//!
//! Every client connects to the proxy instead of the server; each accepted connection (a
//! *link*) is relayed byte for byte to the target. Three faults can hit a link:
//!
//! - **cut**: forward a random number of further bytes in each direction, then reset both
//!   sockets (TCP RST, no close frame), so a WebSocket frame is usually cut in the middle;
//! - **stall**: stop forwarding in both directions for a while, then go on or cut;
//! - **refuse**: reset every new connection for a window, as an unreachable server would
//!   (the schedule also cuts its victim as the window opens, so its reconnect is refused).
//!
//! [`Proxy::start_chaos`] runs a schedule that picks a fault and a victim every so often.
//! It is driven by a seeded generator ([`Rng`]) drawing the same numbers in the same order
//! at every step, so a seed always gives the same sequence of faults (when, which kind,
//! how many bytes, how long). The victim is the drawn index into the WebSocket links that
//! are flowing at that moment (any flowing link when there is no WebSocket), ordered by
//! when they opened; that set depends on how the clients behave, so a rerun repeats the
//! schedule, and usually but not surely every victim. [`Proxy::faults`] lists what
//! happened, [`Proxy::stats`] counts it, and [`Proxy::capture_to`] records every frame.
//! [`Proxy::cut_all`] and [`Proxy::refuse_for`] are the manual faults.
//!
//! Dropping the [`Proxy`] stops the listener, the schedule and every link.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use serde_json::json;
use shared::testkit::sim::SimRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// How long after a cut is decided it happens at the latest, when too few bytes flow.
const CUT_DEADLINE: Duration = Duration::from_millis(1_500);
/// The pause between forwarding the last bytes of a cut link and resetting it, so the
/// peer reads the piece of a frame before the reset.
const CUT_LINGER: Duration = Duration::from_millis(20);
/// The largest HTTP head the proxy reads to tell a WebSocket upgrade from plain HTTP.
const MAX_HEAD: usize = 16 * 1024;

/// The chaos schedule's generator: the simulation's SplitMix64 ([`SimRng`]), so the same
/// seed gives the same numbers on every machine and every run, with the draws the proxy
/// needs on top.
#[derive(Clone, Debug)]
pub struct Rng(SimRng);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(SimRng::new(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    /// A number in `range` (both ends included).
    pub fn within(&mut self, range: &RangeInclusive<u64>) -> u64 {
        self.0.range(*range.start(), *range.end())
    }

    /// A duration in `range`, to the millisecond.
    pub fn duration(&mut self, range: &RangeInclusive<Duration>) -> Duration {
        let millis = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.within(&(millis(range.start())..=millis(range.end()))))
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What the chaos schedule does; the defaults are the issue's: a fault every 0.5–3 s.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// Seeds the whole schedule.
    pub seed: u64,
    /// The pause before each fault.
    pub interval: RangeInclusive<Duration>,
    /// Bytes a cut link still forwards in each direction before it is reset.
    pub cut_bytes: RangeInclusive<u64>,
    /// How long a stall lasts.
    pub stall: RangeInclusive<Duration>,
    /// How long new connections are refused.
    pub refuse: RangeInclusive<Duration>,
    /// Percent of faults that are stalls.
    pub stall_percent: u64,
    /// Percent of faults that are refusals (the victim is cut as the window opens).
    pub refuse_percent: u64,
    /// Percent of stalls that end in a cut rather than flowing on.
    pub stall_cut_percent: u64,
}

impl ChaosConfig {
    /// The default schedule with `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            interval: Duration::from_millis(500)..=Duration::from_millis(3_000),
            cut_bytes: 1..=4_096,
            stall: Duration::from_millis(500)..=Duration::from_millis(6_000),
            refuse: Duration::from_millis(1_000)..=Duration::from_millis(4_000),
            stall_percent: 25,
            refuse_percent: 15,
            stall_cut_percent: 35,
        }
    }
}

/// What a link carries, read from its first bytes.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum LinkKind {
    /// A WebSocket upgrade; `resume` when its URL asks to resume a connection.
    WebSocket { resume: bool },
    /// Plain HTTP (REST calls).
    Http,
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WebSocket { resume: false } => f.write_str("ws"),
            Self::WebSocket { resume: true } => f.write_str("ws-resume"),
            Self::Http => f.write_str("http"),
        }
    }
}

/// One fault the schedule (or a manual call) applied.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// Since the proxy started.
    pub at: Duration,
    pub fault: Fault,
    /// The link it hit (`None` when no link was open).
    pub victim: Option<(u64, Option<LinkKind>)>,
}

/// A kind of fault, with its drawn parameters.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Forward `up` more bytes to the server and `down` more to the client, then reset.
    Cut { up: u64, down: u64 },
    /// Forward nothing for `pause`, then flow on, or cut when `then_cut`.
    Stall { pause: Duration, then_cut: bool },
    /// Reset every new connection for `window`, and cut the victim now.
    Refuse { window: Duration },
    /// Every open link reset at once.
    CutAll { links: usize },
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>8.3}s ", self.at.as_secs_f64())?;
        match &self.fault {
            Fault::Cut { up, down } => write!(f, "cut after ↑{up} ↓{down} bytes")?,
            Fault::Stall { pause, then_cut } => write!(
                f,
                "stall {} ms then {}",
                pause.as_millis(),
                if *then_cut { "cut" } else { "flow" }
            )?,
            Fault::Refuse { window } => {
                write!(f, "refuse for {} ms and cut", window.as_millis())?;
            }
            Fault::CutAll { links } => write!(f, "cut all {links} links")?,
        }
        match &self.victim {
            Some((id, Some(kind))) => write!(f, " on link {id} ({kind})"),
            Some((id, None)) => write!(f, " on link {id}"),
            None => f.write_str(" (no link open)"),
        }
    }
}

/// Where in its stream a link was when it was cut.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Position {
    /// Inside a WebSocket frame (its header or its payload).
    MidFrame,
    /// Between two WebSocket frames.
    BetweenFrames,
    /// Before the HTTP head ended (the upgrade or a REST request).
    Handshake,
    /// In a plain HTTP exchange.
    Http,
    /// Reset at once, wherever it was ([`Proxy::cut_all`]).
    Abort,
}

/// The proxy's counters, as read at one moment.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct Stats {
    /// Connections accepted and relayed.
    pub links: u64,
    /// Of those, WebSocket upgrades, and those asking to resume.
    pub websockets: u64,
    pub resume_requests: u64,
    /// Plain HTTP connections.
    pub http: u64,
    /// Connections reset on arrival, and the refusal windows opened.
    pub refused: u64,
    pub refusal_windows: u64,
    /// Links cut, by where the cut fell.
    pub cuts: u64,
    pub cuts_mid_frame: u64,
    pub cuts_between_frames: u64,
    pub cuts_in_handshake: u64,
    pub cuts_http: u64,
    pub cuts_abort: u64,
    /// Stalls begun, and those that ended in a cut.
    pub stalls: u64,
    pub stalls_then_cut: u64,
    /// Faults drawn by the schedule, and those that found no link to hit.
    pub faults: u64,
    pub faults_without_victim: u64,
    /// Bytes forwarded to the server and to the clients.
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "faults {} ({} without a victim); cuts {} (mid-frame {}, between frames {}, \
             handshake {}, http {}, abort {}); stalls {} ({} then cut); refused {} in {} \
             windows; links {} (ws {}, resume requests {}, http {}); ↑{} KB ↓{} KB",
            self.faults,
            self.faults_without_victim,
            self.cuts,
            self.cuts_mid_frame,
            self.cuts_between_frames,
            self.cuts_in_handshake,
            self.cuts_http,
            self.cuts_abort,
            self.stalls,
            self.stalls_then_cut,
            self.refused,
            self.refusal_windows,
            self.links,
            self.websockets,
            self.resume_requests,
            self.http,
            self.bytes_up / 1024,
            self.bytes_down / 1024,
        )
    }
}

/// A running proxy; everything stops when it is dropped.
pub struct Proxy {
    port: u16,
    inner: Arc<Inner>,
    accept: JoinHandle<()>,
    chaos: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let inner = Arc::new(Inner {
            target,
            started: Instant::now(),
            state: Mutex::new(State::default()),
            tasks: Mutex::new(JoinSet::new()),
            counters: Counters::default(),
            capture: Mutex::new(None),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&inner)));
        Ok(Self {
            port,
            inner,
            accept,
            chaos: Mutex::new(None),
        })
    }

    /// Starts in front of a server given as `http://127.0.0.1:PORT` (as
    /// [`crate::sockudo::Sockudo::endpoint`] gives it).
    pub async fn in_front_of(endpoint: &str) -> io::Result<Self> {
        let address = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse::<SocketAddr>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{endpoint}: {e}")))?;
        Self::start(address).await
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint clients use instead of the server's (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the fault schedule (replacing one already running).
    pub fn start_chaos(&self, config: ChaosConfig) {
        let task = tokio::spawn(chaos_loop(Arc::clone(&self.inner), config));
        if let Some(previous) = lock(&self.chaos).replace(task) {
            previous.abort();
        }
    }

    /// Stops the schedule, lets stalled links flow again and ends any refusal window. Cuts
    /// already decided still happen (within [`CUT_DEADLINE`]).
    pub fn stop_chaos(&self) {
        if let Some(task) = lock(&self.chaos).take() {
            task.abort();
        }
        let mut state = lock(&self.inner.state);
        state.refuse_until = None;
        for link in state.links.values() {
            link.control.send_if_modified(|control| match *control {
                Control::Stall { then: None, .. } => {
                    *control = Control::Flow;
                    true
                }
                Control::Stall {
                    then: Some(cut), ..
                } => {
                    *control = Control::Cut(cut);
                    true
                }
                _ => false,
            });
        }
    }

    /// Resets every open link now; returns how many.
    pub fn cut_all(&self) -> usize {
        let at = self.inner.started.elapsed();
        let mut state = lock(&self.inner.state);
        let mut count = 0;
        for link in state.links.values() {
            if link.claim_cut() {
                link.control.send_replace(Control::Abort);
                self.inner.counters.count_cut(Position::Abort);
                count += 1;
            }
        }
        let record = FaultRecord {
            at,
            fault: Fault::CutAll { links: count },
            victim: None,
        };
        state.faults.push(record.clone());
        drop(state);
        self.inner.record(json!({"fault": record.to_string()}));
        count
    }

    /// Resets every connection that arrives during the next `window`.
    pub fn refuse_for(&self, window: Duration) {
        self.inner.refuse(Instant::now() + window);
    }

    /// How many links are open now.
    pub fn open_links(&self) -> usize {
        lock(&self.inner.state).links.len()
    }

    /// From now on, writes to `path` (one JSON object a line) every link opened, every
    /// whole WebSocket frame each way (unmasked), every fault and every cut, stamped with
    /// milliseconds since the proxy started. For finding out what happened in a failed run.
    pub fn capture_to(&self, path: &Path) -> io::Result<()> {
        let file = File::create(path)?;
        *lock(&self.inner.capture) = Some(BufWriter::new(file));
        Ok(())
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.inner.counters.read()
    }

    /// Every fault applied so far, in order.
    pub fn faults(&self) -> Vec<FaultRecord> {
        lock(&self.inner.state).faults.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some(task) = lock(&self.chaos).take() {
            task.abort();
        }
        lock(&self.inner.tasks).abort_all();
        lock(&self.inner.state).links.clear();
        if let Some(mut out) = lock(&self.inner.capture).take() {
            let _ = out.flush();
        }
    }
}

struct Inner {
    target: SocketAddr,
    started: Instant,
    state: Mutex<State>,
    /// Every link's task, aborted when the proxy is dropped.
    tasks: Mutex<JoinSet<()>>,
    counters: Counters,
    /// Where to write what happens, one JSON object a line, when capturing.
    capture: Mutex<Option<BufWriter<File>>>,
}

#[derive(Default)]
struct State {
    next_link: u64,
    /// Open links by id, so the schedule's index picks the same position every run.
    links: BTreeMap<u64, Arc<Link>>,
    refuse_until: Option<Instant>,
    faults: Vec<FaultRecord>,
}

impl Inner {
    fn refuse(&self, until: Instant) {
        self.counters
            .refusal_windows
            .fetch_add(1, Ordering::Relaxed);
        let mut state = lock(&self.state);
        state.refuse_until = Some(state.refuse_until.map_or(until, |u| u.max(until)));
    }

    fn capturing(&self) -> bool {
        lock(&self.capture).is_some()
    }

    /// Adds one entry, stamped with the time since the start, to the capture if any.
    fn record(&self, mut entry: serde_json::Value) {
        let mut capture = lock(&self.capture);
        if let Some(out) = capture.as_mut() {
            entry["ms"] = json!(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(0));
            let _ = writeln!(out, "{entry}");
        }
    }

    fn refusing(&self) -> bool {
        lock(&self.state)
            .refuse_until
            .is_some_and(|until| Instant::now() < until)
    }
}

/// One relayed connection, as the schedule sees it.
struct Link {
    id: u64,
    kind: OnceLock<LinkKind>,
    control: watch::Sender<Control>,
    /// Set by whoever cuts the link first, so a cut is counted once.
    cut: AtomicBool,
}

impl Link {
    fn claim_cut(&self) -> bool {
        !self.cut.swap(true, Ordering::Relaxed)
    }
}

/// What a link's two pumps are told to do.
#[derive(Clone, Copy, Debug)]
enum Control {
    Flow,
    Stall {
        until: Instant,
        then: Option<CutPlan>,
    },
    Cut(CutPlan),
    Abort,
}

impl Control {
    /// The control as it stands at `now`: a stall that is over becomes what follows it.
    fn settled(self, now: Instant) -> Self {
        match self {
            Self::Stall { until, then } if until <= now => then.map_or(Self::Flow, Self::Cut),
            other => other,
        }
    }
}

/// A decided cut: the bytes each direction may still forward, and when it happens anyway.
#[derive(Clone, Copy, Debug)]
struct CutPlan {
    up: u64,
    down: u64,
    deadline: Instant,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

#[derive(Default)]
struct Counters {
    links: AtomicU64,
    websockets: AtomicU64,
    resume_requests: AtomicU64,
    http: AtomicU64,
    refused: AtomicU64,
    refusal_windows: AtomicU64,
    cuts: AtomicU64,
    cuts_mid_frame: AtomicU64,
    cuts_between_frames: AtomicU64,
    cuts_in_handshake: AtomicU64,
    cuts_http: AtomicU64,
    cuts_abort: AtomicU64,
    stalls: AtomicU64,
    stalls_then_cut: AtomicU64,
    faults: AtomicU64,
    faults_without_victim: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl Counters {
    fn count_cut(&self, position: Position) {
        self.cuts.fetch_add(1, Ordering::Relaxed);
        let counter = match position {
            Position::MidFrame => &self.cuts_mid_frame,
            Position::BetweenFrames => &self.cuts_between_frames,
            Position::Handshake => &self.cuts_in_handshake,
            Position::Http => &self.cuts_http,
            Position::Abort => &self.cuts_abort,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> Stats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            links: get(&self.links),
            websockets: get(&self.websockets),
            resume_requests: get(&self.resume_requests),
            http: get(&self.http),
            refused: get(&self.refused),
            refusal_windows: get(&self.refusal_windows),
            cuts: get(&self.cuts),
            cuts_mid_frame: get(&self.cuts_mid_frame),
            cuts_between_frames: get(&self.cuts_between_frames),
            cuts_in_handshake: get(&self.cuts_in_handshake),
            cuts_http: get(&self.cuts_http),
            cuts_abort: get(&self.cuts_abort),
            stalls: get(&self.stalls),
            stalls_then_cut: get(&self.stalls_then_cut),
            faults: get(&self.faults),
            faults_without_victim: get(&self.faults_without_victim),
            bytes_up: get(&self.bytes_up),
            bytes_down: get(&self.bytes_down),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of descriptors or similar: try again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if inner.refusing() {
            inner.counters.refused.fetch_add(1, Ordering::Relaxed);
            inner.record(json!({"refused": true}));
            reset(&client);
            continue;
        }
        let task_inner = Arc::clone(&inner);
        let mut tasks = lock(&inner.tasks);
        // Reap finished links so the set does not grow for the whole run.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(relay(client, task_inner));
    }
}

/// Relays one link until both directions end, then forgets it.
async fn relay(client: TcpStream, inner: Arc<Inner>) {
    let Ok(server) = TcpStream::connect(inner.target).await else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    inner.counters.links.fetch_add(1, Ordering::Relaxed);
    let (control, receiver) = watch::channel(Control::Flow);
    let link = {
        let mut state = lock(&inner.state);
        let id = state.next_link;
        state.next_link += 1;
        let link = Arc::new(Link {
            id,
            kind: OnceLock::new(),
            control,
            cut: AtomicBool::new(false),
        });
        state.links.insert(id, Arc::clone(&link));
        link
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(
            Direction::Up,
            client_read,
            server_write,
            receiver.clone(),
            &link,
            &inner
        ),
        pump(
            Direction::Down,
            server_read,
            client_write,
            receiver,
            &link,
            &inner
        ),
    );
    lock(&inner.state).links.remove(&link.id);
}

/// How one direction of a link ended.
enum End {
    /// The sender closed its side cleanly: pass the FIN on.
    Eof,
    /// A socket failed, or the other direction asked to stop: reset.
    Abort,
    /// This direction carried out a cut at this position.
    Cut(Position),
}

/// Forwards one direction of a link, obeying its control.
async fn pump(
    direction: Direction,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut control: watch::Receiver<Control>,
    link: &Link,
    inner: &Inner,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    let mut tracker = if inner.capturing() {
        Tracker::capturing()
    } else {
        Tracker::default()
    };
    // Bytes still to forward before the cut, once one is decided.
    let mut budget: Option<u64> = None;
    let bytes = match direction {
        Direction::Up => &inner.counters.bytes_up,
        Direction::Down => &inner.counters.bytes_down,
    };
    let end = loop {
        let now = Instant::now();
        let current = *control.borrow_and_update();
        let plan = match current {
            Control::Abort => break End::Abort,
            Control::Stall { until, .. } if now < until => {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    changed = control.changed() => if changed.is_err() { break End::Abort },
                }
                continue;
            }
            other => match other.settled(now) {
                Control::Cut(plan) => Some(plan),
                _ => None,
            },
        };
        if let Some(plan) = plan {
            budget.get_or_insert(match direction {
                Direction::Up => plan.up,
                Direction::Down => plan.down,
            });
        }
        let deadline = plan.map(|p| p.deadline);
        tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) => break End::Eof,
                Ok(read) => {
                    let (count, cut_here) = spend(&mut budget, read);
                    let chunk = buffer.get(..count).unwrap_or_default();
                    bytes.fetch_add(u64::try_from(count).unwrap_or(0), Ordering::Relaxed);
                    observe(direction, chunk, &mut tracker, link, inner);
                    if !write_unless_aborted(&mut to, chunk, &mut control).await {
                        break End::Abort;
                    }
                    if cut_here {
                        break End::Cut(tracker.position());
                    }
                }
                Err(_) => break End::Abort,
            },
            changed = control.changed() => if changed.is_err() { break End::Abort },
            () = sleep_until(deadline) => break End::Cut(tracker.position()),
        }
    };
    match end {
        End::Eof => {
            let _ = to.shutdown().await;
        }
        End::Abort | End::Cut(_) => {
            if let End::Cut(position) = end {
                if link.claim_cut() {
                    inner.counters.count_cut(position);
                    inner.record(json!({"link": link.id, "cut": format!("{position:?}"),
                                        "by": format!("{direction:?}")}));
                }
                let _ = to.flush().await;
                tokio::time::sleep(CUT_LINGER).await;
            }
            // Zero linger: closing sends a reset, and no FIN goes first.
            let _ = from.as_ref().set_zero_linger();
            let _ = to.as_ref().set_zero_linger();
            link.control.send_replace(Control::Abort);
            to.forget();
        }
    }
}

/// Forwards at most what the cut budget allows of `read` bytes: how many, and whether the
/// cut falls here.
fn spend(budget: &mut Option<u64>, read: usize) -> (usize, bool) {
    let Some(left) = budget.as_mut() else {
        return (read, false);
    };
    let wide = u64::try_from(read).unwrap_or(u64::MAX);
    if wide >= *left {
        let count = usize::try_from(*left).unwrap_or(read);
        *left = 0;
        (count, true)
    } else {
        *left -= wide;
        (read, false)
    }
}

/// Follows the bytes a link forwards: learns the link's kind from its first bytes, and
/// records whole frames when capturing.
fn observe(direction: Direction, chunk: &[u8], tracker: &mut Tracker, link: &Link, inner: &Inner) {
    if let Some(kind) = tracker.feed(chunk) {
        if direction == Direction::Up && link.kind.set(kind).is_ok() {
            let counters = &inner.counters;
            let counter = match kind {
                LinkKind::WebSocket { resume } => {
                    if resume {
                        counters.resume_requests.fetch_add(1, Ordering::Relaxed);
                    }
                    &counters.websockets
                }
                LinkKind::Http => &counters.http,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let line = tracker.first_line.as_deref().map(redact);
            inner.record(json!({"link": link.id, "open": line, "kind": kind.to_string()}));
        }
    }
    if tracker.capture {
        let dir = match direction {
            Direction::Up => "up",
            Direction::Down => "down",
        };
        for (opcode, payload) in tracker.take_frames() {
            let text = (opcode == 1 || opcode == 8)
                .then(|| String::from_utf8_lossy(&payload).into_owned());
            inner.record(json!({"link": link.id, "dir": dir, "op": opcode, "text": text}));
        }
    }
}

/// A request line without the key's secret.
fn redact(line: &str) -> String {
    match line.split_once("key=") {
        Some((before, after)) => {
            let rest = after.find('&').map_or("", |at| &after[at..]);
            format!("{before}key=***{rest}")
        }
        None => line.to_owned(),
    }
}

/// Writes `chunk` to the peer; gives up when the link is aborted meanwhile (a peer that
/// stopped reading must not keep the link, and so the other peer, open). False when the
/// bytes could not all be written.
async fn write_unless_aborted(
    to: &mut OwnedWriteHalf,
    chunk: &[u8],
    control: &mut watch::Receiver<Control>,
) -> bool {
    let write = to.write_all(chunk);
    tokio::pin!(write);
    loop {
        tokio::select! {
            written = &mut write => return written.is_ok(),
            changed = control.changed() => {
                if changed.is_err() || matches!(*control.borrow(), Control::Abort) {
                    return false;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resets a socket: closing it with zero linger sends a TCP RST.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Follows one direction's bytes well enough to tell where a cut falls: the HTTP head,
/// then WebSocket frame headers and payloads (or nothing more for plain HTTP). When told
/// to, it also keeps each whole frame's payload (unmasked) for a capture.
#[derive(Debug, Default)]
struct Tracker {
    state: Track,
    /// Keep whole frames in `frames`.
    capture: bool,
    /// The HTTP head's first line, once the head has ended.
    first_line: Option<String>,
    /// Frames completed since the last [`Tracker::take_frames`]: opcode and payload.
    frames: Vec<(u8, Vec<u8>)>,
}

#[derive(Debug)]
enum Track {
    Head(Vec<u8>),
    FrameHeader {
        bytes: [u8; 14],
        have: usize,
    },
    Payload {
        left: u64,
        /// The frame being captured: opcode, mask key and payload so far.
        frame: Option<(u8, Option<[u8; 4]>, Vec<u8>)>,
    },
    Opaque,
}

impl Default for Track {
    fn default() -> Self {
        Self::Head(Vec::new())
    }
}

const NEXT_FRAME: Track = Track::FrameHeader {
    bytes: [0; 14],
    have: 0,
};

impl Tracker {
    /// A tracker that also keeps whole frames.
    fn capturing() -> Self {
        Self {
            capture: true,
            ..Self::default()
        }
    }

    /// Takes the next bytes; returns the link's kind when the HTTP head has just ended.
    fn feed(&mut self, mut chunk: &[u8]) -> Option<LinkKind> {
        let mut found = None;
        while let Some((&byte, rest)) = chunk.split_first() {
            match &mut self.state {
                Track::Head(head) => {
                    head.push(byte);
                    chunk = rest;
                    if head.ends_with(b"\r\n\r\n") {
                        let kind = classify(head);
                        let first = String::from_utf8_lossy(head);
                        self.first_line = first.lines().next().map(str::to_owned);
                        self.state = match kind {
                            LinkKind::WebSocket { .. } => NEXT_FRAME,
                            LinkKind::Http => Track::Opaque,
                        };
                        found = Some(kind);
                    } else if head.len() > MAX_HEAD {
                        self.state = Track::Opaque;
                        found = Some(LinkKind::Http);
                    }
                }
                Track::FrameHeader { bytes, have } => {
                    if let Some(slot) = bytes.get_mut(*have) {
                        *slot = byte;
                    }
                    *have += 1;
                    chunk = rest;
                    if let Some((payload, mask)) = frame_payload(bytes, *have) {
                        let opcode = bytes[0] & 0x0f;
                        if payload == 0 {
                            if self.capture {
                                self.frames.push((opcode, Vec::new()));
                            }
                            self.state = NEXT_FRAME;
                        } else {
                            let frame = self.capture.then(|| (opcode, mask, Vec::new()));
                            self.state = Track::Payload {
                                left: payload,
                                frame,
                            };
                        }
                    }
                }
                Track::Payload { left, frame } => {
                    let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                    let take = usize::try_from(len.min(*left)).unwrap_or(chunk.len());
                    let (body, after) = chunk.split_at(take.min(chunk.len()));
                    chunk = after;
                    *left -= u64::try_from(body.len()).unwrap_or(0);
                    if let Some((_, mask, kept)) = frame {
                        for &b in body {
                            let key = mask.map_or(0, |m| m[kept.len() % 4]);
                            kept.push(b ^ key);
                        }
                    }
                    if *left == 0 {
                        if let Some((opcode, _, kept)) = frame.take() {
                            self.frames.push((opcode, kept));
                        }
                        self.state = NEXT_FRAME;
                    }
                }
                Track::Opaque => break,
            }
        }
        found
    }

    fn take_frames(&mut self) -> Vec<(u8, Vec<u8>)> {
        std::mem::take(&mut self.frames)
    }

    fn position(&self) -> Position {
        match self.state {
            Track::Head(_) => Position::Handshake,
            Track::FrameHeader { have: 0, .. } => Position::BetweenFrames,
            Track::FrameHeader { .. } | Track::Payload { .. } => Position::MidFrame,
            Track::Opaque => Position::Http,
        }
    }
}

/// Tells a WebSocket upgrade (request or `101` response) from plain HTTP.
fn classify(head: &[u8]) -> LinkKind {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let first_line = text.lines().next().unwrap_or_default();
    if text.contains("\nupgrade: websocket") || first_line.starts_with("http/1.1 101") {
        LinkKind::WebSocket {
            resume: first_line.contains("resume="),
        }
    } else {
        LinkKind::Http
    }
}

/// The payload length and mask key once a frame header of `have` bytes is complete
/// (RFC 6455 §5.2).
fn frame_payload(bytes: &[u8; 14], have: usize) -> Option<(u64, Option<[u8; 4]>)> {
    let second = *bytes.get(1)?;
    if have < 2 {
        return None;
    }
    let short = u64::from(second & 0x7f);
    let extended = match short {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let masked = second & 0x80 != 0;
    let header = 2 + extended + if masked { 4 } else { 0 };
    if have < header {
        return None;
    }
    let length = match extended {
        0 => short,
        _ => bytes
            .get(2..2 + extended)?
            .iter()
            .fold(0_u64, |acc, b| (acc << 8) | u64::from(*b)),
    };
    let mask = if masked {
        let key = bytes.get(2 + extended..header)?;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    Some((length, mask))
}

/// The fault schedule: one fault every drawn interval, until aborted.
async fn chaos_loop(inner: Arc<Inner>, config: ChaosConfig) {
    let mut rng = Rng::new(config.seed);
    loop {
        // Every step draws the same numbers in the same order, whatever it finds.
        let pause = rng.duration(&config.interval);
        let roll = rng.below(100);
        let pick = rng.next_u64();
        let up = rng.within(&config.cut_bytes);
        let down = rng.within(&config.cut_bytes);
        let stall = rng.duration(&config.stall);
        let then_cut = rng.chance(config.stall_cut_percent);
        let window = rng.duration(&config.refuse);
        tokio::time::sleep(pause).await;

        let now = Instant::now();
        let fault = if roll < config.stall_percent {
            Fault::Stall {
                pause: stall,
                then_cut,
            }
        } else if roll < config.stall_percent + config.refuse_percent {
            Fault::Refuse { window }
        } else {
            Fault::Cut { up, down }
        };
        inner.counters.faults.fetch_add(1, Ordering::Relaxed);
        let victim = choose_victim(&inner, pick, now);
        let cut = |from: Instant| CutPlan {
            up,
            down,
            deadline: from + CUT_DEADLINE,
        };
        if let Fault::Refuse { window } = &fault {
            // Long enough that the victim's immediate reconnect is refused too.
            inner.refuse(now + CUT_DEADLINE + *window);
        }
        if let Some(link) = &victim {
            let control = match &fault {
                Fault::Stall { pause, then_cut } => {
                    inner.counters.stalls.fetch_add(1, Ordering::Relaxed);
                    if *then_cut {
                        inner
                            .counters
                            .stalls_then_cut
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Control::Stall {
                        until: now + *pause,
                        then: then_cut.then(|| cut(now + *pause)),
                    }
                }
                Fault::Cut { .. } | Fault::Refuse { .. } | Fault::CutAll { .. } => {
                    Control::Cut(cut(now))
                }
            };
            link.control.send_replace(control);
        } else {
            inner
                .counters
                .faults_without_victim
                .fetch_add(1, Ordering::Relaxed);
        }
        let record = FaultRecord {
            at: now.duration_since(inner.started),
            fault,
            victim: victim.map(|link| (link.id, link.kind.get().copied())),
        };
        inner.record(json!({"fault": record.to_string()}));
        lock(&inner.state).faults.push(record);
    }
}

/// The link at drawn position `pick` among the WebSocket links that are flowing (or among
/// all flowing links when no WebSocket is open); `None` when none is.
fn choose_victim(inner: &Inner, pick: u64, now: Instant) -> Option<Arc<Link>> {
    let state = lock(&inner.state);
    let flowing: Vec<&Arc<Link>> = state
        .links
        .values()
        .filter(|link| matches!(link.control.borrow().settled(now), Control::Flow))
        .collect();
    let websockets: Vec<&Arc<Link>> = flowing
        .iter()
        .copied()
        .filter(|link| matches!(link.kind.get(), Some(LinkKind::WebSocket { .. })))
        .collect();
    let pool = if websockets.is_empty() {
        flowing
    } else {
        websockets
    };
    let len = u64::try_from(pool.len()).ok()?;
    if len == 0 {
        return None;
    }
    let index = usize::try_from(pick % len).ok()?;
    pool.get(index).map(|link| Arc::clone(link))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic_and_in_range() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let first: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let second: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(first, second);
        assert_ne!(Rng::new(43).next_u64(), first[0]);
        let mut rng = Rng::new(7);
        for _ in 0..1_000 {
            assert!((5..=9).contains(&rng.within(&(5..=9))));
            let d = rng.duration(&(Duration::from_millis(500)..=Duration::from_millis(3_000)));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(3_000));
        }
    }

    #[test]
    fn the_tracker_knows_where_a_frame_ends() {
        let mut tracker = Tracker::default();
        let head = b"GET /?key=k&resume=abc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(tracker.position(), Position::Handshake);
        assert_eq!(
            tracker.feed(head),
            Some(LinkKind::WebSocket { resume: true })
        );
        assert_eq!(tracker.position(), Position::BetweenFrames);
        // A masked text frame of 5 bytes: 2 header bytes, 4 mask bytes, 5 payload bytes.
        let frame = [0x81, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o'];
        assert_eq!(tracker.feed(&frame[..3]), None);
        assert_eq!(tracker.position(), Position::MidFrame);
        tracker.feed(&frame[3..8]);
        assert_eq!(tracker.position(), Position::MidFrame);
        tracker.feed(&frame[8..]);
        assert_eq!(tracker.position(), Position::BetweenFrames);
        // An unmasked frame with a 16-bit length (300 bytes).
        let mut long = vec![0x81, 126, 0x01, 0x2c];
        long.extend(std::iter::repeat_n(b'x', 300));
        tracker.feed(&long[..200]);
        assert_eq!(tracker.position(), Position::MidFrame);
        tracker.feed(&long[200..]);
        assert_eq!(tracker.position(), Position::BetweenFrames);

        let mut rest = Tracker::default();
        assert_eq!(
            rest.feed(b"GET /channels/x/messages HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(LinkKind::Http)
        );
        assert_eq!(rest.position(), Position::Http);
        // Capturing unmasks a client's frame.
        let mut capturing = Tracker::capturing();
        capturing.feed(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        let key = [7_u8, 1, 9, 200];
        let mut masked = vec![0x81, 0x80 | 5];
        masked.extend(key);
        masked.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        capturing.feed(&masked[..6]);
        capturing.feed(&masked[6..]);
        assert_eq!(capturing.take_frames(), vec![(1, b"hello".to_vec())]);

        let mut reply = Tracker::default();
        assert_eq!(
            reply.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02h"),
            Some(LinkKind::WebSocket { resume: false })
        );
        assert_eq!(reply.position(), Position::MidFrame);
    }

    #[tokio::test]
    async fn the_proxy_relays_cuts_and_refuses() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        // An echo server.
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = server.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0_u8; 1024];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(target).await.unwrap();
        let address = format!("127.0.0.1:{}", proxy.port());
        let mut client = TcpStream::connect(&address).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut reply = [0_u8; 4];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"ping");
        assert_eq!(proxy.open_links(), 1);

        assert_eq!(proxy.cut_all(), 1);
        let mut buf = [0_u8; 16];
        let after = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await;
        assert!(
            matches!(after, Ok(Err(_)) | Ok(Ok(0))),
            "the cut link still works: {after:?}"
        );

        proxy.refuse_for(Duration::from_secs(5));
        let mut refused = TcpStream::connect(&address).await.unwrap();
        let _ = refused.write_all(b"ping").await;
        let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Err(_)) | Ok(Ok(0))),
            "a refused connection was relayed: {read:?}"
        );
        let stats = proxy.stats();
        assert_eq!((stats.links, stats.refused, stats.cuts), (1, 1, 1));
    }
}
