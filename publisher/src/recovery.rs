//! The daemon's sweeper: ends the answers a dead publisher left streaming. It reads the
//! ledger and each answer's latest version over REST; [`shared::recovery`] decides, and the
//! final update goes out through the connection's session like any post. A lost background
//! answer whose headers say how far through its stream it got is claimed on the ledger and,
//! by the sweeper whose claim is the oldest, carried on ([`Answers::carry_on`]) instead.

use std::time::Duration;

use rand::Rng;
use shared::recovery::{self, Entry, Verdict};
use shared::ChannelName;

use crate::ably::rest::{unix_ms, Rest, RestError};
use crate::answer::Answers;

/// How many of an answer channel's latest messages are searched for the answer.
const ANSWER_WINDOW: u32 = 200;

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct Swept {
    /// Open entries of other processes that were looked at.
    pub checked: usize,
    /// Answers ended `failed` because their publisher was lost.
    pub ended: usize,
    /// Entries closed because their answer had ended already.
    pub closed: usize,
    /// Lost answers this process claimed and carries on.
    pub continued: usize,
}

/// Ends lapsed answers recorded on one ledger.
pub struct Sweeper {
    answers: Answers,
    rest: Rest,
    ledger: ChannelName,
}

impl Sweeper {
    /// A sweeper of `answers`' ledger, or `None` when answers are not recorded.
    pub fn new(answers: Answers, rest: Rest) -> Option<Self> {
        let ledger = answers.ledger()?.clone();
        Some(Self {
            answers,
            rest,
            ledger,
        })
    }

    /// Sweeps at once (a restarted daemon ends what its predecessor left as soon as the
    /// leases allow), then every [`recovery::SWEEP_EVERY`] plus a random part of it.
    pub async fn run(self) {
        loop {
            match self.sweep().await {
                Ok(swept) if swept.ended > 0 || swept.closed > 0 => {
                    tracing::info!(
                        ended = swept.ended,
                        closed = swept.closed,
                        "swept the ledger"
                    );
                }
                Ok(swept) if swept.continued > 0 => {
                    tracing::info!(continued = swept.continued, "carrying on lost answers");
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(ledger = %self.ledger, error = %err, "could not read the ledger")
                }
            }
            let jitter = rand::rng().random_range(0..=recovery::SWEEP_EVERY.as_millis() as u64);
            tokio::time::sleep(recovery::SWEEP_EVERY + Duration::from_millis(jitter)).await;
        }
    }

    /// One pass over the ledger's open entries.
    pub async fn sweep(&self) -> Result<Swept, RestError> {
        let ledger = self
            .rest
            .history(&self.ledger, recovery::LEDGER_WINDOW)
            .await?;
        let mut swept = Swept::default();
        // An answer this process carries on that someone claimed since (this process could
        // not publish for longer than its lease) is theirs now.
        for (entry, claim) in self.answers.carrying() {
            if recovery::reclaimed(&ledger, &entry, &claim) {
                self.answers.abandon(&entry);
            }
        }
        for entry in recovery::open_entries(&ledger) {
            if self.answers.is_running(&entry.id) {
                continue;
            }
            swept.checked += 1;
            match self.check(&entry).await {
                Ok(Some(Checked::Continued)) => swept.continued += 1,
                Ok(Some(Checked::Ended)) => swept.ended += 1,
                Ok(Some(Checked::Closed)) => swept.closed += 1,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(channel = %entry.channel, id = %entry.id.as_str(), error = %err, "could not check an answer in flight");
                }
            }
        }
        Ok(swept)
    }

    /// Judges one entry's answer and acts: carries it on, ends it, or closes its entry.
    async fn check(&self, entry: &Entry) -> Result<Option<Checked>, RestError> {
        let history = self.rest.history(&entry.channel, ANSWER_WINDOW).await?;
        let Some(answer) = history
            .iter()
            .find(|message| message.id.as_ref() == Some(&entry.id))
        else {
            return Ok(None);
        };
        let verdict = recovery::judge(answer, unix_ms());
        let checked = match &verdict {
            Verdict::Live => return Ok(None),
            Verdict::Over => Checked::Closed,
            Verdict::Lost(_) if let Some((response_id, from)) = recovery::continuation(answer) => {
                return self.claim(entry, answer, response_id, from).await;
            }
            Verdict::Lost(update) => {
                if let Err(err) = self.answers.post(&entry.channel, (**update).clone()).await {
                    tracing::warn!(channel = %entry.channel, error = %err.message, code = err.code, "could not end an answer whose publisher was lost");
                    return Ok(None);
                }
                tracing::warn!(channel = %entry.channel, serial = ?answer.serial, "ended an answer whose publisher was lost");
                Checked::Ended
            }
        };
        if let Err(err) = self.answers.post(&self.ledger, entry.ended()).await {
            tracing::warn!(ledger = %self.ledger, error = %err.message, "could not close a ledger entry");
        }
        Ok(Some(checked))
    }

    /// Claims a lost background answer on the ledger and, if this process's claim is the
    /// oldest of that loss, carries the answer on in a task of its own.
    async fn claim(
        &self,
        entry: &Entry,
        answer: &shared::protocol::Message,
        response_id: String,
        from: shared::relay::Continuation,
    ) -> Result<Option<Checked>, RestError> {
        let loss = recovery::loss(answer);
        let me = self.answers.process_id().to_owned();
        // A refusal may be a server's answer to a second claim with the same id: the
        // ledger says who holds it either way.
        if let Err(err) = self
            .answers
            .post(&self.ledger, entry.claim(&loss, &me))
            .await
        {
            tracing::debug!(ledger = %self.ledger, error = %err.message, code = err.code, "a claim was refused");
        }
        let ledger = self
            .rest
            .history(&self.ledger, recovery::LEDGER_WINDOW)
            .await?;
        let claimant = recovery::claimant(&ledger, &entry.claim_id(&loss));
        if claimant.as_deref() != Some(me.as_str()) {
            tracing::info!(channel = %entry.channel, claimant = ?claimant, "another sweeper carries on a lost answer");
            return Ok(None);
        }
        tracing::warn!(channel = %entry.channel, serial = ?answer.serial, response = %response_id, after = from.through, "carrying on an answer whose publisher was lost");
        let channel = entry.channel.clone();
        let run = self
            .answers
            .carry_on(entry.clone(), entry.claim_id(&loss), response_id, from);
        tokio::spawn(async move {
            let report = run.await;
            tracing::info!(%channel, status = %report.status, "a carried-on answer ended");
        });
        Ok(Some(Checked::Continued))
    }
}

/// What checking one open entry did.
enum Checked {
    Continued,
    Ended,
    Closed,
}
