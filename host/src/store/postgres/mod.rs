//! The shared store: documents in PostgreSQL, so that any host can take over any
//! document, never two at once.
//!
//! - **One clock.** Every host has a row in `wasmroom.hosts` it heartbeats every third of
//!   the lease TTL (one statement per host, not per document); a document's lease is its
//!   `owner` column, valid while that host's heartbeat is younger than the TTL by
//!   PostgreSQL's `now()`. No host clock is ever compared with another.
//! - **Fencing.** Opening a document takes its lease and reads its snapshot in one
//!   statement and bumps its `epoch`; every later write carries that epoch and the
//!   holder, and a write that matches no row means another host took the document.
//! - **Self-fencing.** A host serves only while its own [`LeaseClock`] says the lease
//!   holds (measured from its last accepted heartbeat, with a margin), so it stops before
//!   the others may start. After a lapse it registers anew: documents of the old
//!   registration are never served again.
//! - **Off the lanes.** Everything here runs on the store's own thread and runtime; a
//!   lane only awaits the answer. Checkpoints are written in batches ([`batch`]).
//! - **Hand-back.** A host that needs a document a live host holds asks it with
//!   `NOTIFY wasmroom_host_{id}` ([`listen`]) and polls until it is free.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{Notify, mpsc};
use tokio_postgres::NoTls;

use crate::metrics::StoreMetrics;
use crate::store::lease::LeaseClock;
use crate::store::{StorageError, StoreEvent};

mod batch;
mod heartbeat;
mod journal;
mod listen;
pub mod schema;
mod sql;
mod storage;
mod versions;

pub use journal::read_document;
pub use sql::{DeployedPlugin, ListedDocument};
pub use versions::read_version;

/// How long one statement may take before the store counts as unreachable for it.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Events waiting for the rest of the process. Its reader never waits on anything but
/// the lanes' channels, so this fills only in a burst; a release request that finds it
/// full is dropped (the asker repeats it), the others wait for room.
const EVENTS_QUEUED: usize = 1024;

/// Why the store could not be set up or used from the command line.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not a PostgreSQL URL: use `postgres://USER@HOST:PORT/DB`.
    #[error("invalid store URL: {0}; use postgres://USER@HOST:PORT/DB")]
    BadUrl(String),
    /// The server cannot be reached or refused the login: check that PostgreSQL runs
    /// there and the user and database in the URL.
    #[error("cannot connect to the store {target}: {reason}")]
    Connect {
        /// The URL without its password.
        target: String,
        /// Why.
        reason: String,
    },
    /// A statement failed (see the text).
    #[error("the store failed: {0}")]
    Query(String),
    /// The database holds a newer schema than this build knows: upgrade wasmroom.
    #[error(
        "the store's schema is version {found}; this wasmroom knows up to {known}: upgrade wasmroom"
    )]
    SchemaTooNew {
        /// In the database.
        found: i32,
        /// In this build.
        known: i32,
    },
    /// A thread could not be started.
    #[error("cannot start the store's thread: {0}")]
    Thread(std::io::Error),
}

impl StoreError {
    pub(crate) fn query(e: tokio_postgres::Error) -> StoreError {
        StoreError::Query(error_text(&e))
    }
}

/// The text of a PostgreSQL error, with the server's message when there is one.
pub(crate) fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// Where a store lives, parsed from its URL; shown without the password.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    shown: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Target {
    /// Parses `postgres://USER[:PASSWORD]@HOST:PORT/DB` (or a key=value string).
    pub fn parse(url: &str) -> Result<Target, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::BadUrl(format!(
                "{:?} does not start with postgres://",
                redact(url)
            )));
        }
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("{}: {e}", redact(url))))?;
        config
            .connect_timeout(Duration::from_secs(3))
            .application_name("wasmroom")
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5));
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let shown = format!(
            "postgres://{}@{host}:{port}/{}",
            config.get_user().unwrap_or(""),
            config.get_dbname().unwrap_or("")
        );
        Ok(Target { config, shown })
    }

    /// One connection, outside any pool (command-line tools, the LISTEN connection).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, StoreError> {
        let (client, connection) =
            self.config
                .connect(NoTls)
                .await
                .map_err(|e| StoreError::Connect {
                    target: self.shown.clone(),
                    reason: error_text(&e),
                })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// A URL with its password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// How the shared store behaves.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// This host's name in `wasmroom store ls` and in messages (its nginx name).
    pub host_name: String,
    /// How long a lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// Connections to PostgreSQL.
    pub pool_size: usize,
}

/// What the store's tasks share.
#[derive(Debug)]
struct Inner {
    target: Target,
    pool: Pool,
    clock: Arc<LeaseClock>,
    settings: StoreSettings,
    saves: mpsc::UnboundedSender<batch::SaveRequest>,
    events: mpsc::Sender<StoreEvent>,
    metrics: StoreMetrics,
}

