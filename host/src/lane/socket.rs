//! A WebSocket connection on its lane, after the upgrade: one task per connection that
//! reads the client's frames and hands its messages to the document (synchronous guest
//! calls: one per message, or one per batch of a read for a consumer that takes batches;
//! see [`incoming`] and [`crate::lane::batch`]), and writes what the connection's outbox
//! holds.
//!
//! A connection keeps no buffer of its own while it is idle. A read lands in the lane's
//! read buffer and whole frames are handled where they lie ([`Decoder`] keeps only the
//! tail of a frame that has not arrived whole); frames are encoded as they are queued
//! ([`Outbox`]) and written with one vectored `write` per batch, however many there are:
//! by the lane's flusher ([`crate::lane::flusher`]) while the socket takes them, by this
//! task once the socket is full.
//!
//! The same task keeps the connection's timer (keepalive, the deadline of an incomplete
//! message, the close handshake's), answers pings and carries out the close handshake.

use std::future::{Future, poll_fn};
use std::io::Read;
use std::num::NonZeroU16;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::document::DocumentCell;
use crate::document::outbox::{Ending, Outbox};
use crate::lane::Lane;
use crate::lane::batch::{Bound, Pending};
use crate::lane::sessions::Session;
use crate::net::budget::Held;
use crate::net::token_bucket::TokenBuckets;
use crate::net::websocket::Decoder;
use crate::net::websocket::frame::close_payload;
use crate::store::Lease;
use wasmroom_wire::session as session_frames;

mod incoming;

/// One connection's state while its socket is served, beside the decoder. It owns what
/// it uses (the lane's, the document's and the session's handles too), so that the task
/// serving it keeps it once, in place: an idle connection is mostly this.
struct Connection {
    lane: Rc<Lane>,
    doc: DocumentCell,
    id: u64,
    /// Shared with the lane's flusher while the connection is served.
    stream: Rc<TcpStream>,
    outbox: Rc<Outbox>,
    /// The client's close code, once its close frame arrived (1005 without a code; never
    /// 0, so the option takes no byte of its own: see [`Connection::client_close`]).
    client_closed: Option<NonZeroU16>,
    /// Our close frame is encoded (the last thing this connection sends).
    close_sent: bool,
    /// Nothing more is read: the client's stream ended, or it broke the protocol.
    read_done: bool,
    /// It waits for room in the socket: this task writes its queue (the socket was full,
    /// or the connection is ending), not the lane's flusher. Set before each wait.
    writing: bool,
    /// End once our close frame is out, without waiting for the client's.
    fail: bool,
    /// The incomplete message's bytes, held in the lane's budget (given back on drop).
    charge: Held,
    /// With a shared store: messages are applied only while this lease holds (the
    /// store's clock says; `lane.services.storage.leases()`).
    lease: Lease,
    awaiting_pong: bool,
    ping_at: Instant,
    /// Messages (and pings), and message bytes, the client may still send now (at the
    /// rates of [`Connection::send_rates`]).
    sends: TokenBuckets<2>,
    /// The connection's session, if its client asked for one (docs/sessions.md).
    session: Option<Rc<Session>>,
    /// A client data message was applied (or resent) in this read: acknowledge it.
    ack_due: bool,
    /// How many messages of a read may go to the consumer in one call.
    bound: Bound,
}

/// An upgraded socket, about to be served.
#[derive(Debug)]
pub struct Socket {
    pub stream: TcpStream,
    /// Bytes the client sent after its request head: the start of its frames.
    pub already: Vec<u8>,
}

/// What woke a waiting connection.
enum Wait {
    /// The socket has bytes (or an error) to read.
    Readable(std::io::Result<()>),
    /// Its outbox woke it: frames to write, the connection ending, a session superseded.
    Woken,
    /// The socket takes bytes again (or broke).
    Writable(std::io::Result<()>),
    /// The keepalive, the message deadline or the close's deadline is due.
    Timer,
}

