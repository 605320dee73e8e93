//! A WebSocket's writing half: a task that drains the connection's [`Outbox`], feeding
//! every queued frame and flushing once per batch, then sends the close frame and waits
//! (bounded) for the client's answer.

use std::future::{Future, poll_fn};
use std::rc::Rc;
use std::task::Poll;

use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;

use crate::document::outbox::{Ending, Outbox};
use crate::metrics::LaneMetrics;
use crate::net::frame_watch::Watched;

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
pub async fn write_loop(
    mut sink: SplitSink<WebSocketStream<Watched<TcpStream>>, Frame>,
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