/// The PostgreSQL store of a running host.
#[derive(Debug)]
pub struct PostgresStore {
    runtime: tokio::runtime::Handle,
    inner: Arc<Inner>,
    stop: Arc<Notify>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl PostgresStore {
    /// Connects, creates or upgrades the schema, registers this host and starts its
    /// heartbeat and its listener, on a thread of its own. Returns once the host is
    /// registered, with the events the rest of the process must act on (release
    /// requests, a lapsed lease, new plugin versions).
    pub fn start(
        target: Target,
        settings: StoreSettings,
        metrics: StoreMetrics,
    ) -> Result<(Arc<PostgresStore>, mpsc::Receiver<StoreEvent>), StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StoreError::Thread)?;
        let handle = runtime.handle().clone();
        let (events, events_rx) = mpsc::channel(EVENTS_QUEUED);
        let (saves, saves_rx) = mpsc::unbounded_channel();
        let manager = Manager::from_config(
            target.config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(QUERY_TIMEOUT))
            .create_timeout(Some(QUERY_TIMEOUT))
            .recycle_timeout(Some(QUERY_TIMEOUT))
            .build()
            .map_err(|e| StoreError::BadUrl(e.to_string()))?;
        let inner = Arc::new(Inner {
            target,
            pool,
            clock: Arc::new(LeaseClock::new(settings.lease_ttl)),
            settings,
            saves,
            events,
            metrics,
        });
        let stop = Arc::new(Notify::new());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (inner, stop) = (inner.clone(), stop.clone());
            std::thread::Builder::new()
                .name("store".into())
                .spawn(move || {
                    runtime.block_on(async move {
                        let registered = async {
                            let mut client = inner.target.connect().await?;
                            schema::migrate(&mut client).await?;
                            inner.register().await
                        }
                        .await;
                        let ok = registered.is_ok();
                        let _ = ready_tx.send(registered);
                        if !ok {
                            return;
                        }
                        tokio::spawn(heartbeat::run(inner.clone()));
                        tokio::spawn(listen::run(inner.clone()));
                        tokio::spawn(batch::run(inner.clone(), saves_rx));
                        stop.notified().await;
                    })
                })
                .map_err(StoreError::Thread)?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(StoreError::Query("the store's thread ended".into()));
            }
        }
        tracing::info!(
            store = %inner.target,
            host = %inner.settings.host_name,
            holder = inner.clock.holder(),
            "registered in the shared store (lease TTL {:?})",
            inner.settings.lease_ttl
        );
        let store = Arc::new(PostgresStore {
            runtime: handle,
            inner,
            stop,
            thread: Mutex::new(Some(thread)),
        });
        Ok((store, events_rx))
    }

    /// The lease clock lanes consult before applying anything.
    pub fn clock(&self) -> &Arc<LeaseClock> {
        &self.inner.clock
    }

    /// The newest deployed version of every plugin (blocking: call off the lanes).
    pub fn latest_plugins(&self) -> Result<Vec<DeployedPlugin>, StoreError> {
        let inner = self.inner.clone();
        self.block(async move { inner.latest_plugins(None).await })
    }

    /// The newest deployed version of plugin `name`, if any (blocking).
    pub fn latest_plugin(&self, name: &str) -> Result<Option<DeployedPlugin>, StoreError> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        self.block(async move { Ok(inner.latest_plugins(Some(&name)).await?.into_iter().next()) })
    }

    /// Releases every lease this host holds and removes its registration, so the other
    /// hosts can take its documents at once; then stops the store's thread. Call after
    /// the lanes have saved and stopped.
    pub fn shutdown(&self) {
        let inner = self.inner.clone();
        let _ = self.block(async move { inner.unregister().await });
        self.stop.notify_one();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }

    /// Runs `task` on the store's runtime and waits for it from a thread outside it.
    fn block<T: Send + 'static>(
        &self,
        task: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(task.await);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(StoreError::Query("the store's thread ended".into())))
    }

    /// Runs `task` on the store's runtime; the caller (a lane) only awaits the answer.
    async fn on_store<T: Send + 'static>(
        &self,
        task: impl std::future::Future<Output = Result<T, StorageError>> + Send + 'static,
    ) -> Result<T, StorageError> {
        self.runtime
            .spawn(task)
            .await
            .unwrap_or_else(|e| Err(StorageError::Unavailable(format!("store task: {e}"))))
    }
}

impl Inner {
    /// A pooled connection, or "unavailable" within the query timeout.
    async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        self.pool
            .get()
            .await
            .map_err(|e| StorageError::Unavailable(format!("{}: {e}", self.target)))
    }

    /// Times one round trip of `op` and counts it.
    async fn timed<T>(
        &self,
        op: &'static str,
        query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StorageError> {
        let started = Instant::now();
        let result = tokio::time::timeout(QUERY_TIMEOUT, query).await;
        let result = match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StorageError::Unavailable(error_text(&e))),
            Err(_) => Err(StorageError::Unavailable(format!(
                "no answer from {} within {QUERY_TIMEOUT:?}",
                self.target
            ))),
        };
        self.metrics
            .round_trip(op, started.elapsed(), result.is_ok());
        result
    }
}

/// Creates or upgrades the schema of the store at `target` (`wasmroom store migrate`);
/// returns the versions before and after.
pub async fn migrate(target: &Target) -> Result<(i32, i32), StoreError> {
    let mut client = target.connect().await?;
    let before = schema::migrate(&mut client).await?;
    Ok((before, schema::SCHEMA_VERSION))
}

/// Every document in the store at `target` (`wasmroom store ls`).
pub async fn list(target: &Target, ttl: Duration) -> Result<Vec<ListedDocument>, StoreError> {
    let mut client = target.connect().await?;
    schema::migrate(&mut client).await?;
    sql::list(&client, ttl).await
}

/// Stores a plugin version and tells every host (`wasmroom deploy`); returns its
/// sequence number. The component must have been checked by the caller.
pub async fn deploy(
    target: &Target,
    name: &str,
    version: &str,
    bytes: &[u8],
) -> Result<i64, StoreError> {
    let mut client = target.connect().await?;
    schema::migrate(&mut client).await?;
    sql::deploy(&client, name, version, bytes).await
}
