//! Ably token requests: canonical capabilities, and the MAC with which a key signs a request
//! that a browser can exchange for a token without ever seeing the key.
//!
//! The signing text is the request's fields, each followed by a newline, in this order:
//! `keyName`, `ttl`, `capability`, `clientId`, `timestamp`, `nonce` (a missing field is the
//! empty string); the MAC is base64 of HMAC-SHA256 over it, keyed with the key's secret.
//! Time and the nonce are arguments: the core reads no clock and draws no random numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::connection::ApiKey;

/// Longest token life Ably grants.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Shortest nonce Ably accepts.
pub const MIN_NONCE_LEN: usize = 16;

/// Why a token request could not be made or read.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("nonce must have at least {MIN_NONCE_LEN} characters")]
    ShortNonce,
    #[error("ttl must be between 1 ms and 24 hours")]
    BadTtl,
    #[error("capability must be a JSON object of resource → list of operations: {0}")]
    BadCapability(String),
    #[error("capability allows nothing")]
    EmptyCapability,
}

/// What a token may do, per channel (or `ns:*` pattern): e.g. `{"ai:demo":["history","subscribe"]}`.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Capability(BTreeMap<String, BTreeSet<String>>);

impl Capability {
    /// Allows nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds operations (`subscribe`, `history`, `publish`, …) on a resource.
    pub fn allow(mut self, resource: &str, operations: &[&str]) -> Self {
        let ops = self.0.entry(resource.to_owned()).or_default();
        ops.extend(operations.iter().map(|op| (*op).to_owned()));
        self
    }

    /// Reads a capability from its JSON text.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let raw: BTreeMap<String, Vec<String>> =
            serde_json::from_str(text).map_err(|e| AuthError::BadCapability(e.to_string()))?;
        Ok(Self(
            raw.into_iter()
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect(),
        ))
    }

    /// The canonical text Ably signs and compares: keys and operations sorted, no spaces.
    pub fn canonical(&self) -> String {
        // A map of sorted sets serialises in exactly that order.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Whether `operation` is allowed on `channel`, by exact name, `ns:*` or `*`.
    pub fn allows(&self, channel: &str, operation: &str) -> bool {
        self.0.iter().any(|(resource, ops)| {
            let matches = resource == "*"
                || resource == channel
                || resource
                    .strip_suffix('*')
                    .is_some_and(|prefix| prefix.ends_with(':') && channel.starts_with(prefix));
            matches && (ops.contains(operation) || ops.contains("*"))
        })
    }
}

/// What the requested token should carry.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct TokenParams {
    /// Token life; Ably's default (60 minutes) when absent.
    pub ttl: Option<Duration>,
    /// The key's full capability when absent.
    pub capability: Option<Capability>,
    /// The identity the token's holder connects as.
    pub client_id: Option<String>,
}

/// A signed token request: the answer an `authUrl` gives, exchanged by the client at
/// `POST /keys/{keyName}/requestToken`.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    pub key_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// The canonical capability text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub nonce: String,
    pub mac: String,
}

impl TokenRequest {
    /// Signs a request with `key` at `timestamp_ms` (Unix epoch, from the caller's clock)
    /// with a caller-drawn random `nonce`.
    pub fn sign(
        key: &ApiKey,
        params: &TokenParams,
        timestamp_ms: i64,
        nonce: &str,
    ) -> Result<Self, AuthError> {
        if nonce.chars().count() < MIN_NONCE_LEN {
            return Err(AuthError::ShortNonce);
        }
        let ttl = match params.ttl {
            Some(ttl) if ttl.is_zero() || ttl > MAX_TTL => return Err(AuthError::BadTtl),
            Some(ttl) => Some(u64::try_from(ttl.as_millis()).map_err(|_| AuthError::BadTtl)?),
            None => None,
        };
        let capability = match &params.capability {
            Some(c) if c.0.values().all(BTreeSet::is_empty) => {
                return Err(AuthError::EmptyCapability)
            }
            Some(c) => Some(c.canonical()),
            None => None,
        };
        let mut request = Self {
            key_name: key.name().to_owned(),
            ttl,
            capability,
            client_id: params.client_id.clone(),
            timestamp: timestamp_ms,
            nonce: nonce.to_owned(),
            mac: String::new(),
        };
        request.mac = request.compute_mac(key.secret());
        Ok(request)
    }

    /// Whether the MAC is the one `key` gives (what the server checks, besides the time
    /// window and nonce reuse).
    pub fn verify(&self, key: &ApiKey) -> bool {
        self.key_name == key.name() && self.compute_mac(key.secret()) == self.mac
    }

    /// The text the MAC covers.
    pub fn signing_text(&self) -> String {
        let ttl = self.ttl.map(|t| t.to_string()).unwrap_or_default();
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n",
            self.key_name,
            ttl,
            self.capability.as_deref().unwrap_or(""),
            self.client_id.as_deref().unwrap_or(""),
            self.timestamp,
            self.nonce
        )
    }

    fn compute_mac(&self, secret: &str) -> String {
        // HMAC accepts keys of any length, so this never fails.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return String::new();
        };
        mac.update(self.signing_text().as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
    }
}

/// What the server returns for a token request.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenDetails {
    /// The token to connect with (`access_token=`).
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// When it was issued, ms since the Unix epoch.
    #[serde(default)]
    pub issued: i64,
    /// When it expires, ms since the Unix epoch.
    #[serde(default)]
    pub expires: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

#[cfg(test)]
mod tests;
