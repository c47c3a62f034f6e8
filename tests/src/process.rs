//! `publisher serve` as a real process, for tests that kill it: found at `PUBLISHER_BIN` or
//! in the workspace's `target/debug`, which `cargo test --workspace` builds first.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::base_args;

/// A running daemon process; killed (SIGKILL) when dropped.
pub struct DaemonProcess {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    child: Child,
}

/// The daemon's binary.
pub fn publisher_bin() -> PathBuf {
    std::env::var_os("PUBLISHER_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/publisher"),
        PathBuf::from,
    )
}

impl DaemonProcess {
    /// Starts `publisher serve` on a free port against Sockudo at `ably` and the model
    /// server at `openai`, and waits until it listens.
    pub async fn start(
        ably: &str,
        openai: &str,
        model: &str,
        extra: &[&str],
    ) -> Result<Self, String> {
        let bin = publisher_bin();
        let mut child = Command::new(&bin)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(base_args(ably, openai, model))
            .args(extra)
            .env(
                "LOG",
                std::env::var("DAEMON_LOG").unwrap_or_else(|_| "publisher=info".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!(
                    "{} (build it with cargo build -p publisher): {e}",
                    bin.display()
                )
            })?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("publisher listening on ") {
                    return Some(url.trim_end_matches('/').to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or("the daemon did not say where it listens within 30 s")?;
        // Keep reading, so that the daemon never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { url, child })
    }

    /// Kills the process with SIGKILL, as a crash or a pulled plug would, and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM, as systemd does on a deploy, and waits (up to 30 s) for the exit.
    pub async fn terminate(mut self) -> Result<(), String> {
        self.signal("TERM")?;
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .map_err(|_| "the daemon did not exit within 30 s of SIGTERM".to_owned())?
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Freezes the process (SIGSTOP), as a host starved of CPU or cut off would.
    pub fn freeze(&self) -> Result<(), String> {
        self.signal("STOP")
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) -> Result<(), String> {
        self.signal("CONT")
    }

    fn signal(&self, name: &str) -> Result<(), String> {
        let pid = self.child.id().ok_or("the daemon already exited")?;
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{name} {pid} failed"))
        }
    }
}
