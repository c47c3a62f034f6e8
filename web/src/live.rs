//! The page's handle on its Ably connection: it starts the browser's driver of
//! `shared::connection::Connection` ([`driver`]) and hands it the page's commands; the
//! page's clock, and token lifetimes measured on it.

mod driver;
mod socket;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures::channel::mpsc;
use shared::auth::TokenDetails;
use shared::connection::{AttachOptions, Config, Connection, Event};
use shared::{ChannelName, Instant};

use driver::Driver;

thread_local! {
    /// How far this browser's clock is from the servers', from the `issued` time of the
    /// latest token.
    static SKEW: std::cell::Cell<shared::lease::ClockSkew> = std::cell::Cell::default();
}

/// The servers' wall clock now, as well as this page can tell (ms since the Unix epoch).
pub fn server_now() -> i64 {
    SKEW.with(|skew| skew.get().server_time(js_sys::Date::now() as i64))
}

/// Notes a server time taken about now (a token's `issued`).
fn observe_server_time(server_ms: i64) {
    SKEW.with(|skew| {
        let mut value = skew.get();
        value.observe(js_sys::Date::now() as i64, server_ms);
        skew.set(value);
    });
}

/// A fresh token, or why there is none.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<TokenDetails, String>>>>;

/// Where new tokens come from.
pub type Tokens = Rc<dyn Fn() -> TokenFuture>;

/// What the page asks of the driver.
enum Command {
    Attach(ChannelName, AttachOptions),
    Close,
    Token(Result<TokenDetails, String>),
}

/// A handle on the running connection.
#[derive(Clone)]
pub struct Live {
    commands: mpsc::UnboundedSender<Command>,
}

impl Live {
    /// Connects with `config` (token auth, the first token's expiry in Unix ms given) and
    /// runs until closed; every event goes to `on_event` with the connection.
    pub fn start(
        config: Config,
        expires: Option<i64>,
        tokens: Tokens,
        on_event: impl FnMut(&Connection, Event) + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded();
        let mut conn = Connection::new(config);
        if let Some(expires) = expires {
            // Only the expiry of the first token is known here: measure it on the local clock.
            conn.set_token_lifetime(now(), lifetime(expires, js_sys::Date::now() as i64));
        }
        let driver = Driver::new(conn, rx, tx.clone(), tokens);
        wasm_bindgen_futures::spawn_local(driver.run(on_event));
        Self { commands: tx }
    }

    /// Attaches a channel.
    pub fn attach(&self, channel: ChannelName, options: AttachOptions) {
        let _ = self
            .commands
            .unbounded_send(Command::Attach(channel, options));
    }

    /// Closes the connection.
    pub fn close(&self) {
        let _ = self.commands.unbounded_send(Command::Close);
    }
}

/// The page's monotonic clock, as the core's `Instant`.
pub fn now() -> Instant {
    let ms = web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now());
    Instant::from_millis(ms as u64)
}

/// A token's lifetime from two Unix-ms times (zero if already expired).
pub(super) fn lifetime(expires_unix_ms: i64, from_unix_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(expires_unix_ms.saturating_sub(from_unix_ms)).unwrap_or(0))
}