/// Serves the connection until its socket is done ([`Served`]).
///
/// The connection is set up here and the future only keeps it: an `async fn` would keep
/// its arguments twice (as taken and as used), and a `select!` its branches' futures
/// (readiness, `Notified`: 472 bytes); the wait polls the socket, the outbox and the
/// timer instead ([`Connection::poll_wait`]), which keep their wakers themselves.
pub fn serve(
    lane: Rc<Lane>,
    doc: DocumentCell,
    id: u64,
    socket: Socket,
    outbox: Rc<Outbox>,
    session: Option<Rc<Session>>,
) -> impl Future<Output = Served> + 'static {
    let Socket {
        stream,
        mut already,
    } = socket;
    let limits = &lane.services.config.limits;
    let mut decoder = Decoder::new(limits.max_message_bytes);
    let now = Instant::now();
    let lease = doc.borrow().persistence.lease;
    let (rates, bound) = {
        let doc = doc.borrow();
        let config = &lane.services.config;
        let plugin = &doc.plugin().name;
        let deadline = config.guest_deadline_for(plugin);
        let bound = Bound::new(doc.takes_batches(), deadline);
        (incoming::send_rates(config, plugin), bound)
    };
    let stream = Rc::new(stream);
    outbox.attach(stream.clone());
    let mut conn = Connection {
        charge: Held::default(),
        lease,
        ping_at: now + limits.ping_interval(),
        sends: TokenBuckets::full(&rates, now),
        lane,
        doc,
        id,
        stream,
        outbox,
        client_closed: None,
        close_sent: false,
        read_done: false,
        writing: false,
        fail: false,
        awaiting_pong: false,
        session,
        ack_due: false,
        bound,
    };
    if !already.is_empty() {
        // The start of its frames came with the request: handled before the future is,
        // so that no idle socket keeps room for them.
        conn.receive(&mut decoder, &mut already);
    }
    drop(already);
    async move {
        let timer = tokio::time::sleep_until(conn.ping_at.into());
        tokio::pin!(timer);
        loop {
            if conn.session.as_ref().is_some_and(|s| s.is_superseded()) {
                // Another socket resumes the session: this one is let go without a word.
                break;
            }
            if conn.flush().is_err() {
                break;
            }
            if conn.done() {
                break;
            }
            let due = conn.due(&decoder);
            if due != timer.deadline().into_std() {
                timer.as_mut().reset(due.into());
            }
            // Waiting for room only when this task writes: the flusher's queues wait on
            // no one. (A queue whose front waits for its journal batch is not written:
            // its release schedules it again.)
            conn.writing =
                conn.outbox.has_writable() && (conn.read_done || !conn.outbox.flusher_writes());
            // What woke it is handled in this statement, so that it is gone by the next
            // wait (kept across that wait, it would make every idle socket's task larger).
            let readable = match poll_fn(|cx| conn.poll_wait(cx, timer.as_mut())).await {
                Wait::Readable(Err(_)) => {
                    conn.read_done = true;
                    false
                }
                Wait::Readable(Ok(())) => true,
                Wait::Woken | Wait::Writable(Ok(())) => false,
                Wait::Writable(Err(_)) => break,
                Wait::Timer => {
                    if conn.timer_fired(&decoder).is_break() {
                        break;
                    }
                    false
                }
            };
            if readable {
                conn.read(&mut decoder);
                // Fairness between the lane's connections: a client that keeps its socket
                // full yields like any other task.
                tokio::task::consume_budget().await;
            }
        }
        let mut code = conn.client_close().unwrap_or(1006);
        // A close the server started ends the connection with its code, whether or not
        // the client answered it (a slow client that never reads still counts as 1008,
        // not 1006).
        if let Ending::Close(server_code, _) = conn.outbox.ending() {
            code = server_code;
        }
        Served {
            code,
            lane: conn.lane.clone(),
            doc: conn.doc.clone(),
            id: conn.id,
            outbox: conn.outbox.clone(),
            session: conn.session.clone(),
        }
        // `conn` goes here: the socket is closed and handed back from the flusher.
    }
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("code", &self.code)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A connection whose socket is done, and what it ended with.
pub struct Served {
    /// The server's close code when the server started the close, else the client's;
    /// 1006 without a close frame.
    pub code: u16,
    pub lane: Rc<Lane>,
    pub doc: DocumentCell,
    pub id: u64,
    pub outbox: Rc<Outbox>,
    pub session: Option<Rc<Session>>,
}

/// The socket goes back from the lane's flusher however the connection ends, its future
/// dropped included: the outbox outlives the socket.
impl Drop for Connection {
    fn drop(&mut self) {
        self.outbox.detach();
        self.charge.release(self.lane.incoming());
    }
}

