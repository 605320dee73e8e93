//! The WASI imports consumers get: the standard set from `wasmtime-wasi`, granting nothing,
//! with the changes that a lane and a deterministic document need.
//!
//! 1. `wasi:io/streams` and `wasi:io/poll` never block. wasmtime-wasi's synchronous
//!    bindings run their blocking operations with `block_on` on the ambient tokio runtime,
//!    which panics on a lane (a lane *is* a tokio runtime). Here every operation polls its
//!    future once: what is ready completes (writes to stdout/stderr always are), what is not
//!    traps the calling document, since waiting would stall every document of the lane.
//! 2. A consumer's stdout and stderr go to the host log, one event per line, tagged with
//!    the plugin and document, so `println!` and panic messages are visible
//!    ([`crate::guest::output`], which also keeps a call's last stderr lines for a trap's
//!    report).
//! 3. Time and randomness come from the document, not the process: both clocks read the
//!    call's frozen clock ([`crate::guest::clock`]), and `wasi:clocks/monotonic-clock` is
//!    shadowed so that its `subscribe-*` pollables are ready by that clock too (a pollable
//!    is ready iff its instant is at or before the call's clock, a zero duration at once;
//!    wasmtime-wasi's own wait on real time). Random comes from the document's seed
//!    ([`crate::guest::random`]).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynPollable, StreamError, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiView};
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;
use wasmtime_wasi_io::bindings::wasi::io::streams as async_streams;
use wasmtime_wasi_io::poll::{Pollable, subscribe};

use crate::guest::clock::{CallClock, FrozenTime, RESOLUTION};
use crate::guest::output::GuestOutput;
use crate::guest::random::{CallStream, Seed};

/// Links WASI into `linker` with non-blocking streams and poll, and a monotonic clock
/// whose pollables follow the call's clock.
pub fn add_to_linker<T: WasiView + FrozenTime + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    poll::add_to_linker::<T, NonBlocking>(linker, |s| NonBlockingIo(s.ctx().table))?;
    streams::add_to_linker::<T, NonBlocking>(linker, |s| NonBlockingIo(s.ctx().table))?;
    monotonic_clock::add_to_linker::<T, Frozen>(linker, |s| {
        let (clock, table) = s.frozen_time();
        FrozenClock { clock, table }
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// What a document's WASI context is made of besides its stdout and stderr.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The call's clock, for both WASI clocks.
    pub clock: &'a CallClock,
    /// The document's random seed.
    pub seed: &'a Seed,
    /// The call's random stream.
    pub streams: &'a CallStream,
}

/// A WASI context that grants nothing, writes stdout/stderr to `stdout`/`stderr`, and
/// takes time and randomness from the document (`sources`).
pub fn context(
    stdout: &Arc<GuestOutput>,
    stderr: &Arc<GuestOutput>,
    sources: Sources<'_>,
) -> WasiCtx {
    let mut builder = WasiCtx::builder();
    builder
        .stdout(stdout.wasi_stream())
        .stderr(stderr.wasi_stream())
        .wall_clock(sources.clock.clone())
        .monotonic_clock(sources.clock.clone());
    crate::guest::random::install(&mut builder, sources.seed, sources.streams);
    builder.build()
}

struct Frozen;

impl HasData for Frozen {
    type Data<'a> = FrozenClock<'a>;
}

/// `wasi:clocks/monotonic-clock` by the call's clock.
struct FrozenClock<'a> {
    clock: &'a CallClock,
    table: &'a mut ResourceTable,
}

/// A `subscribe-*` pollable: ready once the document's clock reaches `at` (nanoseconds).
/// Within one call the clock stands still, so a future instant is never ready in it: a
/// guest that waits for it traps like any other wait.
struct Due {
    clock: CallClock,
    at: u64,
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for Due {
    async fn ready(&mut self) {
        if self.clock.now_ns() < self.at {
            std::future::pending::<()>().await;
        }
    }
}

impl FrozenClock<'_> {
    fn due(&mut self, at: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let due = self.table.push(Due {
            clock: self.clock.clone(),
            at,
        })?;
        subscribe(self.table, due)
    }
}

impl monotonic_clock::Host for FrozenClock<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(self.clock.now_ns())
    }
    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(RESOLUTION.as_nanos() as u64)
    }
    fn subscribe_instant(
        &mut self,
        when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.due(when)
    }
    fn subscribe_duration(
        &mut self,
        duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let at = self.clock.now_ns().saturating_add(duration);
        self.due(at)
    }
}

struct NonBlocking;

impl HasData for NonBlocking {
    type Data<'a> = NonBlockingIo<'a>;
}

/// The resource table, seen through non-blocking stream and poll operations.
struct NonBlockingIo<'a>(&'a mut ResourceTable);

/// Polls `future` once. `None` means it would have to wait.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

fn would_block(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!(
        "consumer tried to block in {what}; consumers must not wait (use timers instead)"
    ))
}

fn stream_result<T>(what: &str, r: Option<Result<T, StreamError>>) -> StreamResult<T> {
    r.unwrap_or_else(|| Err(StreamError::Trap(would_block(what))))
}

impl streams::Host for NonBlockingIo<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(self.0, err)
    }
}

