//! A deterministic simulation of the whole pipeline, FoundationDB/TigerBeetle style: model
//! stream → relays → publisher connection → a simulated Ably service → viewer connections →
//! assemblers, on one simulated clock, with faults drawn from one seed.
//!
//! # What is modelled
//!
//! - **The model** ([`model`]): each answer is a Responses stream built in code in the shape
//!   of `fixtures/openai/`: `response.created`, `output_item.added`, `content_part.added`,
//!   many `output_text.delta` (ASCII, accents, CJK, emoji, newlines; bursts and pauses),
//!   `output_text.done`, `content_part.done`, `output_item.done`, `response.completed`.
//! - **The publisher** ([`publisher`]): the daemon's [`Session`](crate::session::Session)
//!   over one [`Connection`](crate::connection::Connection) with key auth and `echo=false`,
//!   its channel attached live-only as the daemon attaches it, driven as
//!   `publisher/src/answer/session.rs` drives them: publishes, outcomes, connection state,
//!   blocked channels and history reads handed between the two.
//! - **The network** ([`net`]): one link per transport, frames in order per direction with a
//!   per-link latency; on every fourth seed frames go through the JSON codec.
//! - **The service** ([`service`]): a simulated Ably for one channel. It answers CONNECTED
//!   with `connectionDetails`, resumes (same connectionId, new key) or refuses them (new
//!   connectionId, 80008), ATTACHED with channelSerial and flags (RESUMED, HAS_BACKLOG),
//!   ACK with `res` serials or NACK, MESSAGE deliveries of creates, append fragments and
//!   updates with `serial`, `version.serial`, `extras` (verbatim) and channelSerial; rewind
//!   (latest aggregates like Ably, or per version like Sockudo); the first append an
//!   attachment gets for a message it never had arrives as the aggregate; re-ACKs of a
//!   msgSerial already processed; idempotent publishing by message id; history (the latest
//!   version of every message); heartbeats; token expiry.
//! - **The viewers** ([`viewer`]): token-auth connections attached with rewind 100, fed into
//!   [`Assembler`](crate::assembler::Assembler)s. Like the page (`web/src/app.rs`), a viewer
//!   reads history on its first attach and again when told continuity was lost (a re-attach
//!   with `resumed == false`), and fetches a new token when the connection asks for one.
//!
//! # Faults ([`Faults`], intensities per seed in [`plan`])
//!
//! Transport cuts before, inside and after a batch of frames in either direction (a random
//! prefix of what is in flight still arrives; some cuts are silent and left to the idle
//! timer); resumes refused with 80008; after a resumed re-attach, the replay of missed
//! messages as append fragments *after* live deliveries that slipped in behind the ATTACHED
//! (Sockudo's order); resumed re-attaches that cannot be continued (ATTACHED without
//! RESUMED); ACKs held and released out of order; NACK 50001 of appends (the data is not
//! applied) and of at most two updates per answer; appends applied but not ACKed, so a
//! later ACK skips their msgSerial (or, when none follows, ACKed late: a live connection
//! answers every frame, RTN7a); conflation of consecutive appends to one subscriber
//! (data concatenated, version, id and extras of the latest); late joins with rewind;
//! history reads racing live appends; viewer tokens expiring (DISCONNECTED 40142 while
//! connected, ERROR 40142 on connect); ATTACHes left unanswered, so that a channel is
//! suspended at its attach timeout and retried later; a per-connection inbound rate,
//! enforced throughout, beyond which publishes are NACKed 42911 (the session must back off).
//! Creates are never refused as a fault: a refused create ends an
//! answer `failed` by design, which property 2 would then report. Faults stop at a horizon
//! so that the world can quiesce.
//!
//! # What is asserted ([`check`])
//!
//! 1. After every delivery (live, rewind or history), each viewer's text of the answer it
//!    touched is a prefix of the model's text, except after a continuity loss the viewer was
//!    told about (`ChannelStateChanged` to attached with `resumed == false`, or
//!    `ResumeFailed`), and then only until the next full version (create or update, live or
//!    from history) of that answer.
//! 2. Once the world has quiesced, every answer's text in every viewer and in the service's
//!    history is the model's text exactly, with a terminal status.
//!
//! A failure carries the seed, the plan and a trace of the schedule (the lines about the
//! failing viewer and answer, and every fault), and [`run`] with the same seed and faults
//! replays it exactly.
// The module map above links to private submodules; they resolve with --document-private-items.
#![allow(rustdoc::private_intra_doc_links)]

mod check;
mod model;
mod net;
mod plan;
mod publisher;
mod rng;
mod service;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
mod trace;
mod viewer;
mod world;

use std::fmt;

pub use check::Violation;
pub use plan::Faults;
pub use rng::SimRng;

/// What a passing seed did.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The seed.
    pub seed: u64,
    /// Simulated time until quiescence, in ms.
    pub sim_ms: u64,
    /// Frames that crossed the network.
    pub frames: u64,
    /// Iterations of the world loop.
    pub steps: u64,
    /// Publish frames the service refused as over the connection's inbound rate.
    pub over_rate: u64,
    /// Publish frames the service received (new msgSerials).
    pub publishes: u64,
}

/// A seed that broke a property.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed, to replay with.
    pub seed: u64,
    /// The fault classes that were allowed.
    pub faults: Faults,
    /// The seed's plan, in words.
    pub plan: String,
    /// The broken property.
    pub violation: String,
    /// The schedule that led there.
    pub trace: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} (faults {}) failed: {}",
            self.seed, self.faults, self.violation
        )?;
        writeln!(f, "plan: {}", self.plan)?;
        writeln!(f, "replay: SIM_SEED={} SIM_FAULTS={} cargo test -p shared --features testkit --test simulation", self.seed, self.faults)?;
        write!(f, "trace:\n{}", self.trace)
    }
}

/// Runs the simulation for one seed with the fault classes `faults`.
pub fn run(seed: u64, faults: Faults) -> Result<Summary, Box<Failure>> {
    world::run(seed, faults)
}
