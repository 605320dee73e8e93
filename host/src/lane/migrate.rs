//! The lane's side of a hot reload: move every live document of a plugin to its new
//! version, one document at a time, yielding in between so the lane keeps serving.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::guest::plugin::Plugin;
use crate::guest::registry::Lookup;
use crate::lane::Lane;

/// Moves every document of `plugin`'s name on this lane to `plugin`, one document at a
/// time and yielding in between, so the lane keeps serving while it migrates.
pub async fn migrate_all(lane: Rc<Lane>, plugin: Arc<Plugin>) {
    let started = Instant::now();
    let docs: Vec<_> = lane
        .live_documents()
        .into_iter()
        .filter(|((name, _), _)| *name == plugin.name)
        .collect();
    if docs.is_empty() {
        return;
    }
    let limits = lane.limits_for(&plugin.name);
    let (mut moved, mut failed) = (0usize, 0usize);
    for ((name, id), doc) in docs {
        // A newer version may have arrived meanwhile (its own migration runs too): never
        // move a document back to an older one.
        let current = matches!(
            lane.services.registry.get(&name),
            Lookup::Ready(p) if Arc::ptr_eq(&p, &plugin)
        );
        if !current {
            break;
        }
        let result = doc.borrow_mut().migrate(plugin.clone(), limits);
        match result {
            Ok(()) => moved += 1,
            Err(e) => {
                failed += 1;
                lane.count_failed_migration();
                let error = format!("{name}/{id} stays on its old version: {e}");
                tracing::error!(lane = lane.index, "{error}");
                lane.services.registry.record_error(&name, error);
            }
        }
        tokio::task::yield_now().await;
    }
    tracing::info!(
        lane = lane.index,
        plugin = %plugin.name,
        version = %plugin.version,
        "reloaded: {moved} document(s) migrated, {failed} failed, in {:?}",
        started.elapsed()
    );
}