impl Connection {
    /// When the connection's timer is due next: the keepalive, the deadline of an
    /// incomplete message, or the moment a close gives up on a client that does not read.
    fn due(&self, decoder: &Decoder) -> Instant {
        let message_due = decoder
            .incomplete_since()
            .map(|since| since + self.message_timeout());
        [Some(self.ping_at), message_due, self.outbox.give_up_at()]
            .into_iter()
            .flatten()
            .min()
            .expect("the keepalive is always due")
    }

    /// The client's close code, once its close frame arrived.
    fn client_close(&self) -> Option<u16> {
        self.client_closed.map(NonZeroU16::get)
    }

    /// The client's address, for a log line: asked of the socket, not kept, since an
    /// idle connection would hold it for its log lines only.
    fn peer(&self) -> String {
        self.stream
            .peer_addr()
            .map_or_else(|e| format!("({e})"), |peer| peer.to_string())
    }

    fn message_timeout(&self) -> std::time::Duration {
        self.lane.services.config.limits.message_timeout()
    }

    /// Waits for the first of: the socket readable (unless reading is done), the outbox's
    /// wake-up, the socket writable (if it is `writing`), the timer; in that order, as the
    /// biased `select!` this replaces did.
    fn poll_wait(&self, cx: &mut Context<'_>, timer: Pin<&mut Sleep>) -> Poll<Wait> {
        if !self.read_done
            && let Poll::Ready(ready) = self.stream.poll_read_ready(cx)
        {
            return Poll::Ready(Wait::Readable(ready));
        }
        if self.outbox.wake.poll_woken(cx).is_ready() {
            return Poll::Ready(Wait::Woken);
        }
        if self.writing
            && let Poll::Ready(ready) = self.stream.poll_write_ready(cx)
        {
            return Poll::Ready(Wait::Writable(ready));
        }
        if timer.poll(cx).is_ready() {
            return Poll::Ready(Wait::Timer);
        }
        Poll::Pending
    }

    /// The connection's timer fired: give up on a close the client does not take, close
    /// an incomplete message that is late, ping, or give up on a silent client.
    fn timer_fired(&mut self, decoder: &Decoder) -> ControlFlow<()> {
        let now = Instant::now();
        if self.outbox.give_up_at().is_some_and(|at| now >= at) {
            return ControlFlow::Break(());
        }
        let lane = self.lane.index;
        let limits = &self.lane.services.config.limits;
        let message_timeout = limits.message_timeout();
        let ping_timeout = limits.ping_timeout();
        let message_due = decoder
            .incomplete_since()
            .map(|since| since + message_timeout);
        if message_due.is_some_and(|at| now >= at) {
            tracing::debug!(lane, peer = %self.peer(), "message not complete within {message_timeout:?}: closing");
            self.fail_with(1008, "message not completed in time");
        } else if now >= self.ping_at {
            if self.awaiting_pong && self.session.is_some() {
                // A silent socket of a session is a broken one: the session waits for its
                // client to resume it.
                tracing::debug!(lane, peer = %self.peer(), "no answer to a ping within {ping_timeout:?}: parking the session");
                return ControlFlow::Break(());
            } else if self.awaiting_pong {
                tracing::debug!(lane, peer = %self.peer(), "no answer to a ping within {ping_timeout:?}: closing");
                self.fail_with(1001, "ping timeout");
            } else {
                self.outbox.push(&Frame::Ping(Default::default()));
                self.awaiting_pong = true;
                self.ping_at = now + ping_timeout;
            }
        }
        ControlFlow::Continue(())
    }

