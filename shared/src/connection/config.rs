//! Connection settings: where to connect, how to authenticate, and the protocol's timeouts.

use std::fmt;
use std::time::Duration;

use crate::protocol::PROTOCOL_VERSION;

/// Real Ably's production endpoint, as current ably-js uses it.
pub const PRODUCTION_ENDPOINT: &str = "https://main.realtime.ably.net";

/// The fallback domains of the production endpoint (REC2c1), tried in random order when
/// the primary domain cannot be reached (RTN17). A custom endpoint has none (REC2c2).
pub const PRODUCTION_FALLBACK_HOSTS: [&str; 5] = [
    "main.a.fallback.ably-realtime.com",
    "main.b.fallback.ably-realtime.com",
    "main.c.fallback.ably-realtime.com",
    "main.d.fallback.ably-realtime.com",
    "main.e.fallback.ably-realtime.com",
];

/// Why a setting was refused.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("endpoint `{0}` must start with http:// or https:// and name a host")]
    InvalidEndpoint(String),
    #[error("API key must look like `appId.keyId:secret` (a name, a colon, a secret)")]
    InvalidKey,
}

/// Where the Ably-compatible service lives: one base URL gives both the realtime
/// WebSocket URL and the REST base.
///
/// `http://host:port` means plain `ws://` and `http://` (a local Sockudo);
/// `https://host` means `wss://` and `https://`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Endpoint {
    realtime: String,
    rest: String,
}

impl Endpoint {
    /// Parses a base URL such as `http://127.0.0.1:6001` or `https://main.realtime.ably.net`.
    pub fn parse(base: &str) -> Result<Self, ConfigError> {
        let invalid = || ConfigError::InvalidEndpoint(base.to_owned());
        let trimmed = base.trim().trim_end_matches('/');
        let (secure, rest) = if let Some(rest) = trimmed.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = trimmed.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(invalid());
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
            return Err(invalid());
        }
        let has_port = rest
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !rest.ends_with(']');
        let host_port = if has_port {
            rest.to_owned()
        } else {
            format!("{rest}:{}", if secure { 443 } else { 80 })
        };
        let (ws, http) = if secure {
            ("wss", "https")
        } else {
            ("ws", "http")
        };
        Ok(Self {
            realtime: format!("{ws}://{host_port}"),
            rest: format!("{http}://{host_port}"),
        })
    }

    /// Real Ably.
    pub fn production() -> Self {
        Self {
            realtime: "wss://main.realtime.ably.net:443".to_owned(),
            rest: "https://main.realtime.ably.net:443".to_owned(),
        }
    }

    /// Base of the WebSocket URL, e.g. `ws://127.0.0.1:6001`.
    pub fn realtime(&self) -> &str {
        &self.realtime
    }

    /// Base of the REST API, e.g. `http://127.0.0.1:6001`.
    pub fn rest(&self) -> &str {
        &self.rest
    }

    /// Whether this is real Ably's production endpoint, the only one with fallback hosts.
    pub fn is_production(&self) -> bool {
        *self == Self::production()
    }

    /// The WebSocket base for another host on the same scheme and port (a fallback host).
    pub fn realtime_via(&self, host: &str) -> String {
        let (scheme, rest) = self
            .realtime
            .split_once("://")
            .unwrap_or(("wss", &self.realtime));
        let port = rest.rsplit_once(':').map_or("443", |(_, port)| port);
        format!("{scheme}://{host}:{port}")
    }
}

/// An Ably API key, `name:secret`. Its `Debug` never prints the secret.
#[derive(Clone, Eq, PartialEq)]
pub struct ApiKey {
    name: String,
    secret: String,
}

