//! `publisher ask`: one answer to one channel, as the seed guide streams it (only the answer
//! message, no prompt message), with its text on stdout as it arrives.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use shared::connection::AttachOptions;
use shared::Serial;

use crate::answer::{Job, Observer, Report, Stop};
use crate::cancel::{Registering, Registry};
use crate::channel;
use crate::cli::AskArgs;
use crate::metrics::Metrics;
use crate::openai::ResponseRequest;
use crate::setup::{self, StartError};

/// Why `ask` could not stream at all.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Channel(#[from] channel::ChannelError),
    #[error("the prompt is empty")]
    EmptyPrompt,
}

/// Writes the text to `stdout` as it grows, and the serial to `stderr`.
struct Printer<'a> {
    stdout: &'a mut (dyn Write + Send),
    stderr: &'a mut (dyn Write + Send),
    printed: usize,
}

impl Observer for Printer<'_> {
    fn wants_text(&self) -> bool {
        true
    }

    fn created(&mut self, result: Result<&Serial, &str>) {
        let _ = match result {
            Ok(serial) => writeln!(self.stderr, "serial: {serial}"),
            Err(error) => writeln!(self.stderr, "create refused: {error}"),
        };
    }

    fn text(&mut self, text: &str) {
        // Text only ever grows on stdout; a rewrite of what was printed cannot be undone
        // there, so only what extends it is written.
        if let Some(new) = text.get(self.printed..) {
            if !new.is_empty() && text.is_char_boundary(self.printed) {
                let _ = self.stdout.write_all(new.as_bytes());
                let _ = self.stdout.flush();
                self.printed = text.len();
            }
        }
    }
}

/// Streams the answer; Ctrl-C cancels it. Returns how it ended.
pub async fn run(
    args: &AskArgs,
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> Result<Report, AskError> {
    let channel = channel::parse(&args.channel, None)?;
    if args.prompt.trim().is_empty() {
        return Err(AskError::EmptyPrompt);
    }
    let parts = setup::start(&args.ably, &args.openai, Arc::new(Metrics::default())).await?;
    let realtime = parts.answers.realtime.clone();

    // Listen on the channel, so that a `cancel` message from anywhere stops this answer.
    let registry = Registry::default();
    let listener = registry.listen(&realtime);
    if let Err(err) = realtime.attach(&channel, AttachOptions::live_only()).await {
        tracing::warn!(error = %err.message, "cannot listen for cancel messages on the channel");
    }

    let (registration, stop) = registry.register();
    let stopper = registry.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stopper.stop_all(Stop::Cancel);
        }
    });
    let job = Job {
        channel,
        request: ResponseRequest {
            model: args.openai.openai_model.clone(),
            input: Value::String(args.prompt.clone()),
            instructions: args.openai.instructions.clone(),
            max_output_tokens: args.openai.max_output_tokens,
            background: args.openai.background(),
        },
        prompt: None,
    };
    let mut printer = Printer {
        stdout,
        stderr,
        printed: 0,
    };
    let mut observer = Registering {
        registration: &registration,
        inner: &mut printer,
    };
    let report = parts.answers.run(job, stop, &mut observer).await;
    ctrl_c.abort();
    listener.abort();
    realtime.close(Duration::from_secs(5)).await;

    let stderr = printer.stderr;
    let _ = writeln!(stderr);
    let _ = match &report.detail {
        Some(detail) => writeln!(stderr, "status: {} ({detail})", report.status),
        None => writeln!(stderr, "status: {}", report.status),
    };
    if let Some(error) = &report.publish_error {
        let _ = writeln!(stderr, "publish error: {error}");
    }
    Ok(report)
}
