//! One accepted TCP connection: its request head, routing (and hand-over to the owner
//! lane), then a plain HTTP answer, a request to a document ([`crate::lane::requests`]) or
//! a WebSocket ([`crate::lane::upgrade`]).

use std::future::{Future, Ready, poll_fn, ready};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::Either;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::lane::live::Live;
use crate::lane::{ConnectionGuard, HandOverError, Handover, Lane};
use crate::metrics::Rejection;
use crate::net::http::{self, HeadError, RequestHead};
use crate::net::route::{self, Route, RouteError};
use crate::routing::Misrouted;

/// Answers a connection with an HTTP error without reading its request (used when the
/// lane is at capacity).
pub async fn refuse(mut stream: TcpStream, status: u16, text: &'static str) {
    let _ = http::write_text(&mut stream, status, text).await;
}

/// Serves one accepted connection to the end.
///
/// One task per connection, as small as an idle WebSocket's needs ([`Live`]): until the
/// client's first bytes arrive, the task holds the socket and its handshake deadline
/// only, so a burst of connections whose requests have not arrived yet holds no buffers;
/// reading the request, routing and the upgrade are boxed, allocated once those bytes
/// are there and freed when the socket is up, most often within the same turn of the
/// lane, so that the next connection's handshake reuses the same memory. (Handshakes
/// all waiting at once, each with its buffers and futures, left holes between the live
/// sockets that glibc could not give back: after a burst, they cost more than the
/// sockets themselves.)
pub fn serve(
    lane: Rc<Lane>,
    stream: TcpStream,
    peer: SocketAddr,
    guard: ConnectionGuard,
) -> impl Future<Output = ()> {
    let deadline = Instant::now() + lane.services.config.limits.handshake_timeout();
    arrival(stream, deadline)
        .then(move |stream| Box::pin(request(lane, stream, peer, guard, deadline)))
        .then(live)
}

/// The socket, once it has bytes to read (or its stream ended or broke), or `deadline`
/// passed; the request's reading tells which.
///
/// It polls the socket's readiness itself, keeping no `readable()` future (a waiter of
/// its own): this task is the socket's only reader.
async fn arrival(stream: TcpStream, deadline: Instant) -> TcpStream {
    let arrived = poll_fn(|cx| {
        loop {
            match stream.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
            }
            // Readiness is not the bytes: in a burst of new connections, tokio reported
            // two in five readable with nothing to read yet. Peeking one byte makes sure
            // (and clears the readiness when there is nothing).
            let peeked = stream.try_io(Interest::READABLE, || {
                let mut byte = [MaybeUninit::uninit()];
                SockRef::from(&stream).peek(&mut byte)
            });
            match peeked {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => return Poll::Ready(()),
            }
        }
    });
    let _ = tokio::time::timeout_at(deadline.into(), arrived).await;
    stream
}

/// Serves a connection another lane read the request of and handed to this one, the
/// owner of its document (as [`serve`] does).
pub fn serve_adopted(
    lane: Rc<Lane>,
    stream: TcpStream,
    peer: SocketAddr,
    head: RequestHead,
    guard: ConnectionGuard,
) -> impl Future<Output = ()> {
    Box::pin(dispatch(lane, stream, peer, head, true, guard)).then(live)
}

/// The socket's life after its handshake, if it became a WebSocket.
fn live(upgraded: Option<Live>) -> Either<impl Future<Output = ()>, Ready<()>> {
    match upgraded {
        Some(live) => Either::Left(live.serve()),
        None => Either::Right(ready(())),
    }
}

/// Reads the request head (by `deadline`) and answers it; returns the WebSocket to serve,
/// if it is one.
async fn request(
    lane: Rc<Lane>,
    mut stream: TcpStream,
    peer: SocketAddr,
    guard: ConnectionGuard,
    deadline: Instant,
) -> Option<Live> {
    let left = deadline.saturating_duration_since(Instant::now());
    let head = match http::read_head(&mut stream, left).await {
        Ok(head) => head,
        Err(HeadError::TooLarge) => {
            lane.metrics.rejected(Rejection::BadRequest);
            let _ = http::write_text(&mut stream, 431, "request head too large").await;
            return None;
        }
        Err(HeadError::Malformed(why)) => {
            lane.metrics.rejected(Rejection::BadRequest);
            let _ = http::write_text(&mut stream, 400, &format!("malformed request: {why}")).await;
            return None;
        }
        Err(e) => {
            tracing::debug!(lane = lane.index, %peer, "dropped before a request: {e}");
            return None;
        }
    };
    dispatch(lane, stream, peer, head, false, guard).await
}

