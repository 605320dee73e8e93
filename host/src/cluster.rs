//! The server's side of a shared store (`--store postgres://...`): starting it, bringing
//! the plugins directory up to the versions deployed through it, and turning what it
//! reports into work for the lanes: a document another host asks for goes to its owner
//! lane ([`LaneCommand::Release`]), a lapsed lease to every lane ([`LaneCommand::Fence`]),
//! a deployed plugin into the plugins directory and a hot reload.
//!
//! All of it runs on a thread of its own: the store's answers never wait on a lane, and
//! a lane never waits on the store's round trips.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{Notify, mpsc};

use crate::config::Config;
use crate::guest::plugin::version_of;
use crate::lane::{LaneCommand, Lanes};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::store::StoreEvent;
use crate::store::postgres::{DeployedPlugin, PostgresStore, StoreError, StoreSettings, Target};

/// A started shared store and the events it reports, not yet forwarded.
#[derive(Debug)]
pub struct SharedStore {
    /// The store.
    pub store: Arc<PostgresStore>,
    events: mpsc::UnboundedReceiver<StoreEvent>,
}

/// Starts the store of `config`, if it names one, and writes the plugin versions
/// deployed through it into the plugins directory (before the registry loads them).
pub fn start(config: &Config, metrics: &Metrics) -> Result<Option<SharedStore>, StoreError> {
    let Some(url) = &config.store.url else {
        return Ok(None);
    };
    let target = Target::parse(url)?;
    let settings = StoreSettings {
        host_name: config.upstream_host(),
        lease_ttl: config.store.lease_ttl(),
        pool_size: config.store.pool_size,
    };
    let (store, events) = PostgresStore::start(target, settings, metrics.store())?;
    for plugin in store.latest_plugins()? {
        if let Err(e) = install(&config.plugins, &plugin) {
            tracing::error!(plugin = %plugin.name, "cannot install the deployed version: {e}");
        }
    }
    Ok(Some(SharedStore { store, events }))
}

/// Forwards the store's events until [`Forwarder::stop`].
#[derive(Debug)]
pub struct Forwarder {
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl SharedStore {
    /// Starts forwarding the store's events to the lanes and the reloader.
    pub fn forward(
        self,
        lanes: Arc<Lanes>,
        reloader: Reloader,
        plugins: PathBuf,
    ) -> std::io::Result<(Arc<PostgresStore>, Forwarder)> {
        let SharedStore { store, mut events } = self;
        let stop = Arc::new(Notify::new());
        let thread = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::Builder::new()
                .name("store-events".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a current-thread runtime builds");
                    runtime.block_on(async move {
                        loop {
                            tokio::select! {
                                event = events.recv() => match event {
                                    Some(event) => {
                                        // Installing a plugin is a round trip and a file
                                        // write: off this runtime's thread.
                                        let (store, lanes, reloader, plugins) =
                                            (store.clone(), lanes.clone(), reloader.clone(), plugins.clone());
                                        let _ = tokio::task::spawn_blocking(move || {
                                            handle(event, &store, &lanes, &reloader, &plugins)
                                        })
                                        .await;
                                    }
                                    None => return,
                                },
                                _ = stop.notified() => return,
                            }
                        }
                    });
                })?
        };
        Ok((
            store,
            Forwarder {
                stop,
                thread: Some(thread),
            },
        ))
    }
}

impl Forwarder {
    /// Stops forwarding and waits for the thread.
    pub fn stop(mut self) {
        self.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn handle(
    event: StoreEvent,
    store: &PostgresStore,
    lanes: &Lanes,
    reloader: &Reloader,
    plugins: &Path,
) {
    match event {
        StoreEvent::ReleaseRequested { plugin, document } => {
            let owner = lanes.owner(&plugin, &document);
            let _ = lanes
                .get(owner)
                .commands
                .send(LaneCommand::Release((plugin, document)));
        }
        StoreEvent::Lapsed => lanes.broadcast(|| LaneCommand::Fence),
        StoreEvent::Resumed => {}
        StoreEvent::PluginDeployed { name } => match store.latest_plugin(&name) {
            Ok(Some(plugin)) => install_and_reload(plugins, &plugin, reloader),
            Ok(None) => {}
            Err(e) => tracing::warn!(plugin = %name, "cannot fetch the deployed version: {e}"),
        },
        StoreEvent::PluginsChanged => match store.latest_plugins() {
            Ok(all) => {
                for plugin in all {
                    install_and_reload(plugins, &plugin, reloader);
                }
            }
            Err(e) => tracing::warn!("cannot fetch the deployed versions: {e}"),
        },
    }
}

fn install_and_reload(dir: &Path, plugin: &DeployedPlugin, reloader: &Reloader) {
    match install(dir, plugin) {
        Ok(Some(path)) => {
            tracing::info!(plugin = %plugin.name, version = %plugin.version, "deployed through the store: reloading");
            reloader.reload(&path);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(plugin = %plugin.name, "cannot install the deployed version: {e}")
        }
    }
}

/// Writes a deployed version to `{dir}/{name}.wasm` (atomically: aside, then renamed)
/// unless the file there is that version already. Returns the path when it wrote.
fn install(dir: &Path, plugin: &DeployedPlugin) -> std::io::Result<Option<PathBuf>> {
    if version_of(&plugin.bytes) != plugin.version {
        return Err(std::io::Error::other(format!(
            "the stored bytes are not version {}",
            plugin.version
        )));
    }
    let path = dir.join(format!("{}.wasm", plugin.name));
    if std::fs::read(&path).is_ok_and(|bytes| version_of(&bytes) == plugin.version) {
        return Ok(None);
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &plugin.bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(Some(path))
}
