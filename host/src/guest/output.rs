//! A consumer's stdout and stderr. Every line goes to the host log, tagged with the
//! plugin and document, so `println!` and panic messages are visible. The last lines
//! the consumer wrote to stderr during the current guest call are kept too, bounded, so
//! that a trap's report can say what the guest itself said (a panic message, a Python
//! exception) next to the wasm backtrace.
//!
//! It is the *lines* of the call, not only the last one: a Rust panic ends with
//! "note: run with `RUST_BACKTRACE=1` ...", a JavaScript error with its stack, so the
//! last line alone rarely says what went wrong.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, StreamResult};

/// Most bytes of a partial line kept before it is logged anyway.
const MAX_LINE: usize = 4096;

/// Most bytes of stderr kept for a trap's report (the newest lines that fit together; a
/// single longer line is cut).
pub const MAX_TAIL: usize = 512;

/// Which of the two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Logged at INFO.
    Stdout,
    /// Logged at WARN, and its last lines kept for a trap's report.
    Stderr,
}

/// One output stream of one instance. Every handle the guest opens on it (WASI hands out
/// a new one per `get-stderr`) writes here, so a line written through two handles is
/// still one line.
pub struct GuestOutput {
    tag: Arc<str>,
    stream: Stream,
    /// Something arrived since the last [`GuestOutput::begin_call`]: a relaxed load is
    /// all a call costs when the guest writes nothing.
    written: AtomicBool,
    /// A replay is running: lines are kept for a trap's report, but not logged again.
    muted: AtomicBool,
    lines: Mutex<Lines>,
}

#[derive(Default)]
struct Lines {
    /// The line being written, not ended by a newline yet.
    partial: Vec<u8>,
    /// The complete lines of the current call (stderr only), newest last, each at most
    /// `MAX_TAIL` bytes, together at most `MAX_TAIL` bytes unless there is only one.
    tail: VecDeque<String>,
    tail_bytes: usize,
}

