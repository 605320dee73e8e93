//! The server's side of a shared store (`--store postgres://...`): starting it, bringing
//! the plugins directory up to the versions deployed through it, and turning what it
//! reports into work for the lanes: a document another host asks for goes to its owner
//! lane ([`LaneCommand::Release`]), a lapsed lease to every lane ([`LaneCommand::Fence`]),
//! a deployed plugin into the plugins directory and a hot reload.
//!
//! All of it runs on a thread of its own: the store's answers never wait on a lane, and
//! a lane never waits on the store's round trips. Events that concern documents (release
//! requests, a lapsed lease) are forwarded at once; plugin installs, which fetch every
//! plugin and hash files, run beside them with their requests merged, so a deploy never
//! holds up a hand-back past the asker's timeout.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
    events: mpsc::Receiver<StoreEvent>,
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
                        let installs = Arc::new(Installs::default());
                        let installer = tokio::spawn(install_when_asked(
                            installs.clone(),
                            store.clone(),
                            reloader,
                            plugins,
                        ));
                        loop {
                            tokio::select! {
                                event = events.recv() => match event {
                                    Some(event) => forward(event, &lanes, &installs),
                                    None => break,
                                },
                                _ = stop.notified() => break,
                            }
                        }
                        installer.abort();
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

/// Hands an event to whoever acts on it, without waiting: documents to their owner lane,
/// a lapsed lease to every lane, plugin versions to [`install_when_asked`].
fn forward(event: StoreEvent, lanes: &Lanes, installs: &Installs) {
    match event {
        StoreEvent::ReleaseRequested {
            plugin,
            document,
            epoch,
        } => {
            let owner = lanes.owner(&plugin, &document);
            let _ = lanes
                .get(owner)
                .commands
                .send(LaneCommand::Release((plugin, document), epoch));
        }
        StoreEvent::Lapsed => lanes.broadcast(|| LaneCommand::Fence),
        StoreEvent::Resumed => {}
        StoreEvent::PluginDeployed { name } => installs.ask(Some(name)),
        StoreEvent::PluginsChanged => installs.ask(None),
    }
}

/// Plugin versions to install, merged: asking twice for one plugin (or for all) while
/// an install runs installs it once more, not twice.
#[derive(Debug, Default)]
struct Installs {
    asked: Mutex<Asked>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Asked {
    all: bool,
    names: BTreeSet<String>,
}

impl Installs {
    /// Asks for plugin `name` (or every plugin) to be brought up to its deployed version.
    fn ask(&self, name: Option<String>) {
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        match name {
            Some(name) if !asked.all => {
                asked.names.insert(name);
            }
            Some(_) => {}
            None => {
                asked.all = true;
                asked.names.clear();
            }
        }
        drop(asked);
        self.wake.notify_one();
    }

    fn take(&self) -> Asked {
        std::mem::take(&mut *self.asked.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Installs what was asked for, one batch at a time, off the forwarder's thread (a
/// round trip per plugin and a file write).
async fn install_when_asked(
    installs: Arc<Installs>,
    store: Arc<PostgresStore>,
    reloader: Reloader,
    plugins: PathBuf,
) {
    loop {
        installs.wake.notified().await;
        let asked = installs.take();
        let (store, reloader, plugins) = (store.clone(), reloader.clone(), plugins.clone());
        let _ =
            tokio::task::spawn_blocking(move || install_asked(asked, &store, &reloader, &plugins))
                .await;
    }
}

fn install_asked(asked: Asked, store: &PostgresStore, reloader: &Reloader, plugins: &Path) {
    if asked.all {
        match store.latest_plugins() {
            Ok(all) => {
                for plugin in all {
                    install_and_reload(plugins, &plugin, reloader);
                }
            }
            Err(e) => tracing::warn!("cannot fetch the deployed versions: {e}"),
        }
        return;
    }
    for name in asked.names {
        match store.latest_plugin(&name) {
            Ok(Some(plugin)) => install_and_reload(plugins, &plugin, reloader),
            Ok(None) => {}
            Err(e) => tracing::warn!(plugin = %name, "cannot fetch the deployed version: {e}"),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_requests_merge_while_one_runs() {
        let installs = Installs::default();
        installs.ask(Some("chat".into()));
        installs.ask(Some("chat".into()));
        installs.ask(Some("yjs".into()));
        let asked = installs.take();
        assert!(!asked.all);
        assert_eq!(asked.names.into_iter().collect::<Vec<_>>(), ["chat", "yjs"]);
        installs.ask(Some("chat".into()));
        installs.ask(None);
        installs.ask(Some("relay".into()));
        let asked = installs.take();
        assert!(asked.all && asked.names.is_empty(), "{asked:?}");
        let asked = installs.take();
        assert!(!asked.all && asked.names.is_empty(), "taken once");
    }
}