impl streams::HostOutputStream for NonBlockingIo<'_> {
    fn drop(&mut self, stream: Resource<streams::OutputStream>) -> wasmtime::Result<()> {
        // Dropping without awaiting `cancel`: the streams a consumer can hold (stdout and
        // stderr) have nothing in flight.
        self.0.delete(stream)?;
        Ok(())
    }
    fn check_write(&mut self, stream: Resource<streams::OutputStream>) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(self.0, stream)
    }
    fn write(
        &mut self,
        stream: Resource<streams::OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        streams::HostOutputStream::write(self.0, stream, bytes)
    }
    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<streams::OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        let r = poll_once(async_streams::HostOutputStream::blocking_write_and_flush(
            self.0, stream, bytes,
        ));
        stream_result("blocking-write-and-flush", r)
    }
    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<streams::OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        let r = poll_once(
            async_streams::HostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len),
        );
        stream_result("blocking-write-zeroes-and-flush", r)
    }
    fn subscribe(
        &mut self,
        stream: Resource<streams::OutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostOutputStream::subscribe(self.0, stream)
    }
    fn write_zeroes(
        &mut self,
        stream: Resource<streams::OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }
    fn flush(&mut self, stream: Resource<streams::OutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(self.0, stream)
    }
    fn blocking_flush(&mut self, stream: Resource<streams::OutputStream>) -> StreamResult<()> {
        let r = poll_once(async_streams::HostOutputStream::blocking_flush(
            self.0, stream,
        ));
        stream_result("blocking-flush", r)
    }
    fn splice(
        &mut self,
        dst: Resource<streams::OutputStream>,
        src: Resource<streams::InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        streams::HostOutputStream::splice(self.0, dst, src, len)
    }
    fn blocking_splice(
        &mut self,
        dst: Resource<streams::OutputStream>,
        src: Resource<streams::InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        let r = poll_once(async_streams::HostOutputStream::blocking_splice(
            self.0, dst, src, len,
        ));
        stream_result("blocking-splice", r)
    }
}

impl streams::HostInputStream for NonBlockingIo<'_> {
    fn drop(&mut self, stream: Resource<streams::InputStream>) -> wasmtime::Result<()> {
        self.0.delete(stream)?;
        Ok(())
    }
    fn read(&mut self, stream: Resource<streams::InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(self.0, stream, len)
    }
    fn blocking_read(
        &mut self,
        stream: Resource<streams::InputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        let r = poll_once(async_streams::HostInputStream::blocking_read(
            self.0, stream, len,
        ));
        stream_result("blocking-read", r)
    }
    fn skip(&mut self, stream: Resource<streams::InputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(self.0, stream, len)
    }
    fn blocking_skip(
        &mut self,
        stream: Resource<streams::InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        let r = poll_once(async_streams::HostInputStream::blocking_skip(
            self.0, stream, len,
        ));
        stream_result("blocking-skip", r)
    }
    fn subscribe(
        &mut self,
        stream: Resource<streams::InputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostInputStream::subscribe(self.0, stream)
    }
}

impl poll::Host for NonBlockingIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        poll_once(async_poll::Host::poll(self.0, pollables))
            .ok_or_else(|| would_block("wasi:io/poll.poll"))?
    }
}

impl poll::HostPollable for NonBlockingIo<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        poll_once(async_poll::HostPollable::ready(self.0, pollable))
            .ok_or_else(|| would_block("pollable.ready"))?
    }
    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        poll_once(async_poll::HostPollable::block(self.0, pollable))
            .ok_or_else(|| would_block("pollable.block"))?
    }
    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monotonic_clock::Host as _;

    #[test]
    fn poll_once_completes_ready_futures_only() {
        assert_eq!(poll_once(async { 7 }), Some(7));
        assert_eq!(poll_once(std::future::pending::<()>()), None);
    }

    fn ready(table: &mut ResourceTable, p: &Resource<DynPollable>) -> bool {
        let mut io = NonBlockingIo(table);
        poll::HostPollable::ready(&mut io, Resource::new_borrow(p.rep())).unwrap()
    }

    #[test]
    fn subscribed_instants_are_ready_by_the_calls_clock() {
        let clock = CallClock::default();
        clock.set(1_000);
        let mut table = ResourceTable::new();
        let mut frozen = FrozenClock {
            clock: &clock,
            table: &mut table,
        };
        let now = frozen.now().unwrap();
        assert_eq!(now, 1_000_000_000);
        assert_eq!(frozen.resolution().unwrap(), 1_000_000);
        let zero = frozen.subscribe_duration(0).unwrap();
        let later = frozen.subscribe_duration(1).unwrap();
        let past = frozen.subscribe_instant(now - 1).unwrap();
        let at = frozen.subscribe_instant(now + 1_000_000).unwrap();
        assert!(ready(&mut table, &zero) && ready(&mut table, &past));
        assert!(
            !ready(&mut table, &later) && !ready(&mut table, &at),
            "the clock stands still within a call"
        );
        let mut io = NonBlockingIo(&mut table);
        let both = vec![
            Resource::new_borrow(later.rep()),
            Resource::new_borrow(zero.rep()),
        ];
        assert_eq!(poll::Host::poll(&mut io, both).unwrap(), [1]);
        // A wait that nothing in the call can end traps.
        let never = vec![Resource::new_borrow(later.rep())];
        assert!(poll::Host::poll(&mut io, never).is_err());
        assert!(poll::HostPollable::block(&mut io, Resource::new_borrow(at.rep())).is_err());
        // A later call's clock reaches them.
        clock.set(1_001);
        assert!(ready(&mut table, &later) && ready(&mut table, &at));
    }
}
