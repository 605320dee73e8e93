//! The floor: the best plain native relay, written the way tokio-tungstenite is meant to be
//! used, with no WebAssembly.
//!
//! One port, one thread, one `current_thread` runtime; `/ws/{anything}/{document}`; every
//! message goes to the document's other connections through per-connection queues drained
//! by writer tasks that feed every queued frame and then flush once. tungstenite's default
//! write buffer (128 KiB) is kept, so the frames fed between two flushes go out in one
//! `write`, not one each (wasmroom's `write_buffer_size(0)` is deliberately not copied: a
//! floor must be the best native design, not a copy of ours). What is left out is what
//! wasmroom adds: the guest call per message, limits, timers, HTTP routes.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Default)]
struct Queue {
    frames: RefCell<VecDeque<Message>>,
    wake: Notify,
    done: std::cell::Cell<bool>,
}

/// The connections of one document.
type Members = Rc<RefCell<Vec<(u64, Rc<Queue>)>>>;
type Documents = Rc<RefCell<HashMap<String, Members>>>;

fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args().nth(1).map_or(Ok(9001), |p| p.parse())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        eprintln!("native relay listening on {}", listener.local_addr()?);
        let docs: Documents = Rc::default();
        let mut next_id = 0u64;
        loop {
            let (stream, _) = listener.accept().await?;
            next_id += 1;
            tokio::task::spawn_local(serve(stream, docs.clone(), next_id));
        }
    })
}

async fn serve(stream: TcpStream, docs: Documents, id: u64) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    // The callback's signature is tungstenite's; it never fails here.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    // The default write buffer; a 4 KiB read buffer instead of the default 128 KiB, which is
    // allocated up front for every socket (125 MiB for 1,000 sockets): measured here, that
    // made the relay slower (it fell behind at ~200k deliveries/s instead of ~1M) and cost
    // 128 KiB per idle connection.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let doc = path.rsplit('/').next().unwrap_or_default().to_owned();
    let queue = Rc::new(Queue::default());
    let members = docs.borrow_mut().entry(doc.clone()).or_default().clone();
    members.borrow_mut().push((id, queue.clone()));
    let (mut sink, mut stream) = ws.split();
    let writer_queue = queue.clone();
    tokio::task::spawn_local(async move {
        loop {
            loop {
                let next = writer_queue.frames.borrow_mut().pop_front();
                let Some(frame) = next else { break };
                if sink.feed(frame).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() || writer_queue.done.get() {
                return;
            }
            writer_queue.wake.notified().await;
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        if !(msg.is_text() || msg.is_binary()) {
            continue;
        }
        for (other, q) in members.borrow().iter() {
            if *other != id {
                let mut frames = q.frames.borrow_mut();
                // A writer that has frames queued is awake already.
                if frames.is_empty() {
                    q.wake.notify_one();
                }
                frames.push_back(msg.clone());
            }
        }
    }
    queue.done.set(true);
    queue.wake.notify_one();
    members.borrow_mut().retain(|(other, _)| *other != id);
    if members.borrow().is_empty() {
        docs.borrow_mut().remove(&doc);
    }
}
