//! A journaled document's replay on its lane, as it opens: the plugin versions its
//! inputs were made by (`document::versions`), found first (a loaded version at once,
//! another compiled from the version store off the lane: compiling can take seconds,
//! and the lane never waits on it); the replay itself, in slices that let the lane's
//! other tasks run; and the move to the version there is now.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::document::journal::Tail;
use crate::document::versions::{ReplayVersions, needed};
use crate::document::{Document, DocumentConfig, DocumentError};
use crate::guest::plugin::Plugin;
use crate::lane::Lane;
use crate::store::Snapshot;

/// Journal entries replayed between two looks at the clock (each a guest call under the
/// deadline, most far shorter). Each slice finds its entries from the tail's start, so
/// fewer, larger slices keep a long tail's replay linear in practice.
const REPLAY_SLICE: usize = 64;

/// How long a replay runs before the lane's other tasks get a turn.
const YIELD_EVERY: Duration = Duration::from_millis(1);

impl Lane {
    /// The version `plugin`'s document opens on (the one that made its first input
    /// after `saved`) and the versions its replay moves it to; the version there is now
    /// and none else when its journal needs no other. A version neither loaded nor kept
    /// refuses the open: its inputs cannot be replayed.
    pub(super) async fn replay_versions(
        &self,
        plugin: &Arc<Plugin>,
        saved: Option<&Snapshot>,
        tail: Option<&Rc<RefCell<Tail>>>,
    ) -> Result<(Arc<Plugin>, Rc<ReplayVersions>), DocumentError> {
        let mut needed = match tail {
            Some(tail) => needed(saved, tail.borrow().entries()),
            None => Vec::new(),
        };
        if needed.iter().all(|v| *v == plugin.version) {
            return Ok((plugin.clone(), Rc::new(ReplayVersions::none())));
        }
        let first = needed[0].clone();
        needed.sort();
        needed.dedup();
        let mut plugins = vec![plugin.clone()];
        for version in needed.into_iter().filter(|v| *v != plugin.version) {
            let registry = self.services.registry.clone();
            let name = plugin.name.clone();
            let found = tokio::task::spawn_blocking(move || registry.version(&name, &version))
                .await
                .map_err(|e| DocumentError::Instantiate(format!("loading a version: {e}")))?;
            plugins.push(found.map_err(|e| DocumentError::Unreplayable(e.to_string()))?);
        }
        let opener = plugins
            .iter()
            .find(|p| p.version == first)
            .cloned()
            .expect("every needed version was found");
        tracing::info!(lane = self.index, plugin = %plugin.name, "replaying on version(s) {}, then moving to {}", plugins[1..].iter().map(|p| p.version.as_str()).collect::<Vec<_>>().join(", "), plugin.version);
        Ok((
            opener,
            Rc::new(ReplayVersions::new(plugins, self.services.slots.clone())),
        ))
    }

    /// Replays a document's journal in slices, letting the lane's other tasks run at
    /// least every millisecond (like a hot reload's migration): a long journal after a
    /// crash or a takeover does not stall the lane's other documents. The document is
    /// not in the table yet; connections that ask for it wait for this opening.
    pub(super) async fn replay(
        &self,
        doc: &mut Document,
        versions: &ReplayVersions,
    ) -> Result<usize, DocumentError> {
        let mut replayed = 0;
        let mut slice = Instant::now();
        loop {
            let done = doc.replay_some(REPLAY_SLICE, versions)?;
            if done == 0 {
                break;
            }
            replayed += done;
            if slice.elapsed() >= YIELD_EVERY {
                tokio::task::yield_now().await;
                slice = Instant::now();
            }
        }
        doc.replay_finished();
        Ok(replayed)
    }

    /// Moves a document its journal left on an older version (replayed on the versions
    /// that made its inputs) to `plugin`, the version there is now, as a hot reload
    /// would; if the new version refuses, it stays where it is, as after a failed reload.
    pub(super) fn move_replayed_to(
        &self,
        doc: &mut Document,
        plugin: &Arc<Plugin>,
        limits: &DocumentConfig,
    ) {
        if doc.plugin().version == plugin.version {
            return;
        }
        let moved = match self.services.slots.for_migration() {
            Some(slot) => doc.migrate(plugin.clone(), limits, slot),
            None => Err(DocumentError::PoolExhausted(
                "no slot for a migration: the pool and its reserve are in use".into(),
            )),
        };
        if let Err(e) = moved {
            let error = format!(
                "{}/{} stays on version {} after its replay: {e}",
                plugin.name,
                doc.id(),
                doc.plugin().version
            );
            tracing::error!(lane = self.index, "{error}");
            self.services.registry.record_error(&plugin.name, error);
        }
    }
}
