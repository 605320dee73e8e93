//! Turning the bytes a client sends into WebSocket events, without a read buffer of its
//! own: a read lands in the caller's buffer (one per lane), whole frames are unmasked
//! and handed on where they lie, and only what a frame or message that has not arrived
//! whole needs is kept here: the bytes of a header or of a control frame cut by the end
//! of a read, and the message being assembled, into which a data frame's payload goes
//! as it arrives (text is checked as it arrives: `message.rs`). An idle connection
//! holds nothing.
//!
//! The decoder also says since when a frame or message has been incomplete and how many
//! bytes it holds for it, so the lane can bound both in time and memory.
//!
//! What a frame cut by the end of a read needs (the bytes of its header, the payload's
//! place, the message, since when) is boxed, and only while such a frame or message is
//! there: between messages a decoder is 24 bytes, a pointer, the limit and a flag, so
//! that every idle connection's task is that much smaller.

use std::time::Instant;

use crate::websocket::frame::{FrameError, Header, opcode, parse_close, parse_header, unmask};
use crate::websocket::message::Message;

/// What a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping, with its payload (answer with a pong carrying it).
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame, with its code and reason (`None`: no code, 1005). Nothing after it
    /// is read.
    Close(Option<(u16, String)>),
}

/// One client's incoming stream.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// What an incomplete frame or message needs; `None` between messages.
    held: Option<Box<Stream>>,
    closed: bool,
}

/// The stream's state while it is decoded, kept ([`Decoder::held`]) only while a frame
/// or message is incomplete.
#[derive(Debug)]
struct Stream {
    max_message: usize,
    /// The bytes of a frame header, or of a whole control frame, that a read cut off;
    /// empty between frames. At most 14 + 125 bytes.
    partial: Vec<u8>,
    /// A data frame whose header has arrived and whose payload is still arriving.
    payload: Option<Payload>,
    /// The message being assembled: the first frames of a fragmented one, or the frame
    /// `payload` is arriving for.
    message: Option<Message>,
    /// When the incomplete frame or message began to arrive.
    started: Option<Instant>,
    closed: bool,
}

/// Where a data frame's payload is, while it arrives.
#[derive(Debug)]
struct Payload {
    fin: bool,
    mask: [u8; 4],
    len: usize,
    received: usize,
}

impl Decoder {
    /// A decoder for messages of at most `max_message` bytes.
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message,
            held: None,
            closed: false,
        }
    }

    /// Decodes `input` (bytes just read, in a buffer the decoder may unmask in place) at
    /// `now`, calling `on_event` for each complete event in order. After an error the
    /// stream is unusable: answer with the error's close code.
    pub fn feed(
        &mut self,
        input: &mut [u8],
        now: Instant,
        on_event: impl FnMut(Event),
    ) -> Result<(), FrameError> {
        if self.closed {
            return Ok(());
        }
        // Decoded on the stack; boxed again only if something is left incomplete (a
        // read of whole frames allocates nothing here).
        let mut stream = match self.held.take() {
            Some(held) => *held,
            None => Stream::new(self.max_message),
        };
        let fed = stream.feed(input, now, on_event);
        self.closed = stream.closed;
        if stream.holds_anything() {
            self.held = Some(Box::new(stream));
        }
        fed
    }

    /// Since when a frame or message has been incomplete, if one is.
    pub fn incomplete_since(&self) -> Option<Instant> {
        self.held.as_ref().and_then(|held| held.started)
    }

    /// Bytes held for incomplete frames and messages.
    pub fn held_bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |held| held.held_bytes())
    }
}

impl Stream {
    fn new(max_message: usize) -> Stream {
        Stream {
            max_message,
            partial: Vec::new(),
            payload: None,
            message: None,
            started: None,
            closed: false,
        }
    }

