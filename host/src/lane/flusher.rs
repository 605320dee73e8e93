//! The lane's flusher: one task that writes every queue that got frames since its last
//! turn (see [`crate::document::outbox::flush`]), so a broadcast costs one `write` per
//! socket and no task wake-up per socket.
//!
//! It runs after the tasks that were ready before it, so frames queued by all the reads
//! of one turn of the lane go out together.

use std::io::IoSlice;
use std::rc::Rc;

use tokio::net::TcpStream;

use crate::document::outbox::{self, VectoredWrite, Written};
use crate::lane::Lane;

/// The flusher writes to a connection's socket itself ([`outbox::Outbox::attach`]).
impl VectoredWrite for TcpStream {
    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
        TcpStream::try_write_vectored(self, slices)
    }
}

/// Queues flushed between two chances for the lane's other tasks to run (or fewer, see
/// [`YIELD_BYTES`]): about a thousand writes, a few milliseconds. A yield puts the
/// flusher behind every reader that is ready and the next poll of the sockets, so
/// yielding often starves the writes: under load the lane then reads (and queues) more
/// than it writes, and delivery latency grows (at 2.0-2.4M deliveries/s in `bench/`,
/// every 64 queues gave a p50 of 22-84 ms, every 1,024 one of 0.8-62 ms).
const YIELD_EVERY: usize = 1024;

/// Bytes written between two chances for the lane's other tasks to run, whatever the
/// number of queues: a large broadcast (1 MiB to a thousand fast readers) is a gigabyte
/// of copies into the kernel, far longer than a thousand small writes. 64 MiB is what 64
/// queues of 1 MiB frames wrote between yields before; far smaller budgets bring the
/// starvation back near saturation, when every queue holds tens of KiB (4 MiB: p50
/// 0.9-1.4 s at 2.4M deliveries/s in `bench/`, against 52-63 ms without a byte budget).
const YIELD_BYTES: usize = 64 << 20;

/// Flushes the lane's pending queues, forever (the lane's runtime ends it).
pub async fn run(lane: Rc<Lane>) {
    let wake = outbox::pending_wake();
    let mut queues = Vec::new();
    loop {
        wake.notified().await;
        outbox::take_pending(&mut queues);
        let (mut flushed, mut bytes) = (0, 0);
        for queue in queues.drain(..) {
            queue.flush(|written| {
                count(&lane, written);
                bytes += written.bytes;
            });
            flushed += 1;
            // A broadcast to many thousands of sockets makes as many writes: let the
            // lane's other tasks in between now and then.
            if flushed == YIELD_EVERY || bytes >= YIELD_BYTES {
                (flushed, bytes) = (0, 0);
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Counts what a write took in the lane's metrics.
pub fn count(lane: &Lane, written: &Written) {
    lane.metrics.messages_out.inc_by(written.messages);
    lane.metrics.bytes_out.inc_by(written.message_bytes);
}
