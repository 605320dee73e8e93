//! Client bytes through the WebSocket decoder as a lane drives it: the bytes arrive in
//! reads of arbitrary sizes, each copied into one reused read buffer that the decoder
//! unmasks in place, with the limit a lane configures (`max_message_bytes` >= 125).
//!
//! Beyond "no panic": no message exceeds the limit, no control payload exceeds 125
//! bytes; the bytes the decoder holds stay within a few times the limit, and an idle
//! decoder (nothing incomplete) holds none; nothing is decoded after a close; and the
//! events, the error and whether a frame is left incomplete are the same whether the
//! stream arrives in one read or in many.
//!
//! For frames built by `arbitrary`, the stream is also judged without the decoder, up to
//! the first frame this target does not model (a flaw, raw bytes, a close, a control
//! frame or a message order the decoder refuses, a message over the limit): text that
//! stops being UTF-8 must fail with 1007 in the very read that holds the byte that shows
//! it (the final frame's last byte when the message ends inside a character), not
//! sooner and not at the end of the message; a length not in its shortest form must
//! fail with 1002 by the read that holds the end of its header; and a stream that is
//! modelled to its end and has neither must not fail.
//!
//! The input: byte 0 says how the rest is read (bit 0 clear: the client's bytes as they
//! are, which is what the seed corpus holds; set: frames built by `arbitrary`, masked and
//! with lengths that fit unless a flaw says otherwise), bytes 1-2 the limit (125 plus the
//! little-endian value modulo 2048), byte 3 the seed of the read sizes.

#![no_main]

use std::ops::Range;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use wasmroom_wire::websocket::{Decoder, Event, FrameError};

