//! The `wasmroom` command: parses the command line and starts the lanes.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wasmroom::config::{Config, parse_ports};
use wasmroom::ops::nginx_config::{self as nginx, NginxOptions, Routing, Upstream};
use wasmroom::routing::Misrouted;

#[derive(Parser)]
#[command(
    version,
    about = "A WebSocket server for per-document logic in WebAssembly"
)]
struct Cli {
    /// Log lines as text for people or JSON for log collectors.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve WebSockets at /ws/{plugin}/{document}, one lane (thread) per port.
    Serve(ServeArgs),
    /// Print an nginx config that proxies to the lanes (see README "Deploying behind nginx").
    NginxConfig(NginxArgs),
    /// A terminal view of a running server (its admin API), refreshed every second.
    Top {
        /// The admin API's address (`serve --admin-port`).
        #[arg(long, default_value = "127.0.0.1:9000")]
        admin: String,
        /// The admin API's bearer token [default: $WASMROOM_ADMIN_TOKEN].
        #[arg(long)]
        token: Option<String>,
        /// Print one screen and exit.
        #[arg(long)]
        once: bool,
    },
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
    /// What a lane does with a connection for a document another lane owns
    /// [default: hand-over].
    #[arg(long, value_name = "HOW")]
    misrouted: Option<Misrouted>,
    /// Take the client address from X-Real-IP / X-Forwarded-For (only behind a proxy
    /// that sets them).
    #[arg(long)]
    proxy_headers: bool,
    /// This host's name in nginx's upstream `server` lines; owner lanes are computed
    /// from `HOST:PORT` [default: the bind address].
    #[arg(long, value_name = "HOST")]
    upstream_host: Option<String>,
    /// Serve the files of DIR for every GET no other route takes (e.g. a web app).
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Serve the admin API (metrics, documents, actions) on this port (0: a free one).
    #[arg(long, value_name = "PORT")]
    admin_port: Option<u16>,
    /// The admin API's address [default: 127.0.0.1]; beyond loopback a token is required
    /// (`admin_token` in the config or $WASMROOM_ADMIN_TOKEN).
    #[arg(long, value_name = "ADDR")]
    admin_bind: Option<IpAddr>,
}

#[derive(clap::Args)]
struct NginxArgs {
    /// A TOML config file (its ports, bind address and ping interval are used).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This host's lane ports: `8000`, `8000-8003` or `8000,8002` [default: from the config].
    #[arg(long, value_name = "LIST")]
    ports: Option<String>,
    /// A host and its lane ports, `HOST:PORTS` (repeatable; e.g. `10.0.0.5:8000-8003`).
    /// Replaces this host's lanes.
    #[arg(long, value_name = "HOST:PORTS")]
    upstream: Vec<String>,
    /// How nginx routes a document to a lane.
    #[arg(long, value_enum, default_value = "hash")]
    routing: Routing,
    /// nginx's `listen`: a port or ADDR:PORT.
    #[arg(long, default_value = "80")]
    listen: String,
    /// nginx's `server_name`.
    #[arg(long, default_value = "_")]
    server_name: String,
    /// Print only the part for `http { }` (e.g. /etc/nginx/conf.d/wasmroom.conf) instead
    /// of a whole nginx.conf.
    #[arg(long)]
    site: bool,
}

/// The config file (or the defaults) with `--ports` applied.
fn base_config(file: Option<&Path>, ports: Option<&str>) -> anyhow::Result<Config> {
    let mut config = match file {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(spec) = ports {
        config.ports = parse_ports(spec)?;
    }
    Ok(config)
}

impl NginxArgs {
    fn render(self) -> anyhow::Result<String> {
        let config = base_config(self.config.as_deref(), self.ports.as_deref())?;
        let upstreams = if self.upstream.is_empty() {
            vec![Upstream {
                host: config.upstream_host(),
                ports: config.ports.clone(),
            }]
        } else {
            self.upstream
                .iter()
                .map(|u| nginx::parse_upstream(u))
                .collect::<Result<_, _>>()?
        };
        Ok(nginx::render(&NginxOptions {
            upstreams,
            routing: self.routing,
            listen: self.listen,
            server_name: self.server_name,
            standalone: !self.site,
            ping_interval: config.limits.ping_interval(),
            max_body_bytes: config.limits.max_message_bytes,
        })?)
    }
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = base_config(self.config.as_deref(), self.ports.as_deref())?;
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
        if let Some(how) = self.misrouted {
            config.misrouted = how;
        }
        if self.proxy_headers {
            config.proxy_headers = true;
        }
        if let Some(host) = self.upstream_host {
            config.upstream_host = Some(host);
        }
        if let Some(dir) = self.static_dir {
            config.static_dir = Some(dir);
        }
        if let Some(port) = self.admin_port {
            config.admin_port = Some(port);
        }
        if let Some(addr) = self.admin_bind {
            config.admin_bind = addr;
        }
        if let Ok(token) = std::env::var(TOKEN_VAR) {
            config.admin_token = Some(token);
        }
        Ok(config)
    }
}

/// The environment variable holding the admin API's token.
const TOKEN_VAR: &str = "WASMROOM_ADMIN_TOKEN";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
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
        Command::NginxConfig(args) => {
            print!("{}", args.render()?);
            Ok(())
        }
        Command::Top { admin, token, once } => {
            let token = token.or_else(|| std::env::var(TOKEN_VAR).ok());
            wasmroom::ops::top::run(&admin, token.as_deref(), once)?;
            Ok(())
        }
        Command::Check { file } => match wasmroom::guest::plugin::check(&file) {
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
