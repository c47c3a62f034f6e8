//! The `publisher` command line: parses options, sets up logging, runs the subcommand and
//! turns its outcome into an exit code.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use publisher::cli::{Cli, Command};
use shared::headers::Status;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ask(args) => {
            let mut stdout = std::io::stdout();
            let mut stderr = std::io::stderr();
            let report = publisher::ask::run(&args, &mut stdout, &mut stderr).await?;
            let ok = report.status == Status::Completed && report.publish_error.is_none();
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Serve(args) => {
            publisher::serve::main(&args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Model(args) => {
            let local = args.local.clone();
            let (model, took) = tokio::task::spawn_blocking(move || local.load())
                .await
                .context("loading the model")??;
            eprintln!("loaded {} in {} ms", model.name(), took.as_millis());
            let engine = publisher::model::Engine::start(model, args.local.model_workers)?;
            if args.bench {
                let report = publisher::model::bench::run(&engine, took).await?;
                println!(
                    "{} with {} workers:",
                    engine.model().name(),
                    engine.workers()
                );
                println!("{report}");
                return Ok(ExitCode::SUCCESS);
            }
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            let addr = listener.local_addr()?;
            println!("model server listening on http://{addr}/v1");
            publisher::model::server::serve(
                listener,
                engine,
                args.local.defaults(),
                publisher::serve::signal(),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(args) => {
            let mut config = publisher::replay::ReplayConfig::load_dir(&args.dir)
                .with_context(|| format!("loading recordings from {}", args.dir.display()))?;
            config.default = args.default.clone();
            config.interval = std::time::Duration::from_millis(args.interval_ms);
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            let addr = listener.local_addr()?;
            println!("replay server listening on http://{addr}/v1");
            publisher::replay::serve(listener, config, publisher::serve::signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
