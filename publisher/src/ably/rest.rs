//! The Ably REST calls the daemon makes: signing and exchanging token requests, and reading
//! a channel's history.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use shared::auth::{AuthError, TokenDetails, TokenParams, TokenRequest};
use shared::connection::{encode_component, ApiKey, Endpoint};
use shared::protocol::{ErrorInfo, Message};
use shared::ChannelName;

use super::handle::TokenSource;

/// How long a REST call may take.
const REST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("could not reach the Ably REST endpoint: {0}")]
    Transport(String),
    #[error("Ably refused the request: {} (error {})", .0.message, .0.code)]
    Refused(ErrorInfo),
    #[error("unexpected answer from the Ably REST endpoint: {0}")]
    Unexpected(String),
    #[error("could not sign a token request: {0}")]
    Sign(#[from] AuthError),
}

/// REST access with the daemon's key.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    endpoint: Endpoint,
    key: ApiKey,
}

impl Rest {
    /// A REST client for `endpoint` authenticated with `key`.
    pub fn new(endpoint: Endpoint, key: ApiKey) -> Result<Self, RestError> {
        let http = reqwest::Client::builder()
            .timeout(REST_TIMEOUT)
            .build()
            .map_err(|e| RestError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            endpoint,
            key,
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A token request signed with the key now, with a random nonce. The key itself stays
    /// here; the request is what an `authUrl` hands to a browser.
    pub fn sign(&self, params: &TokenParams) -> Result<TokenRequest, RestError> {
        let nonce: String = (0..16)
            .map(|_| char::from(b'0' + rand::rng().random_range(0..10u8)))
            .collect();
        Ok(TokenRequest::sign(&self.key, params, unix_ms(), &nonce)?)
    }

    /// Exchanges a signed token request for a token, as any client would.
    pub async fn request_token(&self, request: &TokenRequest) -> Result<TokenDetails, RestError> {
        exchange_token(&self.http, &self.endpoint, request).await
    }

    /// The channel's latest messages, newest first (at most `limit`).
    pub async fn history(
        &self,
        channel: &ChannelName,
        limit: u32,
    ) -> Result<Vec<Message>, RestError> {
        let url = format!(
            "{}/channels/{}/messages?limit={limit}&direction=backwards",
            self.endpoint.rest(),
            encode_component(channel.as_str())
        );
        let response = self
            .http
            .get(url)
            .basic_auth(self.key.name(), Some(self.key.secret()))
            .send()
            .await
            .map_err(|e| RestError::Transport(without_url(&e)))?;
        read_json(response).await
    }
}

/// A token source for the realtime connection: signs requests with the key and exchanges
/// them, so the connection itself only ever carries a token.
pub struct KeyTokens {
    pub rest: Rest,
    pub params: TokenParams,
}

impl TokenSource for KeyTokens {
    fn token(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>> {
        let rest = self.rest.clone();
        let params = self.params.clone();
        Box::pin(async move {
            let request = rest.sign(&params).map_err(|e| e.to_string())?;
            let details = rest
                .request_token(&request)
                .await
                .map_err(|e| e.to_string())?;
            Ok(details.token)
        })
    }
}

impl KeyTokens {
    /// As a shareable token source.
    pub fn shared(self) -> Arc<dyn TokenSource> {
        Arc::new(self)
    }
}

/// `POST {rest}/keys/{keyName}/requestToken` with a signed request.
pub async fn exchange_token(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    request: &TokenRequest,
) -> Result<TokenDetails, RestError> {
    let url = format!(
        "{}/keys/{}/requestToken",
        endpoint.rest(),
        encode_component(&request.key_name)
    );
    let response = http
        .post(url)
        .json(request)
        .send()
        .await
        .map_err(|e| RestError::Transport(without_url(&e)))?;
    read_json(response).await
}

async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, RestError> {
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| RestError::Transport(without_url(&e)))?;
    if !status.is_success() {
        #[derive(serde::Deserialize)]
        struct Wrapper {
            error: ErrorInfo,
        }
        return Err(match serde_json::from_str::<Wrapper>(&body) {
            Ok(w) => RestError::Refused(w.error),
            Err(_) => RestError::Refused(ErrorInfo::new(
                u32::from(status.as_u16()) * 100,
                status.as_u16(),
                format!("HTTP {status}"),
            )),
        });
    }
    serde_json::from_str(&body).map_err(|e| RestError::Unexpected(e.to_string()))
}

/// A reqwest error in words, without the URL it names.
fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(url.as_str(), "<endpoint>");
    }
    text
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