#[derive(Arbitrary, Debug)]
enum Piece {
    Frame {
        fin: bool,
        opcode: Opcode,
        mask: [u8; 4],
        payload: Payload,
        /// The length written as 16 or 64 bits even when it would fit in fewer.
        wide: Option<bool>,
        flaw: Option<Flaw>,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
    Other(u8),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Bytes(Vec<u8>),
    Text(String),
    Close(u16, String),
}

#[derive(Arbitrary, Debug)]
enum Flaw {
    Reserved(u8),
    Unmasked,
    /// A length other than the payload's.
    Declared(u64),
}

/// A client frame with its header as the piece says, the payload masked; returns its
/// opcode and (unmasked) payload.
fn write_frame(out: &mut Vec<u8>, piece: &Piece) -> (u8, Vec<u8>) {
    let Piece::Frame {
        fin,
        opcode,
        mask,
        payload,
        wide,
        flaw,
    } = piece
    else {
        unreachable!("frames only")
    };
    let payload = match payload {
        Payload::Bytes(b) => b.clone(),
        Payload::Text(s) => s.as_bytes().to_vec(),
        Payload::Close(code, reason) => [&code.to_be_bytes()[..], reason.as_bytes()].concat(),
    };
    let op = match opcode {
        Opcode::Continuation => 0,
        Opcode::Text => 1,
        Opcode::Binary => 2,
        Opcode::Close => 8,
        Opcode::Ping => 9,
        Opcode::Pong => 10,
        Opcode::Other(o) => o & 0x0F,
    };
    let mut first = u8::from(*fin) << 7 | op;
    let mut mask_bit = 0x80;
    let mut len = payload.len() as u64;
    match flaw {
        Some(Flaw::Reserved(bits)) => first |= (bits & 7).max(1) << 4,
        Some(Flaw::Unmasked) => mask_bit = 0,
        Some(Flaw::Declared(declared)) => len = *declared,
        None => {}
    }
    out.push(first);
    match (len, wide) {
        (0..=125, None) => out.push(mask_bit | len as u8),
        (0..=0xFFFF, None | Some(false)) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if mask_bit != 0 {
        out.extend_from_slice(mask);
    }
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    (op, payload)
}

/// How a stream of frames must end, judged without the decoder.
#[derive(Debug, Default)]
struct Judged {
    /// The first violation: the offset of the byte that shows it, and its close code.
    violation: Option<(usize, u16)>,
    /// Whether every frame before the violation (or the end) was modelled.
    modelled: bool,
}

/// Judges the frames of `pieces` as they are written into `bytes`, up to the first
/// violation or the first frame this model does not cover.
struct Judge {
    max: usize,
    /// The message being assembled: whether it is text, and its payload so far.
    message: Option<(bool, Vec<u8>)>,
    judged: Judged,
}

impl Judge {
    fn new(max: usize) -> Judge {
        Judge {
            max,
            message: None,
            judged: Judged {
                violation: None,
                modelled: true,
            },
        }
    }

    fn open(&self) -> bool {
        self.judged.modelled && self.judged.violation.is_none()
    }

    /// The frame `piece` was written at `start..end` of the stream.
    fn frame(&mut self, piece: &Piece, op: u8, payload: &[u8], start: usize, end: usize) {
        if !self.open() {
            return;
        }
        let Piece::Frame {
            fin, flaw: None, ..
        } = piece
        else {
            self.judged.modelled = false;
            return;
        };
        let header_len = end - start - payload.len();
        let shortest = match payload.len() {
            0..=125 => 6,
            126..=0xFFFF => 8,
            _ => 14,
        };
        if header_len != shortest {
            self.judged.violation = Some((start + header_len - 1, 1002));
            return;
        }
        let fits = payload.len() <= self.max - self.message.as_ref().map_or(0, |m| m.1.len());
        let known = match (op, &self.message) {
            (9 | 10, _) => *fin && payload.len() <= 125,
            (0, Some(_)) | (1 | 2, None) => fits,
            _ => false,
        };
        if !known {
            self.judged.modelled = false;
            return;
        }
        if op >= 8 {
            return;
        }
        let (text, data) = self.message.get_or_insert_with(|| (op == 1, Vec::new()));
        let before = data.len();
        data.extend_from_slice(payload);
        if *text {
            // The first prefix no more bytes can make UTF-8 ends with the byte that shows it.
            let shown = (before + 1..=data.len())
                .find(|&k| std::str::from_utf8(&data[..k]).is_err_and(|e| e.error_len().is_some()));
            if let Some(k) = shown {
                self.judged.violation = Some((end - payload.len() + (k - 1 - before), 1007));
                return;
            }
            if *fin && std::str::from_utf8(data).is_err() {
                self.judged.violation = Some((end - 1, 1007));
                return;
            }
        }
        if *fin {
            self.message = None;
        }
    }
}

/// What a run of the decoder gave: its events, how it ended, whether a frame or a
/// message was left incomplete.
type Outcome = (Vec<Event>, Result<(), FrameError>, bool);

/// Feeds `bytes` in reads of `sizes` (then the rest at once), checking the decoder's
/// promises after every read. Also returns, on an error, which bytes the read that
/// failed held.
fn run(bytes: &[u8], sizes: &[usize], max: usize) -> (Outcome, Option<Range<usize>>) {
    let start = Instant::now();
    let mut decoder = Decoder::new(max);
    let mut events = Vec::new();
    // The lane's read buffer: reused, so it holds the last read's unmasked bytes past
    // the new read's end.
    let mut buffer = vec![0x5A; bytes.len().max(1)];
    let mut at = 0;
    let mut read = 0;
    while at < bytes.len() || read == 0 {
        let n = sizes
            .get(read)
            .copied()
            .unwrap_or(usize::MAX)
            .min(bytes.len() - at);
        buffer[..n].copy_from_slice(&bytes[at..at + n]);
        let now = start + Duration::from_millis(read as u64);
        let closed = matches!(events.last(), Some(Event::Close(_)));
        let before = events.len();
        let fed = decoder.feed(&mut buffer[..n], now, |e| events.push(e));
        for event in &events[before..] {
            match event {
                Event::Text(t) => assert!(t.len() <= max),
                Event::Binary(b) => assert!(b.len() <= max),
                Event::Ping(p) => assert!(p.len() <= 125),
                Event::Close(Some((_, reason))) => assert!(reason.len() <= 123),
                Event::Close(None) | Event::Pong => {}
            }
        }
        assert!(!closed || events.len() == before, "events after a close");
        if let Err(e) = fed {
            return ((events, Err(e), true), Some(at..at + n));
        }
        // Each of the partial frame and the message being assembled is at most the
        // limit plus a header; a Vec's capacity is at most twice what it holds.
        let held = decoder.held_bytes();
        assert!(
            held <= 4 * max + 64,
            "{held} bytes held for a limit of {max}"
        );
        let since = decoder.incomplete_since();
        assert!(
            held == 0 || since.is_some(),
            "an idle decoder holds {held} bytes"
        );
        assert!(since.is_none_or(|t| start <= t && t <= now));
        at += n;
        read += 1;
    }
    let incomplete = decoder.incomplete_since().is_some();
    ((events, Ok(()), incomplete), None)
}

/// Read sizes from 1 to `2 * (seed + 1)`, from a xorshift generator.
fn read_sizes(seed: u8, total: usize) -> Vec<usize> {
    let bound = 2 * (u32::from(seed) + 1);
    let mut x = 0x9E37_79B9 ^ u32::from(seed);
    let (mut sizes, mut sum) = (Vec::new(), 0);
    while sum < total {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let size = (1 + x % bound) as usize;
        sizes.push(size);
        sum += size;
    }
    sizes
}

fuzz_target!(|data: &[u8]| {
    let [mode, low, high, seed, rest @ ..] = data else {
        return;
    };
    let max = 125 + usize::from(u16::from_le_bytes([*low, *high])) % 2048;
    let (bytes, judged) = if mode & 1 == 0 {
        (rest.to_vec(), Judged::default())
    } else {
        let Ok(pieces) = Vec::<Piece>::arbitrary_take_rest(Unstructured::new(rest)) else {
            return;
        };
        let mut bytes = Vec::new();
        let mut judge = Judge::new(max);
        for piece in &pieces {
            match piece {
                Piece::Raw(raw) => {
                    bytes.extend_from_slice(raw);
                    judge.judged.modelled = false;
                }
                frame => {
                    let start = bytes.len();
                    let (op, payload) = write_frame(&mut bytes, frame);
                    judge.frame(frame, op, &payload, start, bytes.len());
                }
            }
        }
        (bytes, judge.judged)
    };
    let sizes = read_sizes(*seed, bytes.len());
    let (whole, _) = run(&bytes, &[], max);
    let (split, failed_read) = run(&bytes, &sizes, max);
    assert_eq!(whole, split, "one read and reads of {sizes:?} differ");
    let code = split.1.as_ref().err().map(|e| e.close().0);
    match judged.violation {
        Some((at, 1007)) => {
            assert_eq!(code, Some(1007), "text not UTF-8 at byte {at}");
            let read = failed_read.expect("failed");
            assert!(
                read.contains(&at),
                "1007 for byte {at} in the read of {read:?}"
            );
        }
        Some((at, expected)) => {
            assert_eq!(code, Some(expected), "violation at byte {at}");
            let read = failed_read.expect("failed");
            assert!(
                read.start <= at,
                "{expected} for byte {at} in the read of {read:?}"
            );
        }
        None if judged.modelled => assert_eq!(code, None, "a valid stream failed"),
        None => {}
    }
});
