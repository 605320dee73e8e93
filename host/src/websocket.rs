//! A WebSocket on its lane: the upgrade, then a reader that calls the document directly
//! and a writer task that drains the connection's [`Outbox`], feeding every queued frame
//! and flushing once per batch.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::connection::{find_plugin, refuse_document};
use crate::document::DocumentError;
use crate::guest::{ConnectInfo, Decision, Message};
use crate::http::{self, RequestHead};
use crate::lane::Lane;
use crate::metrics::{LaneMetrics, Rejection};
use crate::outbox::{CLOSE_TIMEOUT, Ending, Outbox};

/// Upgrades a `/ws/{plugin}/{document}` request on the document's owner lane and serves
/// the socket until either side closes it.
pub async fn serve(
    lane: Rc<Lane>,
    mut stream: TcpStream,
    peer: SocketAddr,
    head: RequestHead,
    plugin: &str,
    document: &str,
) {
    let accept_key = match http::websocket_accept_key(&head) {
        Ok(key) => key,
        Err(why) => {
            let status = if head.header("upgrade").is_none() {
                426
            } else {
                400
            };
            lane.metrics.rejected(Rejection::NotUpgrade);
            let _ = http::write_text(&mut stream, status, why).await;
            return;
        }
    };
    let Some(plugin) = find_plugin(&lane, &mut stream, plugin).await else {
        return;
    };
    let limits = &lane.shared.config.limits;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
        // Small buffers keep an idle connection cheap; they grow for large messages.
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let doc = match lane.document_when_settled(&plugin, document).await {
        Ok(doc) => doc,
        Err(DocumentError::CrashLoop(retry)) => {
            // The protocol's "try again later" is a close code (1013), so upgrade first.
            let reason = format!(
                "document is crash-looping; retry in {}s",
                retry.as_secs().max(1)
            );
            lane.metrics.rejected(Rejection::CrashLoop);
            refuse_after_upgrade(stream, &accept_key, head.rest, ws_config, 1013, reason).await;
            return;
        }
        Err(DocumentError::Storage(_)) => {
            let reason = "saved state unreadable; see the server log".to_owned();
            lane.metrics.rejected(Rejection::Storage);
            refuse_after_upgrade(stream, &accept_key, head.rest, ws_config, 1011, reason).await;
            return;
        }
        Err(e) => {
            refuse_document(&lane, &mut stream, &plugin, document, e).await;
            return;
        }
    };
    if doc.borrow().connection_count() >= limits.max_connections_per_document {
        lane.metrics.rejected(Rejection::Capacity);
        let _ = http::write_text(
            &mut stream,
            503,
            "document at capacity: too many connections",
        )
        .await;
        return;
    }

    let id = lane.shared.next_connection_id();
    let offered = head.subprotocols();
    let client = http::client_address(&head, peer, lane.shared.config.proxy_headers);
    let info = ConnectInfo {
        id,
        path: head.path,
        query: head.query,
        headers: head.headers,
        subprotocols: offered.clone(),
        remote_address: client.to_string(),
    };
    let outbox = Rc::new(Outbox::new(limits.max_queued_bytes));
    let decision = doc.borrow_mut().connect(info, outbox.clone());
    let subprotocol = match decision {
        Ok(Decision::Accept(choice)) => match choice {
            Some(p) if !offered.contains(&p) => {
                tracing::warn!(plugin = %plugin.name, doc = %document, "consumer chose subprotocol {p:?}, which the client did not offer; ignored");
                None
            }
            other => other,
        },
        Ok(Decision::Reject(r)) => {
            let status = if (400..=599).contains(&r.status) {
                r.status
            } else {
                403
            };
            lane.metrics.rejected(Rejection::Consumer);
            let _ = http::write_text(&mut stream, status, &r.reason).await;
            return;
        }
        Err(e) => {
            lane.metrics.rejected(Rejection::Error);
            let _ = http::write_text(&mut stream, 500, &e.to_string()).await;
            return;
        }
    };
    if http::write_switching_protocols(&mut stream, &accept_key, subprotocol.as_deref())
        .await
        .is_err()
    {
        outbox.finish();
        doc.borrow_mut().disconnect(id, 1006);
        return;
    }
    let ws = WebSocketStream::from_partially_read(stream, head.rest, Role::Server, Some(ws_config))
        .await;
    let (sink, mut frames) = ws.split();
    tokio::task::spawn_local(write_loop(sink, outbox.clone(), lane.metrics.clone()));
    lane.metrics.websockets.inc();

    // Keepalive: ping every `ping_interval`; a client that sends nothing at all (not even
    // the pong) within `ping_timeout` of a ping is dropped. One timer per connection,
    // re-armed only when it fires, never per message.
    let (ping_interval, ping_timeout) = (limits.ping_interval(), limits.ping_timeout());
    let mut awaiting_pong = false;
    let keepalive = tokio::time::sleep(ping_interval);
    tokio::pin!(keepalive);

    let mut code = 1006;
    loop {
        // The writer gave up on this client (close handshake timed out, socket dead):
        // stop even if the client keeps sending.
        if outbox.reader_aborted() {
            break;
        }
        // Fast path: a frame that is already there is handled without arming the other
        // branches (the keepalive only matters when the client is quiet).
        let ready = poll_fn(|cx| Poll::Ready(frames.poll_next_unpin(cx))).await;
        let next = if let Poll::Ready(next) = ready {
            next
        } else {
            tokio::select! {
            biased;
            next = frames.next() => next,
            _ = outbox.abort.notified() => break,
            _ = &mut keepalive => {
                if awaiting_pong {
                    tracing::debug!(lane = lane.index, %peer, "no answer to a ping within {ping_timeout:?}: closing");
                    outbox.close(1001, "ping timeout");
                    code = 1001;
                    break;
                }
                outbox.push(Frame::Ping(Default::default()));
                awaiting_pong = true;
                keepalive.as_mut().reset((Instant::now() + ping_timeout).into());
                continue;
            }
            }
        };
        if awaiting_pong {
            // Anything from the client answers the ping; the next ping is a full interval
            // after this one.
            awaiting_pong = false;
            keepalive
                .as_mut()
                .reset((Instant::now() + ping_interval).into());
        }
        if lane.is_shutting_down() && matches!(next, Some(Ok(Frame::Text(_) | Frame::Binary(_)))) {
            // The document is being saved for shutdown: what arrives now is not applied
            // (the client gets 1012 and resends what was not acknowledged).
            continue;
        }
        let result = match next {
            Some(Ok(Frame::Text(text))) => {
                lane.metrics.messages_in.inc();
                lane.metrics.bytes_in.inc_by(text.len() as u64);
                doc.borrow_mut()
                    .message(id, &Message::Text(text.as_str().to_owned()))
            }
            Some(Ok(Frame::Binary(bytes))) => {
                lane.metrics.messages_in.inc();
                lane.metrics.bytes_in.inc_by(bytes.len() as u64);
                doc.borrow_mut()
                    .message(id, &Message::Binary(bytes.to_vec()))
            }
            Some(Ok(Frame::Close(frame))) => {
                code = frame.map_or(1005, |f| u16::from(f.code));
                continue;
            }
            Some(Ok(_)) => continue, // ping, pong: tungstenite answers pings itself
            Some(Err(e)) => {
                // The writer still sends this close frame after the reader is done.
                if let Some((close_code, reason)) = close_for_error(&e) {
                    code = close_code;
                    outbox.close(close_code, reason);
                }
                break;
            }
            None => break,
        };
        // On an error the document crashed and the outbox is closing with 1011: keep
        // reading until the client answers the close frame or the writer gives up.
        let _ = result;
    }
    // A close the server started ends the connection with its code, whether or not the
    // client answered it (a slow client that never reads still counts as 1008, not 1006).
    if let Ending::Close(server_code, _) = outbox.ending() {
        code = server_code;
    }
    outbox.finish();
    lane.metrics.websockets.dec();
    lane.metrics.closed(code);
    doc.borrow_mut().disconnect(id, code);
}