    /// Whether anything must be kept for the next read (after an error too: the state
    /// stays as the error left it).
    fn holds_anything(&self) -> bool {
        !self.partial.is_empty()
            || self.payload.is_some()
            || self.message.is_some()
            || self.started.is_some()
    }

    fn feed(
        &mut self,
        input: &mut [u8],
        now: Instant,
        mut on_event: impl FnMut(Event),
    ) -> Result<(), FrameError> {
        if self.closed {
            return Ok(());
        }
        let mut completed = false;
        let mut input = input;
        if !self.partial.is_empty() {
            // Complete the header or control frame begun in an earlier read with just the
            // bytes it still needs; the rest of this read is decoded where it lies.
            let taken = self.complete_partial(input);
            input = &mut input[taken..];
            let mut held = std::mem::take(&mut self.partial);
            if self.decode(&mut held, &mut completed, &mut on_event)? < held.len() {
                // Still incomplete: this read went into it whole.
                self.partial = held;
            }
        }
        if self.payload.is_some() {
            let taken = self.continue_payload(input, &mut completed, &mut on_event)?;
            input = &mut input[taken..];
        }
        if self.partial.is_empty() && self.payload.is_none() && !input.is_empty() && !self.closed {
            let used = self.decode(input, &mut completed, &mut on_event)?;
            if used < input.len() && !self.closed {
                self.partial.extend_from_slice(&input[used..]);
            }
        }
        let incomplete = !self.partial.is_empty() || self.message.is_some();
        self.started = match (incomplete, self.started) {
            (false, _) => None,
            (true, Some(since)) if !completed => Some(since),
            (true, _) => Some(now),
        };
        Ok(())
    }

    /// Moves from `input` into `partial` the bytes it still needs: the rest of a header
    /// (a data frame's payload is not kept here), or the rest of a control frame. Returns
    /// how many it took.
    fn complete_partial(&mut self, input: &[u8]) -> usize {
        let mut taken = 0;
        loop {
            let need = match parse_header(&self.partial, u64::MAX) {
                Ok(Some(h)) if h.is_control() => {
                    (h.header_len + h.len as usize).saturating_sub(self.partial.len())
                }
                // A data frame's header is whole: decode() takes its payload from here on.
                Ok(Some(_)) => 0,
                // The header is not whole: its first two bytes say how long it is.
                Ok(None) => {
                    let header_len: usize = match self.partial.get(1) {
                        None => 2,
                        Some(b) => match b & 0x7F {
                            126 => 8,
                            127 => 14,
                            _ => 6,
                        },
                    };
                    header_len.saturating_sub(self.partial.len()).max(1)
                }
                // A bad header: decode() reports it.
                Err(_) => 0,
            };
            let step = need.min(input.len() - taken);
            if step == 0 {
                return taken;
            }
            self.partial.extend_from_slice(&input[taken..taken + step]);
            taken += step;
        }
    }

    fn held_bytes(&self) -> usize {
        self.partial.capacity() + self.message.as_ref().map_or(0, Message::capacity)
    }

    /// Decodes frames from the start of `buf`; returns how many bytes they took. A data
    /// frame that `buf` holds only the start of is begun (all of `buf` is taken); a
    /// header or control frame cut off is left for the caller to keep.
    fn decode(
        &mut self,
        buf: &mut [u8],
        completed: &mut bool,
        on_event: &mut impl FnMut(Event),
    ) -> Result<usize, FrameError> {
        let mut at = 0;
        while at < buf.len() && !self.closed {
            let room = self.max_message - self.message.as_ref().map_or(0, Message::len);
            let Some(header) = parse_header(&buf[at..], room as u64)? else {
                break;
            };
            let start = at + header.header_len;
            let end = start + header.len as usize;
            if end <= buf.len() {
                let payload = &mut buf[start..end];
                unmask(payload, header.mask, 0);
                *completed |= self.frame(header, payload, on_event)?;
                at = end;
            } else if header.is_control() {
                break;
            } else {
                // A data frame not yet whole: what has arrived of it goes to its message
                // now, so that text that is not UTF-8 fails with the read that holds it.
                self.begin_data(&header)?;
                self.payload = Some(Payload {
                    fin: header.fin,
                    mask: header.mask,
                    len: header.len as usize,
                    received: 0,
                });
                let taken = self.continue_payload(&mut buf[start..], completed, on_event)?;
                debug_assert_eq!(start + taken, buf.len());
                return Ok(buf.len());
            }
        }
        Ok(at)
    }

