//! Watches the bytes a WebSocket client sends, frame header by frame header, to know
//! whether a frame or message is still incomplete, since when, and how many of its
//! payload bytes the server holds. The WebSocket library buffers partial messages out of
//! sight; this lets a lane bound them in time and in memory (a client that opens a
//! fragmented message and never finishes it would otherwise hold up to the message size
//! limit forever).
//!
//! Only headers are parsed: payload bytes are skipped by length, never copied. A stream
//! this does not understand is left to the WebSocket library, which closes the connection
//! (1002); the watcher then stops reporting.
//!
//! The bytes of an incomplete message are charged to the lane's [`ByteBudget`]
//! (`crate::net::budget`); when it runs out, [`Incoming::over_budget`] turns true.

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::net::budget::Charge;

/// What a lane can see of what a client is sending.
#[derive(Debug, Default)]
pub struct Incoming {
    /// When the first byte of the frame or message that is not complete yet arrived.
    started: Cell<Option<Instant>>,
    /// Payload bytes of the incomplete message received so far (all its frames).
    bytes: Cell<u64>,
    /// Those bytes, held in the lane's budget (none once released).
    charge: RefCell<Option<Charge>>,
    over_budget: Cell<bool>,
    /// The reader has been told about the current incomplete message.
    reported: Cell<bool>,
    /// Wakes the reader: a message stayed incomplete after a read (arm its deadline), or
    /// the budget ran out.
    pub changed: Notify,
}

impl Incoming {
    /// Reports for a connection whose partial messages are charged to `charge`.
    pub fn new(charge: Charge) -> Incoming {
        Incoming {
            charge: RefCell::new(Some(charge)),
            ..Incoming::default()
        }
    }

    /// Whether the lane's budget could not hold this connection's partial message.
    pub fn over_budget(&self) -> bool {
        self.over_budget.get()
    }

    /// Gives the charged bytes back and stops charging (the connection is ending).
    pub fn release(&self) {
        self.charge.borrow_mut().take();
    }

    fn set_bytes(&self, bytes: u64) {
        self.bytes.set(bytes);
        if let Some(charge) = self.charge.borrow_mut().as_mut() {
            let fits = usize::try_from(bytes).is_ok_and(|b| charge.resize(b));
            if !fits && !self.over_budget.replace(true) {
                self.changed.notify_one();
            }
        }
    }

    fn complete(&self) {
        self.started.set(None);
        self.reported.set(false);
        self.set_bytes(0);
    }

    /// When the current incomplete frame or message started, if there is one.
    pub fn started(&self) -> Option<Instant> {
        self.started.get()
    }

    /// Payload bytes of the current incomplete message.
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }
}

/// Where the parser is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Reading a frame header: the bytes so far.
    Header { buf: [u8; 14], have: usize },
    /// Skipping a frame's payload.
    Payload {
        remaining: u64,
        data: bool,
        fin: bool,
    },
    /// Not framing this parser follows: stop watching.
    Lost,
}

const NEW_HEADER: State = State::Header {
    buf: [0; 14],
    have: 0,
};

/// The frame-header parser over a client's byte stream.
#[derive(Debug)]
pub struct FrameWatch {
    state: State,
    /// A data frame without FIN has been seen: continuation frames follow.
    fragmented: bool,
    incoming: Rc<Incoming>,
}

impl FrameWatch {
    /// A watcher reporting into `incoming`.
    pub fn new(incoming: Rc<Incoming>) -> FrameWatch {
        FrameWatch {
            state: NEW_HEADER,
            fragmented: false,
            incoming,
        }
    }

    /// Feeds bytes as they arrive, at `now`.
    pub fn feed(&mut self, mut bytes: &[u8], now: Instant) {
        while !bytes.is_empty() {
            match self.state {
                State::Lost => return,
                State::Header { mut buf, mut have } => {
                    if have == 0 && self.incoming.started.get().is_none() {
                        self.incoming.started.set(Some(now));
                    }
                    let need = header_len(&buf[..have]).unwrap_or(2);
                    let take = (need - have).min(bytes.len());
                    buf[have..have + take].copy_from_slice(&bytes[..take]);
                    have += take;
                    bytes = &bytes[take..];
                    match header_len(&buf[..have]) {
                        Some(len) if len == have => self.header_done(&buf[..have]),
                        _ => self.state = State::Header { buf, have },
                    }
                }
                State::Payload {
                    remaining,
                    data,
                    fin,
                } => {
                    let take = remaining.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    if data {
                        self.incoming.set_bytes(self.incoming.bytes.get() + take);
                    }
                    if take == remaining {
                        self.frame_done(data, fin);
                    } else {
                        self.state = State::Payload {
                            remaining: remaining - take,
                            data,
                            fin,
                        };
                    }
                }
            }
        }
    }

