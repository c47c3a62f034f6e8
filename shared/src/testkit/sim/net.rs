//! The simulated network: one link per transport a client opens, frames in flight in each
//! direction in order (as over TCP), and cuts that lose what is still in flight.

use std::collections::VecDeque;

use crate::protocol::ProtocolMessage;
use crate::time::Instant;

use super::rng::SimRng;

/// One transport (WebSocket) between a client and the service.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub(super) struct LinkId(pub(super) usize);

/// What travels from a client to the service.
// Frames move once through a short queue; boxing them would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub(super) enum Up {
    /// The WebSocket handshake, with the connect URL.
    Open(String),
    Frame(ProtocolMessage),
    /// The socket closed (by the client, or the service noticed a cut).
    Closed,
}

/// What travels from the service to a client.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub(super) enum Down {
    Frame(ProtocolMessage),
    /// The socket closed (by the service, or the client noticed a cut).
    Closed,
}

#[derive(Debug)]
struct Link {
    client: usize,
    up: VecDeque<(Instant, Up)>,
    down: VecDeque<(Instant, Down)>,
    latency_up: u64,
    latency_down: u64,
    /// Cut or closed: nothing new is carried.
    dead: bool,
}

/// Every link ever opened, by [`LinkId`].
#[derive(Debug, Default)]
pub(super) struct Net {
    links: Vec<Link>,
}

/// What a cut did, for the trace.
#[derive(Debug)]
pub(super) struct Cut {
    pub(super) kept_up: usize,
    pub(super) lost_up: usize,
    pub(super) kept_down: usize,
    pub(super) lost_down: usize,
}

impl Net {
    /// Opens a link for `client`; the handshake reaches the service after the latency.
    pub(super) fn open(
        &mut self,
        rng: &mut SimRng,
        now: Instant,
        client: usize,
        url: String,
    ) -> LinkId {
        let latency_up = rng.range(1, 25);
        let latency_down = rng.range(1, 25);
        let mut link = Link {
            client,
            up: VecDeque::new(),
            down: VecDeque::new(),
            latency_up,
            latency_down,
            dead: false,
        };
        link.up.push_back((now + ms(latency_up), Up::Open(url)));
        self.links.push(link);
        LinkId(self.links.len() - 1)
    }

    /// The client that opened `link`.
    pub(super) fn client(&self, link: LinkId) -> Option<usize> {
        self.links.get(link.0).map(|l| l.client)
    }

    /// Whether `link` still carries frames.
    pub(super) fn is_live(&self, link: LinkId) -> bool {
        self.links.get(link.0).is_some_and(|l| !l.dead)
    }

    /// Sends towards the service; lost if the link is dead.
    pub(super) fn send_up(&mut self, now: Instant, link: LinkId, item: Up) {
        if let Some(l) = self.links.get_mut(link.0).filter(|l| !l.dead) {
            let at = later(l.up.back().map(|(t, _)| *t), now + ms(l.latency_up));
            l.up.push_back((at, item));
        }
    }

    /// Sends towards the client; lost if the link is dead.
    pub(super) fn send_down(&mut self, now: Instant, link: LinkId, item: Down) {
        if let Some(l) = self.links.get_mut(link.0).filter(|l| !l.dead) {
            let at = later(l.down.back().map(|(t, _)| *t), now + ms(l.latency_down));
            l.down.push_back((at, item));
        }
    }

    /// The client closes its socket: the service learns it after the latency; nothing more
    /// reaches the client.
    pub(super) fn close_by_client(&mut self, now: Instant, link: LinkId) {
        if let Some(l) = self.links.get_mut(link.0).filter(|l| !l.dead) {
            let at = later(l.up.back().map(|(t, _)| *t), now + ms(l.latency_up));
            l.up.push_back((at, Up::Closed));
            l.down.clear();
            l.dead = true;
        }
    }

    /// The service closes the socket after what it already sent.
    pub(super) fn close_by_service(&mut self, now: Instant, link: LinkId) {
        if let Some(l) = self.links.get_mut(link.0).filter(|l| !l.dead) {
            let at = later(l.down.back().map(|(t, _)| *t), now + ms(l.latency_down));
            l.down.push_back((at, Down::Closed));
            l.up.clear();
            l.dead = true;
        }
    }

    /// Cuts `link`: in each direction a random prefix of the frames in flight still arrives
    /// (none, some: inside a batch, or all), the rest is lost. The service notices soon after;
    /// the client too unless the cut is `silent`.
    pub(super) fn cut(
        &mut self,
        rng: &mut SimRng,
        now: Instant,
        link: LinkId,
        silent: bool,
    ) -> Option<Cut> {
        let l = self.links.get_mut(link.0).filter(|l| !l.dead)?;
        l.dead = true;
        let in_up = l.up.len();
        let in_down = l.down.len();
        let kept_up = rng.index(in_up + 1);
        let kept_down = rng.index(in_down + 1);
        l.up.truncate(kept_up);
        l.down.truncate(kept_down);
        let notice_up = later(l.up.back().map(|(t, _)| *t), now + ms(rng.range(1, 40)));
        l.up.push_back((notice_up, Up::Closed));
        if !silent {
            let notice_down = later(l.down.back().map(|(t, _)| *t), now + ms(rng.range(1, 40)));
            l.down.push_back((notice_down, Down::Closed));
        }
        Some(Cut {
            kept_up,
            lost_up: in_up - kept_up,
            kept_down,
            lost_down: in_down - kept_down,
        })
    }

    /// The earliest instant anything arrives anywhere.
    pub(super) fn next_arrival(&self) -> Option<Instant> {
        self.links
            .iter()
            .flat_map(|l| {
                [
                    l.up.front().map(|(t, _)| *t),
                    l.down.front().map(|(t, _)| *t),
                ]
            })
            .flatten()
            .min()
    }

    /// Whether anything is in flight on any link.
    pub(super) fn is_idle(&self) -> bool {
        self.links
            .iter()
            .all(|l| l.up.is_empty() && l.down.is_empty())
    }

    /// The next item due at `now` towards the service, lowest link first.
    pub(super) fn pop_up(&mut self, now: Instant) -> Option<(LinkId, Up)> {
        for (index, l) in self.links.iter_mut().enumerate() {
            if l.up.front().is_some_and(|(t, _)| *t <= now) {
                return l.up.pop_front().map(|(_, item)| (LinkId(index), item));
            }
        }
        None
    }

    /// The next item due at `now` towards a client, lowest link first.
    pub(super) fn pop_down(&mut self, now: Instant) -> Option<(LinkId, Down)> {
        for (index, l) in self.links.iter_mut().enumerate() {
            if l.down.front().is_some_and(|(t, _)| *t <= now) {
                return l.down.pop_front().map(|(_, item)| (LinkId(index), item));
            }
        }
        None
    }
}

/// `at`, but never before `floor` (frames on one link arrive in order).
fn later(floor: Option<Instant>, at: Instant) -> Instant {
    floor.map_or(at, |f| f.max(at))
}

fn ms(n: u64) -> std::time::Duration {
    std::time::Duration::from_millis(n)
}
