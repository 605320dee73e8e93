//! A WebSocket's reading half: every frame from the client goes straight to the document
//! (one synchronous guest call); the keepalive pings a quiet client and drops one that
//! stops answering; a message that starts to arrive must be complete within the message
//! timeout (1008), and its bytes must fit the lane's budget (1013).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};

use crate::document::DocumentCell;
use crate::document::outbox::{Ending, Outbox};
use crate::guest::Message;
use crate::lane::Lane;
use crate::net::frame_watch::{Incoming, Watched};

/// Reads frames until the connection ends; returns the close code it ended with.
pub async fn read_loop(
    lane: &Lane,
    doc: &DocumentCell,
    id: u64,
    mut frames: SplitStream<WebSocketStream<Watched<TcpStream>>>,
    outbox: &Outbox,
    incoming: &Incoming,
    peer: SocketAddr,
) -> u16 {
    // One timer per connection, re-armed only when what it waits for changes, never per
    // message. It serves the keepalive (ping every `ping_interval`; a client that sends
    // nothing at all, not even the pong, within `ping_timeout` of a ping is dropped) and
    // the deadline of a message that has started to arrive but is not complete.
    let limits = &lane.services.config.limits;
    let (ping_interval, ping_timeout) = (limits.ping_interval(), limits.ping_timeout());
    let message_timeout = limits.message_timeout();
    let mut awaiting_pong = false;
    let mut ping_at = Instant::now() + ping_interval;
    let mut timer_at = ping_at;
    let timer = tokio::time::sleep_until(timer_at.into());
    tokio::pin!(timer);

    // With a shared store, every message is applied only while this host's lease on the
    // document holds (an atomic read and a clock read; nothing without one).
    let clock = lane.services.storage.leases().cloned();
    let lease = doc.borrow().persistence.lease;

    let mut code = 1006;
    loop {
        // The writer gave up on this client (close handshake timed out, socket dead):
        // stop even if the client keeps sending.
        if outbox.reader_aborted() {
            break;
        }
        if incoming.over_budget() {
            tracing::debug!(lane = lane.index, %peer, "partial message over the lane's byte budget: closing");
            (code, _) = close(outbox, 1013, "server busy: too many bytes in flight");
            break;
        }
        // Fast path: a frame that is already there is handled without arming the other
        // branches (the timer only matters when the client is quiet or slow).
        let ready = poll_fn(|cx| Poll::Ready(frames.poll_next_unpin(cx))).await;
        let next = if let Poll::Ready(next) = ready {
            next
        } else {
            let due = incoming
                .started()
                .map_or(ping_at, |started| ping_at.min(started + message_timeout));
            if due != timer_at {
                timer.as_mut().reset(due.into());
                timer_at = due;
            }
            tokio::select! {
            biased;
            next = frames.next() => next,
            _ = outbox.abort.notified() => break,
            // A message stayed incomplete (arm its deadline) or went over the budget.
            _ = incoming.changed.notified() => continue,
            _ = &mut timer => {
                let now = Instant::now();
                if incoming.started().is_some_and(|started| now >= started + message_timeout) {
                    tracing::debug!(lane = lane.index, %peer, "message not complete within {message_timeout:?}: closing");
                    (code, _) = close(outbox, 1008, "message not completed in time");
                    break;
                }
                if now >= ping_at {
                    if awaiting_pong {
                        tracing::debug!(lane = lane.index, %peer, "no answer to a ping within {ping_timeout:?}: closing");
                        (code, _) = close(outbox, 1001, "ping timeout");
                        break;
                    }
                    outbox.push(Frame::Ping(Default::default()));
                    awaiting_pong = true;
                    ping_at = now + ping_timeout;
                }
                continue;
            }
            }
        };
        if awaiting_pong {
            // Anything from the client answers the ping; the next ping is a full interval
            // after this one.
            awaiting_pong = false;
            ping_at = Instant::now() + ping_interval;
        }
        if lane.is_shutting_down() && matches!(next, Some(Ok(Frame::Text(_) | Frame::Binary(_)))) {
            // The document is being saved for shutdown: what arrives now is not applied
            // (the client gets 1012 and resends what was not acknowledged).
            continue;
        }
        if let Some(clock) = &clock
            && matches!(next, Some(Ok(Frame::Text(_) | Frame::Binary(_))))
            && !clock.holds(lease)
        {
            // This host may not serve the document any more (its lease lapsed, or it
            // registered anew): nothing more is applied; the client gets 1012.
            let key = {
                let d = doc.borrow();
                (d.plugin().name.clone(), d.id().to_owned())
            };
            lane.retire(&key, doc, "lapsed");
            continue;
        }
        match next {
            Some(Ok(Frame::Text(text))) => {
                lane.metrics.messages_in.inc();
                lane.metrics.bytes_in.inc_by(text.len() as u64);
                // On an error the document crashed and the outbox is closing with 1011:
                // keep reading until the client answers the close frame or the writer
                // gives up.
                let _ = doc
                    .borrow_mut()
                    .message(id, &Message::Text(text.as_str().to_owned()));
            }
            Some(Ok(Frame::Binary(bytes))) => {
                lane.metrics.messages_in.inc();
                lane.metrics.bytes_in.inc_by(bytes.len() as u64);
                let _ = doc
                    .borrow_mut()
                    .message(id, &Message::Binary(bytes.to_vec()));
            }
            Some(Ok(Frame::Close(frame))) => {
                code = frame.map_or(1005, |f| u16::from(f.code));
            }
            Some(Ok(_)) => {} // ping, pong: tungstenite answers pings itself
            Some(Err(e)) => {
                // The writer still sends this close frame after the reader is done.
                if let Some((close_code, reason)) = close_for_error(&e) {
                    code = close_code;
                    outbox.close(close_code, reason);
                }
                break;
            }
            None => break,
        }
    }
    // A close the server started ends the connection with its code, whether or not the
    // client answered it (a slow client that never reads still counts as 1008, not 1006).
    if let Ending::Close(server_code, _) = outbox.ending() {
        code = server_code;
    }
    code
}

/// Starts closing with `code` and `reason`; returns them.
fn close(outbox: &Outbox, code: u16, reason: &'static str) -> (u16, &'static str) {
    outbox.close(code, reason);
    (code, reason)
}

/// The close code and reason to answer a read error with, if the socket is still usable.
fn close_for_error(e: &WsError) -> Option<(u16, &'static str)> {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some((1009, "message too large"))
        }
        WsError::Capacity(_) => Some((1009, "frame too large")),
        WsError::Utf8(_) => Some((1007, "invalid UTF-8 in a text message")),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some((1002, "protocol error")),
        _ => None,
    }
}