impl ApiKey {
    /// Parses `appId.keyId:secret` (any `name:secret` with both parts non-empty).
    pub fn parse(key: &str) -> Result<Self, ConfigError> {
        let (name, secret) = key.trim().split_once(':').ok_or(ConfigError::InvalidKey)?;
        if name.is_empty() || secret.is_empty() || secret.contains(':') {
            return Err(ConfigError::InvalidKey);
        }
        Ok(Self {
            name: name.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The key name (`appId.keyId`), safe to show.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The secret, for signing token requests. Never send it to a browser.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    fn full(&self) -> String {
        format!("{}:{}", self.name, self.secret)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}:***)", self.name)
    }
}

/// How the connection authenticates.
#[derive(Clone, Eq, PartialEq)]
pub enum Auth {
    /// Basic auth with the key (servers only).
    Key(ApiKey),
    /// A token; when it is rejected or expires the connection asks for a new one
    /// ([`crate::connection::Event::TokenRequired`]).
    Token(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(key) => key.fmt(f),
            Self::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// Everything a [`crate::connection::Connection`] needs to know before it starts.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    pub endpoint: Endpoint,
    pub auth: Auth,
    /// Identity to connect as, if any.
    pub client_id: Option<String>,
    /// Whether our own publishes come back to us (`echo=false` when not).
    pub echo: bool,
    /// Ask for protocol-level heartbeats (needed in browsers, which hide WebSocket pings).
    pub heartbeats: bool,
    /// Extra connect-URL parameters, e.g. `appendRollupWindow`.
    pub transport_params: Vec<(String, String)>,
    /// The `agent` parameter.
    pub agent: String,
    /// A prefix unique to this client (random, chosen by the driver): message ids are
    /// `<prefix>-<n>:<index>`, so a resent frame is recognised as the same publish.
    pub id_prefix: String,
    /// How long to wait for a reply (ATTACHED, CLOSED), and the slack added to the idle limit.
    pub realtime_request_timeout: Duration,
    /// How long opening a transport may take until CONNECTED arrives.
    pub connect_timeout: Duration,
    /// Base delay between reconnect attempts while `disconnected`.
    pub disconnected_retry_timeout: Duration,
    /// Delay between reconnect attempts while `suspended`.
    pub suspended_retry_timeout: Duration,
    /// How long a dropped connection stays resumable, until the server says otherwise.
    pub connection_state_ttl: Duration,
    /// Delay before re-attaching a channel that went `suspended`.
    pub channel_retry_timeout: Duration,
    /// Seed for the jitter on reconnect delays and the order of fallback hosts (fixed in
    /// tests, random in drivers).
    pub jitter_seed: u64,
    /// Hosts to try, in random order, when the endpoint's own host cannot be reached
    /// (RTN17): the production fallback domains for [`Endpoint::production`], none for a
    /// custom endpoint (REC2c).
    pub fallback_hosts: Vec<String>,
    /// Whether the driver can fetch new tokens. When it cannot, a rejected token fails the
    /// connection with 40171 (RSA4a2) instead of asking for another.
    pub token_renewable: bool,
    /// How long before a token's expiry the connection asks for the next one (tokens
    /// shorter than twice this are renewed at half their life).
    pub token_renew_margin: Duration,
    /// Start a new connection this long after it went `failed`, re-attaching the channels
    /// the application attached. `None` (the default, as the spec's RTN27h has it) leaves a
    /// failed connection alone until [`crate::connection::Connection::connect`]; a daemon
    /// that must run unattended sets it.
    pub revive_failed_after: Option<Duration>,
}

impl Config {
    /// Settings with Ably's default timeouts.
    pub fn new(endpoint: Endpoint, auth: Auth, id_prefix: impl Into<String>) -> Self {
        let fallback_hosts = if endpoint.is_production() {
            PRODUCTION_FALLBACK_HOSTS.map(str::to_owned).to_vec()
        } else {
            Vec::new()
        };
        Self {
            endpoint,
            auth,
            client_id: None,
            echo: true,
            heartbeats: true,
            transport_params: Vec::new(),
            agent: concat!("ably-openai-relay/", env!("CARGO_PKG_VERSION")).to_owned(),
            id_prefix: id_prefix.into(),
            realtime_request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(15),
            disconnected_retry_timeout: Duration::from_secs(15),
            suspended_retry_timeout: Duration::from_secs(30),
            connection_state_ttl: Duration::from_secs(120),
            channel_retry_timeout: Duration::from_secs(15),
            jitter_seed: 0x9e37_79b9_7f4a_7c15,
            fallback_hosts,
            token_renewable: true,
            token_renew_margin: Duration::from_secs(60),
            revive_failed_after: None,
        }
    }

    /// The WebSocket URL to open on the endpoint's own host, resuming `resume` when given.
    pub fn connect_url(&self, resume: Option<&str>) -> String {
        self.connect_url_via(None, resume)
    }

    /// The WebSocket URL to open on `host` (a fallback host; `None` for the endpoint's own),
    /// resuming `resume` when given.
    pub fn connect_url_via(&self, host: Option<&str>, resume: Option<&str>) -> String {
        let base = match host {
            Some(host) => self.endpoint.realtime_via(host),
            None => self.endpoint.realtime().to_owned(),
        };
        let mut url = format!("{base}/?");
        let mut first = true;
        let mut push = |key: &str, value: &str| {
            if !first {
                url.push('&');
            }
            first = false;
            url.push_str(&encode_component(key));
            url.push('=');
            url.push_str(&encode_component(value));
        };
        match &self.auth {
            Auth::Key(key) => push("key", &key.full()),
            Auth::Token(token) => push("access_token", token),
        }
        if let Some(key) = resume {
            push("resume", key);
        }
        if let Some(client_id) = &self.client_id {
            push("clientId", client_id);
        }
        if !self.echo {
            push("echo", "false");
        }
        push("format", "json");
        push("heartbeats", if self.heartbeats { "true" } else { "false" });
        push("v", &PROTOCOL_VERSION.to_string());
        push("agent", &self.agent);
        for (key, value) in &self.transport_params {
            push(key, value);
        }
        url
    }
}

/// Percent-encodes like JavaScript's `encodeURIComponent`.
pub fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => out.push(char::from(byte)),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests;
