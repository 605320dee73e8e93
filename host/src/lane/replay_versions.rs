//! The plugin versions a journaled document's replay runs on (`document::versions`),
//! found before it opens: a loaded version at once, another compiled from the version
//! store off the lane (compiling can take seconds; the lane never waits on it).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::document::DocumentError;
use crate::document::journal::Tail;
use crate::document::versions::{ReplayVersions, needed};
use crate::guest::plugin::Plugin;
use crate::lane::Lane;
use crate::store::Snapshot;

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
}