    fn header_done(&mut self, header: &[u8]) {
        let fin = header[0] & 0x80 != 0;
        let opcode = header[0] & 0x0f;
        let data = match opcode {
            0..=2 => true,
            8..=10 => false,
            _ => {
                self.state = State::Lost;
                return;
            }
        };
        let len = match header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
            127 => u64::from_be_bytes(header[2..10].try_into().expect("8 bytes")),
            n => u64::from(n),
        };
        if len == 0 {
            self.frame_done(data, fin);
        } else {
            self.state = State::Payload {
                remaining: len,
                data,
                fin,
            };
        }
    }

    fn frame_done(&mut self, data: bool, fin: bool) {
        if data {
            self.fragmented = !fin;
        }
        if !self.fragmented {
            // A complete message, or a control frame between messages.
            self.incoming.complete();
        }
        self.state = NEW_HEADER;
    }
}

/// The length of the header that starts with `bytes`, once its first two bytes are known.
fn header_len(bytes: &[u8]) -> Option<usize> {
    let second = *bytes.get(1)?;
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    Some(2 + extended + mask)
}

/// A stream whose incoming bytes pass through a [`FrameWatch`]; writes go straight through.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    watch: FrameWatch,
}

impl<S> Watched<S> {
    /// Watches what is read from `inner`, starting with `already` (bytes read before).
    pub fn new(inner: S, incoming: Rc<Incoming>, already: &[u8]) -> Watched<S> {
        let mut watch = FrameWatch::new(incoming);
        watch.feed(already, Instant::now());
        Watched { inner, watch }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            let this = &mut *self;
            this.watch.feed(&buf.filled()[before..], Instant::now());
            let incoming = &this.watch.incoming;
            if incoming.started.get().is_some() && !incoming.reported.replace(true) {
                incoming.changed.notify_one();
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend_from_slice(payload);
        out
    }

    fn watch() -> (FrameWatch, Rc<Incoming>) {
        let incoming = Rc::new(Incoming::default());
        (FrameWatch::new(incoming.clone()), incoming)
    }

    #[test]
    fn complete_messages_leave_nothing_open() {
        let (mut w, inc) = watch();
        let t = Instant::now();
        w.feed(&frame(true, 1, b"hello"), t);
        w.feed(&frame(true, 2, &[0; 70_000]), t);
        w.feed(&frame(true, 1, b""), t);
        assert_eq!((inc.started(), inc.bytes()), (None, 0));
    }

    #[test]
    fn a_fragmented_message_stays_open_across_control_frames() {
        let (mut w, inc) = watch();
        let t0 = Instant::now();
        w.feed(&frame(false, 1, b"abc"), t0);
        assert_eq!((inc.started(), inc.bytes()), (Some(t0), 3));
        let t1 = t0 + Duration::from_secs(1);
        w.feed(&frame(true, 9, b"ping"), t1);
        w.feed(&frame(false, 0, b"defg"), t1);
        assert_eq!((inc.started(), inc.bytes()), (Some(t0), 7));
        w.feed(&frame(true, 0, b"h"), t1);
        assert_eq!((inc.started(), inc.bytes()), (None, 0));
    }

    #[test]
    fn byte_by_byte_and_half_frames() {
        let (mut w, inc) = watch();
        let t0 = Instant::now();
        let bytes = frame(true, 2, &[7; 300]);
        for b in &bytes[..100] {
            w.feed(&[*b], t0);
        }
        assert_eq!(inc.started(), Some(t0));
        assert_eq!(inc.bytes(), 100 - 8);
        w.feed(&bytes[100..], t0);
        assert_eq!((inc.started(), inc.bytes()), (None, 0));
        // A control frame between messages starts nothing once complete...
        w.feed(&frame(true, 10, b""), t0);
        assert_eq!(inc.started(), None);
        // ...but one stalled halfway counts as incomplete.
        w.feed(&frame(true, 9, b"12345")[..7], t0);
        assert_eq!(inc.started(), Some(t0));
    }

    #[test]
    fn partial_messages_are_charged_to_the_budget() {
        let budget = crate::net::budget::ByteBudget::new(1000);
        let incoming = Rc::new(Incoming::new(Charge::new(&budget)));
        let mut w = FrameWatch::new(incoming.clone());
        let t0 = Instant::now();
        w.feed(&frame(false, 2, &[0; 600]), t0);
        assert_eq!(budget.used(), 600);
        assert!(!incoming.over_budget());
        w.feed(&frame(false, 0, &[0; 600]), t0);
        assert!(incoming.over_budget());
        assert_eq!(
            budget.used(),
            600,
            "an over-budget charge keeps what it held"
        );
        w.feed(&frame(true, 0, b""), t0);
        assert_eq!(budget.used(), 0);
        incoming.release();
        w.feed(&frame(false, 2, &[0; 10]), t0);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn unknown_opcodes_stop_the_watch() {
        let (mut w, inc) = watch();
        let t0 = Instant::now();
        w.feed(&frame(true, 5, b"x"), t0);
        w.feed(&frame(false, 1, b"abc"), t0);
        assert_eq!(inc.bytes(), 0);
    }
}
