//! One accepted TCP connection: its request head, then either a plain HTTP answer or a
//! WebSocket that lives until either side closes it.
//!
//! A WebSocket has two tasks on its lane: this one reads frames and calls the document
//! directly; a writer task drains the connection's [`Outbox`], feeding every queued frame
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

use crate::document::{DocumentCell, DocumentError};
use crate::guest::{ConnectInfo, Decision, HttpRequest, Message};
use crate::http::{self, HeadError, RequestHead, Route};
use crate::lane::{ConnectionGuard, Lane};
use crate::outbox::{CLOSE_TIMEOUT, Ending, Outbox};
use crate::plugin::Plugin;
use crate::registry::Lookup;

/// Answers a connection with an HTTP error without reading its request (used when the
/// lane is at capacity).
pub async fn refuse(mut stream: TcpStream, status: u16, text: &'static str) {
    let _ = http::write_text(&mut stream, status, text).await;
}

/// Serves one accepted connection to the end.
pub async fn serve(
    lane: Rc<Lane>,
    mut stream: TcpStream,
    peer: SocketAddr,
    _guard: ConnectionGuard,
) {
    let limits = &lane.shared.config.limits;
    let head = match http::read_head(&mut stream, limits.handshake_timeout()).await {
        Ok(head) => head,
        Err(HeadError::TooLarge) => {
            let _ = http::write_text(&mut stream, 431, "request head too large").await;
            return;
        }
        Err(HeadError::Malformed(why)) => {
            let _ = http::write_text(&mut stream, 400, &format!("malformed request: {why}")).await;
            return;
        }
        Err(e) => {
            tracing::debug!(lane = lane.index, %peer, "dropped before a request: {e}");
            return;
        }
    };
    let route = match http::route(&head.path) {
        Ok(route) => route,
        Err(e @ http::RouteError::BadDocument(_)) => {
            let _ = http::write_text(&mut stream, 400, &e.to_string()).await;
            return;
        }
        Err(e) => {
            let _ = http::write_text(&mut stream, 404, &e.to_string()).await;
            return;
        }
    };
    match route {
        Route::Health => {
            let _ = http::write_text(&mut stream, 200, "ok").await;
        }
        Route::Plugins => {
            let body = lane.shared.registry.describe().to_string();
            let headers = [("content-type".to_owned(), "application/json".to_owned())];
            let _ = http::write_response(&mut stream, 200, &headers, body.as_bytes()).await;
        }
        Route::Ready => {
            // A lane answers only once the plugins are compiled and it listens; it stops
            // being ready as soon as shutdown begins.
            let (status, text) = if lane.is_shutting_down() {
                (503, "shutting down")
            } else {
                (200, "ready")
            };
            let _ = http::write_text(&mut stream, status, text).await;
        }
        Route::Stats => {
            let body = format!(
                "{{\"lane\":{},\"documents\":{},\"unsaved\":{},\"connections\":{},\"failed_saves\":{},\"failed_migrations\":{}}}",
                lane.index,
                lane.document_count(),
                lane.unsaved_count(),
                lane.connection_count().saturating_sub(1),
                lane.failed_saves(),
                lane.failed_migrations()
            );
            let headers = [("content-type".to_owned(), "application/json".to_owned())];
            let _ = http::write_response(&mut stream, 200, &headers, body.as_bytes()).await;
        }
        Route::Socket { plugin, document } => {
            serve_socket(lane, stream, peer, head, &plugin, &document).await;
        }
        Route::Document { plugin, document } => {
            serve_request(lane, stream, head, &plugin, &document).await;
        }
    }
}

/// Finds the plugin, answering 404/503 itself when there is none to serve.
async fn find_plugin(
    lane: &Lane,
    stream: &mut TcpStream,
    name: &str,
) -> Option<std::sync::Arc<Plugin>> {
    if lane.is_shutting_down() {
        let _ = http::write_text(stream, 503, "server shutting down").await;
        return None;
    }
    match lane.shared.registry.get(name) {
        Lookup::Ready(plugin) => Some(plugin),
        Lookup::Failed(why) => {
            let _ = http::write_text(
                stream,
                503,
                &format!("plugin '{name}' failed to load: {why}"),
            )
            .await;
            None
        }
        Lookup::Missing => {
            let _ = http::write_text(stream, 404, &format!("no plugin named '{name}'")).await;
            None
        }
    }
}