/// The path a request must have for the lane to panic, for the tests of what a panic in
/// a lane does (`WASMROOM_TEST_PANIC_PATH`; debug builds only).
fn test_panic_path() -> Option<String> {
    cfg!(debug_assertions)
        .then(|| std::env::var("WASMROOM_TEST_PANIC_PATH").ok())
        .flatten()
}

/// Answers a request whose head has been read. `guard` counts the connection in the
/// lane's cap until it ends (a WebSocket's task takes it along).
async fn dispatch(
    lane: Rc<Lane>,
    stream: TcpStream,
    peer: SocketAddr,
    head: RequestHead,
    adopted: bool,
    guard: ConnectionGuard,
) -> Option<Live> {
    if test_panic_path().is_some_and(|p| p == head.path) {
        panic!("the test asked this lane to panic ({})", head.path);
    }
    let routed = route::route(&head.path);
    if let Ok(Route::Socket { plugin, document }) = &routed
        && (adopted || lane.services.lanes.owner(plugin, document) == lane.index)
    {
        return crate::lane::upgrade::serve(
            lane.clone(),
            stream,
            peer,
            head,
            plugin,
            document,
            guard,
        )
        .await;
    }
    Box::pin(answer(lane, stream, peer, head, routed, adopted, guard)).await
}

/// Answers a request that is not a WebSocket of this lane.
async fn answer(
    lane: Rc<Lane>,
    mut stream: TcpStream,
    peer: SocketAddr,
    head: RequestHead,
    routed: Result<Route, RouteError>,
    adopted: bool,
    guard: ConnectionGuard,
) -> Option<Live> {
    let route = match routed {
        Ok(route) => route,
        Err(e @ RouteError::BadDocument(_)) => {
            lane.metrics.rejected(Rejection::BadRequest);
            let _ = http::write_text(&mut stream, 400, &e.to_string()).await;
            return None;
        }
        Err(RouteError::NotFound) if lane.services.config.static_dir.is_some() => {
            let root = lane.services.config.static_dir.as_deref().expect("checked");
            crate::net::static_files::serve(&mut stream, root, &head, lane.charge()).await;
            return None;
        }
        Err(e) => {
            lane.metrics.rejected(Rejection::NotFound);
            let _ = http::write_text(&mut stream, 404, &e.to_string()).await;
            return None;
        }
    };
    if let Route::Socket { plugin, document } | Route::Document { plugin, document } = &route {
        let owner = lane.services.lanes.owner(plugin, document);
        // An adopted connection was sent by the owner rule itself: never send it on.
        if owner != lane.index && !adopted {
            Box::pin(misrouted(
                &lane, stream, peer, head, owner, plugin, document,
            ))
            .await;
            return None;
        }
    }
    match route {
        Route::Health => {
            let _ = http::write_text(&mut stream, 200, "ok").await;
        }
        Route::Metrics if lane.services.config.admin_port.is_some() => {
            // The admin port has them, behind its token when one is set.
            lane.metrics.rejected(Rejection::NotFound);
            let _ =
                http::write_text(&mut stream, 404, "metrics are served on the admin port").await;
        }
        Route::Metrics => {
            // Rendered off the lane: it locks every histogram and the instance gauges.
            let (metrics, registry) = (
                lane.services.metrics.clone(),
                lane.services.registry.clone(),
            );
            let rendered =
                tokio::task::spawn_blocking(move || metrics.render(&registry.live_instances()))
                    .await;
            let Ok(body) = rendered else {
                let _ = http::write_text(&mut stream, 500, "cannot render the metrics").await;
                return None;
            };
            let headers = [(
                "content-type".to_owned(),
                crate::metrics::CONTENT_TYPE.to_owned(),
            )];
            let _ = http::write_response(&mut stream, 200, &headers, body.as_bytes()).await;
        }
        Route::Plugins => {
            let body = lane.services.registry.describe().to_string();
            let headers = [("content-type".to_owned(), "application/json".to_owned())];
            let _ = http::write_response(&mut stream, 200, &headers, body.as_bytes()).await;
        }
        Route::Ready => {
            // A lane answers only once the plugins are compiled and it listens; it stops
            // being ready as soon as shutdown begins.
            let (status, text) = if lane.is_shutting_down() || !lane.services.health.ready() {
                (
                    503,
                    "not ready: shutting down, a lane is down, or the shared store is unreachable",
                )
            } else {
                (200, "ready")
            };
            let _ = http::write_text(&mut stream, status, text).await;
        }
        Route::Stats => {
            let body = format!(
                "{{\"lane\":{},\"port\":{},\"documents\":{},\"unsaved\":{},\"connections\":{},\"failed_saves\":{},\"failed_migrations\":{},\"handed_over\":{},\"adopted\":{}}}",
                lane.index,
                lane.services.lanes.get(lane.index).addr.port(),
                lane.document_count(),
                lane.unsaved_count(),
                lane.connection_count().saturating_sub(1),
                lane.failed_saves(),
                lane.failed_migrations(),
                lane.handed_over(),
                lane.adopted()
            );
            let headers = [("content-type".to_owned(), "application/json".to_owned())];
            let _ = http::write_response(&mut stream, 200, &headers, body.as_bytes()).await;
        }
        Route::Socket { plugin, document } => {
            return crate::lane::upgrade::serve(
                lane, stream, peer, head, &plugin, &document, guard,
            )
            .await;
        }
        Route::Document { plugin, document } => {
            Box::pin(crate::lane::requests::serve(
                lane, stream, peer, head, &plugin, &document,
            ))
            .await;
        }
    }
    None
}

