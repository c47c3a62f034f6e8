//! The page's HTTP calls: the daemon's config, prompts and cancels; token requests signed by
//! the daemon and exchanged at the Ably REST endpoint (the page never sees a key); history.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use gloo_net::http::{Request, Response};
use serde::Deserialize;
use serde_json::json;
use shared::auth::{TokenDetails, TokenRequest};
use shared::connection::{encode_component, Endpoint};
use shared::protocol::Message;

/// What `GET /v1/config` tells the page.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PageConfig {
    pub ably_endpoint: String,
    pub channel: String,
    pub auth_url: String,
}

/// One page of history and where the next (older) one is.
pub struct HistoryPage {
    pub messages: Vec<Message>,
    /// The query of the next page, if there is one.
    pub next: Option<String>,
}

/// The daemon's settings for the page.
pub async fn config() -> Result<PageConfig, String> {
    let response = Request::get("/v1/config").send().await.map_err(net)?;
    json_of(response).await
}

/// A token for `channel`: a TokenRequest from the daemon's `auth_url`, exchanged at the
/// Ably REST endpoint.
pub async fn token(
    config: &PageConfig,
    endpoint: &Endpoint,
    channel: &str,
    client_id: &str,
) -> Result<TokenDetails, String> {
    let url = format!(
        "{}?channel={}&clientId={}",
        config.auth_url,
        encode_component(channel),
        encode_component(client_id)
    );
    let response = Request::get(&url).send().await.map_err(net)?;
    let request: TokenRequest = json_of(response).await?;
    let exchange = format!(
        "{}/keys/{}/requestToken",
        endpoint.rest(),
        encode_component(&request.key_name)
    );
    let response = Request::post(&exchange)
        .json(&request)
        .map_err(net)?
        .send()
        .await
        .map_err(net)?;
    json_of(response).await
}

/// Posts a prompt to the daemon, which publishes it and starts the answer.
pub async fn prompt(channel: &str, input: &str) -> Result<(), String> {
    let response = Request::post("/v1/prompts")
        .json(&json!({"channel": channel, "input": input}))
        .map_err(net)?
        .send()
        .await
        .map_err(net)?;
    json_of::<serde_json::Value>(response).await.map(drop)
}

/// Asks the daemon to stop an answer (whichever replica streams it).
pub async fn cancel(channel: &str, serial: &str) -> Result<(), String> {
    let url = format!(
        "/v1/responses/{}/cancel?channel={}",
        encode_component(serial),
        encode_component(channel)
    );
    let response = Request::post(&url).send().await.map_err(net)?;
    json_of::<serde_json::Value>(response).await.map(drop)
}

/// A page of the channel's history, newest first: the first page (`next == None`) starts at
/// `from_serial` (the attach point, so it joins up with what the connection delivered).
pub async fn history(
    endpoint: &Endpoint,
    channel: &str,
    token: &str,
    from_serial: Option<&str>,
    next: Option<&str>,
) -> Result<HistoryPage, String> {
    let query = match (next, from_serial) {
        (Some(next), _) => next.to_owned(),
        (None, Some(from)) => format!(
            "limit=50&direction=backwards&from_serial={}",
            encode_component(from)
        ),
        (None, None) => "limit=50&direction=backwards".to_owned(),
    };
    let url = format!(
        "{}/channels/{}/messages?{query}",
        endpoint.rest(),
        encode_component(channel)
    );
    let bearer = format!("Bearer {}", STANDARD.encode(token));
    let response = Request::get(&url)
        .header("Authorization", &bearer)
        .send()
        .await
        .map_err(net)?;
    let next = response.headers().get("link").and_then(|l| next_link(&l));
    let messages = json_of(response).await?;
    Ok(HistoryPage { messages, next })
}

/// The query of the `rel="next"` target in a Link header (`<./messages?QUERY>; rel="next"`).
pub fn next_link(header: &str) -> Option<String> {
    header
        .split(", <")
        .find(|link| link.contains("rel=\"next\""))
        .and_then(|link| {
            let target = link.trim_start_matches('<');
            let target = target.get(..target.find('>')?)?;
            target.split_once('?').map(|(_, query)| query.to_owned())
        })
}

async fn json_of<T: serde::de::DeserializeOwned>(response: Response) -> Result<T, String> {
    let status = response.status();
    let body = response.text().await.map_err(net)?;
    if !(200..300).contains(&status) {
        // The daemon's `{"error":{"message"}}`, or Ably's `{"error":{"message","code"}}`.
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("HTTP {status}"));
        return Err(message);
    }
    serde_json::from_str(&body).map_err(|e| format!("unexpected answer: {e}"))
}

fn net(err: gloo_net::Error) -> String {
    format!("network error: {err}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