/// Completes the upgrade only to close at once with `code` (e.g. 1013 "try again later").
async fn refuse_after_upgrade(
    mut stream: TcpStream,
    accept_key: &str,
    rest: Vec<u8>,
    config: WebSocketConfig,
    code: u16,
    reason: String,
) {
    if http::write_switching_protocols(&mut stream, accept_key, None)
        .await
        .is_err()
    {
        return;
    }
    let mut ws =
        WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(config)).await;
    let close = CloseFrame {
        code: code.into(),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        ws.close(Some(close)).await?;
        while ws.next().await.is_some() {}
        Ok::<_, WsError>(())
    })
    .await;
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

/// Runs one socket operation of the writer. Once the connection is closing, the operation
/// (and everything after it) must finish by the outbox's give-up time: a client that does
/// not read cannot hold its connection open. `None` means "give up".
async fn bounded<F: Future>(outbox: &Outbox, op: F) -> Option<F::Output> {
    tokio::pin!(op);
    // Fast path: most operations complete at once, with no timer or notification to set
    // up (this runs for every frame).
    if outbox.give_up_at().is_none()
        && let Poll::Ready(out) = poll_fn(|cx| Poll::Ready(op.as_mut().poll(cx))).await
    {
        return Some(out);
    }
    loop {
        if let Some(at) = outbox.give_up_at() {
            return tokio::time::timeout_at(at.into(), &mut op).await.ok();
        }
        tokio::select! {
            biased;
            out = &mut op => return Some(out),
            _ = outbox.closing.notified() => {}
        }
    }
}

/// Drains the outbox into the socket: feed every queued frame, flush once per batch.
async fn write_loop(
    mut sink: SplitSink<WebSocketStream<TcpStream>, Frame>,
    outbox: Rc<Outbox>,
    metrics: LaneMetrics,
) {
    loop {
        while let Some(frame) = outbox.pop() {
            if let Frame::Text(_) | Frame::Binary(_) = &frame {
                metrics.messages_out.inc();
                metrics.bytes_out.inc_by(frame.len() as u64);
            }
            if !matches!(bounded(&outbox, sink.feed(frame)).await, Some(Ok(()))) {
                outbox.abort_reader();
                return;
            }
        }
        if !matches!(bounded(&outbox, sink.flush()).await, Some(Ok(()))) {
            outbox.abort_reader();
            return;
        }
        match outbox.ending() {
            Ending::Open => outbox.wake.notified().await,
            Ending::Gone => return,
            Ending::Close(code, reason) => {
                let frame = CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                };
                let _ = bounded(&outbox, sink.send(Frame::Close(Some(frame)))).await;
                // The reader ends when the client answers; if it never does, stop it.
                let _ = bounded(&outbox, async {
                    while !outbox.reader_done() {
                        outbox.wake.notified().await;
                    }
                })
                .await;
                outbox.abort_reader();
                return;
            }
        }
    }
}
