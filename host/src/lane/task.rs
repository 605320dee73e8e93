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
    tokio::task::spawn_local(fatal_on_panic(health.clone(), what, task))
}

/// `task`, reporting a panic in it to `health` as fatal. A combinator, not an `async`
/// block: a block would keep `task` as its capture beside the future it became, so
/// every task (an idle socket's too) would take its memory twice.
fn fatal_on_panic<F>(health: Arc<Health>, what: &'static str, task: F) -> impl Future<Output = ()>
where
    F: Future<Output = ()>,
{
    AssertUnwindSafe(task).catch_unwind().map(move |ended| {
        if let Err(panic) = ended {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_panic_guard_adds_a_pointer_not_a_copy_of_the_task() {
        let held = [7u8; 1024];
        let task = async move {
            tokio::task::yield_now().await;
            assert_eq!(held[1023], 7);
        };
        let alone = std::mem::size_of_val(&task);
        let guarded = fatal_on_panic(Arc::new(Health::default()), "test", task);
        assert!(alone >= 1024);
        assert!(
            std::mem::size_of_val(&guarded) <= alone + 32,
            "{} for {alone}",
            std::mem::size_of_val(&guarded)
        );
    }
}

/// The size of the future an `async fn` (or a function returning a future) makes, from
/// the function alone: `future_size(socket::serve)` without a socket to serve; and the
/// cell tokio allocates for it as a lane's task ([`spawn`]: the future in its panic
/// guard).
#[cfg(test)]
pub mod future_size {
    use std::future::Future;
    use std::sync::Arc;

    use crate::lane::table::Health;

    /// tokio's own part of a task's cell (header 32 bytes, scheduler and id 16, the
    /// stage's tag 8, trailer 48; tokio 1.54), which it aligns to 128 bytes.
    const TOKIO_TASK: usize = 104;

    pub trait FutureSize<Arguments> {
        /// `size_of` the future it returns.
        fn future_size(&self) -> usize;
    }

    pub trait TaskCell<Arguments> {
        /// The bytes tokio allocates for the future it returns, spawned as a lane's task.
        fn task_cell(&self) -> usize;
    }

    /// The size of `F` in its panic guard, as [`super::spawn`] hands it to tokio.
    fn guarded<F: Future<Output = ()>>() -> usize {
        fn returned<F, R>(_: fn(Arc<Health>, &'static str, F) -> R) -> usize {
            std::mem::size_of::<R>()
        }
        returned(super::fatal_on_panic::<F>)
    }

    /// The cell tokio allocates for a task whose future (its panic guard included) is
    /// `future` bytes.
    pub fn cell(future: usize) -> usize {
        (future + TOKIO_TASK).next_multiple_of(128)
    }

    macro_rules! future_size {
        ($($argument:ident),*) => {
            impl<F, Made: Future, $($argument),*> FutureSize<($($argument,)*)> for F
            where
                F: Fn($($argument),*) -> Made,
            {
                fn future_size(&self) -> usize {
                    std::mem::size_of::<Made>()
                }
            }

            impl<F, Made: Future<Output = ()>, $($argument),*> TaskCell<($($argument,)*)> for F
            where
                F: Fn($($argument),*) -> Made,
            {
                fn task_cell(&self) -> usize {
                    cell(guarded::<Made>())
                }
            }
        };
    }

    future_size!(A);
    future_size!(A, B);
    future_size!(A, B, C);
    future_size!(A, B, C, D);
    future_size!(A, B, C, D, E);
    future_size!(A, B, C, D, E, G);
    future_size!(A, B, C, D, E, G, H);

    #[test]
    fn a_cell_holds_tokios_part_and_the_future_in_128_byte_steps() {
        // As tokio 1.54 allocates them (measured with a counting allocator): futures of
        // up to 408 bytes in their guard take 512 bytes, up to 536 take 640.
        assert_eq!(cell(408), 512);
        assert_eq!(cell(416), 640);
        assert_eq!(cell(536), 640);
        assert_eq!(cell(544), 768);
    }
}
