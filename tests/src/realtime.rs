//! Native Ably clients for the tests: the daemon's own driver (`publisher::ably::Realtime`)
//! with key auth, and a subscriber that rebuilds answers with the shared assembler.

use std::time::Duration;

use publisher::ably::{Realtime, Subscription};
use shared::assembler::Assembler;
use shared::connection::{ApiKey, AttachOptions, Auth, Config, Endpoint, Event};
use shared::ChannelName;

use crate::sockudo::API_KEY;

/// A connection to `endpoint` with the local key; `echo` says whether our own publishes
/// come back to us.
pub fn connect(endpoint: &str, name: &str, echo: bool) -> Result<Realtime, String> {
    let endpoint = Endpoint::parse(endpoint).map_err(|e| e.to_string())?;
    let key = ApiKey::parse(API_KEY).map_err(|e| e.to_string())?;
    let mut config = Config::new(endpoint, Auth::Key(key), name);
    config.echo = echo;
    Ok(Realtime::start(config, None).0)
}

/// A native subscriber: one connection, one channel, every delivery applied to an
/// assembler.
pub struct Subscriber {
    pub realtime: Realtime,
    pub view: Assembler,
    events: Subscription,
    /// Every event seen, for failure reports and state checks.
    pub log: Vec<Event>,
}

impl Subscriber {
    /// Connects and attaches `channel` with `options`, waiting until attached.
    pub async fn attach(
        endpoint: &str,
        name: &str,
        channel: &str,
        options: AttachOptions,
    ) -> Result<Self, String> {
        let realtime = connect(endpoint, name, true)?;
        let events = realtime.subscribe();
        realtime
            .attach(&ChannelName::from(channel), options)
            .await
            .map_err(|e| format!("{name} did not attach {channel}: {}", e.message))?;
        Ok(Self {
            realtime,
            view: Assembler::new(),
            events,
            log: Vec::new(),
        })
    }

    /// Applies deliveries until `done` holds for the assembled view, up to `limit`.
    /// Returns whether it held.
    pub async fn until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Assembler) -> bool,
    ) -> bool {
        if done(&self.view) {
            return true;
        }
        let deadline = tokio::time::Instant::now() + limit;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if let Event::Message { message, .. } = &event {
                if let Err(err) = self.view.apply(message) {
                    eprintln!("assembler refused a message: {err}");
                }
            }
            self.log.push(event);
            if done(&self.view) {
                return true;
            }
        }
        false
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.realtime.close(Duration::from_secs(5)).await;
    }
}