impl std::fmt::Debug for GuestOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestOutput")
            .field("tag", &self.tag)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl GuestOutput {
    /// The `stream` of the instance `tag` (`plugin/document`).
    pub fn new(tag: Arc<str>, stream: Stream) -> Arc<GuestOutput> {
        Arc::new(GuestOutput {
            tag,
            stream,
            written: AtomicBool::new(false),
            muted: AtomicBool::new(false),
            lines: Mutex::new(Lines::default()),
        })
    }

    /// What WASI hands the guest for this stream.
    pub fn wasi_stream(self: &Arc<Self>) -> impl StdoutStream + 'static {
        Shared(self.clone())
    }

    /// Whether lines are logged (not while inputs that were logged once are replayed).
    pub fn mute(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
    }

    /// A guest call begins: forget the lines of the calls before. A line still being
    /// written stays (its end may come now).
    pub fn begin_call(&self) {
        if self.written.swap(false, Ordering::Relaxed) {
            let mut lines = self.lock();
            lines.tail.clear();
            lines.tail_bytes = 0;
        }
    }

    /// The lines written to this stream during the current call, oldest first, at most
    /// [`MAX_TAIL`] bytes together (the newest win); a line not ended by a newline is
    /// the newest. Empty for stdout, and when the call wrote nothing.
    pub fn tail(&self) -> Vec<String> {
        if self.stream != Stream::Stderr || !self.written.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let lines = self.lock();
        let mut tail = lines.tail.clone();
        let mut bytes = lines.tail_bytes;
        if let Some(partial) = text_of(&lines.partial) {
            let partial = bounded(partial);
            bytes += partial.len();
            tail.push_back(partial);
        }
        while bytes > MAX_TAIL && tail.len() > 1 {
            bytes -= tail.pop_front().map_or(0, |l| l.len());
        }
        tail.into()
    }

    /// Bytes the guest wrote: logged a line at a time.
    fn write(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut lines = self.lock();
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            lines.partial.extend_from_slice(chunk);
            if chunk.ends_with(b"\n") || lines.partial.len() >= MAX_LINE {
                self.end_line(&mut lines);
            }
        }
        self.written.store(true, Ordering::Relaxed);
    }

    fn end_line(&self, lines: &mut Lines) {
        let partial = std::mem::take(&mut lines.partial);
        let Some(text) = text_of(&partial) else {
            return;
        };
        let muted = self.muted.load(Ordering::Relaxed);
        match self.stream {
            Stream::Stdout if muted => {}
            Stream::Stdout => tracing::info!(target: "guest", doc = &*self.tag, "stdout: {text}"),
            Stream::Stderr => {
                if !muted {
                    tracing::warn!(target: "guest", doc = &*self.tag, "stderr: {text}");
                }
                let line = bounded(text);
                lines.tail_bytes += line.len();
                lines.tail.push_back(line);
                while lines.tail_bytes > MAX_TAIL && lines.tail.len() > 1 {
                    lines.tail_bytes -= lines.tail.pop_front().map_or(0, |l| l.len());
                }
            }
        }
        // The buffer is kept for the next line.
        lines.partial = partial;
        lines.partial.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        // Only the document's lane touches it; a poisoned lock still holds usable lines.
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for GuestOutput {
    /// A last line without a newline is logged when the instance goes.
    fn drop(&mut self) {
        let mut lines = std::mem::take(&mut *self.lock());
        self.end_line(&mut lines);
    }
}

/// A line's text without its line end; `None` if nothing is left.
fn text_of(line: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\r', '\n']);
    (!text.is_empty()).then(|| text.to_owned())
}

/// `line` cut to at most [`MAX_TAIL`] bytes, on a character boundary.
fn bounded(mut line: String) -> String {
    if line.len() > MAX_TAIL {
        let mut end = MAX_TAIL;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

/// The stream as WASI's context holds it.
struct Shared(Arc<GuestOutput>);

impl IsTerminal for Shared {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Shared {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only the WASIp3 bindings use this; wasmroom links WASIp2.
        Box::new(tokio::io::sink())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Handle(self.0.clone()))
    }
}

/// One handle the guest holds on the stream.
struct Handle(Arc<GuestOutput>);

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for Handle {
    async fn ready(&mut self) {}
}

impl OutputStream for Handle {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stderr() -> Arc<GuestOutput> {
        GuestOutput::new("p/d".into(), Stream::Stderr)
    }

    #[test]
    fn the_newest_lines_of_the_call_are_kept() {
        let out = stderr();
        assert!(out.tail().is_empty());
        out.write(b"thread panicked at src/lib.rs:1:2:\nboom\r\n");
        out.write(b"note: run with `RUST_BACKTRACE=1`\n");
        assert_eq!(
            out.tail(),
            [
                "thread panicked at src/lib.rs:1:2:",
                "boom",
                "note: run with `RUST_BACKTRACE=1`"
            ]
        );
        // Empty lines say nothing.
        out.write(b"\n\n");
        assert_eq!(out.tail().len(), 3);
    }

    #[test]
    fn the_tail_is_bounded_and_the_newest_line_wins() {
        let out = stderr();
        for i in 0..100 {
            out.write(format!("line {i:03} {}\n", "x".repeat(50)).as_bytes());
        }
        let tail = out.tail();
        assert!(tail.iter().map(String::len).sum::<usize>() <= MAX_TAIL);
        assert!(tail.last().unwrap().starts_with("line 099"), "{tail:?}");
        assert!(tail.len() > 1 && !tail.iter().any(|l| l.starts_with("line 000")));
        // One long line is cut, on a character boundary.
        out.write("é".repeat(MAX_TAIL).as_bytes());
        out.write(b"\n");
        let tail = out.tail();
        assert_eq!(tail.len(), 1);
        assert!(tail[0].len() <= MAX_TAIL && tail[0].starts_with('é'));
    }

    #[test]
    fn a_line_without_its_newline_is_the_newest() {
        let out = stderr();
        out.write(b"Traceback (most recent call last):\n");
        out.write(b"ValueError: ");
        out.write(b"boom");
        assert_eq!(
            out.tail(),
            ["Traceback (most recent call last):", "ValueError: boom"]
        );
        // Its end arrives later: still one line.
        out.write(b"!\n");
        assert_eq!(out.tail().last().unwrap(), "ValueError: boom!");
    }

    #[test]
    fn each_call_starts_without_the_lines_of_the_last() {
        let out = stderr();
        out.write(b"old news\n");
        out.begin_call();
        assert!(out.tail().is_empty());
        out.write(b"fresh\n");
        assert_eq!(out.tail(), ["fresh"]);
        // A call that writes nothing keeps nothing.
        out.begin_call();
        out.begin_call();
        assert!(out.tail().is_empty());
    }

    #[test]
    fn stdout_is_only_logged() {
        let out = GuestOutput::new("p/d".into(), Stream::Stdout);
        out.write(b"hello\n");
        assert!(out.tail().is_empty());
    }
}
