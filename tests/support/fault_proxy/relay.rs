//! The relaying half of the fault proxy: accepting, connecting upstream, and pumping
//! each way under the connection's [`Policy`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Conn, ConnId, ConnInfo, Direction, HEAD, Policy, Shared};

/// Chunks read but not yet written per direction. Bounded so a delayed direction holds
/// little in the proxy and a fast sender meets backpressure, as on a slow link.
const IN_FLIGHT: usize = 64;
const CHUNK: usize = 16 * 1024;

/// Accepts until the runtime is dropped; each connection is registered, in accept order,
/// with the policy of that moment, then relayed on its own task.
pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            // Transient (out of descriptors, an aborted handshake): try again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut state = shared.lock();
        if state.refuse {
            state.counters.refused += 1;
            shared.log(&mut state, format!("refused {peer}"));
            reset(&client);
            continue;
        }
        let id = ConnId(state.conns.len() as u64);
        let (policy, watching) = watch::channel(state.policy);
        let info = ConnInfo {
            id,
            peer,
            upstream_bytes: 0,
            downstream_bytes: 0,
            upstream_head: Vec::new(),
            open: true,
        };
        let upstream = state.upstream;
        state.conns.push(Conn { info, policy });
        state.counters.accepted += 1;
        shared.log(&mut state, format!("#{} accepted from {peer}", id.0));
        drop(state);
        let relay = Relay {
            id,
            policy: watching,
            shared: Arc::clone(&shared),
        };
        tokio::spawn(relay.run(client, upstream));
    }
}

/// How a connection ended.
enum End {
    Finished,
    Cut,
    Failed(io::Error),
    Unreachable(io::Error),
}

/// One connection's relay: what it obeys and where it reports.
struct Relay {
    id: ConnId,
    policy: watch::Receiver<Policy>,
    shared: Arc<Shared>,
}

impl Relay {
    async fn run(self, mut client: TcpStream, upstream: SocketAddr) {
        let end = match TcpStream::connect(upstream).await {
            Err(e) => End::Unreachable(e),
            Ok(mut server) => {
                // Chunks go out as they are released, not coalesced behind Nagle.
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (client_read, client_write) = client.split();
                let (server_read, server_write) = server.split();
                let up = self.pump(client_read, server_write, Direction::Upstream);
                let down = self.pump(server_read, client_write, Direction::Downstream);
                let mut cut = self.policy.clone();
                let end = tokio::select! {
                    done = async { tokio::try_join!(up, down) } => match done {
                        Ok(_) => End::Finished,
                        Err(e) => End::Failed(e),
                    },
                    Ok(_) = cut.wait_for(|p| p.cut) => End::Cut,
                };
                if !matches!(end, End::Finished) {
                    reset(&server);
                }
                end
            }
        };
        if !matches!(end, End::Finished) {
            reset(&client);
        }
        let mut state = self.shared.lock();
        state.conns[self.id.0 as usize].info.open = false;
        let counters = &mut state.counters;
        let (count, how) = match end {
            End::Finished => (&mut counters.finished, "finished".to_owned()),
            End::Cut => (&mut counters.cut, "cut".to_owned()),
            End::Failed(e) => (&mut counters.failed, format!("failed: {e}")),
            End::Unreachable(e) => (&mut counters.upstream_failed, format!("upstream: {e}")),
        };
        *count += 1;
        self.shared
            .log(&mut state, format!("#{} ended, {how}", self.id.0));
    }

    /// Relays one way: reads and writes in two halves joined by a bounded queue of
    /// `(due, chunk)`, so a delay holds each chunk for its own time without holding back
    /// the reads after it. Ends once the source's end of stream is passed on, or with the
    /// first I/O error.
    async fn pump(
        &self,
        mut from: ReadHalf<'_>,
        mut to: WriteHalf<'_>,
        dir: Direction,
    ) -> io::Result<()> {
        let (queue, mut queued) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
        let mut reading = self.policy.clone();
        let reader = async move {
            loop {
                flowing(&mut reading, dir).await;
                let mut chunk = vec![0; CHUNK];
                let n = from.read(&mut chunk).await?;
                if n == 0 {
                    return Ok::<(), io::Error>(()); // the queue closes; the writer drains it
                }
                chunk.truncate(n);
                if dir == Direction::Upstream {
                    self.shared.with_conn(self.id, |c| {
                        let room = HEAD.saturating_sub(c.upstream_head.len());
                        c.upstream_head.extend_from_slice(&chunk[..n.min(room)]);
                    });
                }
                let due = Instant::now() + reading.borrow().delay;
                if queue.send((due, chunk)).await.is_err() {
                    return Ok(());
                }
            }
        };
        let mut writing = self.policy.clone();
        let writer = async move {
            while let Some((due, chunk)) = queued.recv().await {
                tokio::time::sleep_until(due).await;
                // A stall that came after the read still holds the chunk.
                flowing(&mut writing, dir).await;
                to.write_all(&chunk).await?;
                self.shared.with_conn(self.id, |c| match dir {
                    Direction::Upstream => c.upstream_bytes += chunk.len() as u64,
                    _ => c.downstream_bytes += chunk.len() as u64,
                });
            }
            to.shutdown().await
        };
        tokio::try_join!(reader, writer).map(|_| ())
    }
}

/// Returns once `dir` is not stalled.
async fn flowing(policy: &mut watch::Receiver<Policy>, dir: Direction) {
    // The sender lives as long as the proxy's state, so this fails only at shutdown.
    let _ = policy.wait_for(|p| !p.stalled(dir)).await;
}

/// Makes dropping `stream` send RST rather than FIN, as a broken link or a dead host does.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
