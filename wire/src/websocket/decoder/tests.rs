//! The decoder's tests: events from any split of a stream, what it holds and since
//! when, close codes, and text checked as it arrives.

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
fn a_decoder_between_messages_keeps_nothing_but_its_limit() {
    // Every idle connection's task holds a decoder: the state of a frame cut by a read
    // is boxed while it is there, not kept inline.
    assert!(
        std::mem::size_of::<Decoder>() <= 24,
        "{} bytes",
        std::mem::size_of::<Decoder>()
    );
    let mut d = Decoder::new(1 << 20);
    let frame = client_frame(true, opcode::TEXT, b"cut in two", MASK);
    feed_all(&mut d, &frame[..4], Instant::now()).unwrap();
    assert!(d.held.is_some(), "a cut frame's header is held");
    let events = feed_all(&mut d, &frame[4..], Instant::now()).unwrap();
    assert_eq!(events, [Event::Text("cut in two".into())]);
    assert!(d.held.is_none(), "nothing is held once the frame is whole");
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

/// The close code `bytes` fed in reads of `step` bytes end with, and after which read
/// (its index), or `None` if they decode.
fn fails_at(d: &mut Decoder, bytes: &[u8], step: usize) -> Option<(u16, usize)> {
    for (read, chunk) in bytes.chunks(step).enumerate() {
        if let Err(e) = feed_all(d, chunk, Instant::now()) {
            return Some((e.close().0, read));
        }
    }
    None
}

#[test]
fn text_that_is_not_utf8_fails_with_the_fragment_that_holds_it() {
    // An invalid first byte in the first fragment: 1007 on that fragment, before any
    // continuation arrives.
    let mut d = Decoder::new(1 << 20);
    let first = client_frame(false, opcode::TEXT, &[0xFF, b'a', b'b'], MASK);
    assert_eq!(fails_at(&mut d, &first, first.len()), Some((1007, 0)));
    // An invalid byte in a middle fragment, whatever the first held.
    let mut d = Decoder::new(1 << 20);
    feed_all(
        &mut d,
        &client_frame(false, opcode::TEXT, b"ok", MASK),
        Instant::now(),
    )
    .unwrap();
    let bad = client_frame(false, opcode::CONTINUATION, &[b'x', 0xC3, 0x28], MASK);
    assert_eq!(fails_at(&mut d, &bad, bad.len()), Some((1007, 0)));
    // A character cut off by a fragment's end, then not continued by the next.
    let mut d = Decoder::new(1 << 20);
    let mut bytes = client_frame(false, opcode::TEXT, &[b'a', 0xE2, 0x82], MASK);
    feed_all(&mut d, &bytes, Instant::now()).unwrap();
    bytes = client_frame(false, opcode::CONTINUATION, b"A", MASK);
    assert_eq!(fails_at(&mut d, &bytes, bytes.len()), Some((1007, 0)));
}

#[test]
fn a_character_may_be_cut_between_fragments_but_not_end_the_message() {
    let euro = "€".as_bytes();
    let mut bytes = client_frame(false, opcode::TEXT, &[b'a', euro[0]], MASK);
    bytes.extend(client_frame(false, opcode::CONTINUATION, &euro[1..2], MASK));
    bytes.extend(client_frame(true, opcode::PING, b"", MASK));
    bytes.extend(client_frame(true, opcode::CONTINUATION, &euro[2..], MASK));
    let events = feed_all(&mut Decoder::new(100), &bytes, Instant::now()).unwrap();
    assert_eq!(events, [Event::Ping(Vec::new()), Event::Text("a€".into())]);
    // The final fragment may not leave a character cut off, nor may a single frame.
    let mut d = Decoder::new(100);
    let mut bytes = client_frame(false, opcode::TEXT, b"a", MASK);
    bytes.extend(client_frame(true, opcode::CONTINUATION, &euro[..2], MASK));
    assert_eq!(
        feed_all(&mut d, &bytes, Instant::now()).unwrap_err(),
        FrameError::BadUtf8
    );
    for step in [1, 5, 100] {
        let mut d = Decoder::new(100);
        let whole = client_frame(true, opcode::TEXT, &euro[..2], MASK);
        assert_eq!(
            fails_at(&mut d, &whole, step),
            Some((1007, (whole.len() - 1) / step)),
            "step {step}"
        );
    }
}

#[test]
fn a_text_frame_arriving_over_several_reads_fails_with_the_read_that_holds_the_bad_byte() {
    let mut payload = vec![b'a'; 1000];
    payload[500] = 0xFF;
    let frame = client_frame(true, opcode::TEXT, &payload, MASK);
    // The header takes 8 bytes: payload byte 500 is stream byte 508.
    for step in [1, 7, 100, 509, 600] {
        let mut d = Decoder::new(1 << 20);
        assert_eq!(
            fails_at(&mut d, &frame, step),
            Some((1007, 508 / step)),
            "step {step}"
        );
    }
    // Valid text in any reads is the same message, held once.
    let text = "é😀a".repeat(300);
    let frame = client_frame(true, opcode::TEXT, text.as_bytes(), MASK);
    for step in [1, 2, 3, 5, 999] {
        let mut d = Decoder::new(1 << 20);
        let mut events = Vec::new();
        for chunk in frame.chunks(step) {
            events.extend(feed_all(&mut d, chunk, Instant::now()).unwrap());
            assert!(d.held_bytes() <= 2 * text.len() + 14, "step {step}");
        }
        assert_eq!(events, [Event::Text(text.clone())], "step {step}");
        assert_eq!((d.held_bytes(), d.incomplete_since()), (0, None));
    }
}

#[test]
fn lengths_not_in_their_shortest_form_are_protocol_errors() {
    // 5 bytes in the 16-bit form, 200 and 65535 in the 64-bit form.
    let mut short16 = vec![0x81, 0x80 | 126, 0, 5];
    short16.extend(MASK);
    short16.extend([0; 5]);
    let mut short64 = vec![0x82, 0x80 | 127];
    short64.extend(200u64.to_be_bytes());
    short64.extend(MASK);
    short64.extend([0; 200]);
    let mut max16 = vec![0x82, 0x80 | 127];
    max16.extend(0xFFFFu64.to_be_bytes());
    max16.extend(MASK);
    for (name, bytes) in [("16", short16), ("64", short64), ("65535", max16)] {
        for step in [1, 3, bytes.len()] {
            let mut d = Decoder::new(1 << 20);
            let failed = fails_at(&mut d, &bytes, step);
            assert_eq!(failed.map(|f| f.0), Some(1002), "{name} step {step}");
        }
    }
    // The shortest forms at their edges pass.
    for len in [125, 126, 0xFFFF, 0x10000] {
        let frame = client_frame(true, opcode::BINARY, &vec![1; len], MASK);
        let events = feed_all(&mut Decoder::new(1 << 20), &frame, Instant::now()).unwrap();
        assert!(matches!(&events[..], [Event::Binary(b)] if b.len() == len));
    }
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

        /// A text message, valid or not, in fragments of any sizes read in reads of
        /// any size: it is the text `from_utf8` gives it, or it fails with 1007 in
        /// the read that holds the first byte that cannot continue valid UTF-8 (the
        /// final frame's last byte if the text ends inside a character).
        #[test]
        fn text_fails_with_the_read_that_shows_it_bad(
            payload in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'a'), Just(0x80u8), Just(0xE2), Just(0xF0)],
                0..200,
            ),
            fragment in 1usize..125,
            step in 1usize..40,
        ) {
            let mut bytes = Vec::new();
            // Where each payload byte lies in the stream.
            let mut offsets = Vec::new();
            let pieces: Vec<&[u8]> = if payload.is_empty() {
                vec![&[]]
            } else {
                payload.chunks(fragment).collect()
            };
            for (i, piece) in pieces.iter().enumerate() {
                let op = if i == 0 { opcode::TEXT } else { opcode::CONTINUATION };
                let start = bytes.len() + 6;
                offsets.extend(start..start + piece.len());
                bytes.extend(client_frame(i + 1 == pieces.len(), op, piece, MASK));
            }
            let shown_bad = (1..=payload.len())
                .find(|&k| std::str::from_utf8(&payload[..k]).is_err_and(|e| e.error_len().is_some()))
                .map(|k| offsets[k - 1])
                .or_else(|| std::str::from_utf8(&payload).is_err().then(|| bytes.len() - 1));
            let mut d = Decoder::new(1 << 20);
            let mut events = Vec::new();
            let mut failed = None;
            for (read, chunk) in bytes.chunks(step).enumerate() {
                match feed_all(&mut d, chunk, Instant::now()) {
                    Ok(more) => events.extend(more),
                    Err(e) => {
                        failed = Some((e.close().0, read));
                        break;
                    }
                }
            }
            match shown_bad {
                Some(at) => prop_assert_eq!(failed, Some((1007, at / step))),
                None => {
                    prop_assert_eq!(failed, None);
                    let text = String::from_utf8(payload).unwrap();
                    prop_assert_eq!(events, vec![Event::Text(text)]);
                }
            }
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = feed_all(&mut Decoder::new(1000), &bytes, Instant::now());
        }
    }
}
