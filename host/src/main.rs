//! The `wasmroom` command: parses the command line and starts the lanes.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wasmroom::config::{Config, parse_ports};

#[derive(Parser)]
#[command(
    version,
    about = "A WebSocket server for per-document logic in WebAssembly"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve WebSockets at /ws/{plugin}/{document}, one lane (thread) per port.
    Serve(ServeArgs),
    /// Check that a .wasm file is a consumer this wasmroom can load, and say what is wrong.
    Check {
        /// The component to check.
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML config file; command-line flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Ports to serve, one lane each: `8000`, `8000-8003` or `8000,8002`.
    #[arg(long, value_name = "LIST", conflicts_with = "port")]
    ports: Option<String>,
    /// A port to serve (repeatable). Port 0 picks a free port.
    #[arg(long, value_name = "PORT")]
    port: Vec<u16>,
    /// The address to listen on [default: 127.0.0.1].
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// The directory of {plugin}.wasm files [default: plugins].
    #[arg(long, value_name = "DIR")]
    plugins: Option<PathBuf>,
    /// Seconds a document without connections stays in memory [default: 30].
    #[arg(long, value_name = "SECS")]
    idle_grace: Option<u64>,
    /// Where document snapshots are kept [default: data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Seconds between saves of a document that changed [default: 5].
    #[arg(long, value_name = "SECS")]
    checkpoint: Option<u64>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(spec) = &self.ports {
            config.ports = parse_ports(spec)?;
        }
        if !self.port.is_empty() {
            config.ports = self.port;
        }
        if let Some(bind) = self.bind {
            config.bind = bind;
        }
        if let Some(dir) = self.plugins {
            config.plugins = dir;
        }
        if let Some(secs) = self.idle_grace {
            config.idle_grace_secs = secs;
        }
        if let Some(dir) = self.data {
            config.data = dir;
        }
        if let Some(secs) = self.checkpoint {
            config.checkpoint_secs = secs;
        }
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => {
            let config = args.into_config()?;
            let server = wasmroom::Server::start(config).context("wasmroom cannot start")?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(server.run_until_signal());
            tracing::info!("signal received: shutting down");
            server.shutdown();
            Ok(())
        }
        Command::Check { file } => match wasmroom::plugin::check(&file) {
            Ok(plugin) => {
                println!(
                    "{}: ok: plugin '{}', version {}, implements wasmroom:consumer/room",
                    file.display(),
                    plugin.name,
                    plugin.version
                );
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
    }
}