    /// Takes from `input` what it holds of the payload arriving; returns how many bytes.
    fn continue_payload(
        &mut self,
        input: &mut [u8],
        completed: &mut bool,
        on_event: &mut impl FnMut(Event),
    ) -> Result<usize, FrameError> {
        let payload = self.payload.as_mut().expect("a payload is arriving");
        let n = (payload.len - payload.received).min(input.len());
        let bytes = &mut input[..n];
        unmask(bytes, payload.mask, payload.received);
        payload.received += n;
        let (done, fin) = (payload.received == payload.len, payload.fin);
        let message = self.message.as_mut().expect("a payload has a message");
        message.push(bytes)?;
        if done {
            self.payload = None;
            *completed |= self.end_data(fin, on_event)?;
        }
        Ok(n)
    }

    /// Handles one whole frame; returns whether it completed a message.
    fn frame(
        &mut self,
        header: Header,
        payload: &[u8],
        on_event: &mut impl FnMut(Event),
    ) -> Result<bool, FrameError> {
        match header.opcode {
            opcode::TEXT | opcode::BINARY if header.fin && self.message.is_none() => {
                // The common case, a message in one frame that arrived whole: checked and
                // copied once, from where it lies.
                on_event(whole_message(header.opcode, payload)?);
                Ok(true)
            }
            opcode::TEXT | opcode::BINARY | opcode::CONTINUATION => {
                self.begin_data(&header)?;
                let message = self.message.as_mut().expect("begun");
                message.push(payload)?;
                self.end_data(header.fin, on_event)
            }
            opcode::CLOSE => {
                self.closed = true;
                self.partial = Vec::new();
                self.payload = None;
                self.message = None;
                on_event(Event::Close(parse_close(payload)?));
                Ok(true)
            }
            opcode::PING => {
                on_event(Event::Ping(payload.to_vec()));
                Ok(false)
            }
            _ => {
                on_event(Event::Pong);
                Ok(false)
            }
        }
    }

    /// A data frame begins: it starts a message or continues the one being assembled.
    fn begin_data(&mut self, header: &Header) -> Result<(), FrameError> {
        match (header.opcode, &self.message) {
            (opcode::CONTINUATION, Some(_)) => Ok(()),
            (opcode::CONTINUATION, None) => {
                Err(FrameError::Protocol("a continuation without a message"))
            }
            (_, Some(_)) => Err(FrameError::Protocol(
                "a new message before the fragmented one ended",
            )),
            (op, None) => {
                self.message = Some(Message::new(op));
                Ok(())
            }
        }
    }

    /// A data frame has arrived whole: a final one completes its message. Returns
    /// whether it did.
    fn end_data(
        &mut self,
        fin: bool,
        on_event: &mut impl FnMut(Event),
    ) -> Result<bool, FrameError> {
        if !fin {
            return Ok(false);
        }
        let message = self.message.take().expect("a data frame has a message");
        on_event(message.finish()?);
        Ok(true)
    }
}

/// A message that arrived as one whole frame.
fn whole_message(op: u8, payload: &[u8]) -> Result<Event, FrameError> {
    if op == opcode::TEXT {
        std::str::from_utf8(payload)
            .map(|text| Event::Text(text.to_owned()))
            .map_err(|_| FrameError::BadUtf8)
    } else {
        Ok(Event::Binary(payload.to_vec()))
    }
}

#[cfg(test)]
mod tests;
