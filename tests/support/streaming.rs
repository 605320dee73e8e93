//! A client that streams numbered chat lines (or any numbered text messages) until the
//! server closes its socket, and says which lines it sent before it saw the close: those
//! are the lines a drain must keep (the server applies what a client sends until that
//! client's own close frame).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{PATIENCE, Ws};

/// What a streaming client saw.
#[derive(Debug, Clone)]
pub struct Streamed {
    /// Lines `{prefix}{first}` up to `{prefix}{sent - 1}` were sent (their `send`
    /// returned) before the client read the server's close frame (or sent its own).
    pub sent: usize,
    /// The server's close, if it sent one (`None`: the connection just ended).
    pub close: Option<(u16, String)>,
    /// The client closed first ([`Stream::stop`]) and the server answered.
    pub by_client: bool,
    /// When the client saw the close (or the end).
    pub closed_at: SystemTime,
}

/// A running stream of lines.
pub struct Stream {
    sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<Streamed>>,
}

impl Stream {
    /// Starts sending `{prefix}{n}` (n = 0, 1, ...) every `every` on `ws` until the
    /// server closes it.
    pub fn start(ws: Ws, prefix: &str, every: Duration) -> Stream {
        Self::start_at(ws, prefix, 0, every)
    }

    /// Like [`Stream::start`], numbering from `first`.
    pub fn start_at(ws: Ws, prefix: &str, first: usize, every: Duration) -> Stream {
        let prefix = prefix.to_owned();
        Self::start_with(ws, first, every, move |n| format!("{prefix}{n}"))
    }

    /// Like [`Stream::start_at`], sending `message(n)` as message `n` (called once for
    /// each n, in order).
    pub fn start_with(
        ws: Ws,
        first: usize,
        every: Duration,
        message: impl FnMut(usize) -> String + Send + 'static,
    ) -> Stream {
        let sent = Arc::new(AtomicUsize::new(first));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(stream(
            ws,
            Box::new(message),
            every,
            sent.clone(),
            stop.clone(),
        ));
        Stream { sent, stop, task }
    }

    /// Asks the client to stop: it sends its own close frame after the next line, and
    /// the server applies everything before it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Whether the stream ended (the server closed it, or the client stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Lines sent so far (counting from 0, whatever the first number).
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Acquire)
    }

    /// Waits until at least `n` lines were sent.
    pub async fn sent_at_least(&self, n: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.sent() < n {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} lines sent",
                self.sent()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Waits for the server's close (or the connection's end).
    pub async fn finished(self) -> anyhow::Result<Streamed> {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .map_err(|_| anyhow::anyhow!("the server never closed the stream"))??
    }
}

/// Makes message `n` of a stream.
type MakeMessage = Box<dyn FnMut(usize) -> String + Send>;

async fn stream(
    ws: Ws,
    mut message: MakeMessage,
    every: Duration,
    sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Streamed> {
    let (mut sink, mut source) = ws.split();
    // The reader takes the server's frames; once it has read the close, tungstenite
    // refuses every later send, and answers the close after the lines sent before it.
    let reader = tokio::spawn(async move {
        let mut close = None;
        while let Some(frame) = source.next().await {
            match frame {
                Ok(Message::Close(frame)) => {
                    close = Some(frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    }));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let closed_at = SystemTime::now();
        // Drive the close handshake to its end.
        while let Some(Ok(_)) = source.next().await {}
        (close, closed_at)
    });
    let mut n = sent.load(Ordering::Acquire);
    let mut by_client = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !reader.is_finished() {
        tick.tick().await;
        if stop.load(Ordering::Acquire) {
            by_client = sink.send(Message::Close(None)).await.is_ok();
            break;
        }
        if sink.send(Message::text(message(n))).await.is_err() {
            break;
        }
        n += 1;
        sent.store(n, Ordering::Release);
    }
    let (close, closed_at) = tokio::time::timeout(PATIENCE, reader).await??;
    Ok(Streamed {
        sent: n,
        by_client: by_client && close.is_some(),
        close,
        closed_at,
    })
}

/// Checks that `texts` (a chat history, oldest first) hold `{prefix}0` up to
/// `{prefix}{sent - 1}`, each once and in order; lines sent after the close may follow.
pub fn all_kept(texts: &[String], prefix: &str, sent: usize) -> anyhow::Result<()> {
    let numbers: Vec<usize> = texts
        .iter()
        .filter_map(|t| t.strip_prefix(prefix)?.parse().ok())
        .collect();
    let kept: Vec<usize> = numbers.iter().copied().filter(|n| *n < sent).collect();
    let expected: Vec<usize> = (0..sent).collect();
    if kept != expected {
        let missing: Vec<usize> = expected
            .iter()
            .copied()
            .filter(|n| !kept.contains(n))
            .collect();
        anyhow::bail!(
            "{} of {sent} lines sent before the close are missing or out of order (missing: {:?})",
            sent - kept.len().min(sent),
            &missing[..missing.len().min(20)]
        );
    }
    Ok(())
}

/// The texts of a chat document's lines, from its `GET /docs/chat/{doc}` answer.
pub fn chat_texts(body: &str) -> anyhow::Result<Vec<String>> {
    let doc: serde_json::Value = serde_json::from_str(body)?;
    Ok(doc["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default())
}

/// Sends chat lines `line 0` .. `line {count - 1}` from `from`, a few milliseconds apart
/// (so that each gets a time of its own), and returns once `to` has seen them all.
pub async fn say_lines(from: &mut Ws, to: &mut Ws, count: usize) -> anyhow::Result<()> {
    for i in 0..count {
        crate::support::send_text(from, &format!("line {i}")).await?;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut seen = 0;
    while seen < count {
        if crate::support::recv_json(to).await?["type"] == "message" {
            seen += 1;
        }
    }
    Ok(())
}
