//! Turning the bytes a client sends into WebSocket events, without a read buffer of its
//! own: a read lands in the caller's buffer (one per lane), whole frames are unmasked
//! and handed on where they lie, and only the tail of a frame that has not arrived
//! whole, or a fragmented message being assembled, is kept here. An idle connection
//! holds nothing.
//!
//! The decoder also says since when a frame or message has been incomplete and how many
//! bytes it holds for it, so the lane can bound both in time and memory.

use std::time::Instant;

use crate::websocket::frame::{FrameError, Header, opcode, parse_close, parse_header, unmask};

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
    /// The bytes of a frame that has not arrived whole; empty between frames.
    partial: Vec<u8>,
    /// A fragmented message being assembled: its opcode and payload so far.
    fragments: Option<(u8, Vec<u8>)>,
    /// When the incomplete frame or message began to arrive.
    started: Option<Instant>,
    closed: bool,
}

impl Decoder {
    /// A decoder for messages of at most `max_message` bytes.
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message,
            partial: Vec::new(),
            fragments: None,
            started: None,
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
        mut on_event: impl FnMut(Event),
    ) -> Result<(), FrameError> {
        if self.closed {
            return Ok(());
        }
        let mut completed = false;
        let mut input = input;
        if !self.partial.is_empty() {
            // Complete the frame begun in an earlier read with just the bytes it still
            // needs; the rest of this read is decoded where it lies.
            let taken = self.complete_partial(input);
            let mut frame = std::mem::take(&mut self.partial);
            if self.frame_len(&frame)? == Some(frame.len()) {
                let used = self.decode(&mut frame, &mut completed, &mut on_event)?;
                debug_assert_eq!(used, frame.len());
            } else {
                // Still incomplete: this read went into it whole.
                self.partial = frame;
            }
            input = &mut input[taken..];
        }
        if self.partial.is_empty() && !input.is_empty() && !self.closed {
            let used = self.decode(input, &mut completed, &mut on_event)?;
            if used < input.len() && !self.closed {
                self.partial.extend_from_slice(&input[used..]);
            }
        }
        let incomplete = !self.partial.is_empty() || self.fragments.is_some();
        self.started = match (incomplete, self.started) {
            (false, _) => None,
            (true, Some(since)) if !completed => Some(since),
            (true, _) => Some(now),
        };
        Ok(())
    }

    /// Moves from `input` into `partial` the bytes the frame it holds still needs (its
    /// header first, then its payload); returns how many it took.
    fn complete_partial(&mut self, input: &[u8]) -> usize {
        let mut taken = 0;
        loop {
            let need = match parse_header(&self.partial, u64::MAX) {
                // A complete header says how long the frame is.
                Ok(Some(h)) => (h.header_len + h.len as usize).saturating_sub(self.partial.len()),
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

    /// The whole length of the frame at the start of `buf`, once its header is there.
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let room = self.max_message - self.fragments.as_ref().map_or(0, |(_, d)| d.len());
        Ok(parse_header(buf, room as u64)?.map(|h| h.header_len + h.len as usize))
    }

    /// Since when a frame or message has been incomplete, if one is.
    pub fn incomplete_since(&self) -> Option<Instant> {
        self.started
    }

    /// Bytes held for incomplete frames and messages.
    pub fn held_bytes(&self) -> usize {
        self.partial.capacity() + self.fragments.as_ref().map_or(0, |(_, d)| d.capacity())
    }

    /// Decodes whole frames from the start of `buf`; returns how many bytes they took.
    fn decode(
        &mut self,
        buf: &mut [u8],
        completed: &mut bool,
        on_event: &mut impl FnMut(Event),
    ) -> Result<usize, FrameError> {
        let mut at = 0;
        while at < buf.len() && !self.closed {
            let room = self.max_message - self.fragments.as_ref().map_or(0, |(_, d)| d.len());
            let Some(header) = parse_header(&buf[at..], room as u64)? else {
                break;
            };
            let start = at + header.header_len;
            let end = start + header.len as usize;
            if end > buf.len() {
                break;
            }
            let payload = &mut buf[start..end];
            unmask(payload, header.mask, 0);
            *completed |= self.frame(header, payload, on_event)?;
            at = end;
        }
        Ok(at)
    }

    /// Handles one whole frame; returns whether it completed a message.
    fn frame(
        &mut self,
        header: Header,
        payload: &[u8],
        on_event: &mut impl FnMut(Event),
    ) -> Result<bool, FrameError> {
        match header.opcode {
            opcode::TEXT | opcode::BINARY => {
                if self.fragments.is_some() {
                    return Err(FrameError::Protocol(
                        "a new message before the fragmented one ended",
                    ));
                }
                if header.fin {
                    on_event(message(header.opcode, payload.to_vec())?);
                    return Ok(true);
                }
                self.fragments = Some((header.opcode, payload.to_vec()));
                Ok(false)
            }
            opcode::CONTINUATION => {
                let Some((_, data)) = self.fragments.as_mut() else {
                    return Err(FrameError::Protocol("a continuation without a message"));
                };
                data.extend_from_slice(payload);
                if !header.fin {
                    return Ok(false);
                }
                let (op, data) = self.fragments.take().expect("checked above");
                on_event(message(op, data)?);
                Ok(true)
            }
            opcode::CLOSE => {
                self.closed = true;
                self.partial = Vec::new();
                self.fragments = None;
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
}

fn message(op: u8, data: Vec<u8>) -> Result<Event, FrameError> {
    if op == opcode::TEXT {
        String::from_utf8(data)
            .map(Event::Text)
            .map_err(|_| FrameError::BadUtf8)
    } else {
        Ok(Event::Binary(data))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::websocket::frame::tests::client_frame;

    fn feed_all(d: &mut Decoder, bytes: &[u8], at: Instant) -> Result<Vec<Event>, FrameError> {
        let mut events = Vec::new();
        let mut copy = bytes.to_vec();
        d.feed(&mut copy, at, |e| events.push(e))?;
        Ok(events)
    }

    const MASK: [u8; 4] = [9, 8, 7, 6];

    #[test]
    fn whole_frames_in_one_read() {
        let mut d = Decoder::new(1 << 20);
        let mut bytes = client_frame(true, opcode::TEXT, "héllo".as_bytes(), MASK);
        bytes.extend(client_frame(true, opcode::BINARY, &[1, 2, 3], MASK));
        bytes.extend(client_frame(true, opcode::PING, b"p", MASK));
        let events = feed_all(&mut d, &bytes, Instant::now()).unwrap();
        assert_eq!(
            events,
            [
                Event::Text("héllo".into()),
                Event::Binary(vec![1, 2, 3]),
                Event::Ping(b"p".to_vec())
            ]
        );
        assert_eq!((d.held_bytes(), d.incomplete_since()), (0, None));
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_events() {
        let mut bytes = client_frame(false, opcode::TEXT, b"frag", MASK);
        bytes.extend(client_frame(true, opcode::PING, b"", MASK));
        bytes.extend(client_frame(true, opcode::CONTINUATION, &[b'x'; 300], MASK));
        bytes.extend(client_frame(true, opcode::BINARY, &[5; 70_000], MASK));
        let whole = feed_all(&mut Decoder::new(1 << 20), &bytes, Instant::now()).unwrap();
        assert_eq!(whole.len(), 3);
        for step in [1, 2, 3, 7, 100, 4096] {
            let mut d = Decoder::new(1 << 20);
            let mut events = Vec::new();
            for chunk in bytes.chunks(step) {
                events.extend(feed_all(&mut d, chunk, Instant::now()).unwrap());
            }
            assert_eq!(events, whole, "step {step}");
            assert_eq!(d.held_bytes(), 0, "step {step}");
        }
    }

    #[test]
    fn incomplete_messages_say_since_when_and_how_big() {
        let mut d = Decoder::new(1 << 20);
        let t0 = Instant::now();
        let first = client_frame(false, opcode::BINARY, &[1; 1000], MASK);
        feed_all(&mut d, &first, t0).unwrap();
        assert_eq!(d.incomplete_since(), Some(t0));
        assert!(d.held_bytes() >= 1000);
        // Control frames do not end it, nor reset its start.
        let t1 = t0 + Duration::from_secs(1);
        feed_all(&mut d, &client_frame(true, opcode::PING, b"", MASK), t1).unwrap();
        assert_eq!(d.incomplete_since(), Some(t0));
        let end = client_frame(true, opcode::CONTINUATION, &[2; 10], MASK);
        let events = feed_all(&mut d, &end, t1).unwrap();
        assert!(matches!(&events[..], [Event::Binary(b)] if b.len() == 1010));
        assert_eq!((d.incomplete_since(), d.held_bytes()), (None, 0));
        // Half a frame counts too.
        let half = &client_frame(true, opcode::TEXT, b"abcdef", MASK)[..5];
        feed_all(&mut d, half, t1).unwrap();
        assert_eq!(d.incomplete_since(), Some(t1));
    }

    #[test]
    fn violations_map_to_their_close_codes() {
        let mut d = Decoder::new(100);
        let big = client_frame(true, opcode::BINARY, &[0; 101], MASK);
        assert_eq!(
            feed_all(&mut d, &big, Instant::now())
                .unwrap_err()
                .close()
                .0,
            1009
        );
        // Fragments add up against the limit.
        let mut d = Decoder::new(100);
        feed_all(
            &mut d,
            &client_frame(false, opcode::BINARY, &[0; 60], MASK),
            Instant::now(),
        )
        .unwrap();
        let more = client_frame(true, opcode::CONTINUATION, &[0; 60], MASK);
        assert_eq!(
            feed_all(&mut d, &more, Instant::now()).unwrap_err(),
            FrameError::TooLarge
        );
        let mut d = Decoder::new(100);
        let bad = client_frame(true, opcode::TEXT, &[0xC3, 0x28], MASK);
        assert_eq!(
            feed_all(&mut d, &bad, Instant::now())
                .unwrap_err()
                .close()
                .0,
            1007
        );
        let mut d = Decoder::new(100);
        let stray = client_frame(true, opcode::CONTINUATION, b"x", MASK);
        assert_eq!(
            feed_all(&mut d, &stray, Instant::now())
                .unwrap_err()
                .close()
                .0,
            1002
        );
        let mut d = Decoder::new(100);
        let mut two = client_frame(false, opcode::TEXT, b"a", MASK);
        two.extend(client_frame(true, opcode::TEXT, b"b", MASK));
        assert_eq!(
            feed_all(&mut d, &two, Instant::now())
                .unwrap_err()
                .close()
                .0,
            1002
        );
    }

    #[test]
    fn nothing_counts_after_a_close() {
        let mut d = Decoder::new(100);
        let mut bytes = client_frame(true, opcode::CLOSE, &1000u16.to_be_bytes(), MASK);
        bytes.extend(client_frame(true, opcode::TEXT, b"late", MASK));
        let events = feed_all(&mut d, &bytes, Instant::now()).unwrap();
        assert_eq!(events, [Event::Close(Some((1000, String::new())))]);
        assert!(
            feed_all(&mut d, b"garbage", Instant::now())
                .unwrap()
                .is_empty()
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A stream of frames: whole messages, fragmented ones with pings inside.
        fn stream() -> impl Strategy<Value = Vec<u8>> {
            let message = (
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..300),
                1usize..4,
            );
            proptest::collection::vec(message, 1..12).prop_map(|messages| {
                let mut bytes = Vec::new();
                for (text, payload, parts) in messages {
                    let (op, payload) = if text {
                        (
                            opcode::TEXT,
                            String::from_utf8_lossy(&payload).into_owned().into_bytes(),
                        )
                    } else {
                        (opcode::BINARY, payload)
                    };
                    let chunk = payload.len().div_ceil(parts).max(1);
                    let pieces: Vec<&[u8]> = if payload.is_empty() {
                        vec![&[]]
                    } else {
                        payload.chunks(chunk).collect()
                    };
                    for (i, piece) in pieces.iter().enumerate() {
                        let first = i == 0;
                        let last = i + 1 == pieces.len();
                        let code = if first { op } else { opcode::CONTINUATION };
                        bytes.extend(client_frame(last, code, piece, MASK));
                        if !last {
                            bytes.extend(client_frame(true, opcode::PING, b"p", MASK));
                        }
                    }
                }
                bytes
            })
        }

        proptest! {
            #[test]
            fn splitting_a_stream_anywhere_changes_nothing(
                bytes in stream(),
                cuts in proptest::collection::vec(any::<usize>(), 0..20),
            ) {
                let whole = feed_all(&mut Decoder::new(1 << 20), &bytes, Instant::now()).unwrap();
                let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
                points.sort_unstable();
                let mut d = Decoder::new(1 << 20);
                let mut events = Vec::new();
                let mut at = 0;
                for p in points.into_iter().chain([bytes.len()]) {
                    events.extend(feed_all(&mut d, &bytes[at..p], Instant::now()).unwrap());
                    at = p;
                }
                prop_assert_eq!(events, whole);
                prop_assert_eq!(d.held_bytes(), 0);
                prop_assert_eq!(d.incomplete_since(), None);
            }

            #[test]
            fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = feed_all(&mut Decoder::new(1000), &bytes, Instant::now());
            }
        }
    }
}
