//! The wake-up of the one task that serves a connection's queue, on the lane's thread.
//!
//! Like `tokio::sync::Notify::notify_one`, a wake-up given while nobody waits is kept
//! for the next wait. Unlike `Notify`, waiting holds no node of a waiter list: the task
//! polls [`Wake::poll_woken`] with its context and the waker is kept here, so an idle
//! connection's task stores no future for it (`Notified` is 64 bytes, in every idle
//! socket's task). One task waits at a time: the socket's task, or the task that keeps
//! a parked session (the same task, later); a second waiter replaces the first's waker,
//! which is why a waiter that may overlap another (a parked session while a new socket
//! takes it over) also waits on something else that ends its wait.

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::task::{Context, Poll, Waker};

/// A wake-up for the task serving a connection.
#[derive(Default)]
pub struct Wake {
    /// Given and not yet taken.
    given: Cell<bool>,
    /// The task waiting for it.
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wake")
            .field("given", &self.given.get())
            .finish_non_exhaustive()
    }
}

impl Wake {
    /// Wakes the waiting task, or the next one to wait.
    pub fn notify_one(&self) {
        self.given.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Takes a wake-up given since the last one was taken; else keeps `cx`'s waker for
    /// the next.
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.given.replace(false) {
            return Poll::Ready(());
        }
        let waker = match self.waker.take() {
            Some(waker) if waker.will_wake(cx.waker()) => waker,
            _ => cx.waker().clone(),
        };
        self.waker.set(Some(waker));
        Poll::Pending
    }

    /// Completes once woken.
    pub fn notified(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| self.poll_woken(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::FutureExt;

    use super::*;

    struct Count(AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_wake_up_given_before_the_wait_is_kept_once() {
        let wake = Wake::default();
        assert!(wake.notified().now_or_never().is_none());
        wake.notify_one();
        wake.notify_one();
        assert!(wake.notified().now_or_never().is_some());
        assert!(wake.notified().now_or_never().is_none());
    }

    #[test]
    fn the_waiting_task_is_woken() {
        let wake = Wake::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(wake.poll_woken(&mut cx).is_pending());
        assert!(wake.poll_woken(&mut cx).is_pending());
        wake.notify_one();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(wake.poll_woken(&mut cx).is_ready());
        // Taken: the next wake-up wakes nobody until someone waits again.
        wake.notify_one();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
    }
}