/// Opens the document, answering 503/500 itself when it cannot.
async fn open_document(
    lane: &Rc<Lane>,
    stream: &mut TcpStream,
    plugin: &std::sync::Arc<Plugin>,
    document: &str,
) -> Option<DocumentCell> {
    match lane.document(plugin, document) {
        Ok(doc) => Some(doc),
        Err(e) => {
            refuse_document(lane, stream, plugin, document, e).await;
            None
        }
    }
}

/// Answers a document that cannot be opened with 503 (try later) or 500.
async fn refuse_document(
    lane: &Lane,
    stream: &mut TcpStream,
    plugin: &Plugin,
    document: &str,
    e: DocumentError,
) {
    let status = match e {
        DocumentError::PoolExhausted(_) | DocumentError::CrashLoop(_) => 503,
        _ => {
            tracing::error!(lane = lane.index, plugin = %plugin.name, doc = %document, "{e}");
            500
        }
    };
    let _ = http::write_text(stream, status, &e.to_string()).await;
}

async fn serve_request(
    lane: Rc<Lane>,
    mut stream: TcpStream,
    head: RequestHead,
    plugin: &str,
    document: &str,
) {
    let limits = &lane.shared.config.limits;
    let body = match http::read_body(
        &mut stream,
        &head,
        limits.max_message_bytes,
        limits.handshake_timeout(),
    )
    .await
    {
        Ok(body) => body,
        Err(e) => {
            let status = match e {
                http::BodyError::LengthRequired => 411,
                http::BodyError::BadLength => 400,
                http::BodyError::TooLarge(_) => 413,
                http::BodyError::Timeout | http::BodyError::Io(_) => return,
            };
            let _ = http::write_text(&mut stream, status, &e.to_string()).await;
            return;
        }
    };
    let Some(plugin) = find_plugin(&lane, &mut stream, plugin).await else {
        return;
    };
    let Some(doc) = open_document(&lane, &mut stream, &plugin, document).await else {
        return;
    };
    let request = HttpRequest {
        method: head.method,
        path: head.path,
        query: head.query,
        headers: head.headers,
        body,
    };
    let response = doc.borrow_mut().request(&request);
    drop(doc);
    // A client that does not read its response must not hold the connection forever.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        match response {
            Ok(r) => http::write_response(&mut stream, r.status, &r.headers, &r.body).await,
            Err(e) => http::write_text(&mut stream, 500, &e.to_string()).await,
        }
    })
    .await;
}

async fn serve_socket(
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
    let doc = match lane.document(&plugin, document) {
        Ok(doc) => doc,
        Err(DocumentError::CrashLoop(retry)) => {
            // The protocol's "try again later" is a close code (1013), so upgrade first.
            let reason = format!(
                "document is crash-looping; retry in {}s",
                retry.as_secs().max(1)
            );
            refuse_after_upgrade(stream, &accept_key, head.rest, ws_config, 1013, reason).await;
            return;
        }
        Err(DocumentError::Storage(_)) => {
            let reason = "saved state unreadable; see the server log".to_owned();
            refuse_after_upgrade(stream, &accept_key, head.rest, ws_config, 1011, reason).await;
            return;
        }
        Err(e) => {
            refuse_document(&lane, &mut stream, &plugin, document, e).await;
            return;
        }
    };
    if doc.borrow().connection_count() >= limits.max_connections_per_document {
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
    let info = ConnectInfo {
        id,
        path: head.path,
        query: head.query,
        headers: head.headers,
        subprotocols: offered.clone(),
        remote_address: peer.to_string(),
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
            let _ = http::write_text(&mut stream, status, &r.reason).await;
            return;
        }
        Err(e) => {
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
    tokio::task::spawn_local(write_loop(sink, outbox.clone()));

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
            Some(Ok(Frame::Text(text))) => doc
                .borrow_mut()
                .message(id, &Message::Text(text.as_str().to_owned())),
            Some(Ok(Frame::Binary(bytes))) => doc
                .borrow_mut()
                .message(id, &Message::Binary(bytes.to_vec())),
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
    outbox.finish();
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
async fn write_loop(mut sink: SplitSink<WebSocketStream<TcpStream>, Frame>, outbox: Rc<Outbox>) {
    loop {
        while let Some(frame) = outbox.pop() {
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
