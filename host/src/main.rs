//! The `wasmroom` command: parses the command line and starts the lanes.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wasmroom::config::{Config, parse_ports};
use wasmroom::guest::check::CheckError;
use wasmroom::guest::plugin::Plugin;
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
    /// Check that a .wasm file is a consumer this wasmroom can load, and say what is wrong:
    /// the exports' types, then a trial run that calls each hook once on a throwaway
    /// document.
    Check {
        /// The component to check.
        file: PathBuf,
        /// The config file `serve` uses: its limits and the plugin's settings for the
        /// trial, and its engine settings for the compiled cache.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The data directory of `serve --data DIR` [default: the config's, if given]: the
        /// compiled component is cached there, so the first serve does not compile it
        /// again.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
    /// Start a consumer project in DIR [default: ./NAME]: its build file, a README, the
    /// WIT and an example client. It builds with one command (printed, and in its
    /// README) into a component that `wasmroom check` accepts.
    New {
        /// The consumer's language.
        #[arg(long, value_enum)]
        lang: wasmroom::scaffold::Lang,
        /// The plugin's name: its file NAME.wasm and its routes /ws/NAME/..., /docs/NAME/...
        name: String,
        /// A new or empty directory [default: ./NAME].
        dir: Option<PathBuf>,
    },
    /// Write the WIT contract this wasmroom speaks as DIR/consumer.wit [default: ./wit],
    /// for a bindings generator in any language.
    Wit {
        /// The folder to write it into.
        #[arg(default_value = "wit")]
        dir: PathBuf,
    },
    /// Check a plugin and deploy it to every host of a shared store: each hot-reloads it,
    /// and hosts started later load it.
    Deploy {
        /// The component to deploy; its file name is the plugin's name.
        file: PathBuf,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Print a journaled document's export (its `GET /docs/...` answer) as it was after
    /// input SEQ, from the data directory, read only (also beside a running server).
    Replay(wasmroom::ops::replay::ReplayArgs),
    /// The shared store: create or upgrade its schema, list its documents.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Create or upgrade wasmroom's tables (hosts do it at start too).
    Migrate {
        #[command(flatten)]
        store: StoreArg,
    },
    /// List the documents with their owner host, epoch, size and last save.
    Ls {
        #[command(flatten)]
        store: StoreArg,
        /// A lease younger than this (ms) counts as held [default: 10000].
        #[arg(long, default_value_t = 10_000)]
        lease_ttl_ms: u64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct StoreArg {
    /// The store: postgres://USER[:PASSWORD]@HOST:PORT/DB [default: $WASMROOM_STORE].
    #[arg(long, value_name = "URL")]
    store: Option<String>,
}

impl StoreArg {
    fn target(&self) -> anyhow::Result<wasmroom::store::postgres::Target> {
        let url = match &self.store {
            Some(url) => url.clone(),
            None => std::env::var(STORE_VAR)
                .context("no store: pass --store postgres://... or set WASMROOM_STORE")?,
        };
        Ok(wasmroom::store::postgres::Target::parse(&url)?)
    }
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
    /// Keep documents in a PostgreSQL shared by several hosts:
    /// postgres://USER[:PASSWORD]@HOST:PORT/DB [default: $WASMROOM_STORE, else files under
    /// --data].
    #[arg(long, value_name = "URL")]
    store: Option<String>,
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
    /// The hosts share a store (`serve --store`): let nginx move a document to the next
    /// host when its host does not answer [default: when the config file names a store].
    #[arg(long)]
    store_shared: bool,
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
            shared_store: self.store_shared || config.store.url.is_some(),
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
        if let Some(url) = self.store.or_else(|| std::env::var(STORE_VAR).ok()) {
            config.store.url = Some(url);
        }
        Ok(config)
    }
}

/// The environment variable holding the admin API's token.
const TOKEN_VAR: &str = "WASMROOM_ADMIN_TOKEN";
/// The environment variable holding the shared store's URL.
const STORE_VAR: &str = "WASMROOM_STORE";

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, causes joined: what went wrong and why.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format {
        // Without colours: every control character of an event is escaped, so that text
        // from clients and consumers cannot forge a line (and colours would be escaped).
        LogFormat::Text => logs
            .with_ansi(false)
            .with_writer(wasmroom::ops::log_lines::EscapedStderr)
            .init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .init(),
    }
    // Panics go to the log like every other event (one line, with where it happened),
    // instead of raw to stderr beside it.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        tracing::error!(
            "thread '{name}' panicked{location}: {}",
            wasmroom::lane::task::message(info.payload())
        );
    }));
    match cli.command {
        Command::Serve(args) => {
            let config = args.into_config()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // Caught before the ports accept connections: a SIGTERM during the start
            // stops the server cleanly.
            let signals = {
                let _runtime = runtime.enter();
                wasmroom::Signals::catch().context("cannot catch signals")?
            };
            let server = wasmroom::Server::start(config).context("wasmroom cannot start")?;
            let stopped = runtime.block_on(server.run_until_signal(signals));
            match stopped {
                wasmroom::Stopped::Signal => {
                    tracing::info!("signal received: shutting down");
                    server.shutdown();
                    Ok(())
                }
                wasmroom::Stopped::Failed(why) => {
                    tracing::error!(
                        "fatal: {why}; saving the other lanes' documents and exiting so that a supervisor restarts wasmroom"
                    );
                    server.shutdown();
                    // EX_SOFTWARE: an internal error.
                    std::process::exit(70);
                }
            }
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
        Command::Deploy { file, store } => deploy(&file, &store),
        Command::New { lang, name, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let files = wasmroom::scaffold::create(lang, &name, &dir)?;
            print!(
                "{}",
                wasmroom::scaffold::next_steps(lang, &name, &dir, &files)
            );
            Ok(())
        }
        Command::Wit { dir } => {
            let path = wasmroom::scaffold::write_wit(&dir)?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Command::Store { command } => store_command(command),
        Command::Replay(args) => Ok(wasmroom::ops::replay::run(&args)?),
        Command::Check { file, config, data } => match check(&file, config.as_deref(), data)? {
            Ok((plugin, notes)) => {
                for note in notes {
                    println!("{}: note: {note}", file.display());
                }
                println!(
                    "{}: ok: plugin '{}', version {}, implements wasmroom:consumer/{} and passed its trial run",
                    file.display(),
                    plugin.name,
                    plugin.version,
                    plugin.world()
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

/// `wasmroom check FILE`: under the config file's limits and settings if given, caching
/// the compiled component in `--data` (or the config's data directory).
fn check(
    file: &Path,
    config_file: Option<&Path>,
    data: Option<PathBuf>,
) -> anyhow::Result<Result<(Plugin, Vec<String>), CheckError>> {
    let config = base_config(config_file, None)?;
    let data = data.or_else(|| config_file.map(|_| config.data.clone()));
    let cache = data.map(|d| d.join(".compiled"));
    Ok(wasmroom::guest::check::check(
        file,
        &config,
        cache.as_deref(),
    ))
}

/// `wasmroom deploy FILE`: checked as `wasmroom check` does, then stored and announced.
fn deploy(file: &Path, store: &StoreArg) -> anyhow::Result<()> {
    let target = store.target()?;
    let plugin = match wasmroom::guest::check::check(file, &Config::default(), None) {
        Ok((plugin, _notes)) => plugin,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let seq = runtime()?.block_on(wasmroom::store::postgres::deploy(
        &target,
        &plugin.name,
        &plugin.version,
        &bytes,
    ))?;
    println!(
        "deployed plugin '{}' version {} (#{seq}) to {target}: every host reloads it",
        plugin.name, plugin.version
    );
    Ok(())
}

/// `wasmroom store ...`.
fn store_command(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Migrate { store } => {
            let target = store.target()?;
            let (before, after) =
                runtime()?.block_on(wasmroom::store::postgres::migrate(&target))?;
            println!("{target}: schema version {before} -> {after}");
        }
        StoreCommand::Ls {
            store,
            lease_ttl_ms,
            json,
        } => {
            let target = store.target()?;
            let ttl = std::time::Duration::from_millis(lease_ttl_ms);
            let docs = runtime()?.block_on(wasmroom::store::postgres::list(&target, ttl))?;
            if json {
                for d in &docs {
                    println!("{}", serde_json::to_string(d)?);
                }
            } else {
                println!(
                    "{:<12} {:<32} {:<20} {:>6} {:>10}  saved at",
                    "plugin", "document", "owner", "epoch", "bytes"
                );
                for d in &docs {
                    let saved = d
                        .saved_at_ms
                        .map(|ms| format!("{ms} ms since the epoch"))
                        .unwrap_or_else(|| "never".into());
                    println!(
                        "{:<12} {:<32} {:<20} {:>6} {:>10}  {saved}",
                        d.plugin,
                        d.document,
                        d.owner.as_deref().unwrap_or("-"),
                        d.epoch,
                        d.size
                    );
                }
            }
        }
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
