//! Spawning a lane's tasks so that a panic in one is never swallowed: tokio would end
//! only the panicking task and leave the lane running with, say, a document that is
//! never saved again. A panic in a lane's own code is a wasmroom bug with unknown
//! consequences, so it is reported as fatal: the server saves what the other lanes hold,
//! closes their sockets with 1012 and exits non-zero for a supervisor to restart it.
//! (Panics in guest code are traps, caught per call: they end only their document.)

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::task::JoinHandle;

use crate::lane::table::Health;

/// Spawns `task` on the current lane; a panic in it is reported to `health` as fatal.
pub fn spawn<F>(health: &Arc<Health>, what: &'static str, task: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + 'static,
{
    let health = health.clone();
    tokio::task::spawn_local(async move {
        if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
            health.fail(format!(
                "a lane's {what} task panicked: {}",
                message(&*panic)
            ));
        }
    })
}

/// The text of a panic payload.
pub fn message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}
