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
//! The input: byte 0 says how the rest is read (bit 0 clear: the client's bytes as they
//! are, which is what the seed corpus holds; set: frames built by `arbitrary`, masked and
//! with lengths that fit unless a flaw says otherwise), bytes 1-2 the limit (125 plus the
//! little-endian value modulo 2048), byte 3 the seed of the read sizes.

#![no_main]

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

/// A client frame with its header as the piece says, the payload masked.
fn write_frame(out: &mut Vec<u8>, piece: &Piece) {
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
}

/// What a run of the decoder gave: its events, how it ended, whether a frame or a
/// message was left incomplete.
type Outcome = (Vec<Event>, Result<(), FrameError>, bool);

/// Feeds `bytes` in reads of `sizes` (then the rest at once), checking the decoder's
/// promises after every read.
fn run(bytes: &[u8], sizes: &[usize], max: usize) -> Outcome {
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
            return (events, Err(e), true);
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
    (events, Ok(()), incomplete)
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
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let Ok(pieces) = Vec::<Piece>::arbitrary_take_rest(Unstructured::new(rest)) else {
            return;
        };
        let mut bytes = Vec::new();
        for piece in &pieces {
            match piece {
                Piece::Raw(raw) => bytes.extend_from_slice(raw),
                frame => write_frame(&mut bytes, frame),
            }
        }
        bytes
    };
    let sizes = read_sizes(*seed, bytes.len());
    let whole = run(&bytes, &[], max);
    let split = run(&bytes, &sizes, max);
    assert_eq!(whole, split, "one read and reads of {sizes:?} differ");
});
