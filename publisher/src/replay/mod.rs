//! A local OpenAI-compatible server that replays recorded Responses streams, synthesizes long answers and injects faults.
//! (Interface stub; replaced by the real server.)

use std::collections::BTreeMap;
use std::time::Duration;

pub struct ReplayConfig {
    pub recordings: BTreeMap<String, shared::openai::Recording>,
    pub default: Option<String>,
    pub interval: Duration,
}

impl ReplayConfig {
    pub fn load_dir(_dir: &std::path::Path) -> Result<Self, ReplayError> {
        Err(ReplayError::Stub)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("stub")]
    Stub,
}

pub async fn serve(
    _listener: tokio::net::TcpListener,
    _config: ReplayConfig,
    _shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    Ok(())
}
