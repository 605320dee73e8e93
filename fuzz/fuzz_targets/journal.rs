//! Journal segments. The input is read three ways: as concatenated frames; as a segment
//! header; and as the source of `arbitrary` entries to frame and read back.
//!
//! Beyond "no panic": every entry read is exactly the bytes it was read from (one encoding
//! per entry, no byte ignored), and `valid_len` is the sum of those frames; a header that
//! decodes encodes back to its bytes; frame(x) reads back as x, a frame cut short is
//! never read, and a frame with one byte changed is never read as an entry.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use wasmroom_wire::journal::{
    Entry, FRAME_HEADER_LEN, Frames, Payload, Record, SEGMENT_HEADER_LEN, SegmentHeader, Stop,
    frame,
};

fn check_frames(bytes: &[u8]) {
    let mut frames = Frames::new(bytes);
    let mut at = 0;
    while let Some(entry) = frames.next() {
        let framed = frame(&entry);
        assert_eq!(framed, bytes[at..at + framed.len()]);
        at += framed.len();
        assert_eq!(frames.valid_len(), at);
    }
    assert_eq!(frames.valid_len(), at);
    match frames.stop() {
        Some(Stop::End) => assert_eq!(at, bytes.len()),
        Some(Stop::Damaged(_)) => assert!(at < bytes.len()),
        None => panic!("no stop after the last entry"),
    }
}

fn check_header(bytes: &[u8]) {
    if let Ok(header) = SegmentHeader::decode(bytes) {
        assert_eq!(header.encode(), bytes[..SEGMENT_HEADER_LEN]);
    }
}

/// A message's payload: a text one is UTF-8, its data comes from a string.
fn payload(u: &mut Unstructured<'_>) -> arbitrary::Result<Payload> {
    let text: bool = u.arbitrary()?;
    let data = if text {
        String::arbitrary(u)?.into_bytes()
    } else {
        u.arbitrary()?
    };
    Ok(Payload { text, data })
}

fn record(u: &mut Unstructured<'_>) -> arbitrary::Result<Record> {
    Ok(match u.int_in_range(0..=11u8)? {
        0 => Record::Open {
            seed: u.arbitrary()?,
            next_connection_id: u.arbitrary()?,
            settings: u.arbitrary()?,
            version: u.arbitrary()?,
        },
        10 => Record::Version {
            version: u.arbitrary()?,
        },
        1 => Record::Settings {
            settings: u.arbitrary()?,
        },
        2 => Record::Connect {
            id: u.arbitrary()?,
            path: u.arbitrary()?,
            query: u.arbitrary()?,
            headers: u.arbitrary()?,
            subprotocols: u.arbitrary()?,
            remote_address: u.arbitrary()?,
            claims: u.arbitrary()?,
            accepted: u.arbitrary()?,
            session: u.arbitrary()?,
        },
        3 => {
            let Payload { text, data } = payload(u)?;
            Record::Message {
                connection: u.arbitrary()?,
                text,
                data,
            }
        }
        7 => {
            // A batch is never empty.
            let mut messages = vec![payload(u)?];
            while u.arbitrary()? {
                messages.push(payload(u)?);
            }
            Record::Messages {
                connection: u.arbitrary()?,
                messages,
            }
        }
        4 => Record::Disconnect {
            connection: u.arbitrary()?,
            code: u.arbitrary()?,
        },
        5 => Record::Timer { id: u.arbitrary()? },
        6 => Record::Request {
            method: u.arbitrary()?,
            path: u.arbitrary()?,
            query: u.arbitrary()?,
            headers: u.arbitrary()?,
            body: u.arbitrary()?,
            claims: u.arbitrary()?,
        },
        8 => Record::TimerDropped { id: u.arbitrary()? },
        9 => Record::Detach {
            connection: u.arbitrary()?,
            code: u.arbitrary()?,
        },
        _ => Record::Checkpoint {
            hash: u.arbitrary()?,
        },
    })
}

fn built(u: &mut Unstructured<'_>) -> arbitrary::Result<(Entry, usize, u8)> {
    let entry = Entry {
        plugin: u.arbitrary()?,
        document: u.arbitrary()?,
        incarnation: u.arbitrary()?,
        seq: u.arbitrary()?,
        clock_ms: u.arbitrary()?,
        record: record(u)?,
    };
    Ok((entry, u.arbitrary()?, u.arbitrary()?))
}

fuzz_target!(|data: &[u8]| {
    check_frames(data);
    check_header(data);

    let Ok((entry, at, flip)) = built(&mut Unstructured::new(data)) else {
        return;
    };
    let bytes = frame(&entry);
    assert!(bytes.len() > FRAME_HEADER_LEN);
    assert_eq!(Frames::new(&bytes).collect::<Vec<_>>(), [entry.clone()]);
    let at = at % bytes.len();
    assert_eq!(Frames::new(&bytes[..at]).next(), None, "cut at {at}");
    let mut damaged = bytes.clone();
    damaged[at] ^= flip.max(1);
    assert_eq!(Frames::new(&damaged).next(), None, "byte {at} ^ {flip}");
});
