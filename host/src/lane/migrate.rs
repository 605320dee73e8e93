//! The lane's side of a hot reload: move every live document of a plugin to its new
//! version, one document at a time (each in one synchronous step), letting the lane's
//! other tasks run at least every millisecond. The second instance a migration needs
//! comes from the pool's reserve, so a full server can still be upgraded.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::document::DocumentError;
use crate::guest::plugin::Plugin;
use crate::guest::registry::Lookup;
use crate::lane::Lane;

/// How long a lane migrates documents before it lets its other tasks run.
const YIELD_EVERY: Duration = Duration::from_millis(1);

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
    let mut last_yield = Instant::now();
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
        let result = match lane.services.slots.for_migration() {
            Some(slot) => doc.borrow_mut().migrate(plugin.clone(), &limits, slot),
            None => Err(DocumentError::PoolExhausted(
                "no slot for a migration: the pool and its reserve are in use".into(),
            )),
        };
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
        // The lane keeps serving: other tasks run at least every millisecond.
        if last_yield.elapsed() >= YIELD_EVERY {
            tokio::task::yield_now().await;
            last_yield = Instant::now();
        }
    }
    tracing::info!(
        lane = lane.index,
        plugin = %plugin.name,
        version = %plugin.version,
        "reloaded: {moved} document(s) migrated, {failed} failed, in {:?}",
        started.elapsed()
    );
}
