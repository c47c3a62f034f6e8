//! Starts a real Sockudo (the local Ably-compatible server) on a free loopback port for one
//! test, through `scripts/sockudo` (the same start-up the developers use), and stops it when
//! dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

/// The API key of the app in the generated config.
pub const API_KEY: &str = "app-key:app-secret";

/// A running Sockudo; stopped on drop.
pub struct Sockudo {
    port: u16,
    dir: PathBuf,
}

impl Sockudo {
    /// Starts `sockudo` with the project's config on free ports, waiting until it listens.
    pub fn start() -> Result<Self, String> {
        let port = free_port()?;
        let metrics = free_port()?;
        let dir = std::env::temp_dir().join(format!("sockudo-test-{}-{port}", std::process::id()));
        let out = Command::new("bash")
            .arg(script())
            .args(["start", &port.to_string()])
            .env("SOCKUDO_DIR", &dir)
            .env("SOCKUDO_METRICS_PORT", metrics.to_string())
            .output()
            .map_err(|e| format!("scripts/sockudo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/sockudo start {port} failed (scripts/sockudo install installs the server):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Self { port, dir })
    }

    /// The endpoint base URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last lines of the server's log, for failure reports.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("sockudo.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Sockudo {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", &self.port.to_string()])
            .env("SOCKUDO_DIR", &self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/sockudo")
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}