    /// Reads what the socket has into the lane's read buffer and handles it.
    fn read(&mut self, decoder: &mut Decoder) {
        // Its own handle: the buffers it lends stay borrowed while `self` changes.
        let lane = self.lane.clone();
        let mut buffer = lane.read_buffer();
        // A read shorter than the buffer has emptied the socket (epoll(7) on stream
        // sockets): its readiness is cleared at once, instead of by one more read that
        // would only say "would block".
        let mut drained = None;
        let read = self.stream.try_io(Interest::READABLE, || {
            let n = (&*SockRef::from(&*self.stream)).read(&mut buffer)?;
            if n > 0 && n < buffer.len() {
                drained = Some(n);
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match (read, drained) {
            (_, Some(n)) | (Ok(n), None) if n > 0 => self.receive(decoder, &mut buffer[..n]),
            (Ok(_), None) => self.read_done = true,
            (Err(e), None) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            (Err(_), _) => self.read_done = true,
            (Ok(_), Some(_)) => unreachable!("a short read is reported as would-block"),
        }
    }

    /// Handles bytes the client sent.
    fn receive(&mut self, decoder: &mut Decoder, bytes: &mut [u8]) {
        let now = Instant::now();
        if self.awaiting_pong {
            // Anything from the client answers the ping; the next ping is a full interval
            // after this one.
            self.awaiting_pong = false;
            self.ping_at = now + self.lane.services.config.limits.ping_interval();
        }
        // The clock is read once per read and once after each guest call: a batch of
        // messages is handled at the time the call before it finished.
        let mut clock = now;
        // Its own handle: the buffers it lends stay borrowed while `self` changes.
        let lane = self.lane.clone();
        let mut buffer = lane.batch_buffer();
        // A hot reload between two reads may have changed whether the consumer takes
        // batches (none happens within a read: it runs on this thread, between events).
        self.bound.consumer(self.doc.borrow().takes_batches());
        let mut pending = Pending::new(&mut buffer, self.bound);
        let rates = self.send_rates();
        let decoded = decoder.feed(bytes, now, |event| {
            clock = self.event(event, clock, &rates, &mut pending)
        });
        // The messages before the end of the read, or before a frame that broke the
        // protocol, apply.
        self.hand_over(&mut pending, clock);
        self.bound = pending.bound;
        drop(pending);
        drop(buffer);
        if let Err(e) = decoded {
            let (code, reason) = e.close();
            self.fail_with(code, reason);
            return;
        }
        if std::mem::take(&mut self.ack_due) {
            // One acknowledgement per read, an output of the document's last input: in
            // journal mode it leaves once that input is durable.
            let batch = self.doc.borrow().last_batch();
            let ack = session_frames::ack(self.outbox.last_applied());
            self.outbox.push_control(&ack, batch);
        }
        if !self
            .charge
            .resize(self.lane.incoming(), decoder.held_bytes())
        {
            tracing::debug!(lane = self.lane.index, peer = %self.peer(), "partial message over the lane's byte budget: closing");
            self.fail_with(1013, "server busy: too many bytes in flight");
        }
    }

    /// Starts closing with `code` and ends once the close frame is out, without waiting
    /// for the client's answer (it broke the protocol, stalled or went silent).
    fn fail_with(&mut self, code: u16, reason: &'static str) {
        self.outbox.close(code, reason);
        self.read_done = true;
        self.fail = true;
        self.charge.release(self.lane.incoming());
    }

    /// Writes what is queued, then the close frame when it is due, as long as the socket
    /// takes it.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.outbox.flusher_writes() && !self.read_done {
            // It writes this queue together with the others of its turn: a write of our
            // own after each read would split the batch in two. Once the client's stream
            // has ended, this task ends after this write and takes the socket with it, so
            // it writes what is left itself (a reply to the client's last message).
            return Ok(());
        }
        loop {
            if self.outbox.is_empty() && !self.close_sent && self.outbox.close_releasable() {
                let close = match (self.client_close(), self.outbox.ending()) {
                    // The client closed: echo its code (none if it gave none).
                    (Some(1005), _) => Some(Vec::new()),
                    (Some(code), _) => Some(close_payload(code, "")),
                    (None, Ending::Close(code, reason)) => Some(close_payload(code, &reason)),
                    _ => None,
                };
                if let Some(payload) = close {
                    self.outbox.push_close(&payload);
                    self.close_sent = true;
                }
            }
            let stream = &self.stream;
            match self
                .outbox
                .write_with(|slices| stream.try_write_vectored(slices))
            {
                Ok(Some(written)) => {
                    crate::lane::flusher::count(&self.lane, &written);
                    if written.bytes == 0 {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the connection is over.
    fn done(&self) -> bool {
        let written = self.close_sent && self.outbox.is_empty();
        // The client closed and we answered; or we failed it and said why.
        if written && (self.client_closed.is_some() || self.fail) {
            return true;
        }
        // The client's stream ended (after our close, or without a close handshake); what
        // its last messages caused still waits for their journal batch (a client that
        // shut down its sending side still reads the replies).
        if self.read_done && !self.fail && self.outbox.has_gated() {
            self.outbox.wake_on_release();
            return false;
        }
        self.read_done && !self.fail
    }
}