/// A request for a document lane `owner` serves: move the socket there, or answer 421.
async fn misrouted(
    lane: &Lane,
    mut stream: TcpStream,
    peer: SocketAddr,
    head: RequestHead,
    owner: usize,
    plugin: &str,
    document: &str,
) {
    let to = lane.services.lanes.get(owner);
    if lane.services.config.misrouted == Misrouted::Reject {
        let headers = [
            (
                "x-wasmroom-owner-port".to_owned(),
                to.addr.port().to_string(),
            ),
            ("x-wasmroom-owner".to_owned(), to.name.clone()),
            (
                "content-type".to_owned(),
                "text/plain; charset=utf-8".to_owned(),
            ),
        ];
        let body = format!("{plugin}/{document} is served on port {}\n", to.addr.port());
        lane.metrics.rejected(Rejection::Misrouted);
        let _ = http::write_response(&mut stream, 421, &headers, body.as_bytes()).await;
        return;
    }
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(lane = lane.index, %peer, "cannot hand over a connection: {e}");
            return;
        }
    };
    tracing::trace!(
        lane = lane.index,
        to = owner,
        "{plugin}/{document}: handing the socket over"
    );
    let (back, reason, text) = match lane.hand_over(owner, Handover { stream, peer, head }) {
        Ok(()) => return,
        Err(HandOverError::Full(back)) => (
            back,
            Rejection::Capacity,
            "lane at capacity: too many connections",
        ),
        // The owner lane is stopping: the whole server is.
        Err(HandOverError::Stopping(back)) => {
            (back, Rejection::ShuttingDown, "server shutting down")
        }
    };
    lane.metrics.rejected(reason);
    if let Ok(mut stream) = TcpStream::from_std(back.stream) {
        let _ = http::write_text(&mut stream, 503, text).await;
    }
}

#[cfg(test)]
mod tests {
    use crate::lane::task::future_size::{FutureSize, TaskCell, cell};

    /// What an idle WebSocket costs the process is mostly its task: a connection's whole
    /// task (request, upgrade, the live socket) is one future in the panic guard, in a
    /// cell that tokio aligns to 128 bytes. It was 768 bytes, with a 600-byte future (the
    /// decoder's state inline, the token buckets' rates, the peer's address, a parked
    /// session's wait), and before that the live socket alone was 1,552 bytes of future,
    /// in a task of its own (twice that with the panic guard's `async` block), beside the
    /// accept's task of 2,816.
    const TASK_CELL: usize = 512;

    #[test]
    fn a_connections_task_is_as_small_as_its_idle_socket() {
        let connection = super::serve.task_cell();
        let adopted = super::serve_adopted.task_cell();
        let live = crate::lane::live::Live::serve.task_cell();
        let sizes = format!(
            "futures: connection {}, adopted {}, live socket {} bytes",
            super::serve.future_size(),
            super::serve_adopted.future_size(),
            crate::lane::live::Live::serve.future_size()
        );
        assert!(live <= TASK_CELL, "an idle socket's cell: {live} ({sizes})");
        assert!(
            connection <= TASK_CELL,
            "a connection's cell: {connection} ({sizes})"
        );
        assert!(
            adopted <= TASK_CELL,
            "an adopted connection's: {adopted} ({sizes})"
        );
        // The handshake is boxed: it does not make every idle socket's task larger.
        let upgrade = crate::lane::upgrade::serve.future_size();
        assert!(
            cell(upgrade) > TASK_CELL,
            "the upgrade ({upgrade} bytes) is boxed"
        );
    }
}
