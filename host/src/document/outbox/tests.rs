//! The outbox's own tests: encoding, bounds, short writes, closes, the journal gate.
use bytes::Bytes;
use futures_util::FutureExt;

use super::*;
use crate::net::websocket::frame::encode;

/// Writes up to `limit` bytes of the queue into `out`.
fn write(o: &Outbox, out: &mut Vec<u8>, limit: usize) -> Option<Written> {
    o.write_with(|slices| {
        let before = out.len();
        for slice in slices {
            let take = slice.len().min(limit - (out.len() - before));
            out.extend_from_slice(&slice[..take]);
        }
        Ok(out.len() - before)
    })
    .expect("infallible")
}

fn encoded(frames: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (op, payload) in frames {
        encode(&mut out, *op, payload);
    }
    out
}

/// Every connection has one, for its whole life: what only a closing one needs is boxed
/// ([`closing`]), and the flusher's handle is the socket's own. It was 240 bytes (and a
/// 24-byte closure beside it): with its `Rc`, a 272-byte block of glibc's, now 208.
#[test]
fn an_idle_connections_outbox_is_small() {
    assert!(
        std::mem::size_of::<Outbox>() <= 184,
        "{} bytes",
        std::mem::size_of::<Outbox>()
    );
}

#[test]
fn encodes_in_order_and_counts_bytes() {
    let o = Outbox::new(1 << 20, 10);
    let big = vec![7u8; INLINE_MAX + 1];
    assert!(o.push(&Frame::text("ab")));
    assert!(o.push(&Frame::binary(big.clone())));
    assert!(o.push(&Frame::Ping(Bytes::new())));
    assert_eq!(o.queued_bytes(), 4 + big.len() + FRAME_OVERHEAD + 2);
    let mut out = Vec::new();
    let written = write(&o, &mut out, usize::MAX).expect("queued");
    let expected = encoded(&[
        (opcode::TEXT, b"ab"),
        (opcode::BINARY, &big),
        (opcode::PING, b""),
    ]);
    assert_eq!(out, expected);
    assert_eq!(written.messages, 2);
    assert_eq!(written.message_bytes, 2 + big.len() as u64);
    assert_eq!(o.queued_bytes(), 0);
    assert!(o.is_empty());
    assert_eq!(write(&o, &mut out, usize::MAX), None);
}

#[test]
fn short_writes_resume_where_they_stopped() {
    let o = Outbox::new(1 << 20, 100);
    let big = vec![1u8; 70_000];
    let mut frames: Vec<(u8, Vec<u8>)> = Vec::new();
    for i in 0..30 {
        let payload = if i % 10 == 3 {
            big.clone()
        } else {
            vec![i as u8; 100 + i]
        };
        assert!(o.push(&Frame::binary(payload.clone())));
        frames.push((opcode::BINARY, payload));
    }
    let mut out = Vec::new();
    let mut messages = 0;
    while let Some(written) = write(&o, &mut out, 777) {
        messages += written.messages;
    }
    let expected: Vec<(u8, &[u8])> = frames.iter().map(|(op, p)| (*op, &p[..])).collect();
    assert_eq!(out, encoded(&expected));
    assert_eq!(messages, 30);
    assert_eq!(o.queued_bytes(), 0);
}

#[test]
fn overflow_closes_with_1008_and_frees_the_queue() {
    let o = Outbox::new(10, 10);
    assert!(o.push(&Frame::text("12345")));
    assert!(!o.push(&Frame::text("1234")));
    assert_eq!(o.queued_bytes(), 0);
    assert!(o.is_empty());
    assert!(matches!(o.ending(), Ending::Close(1008, _)));
    assert!(!o.push(&Frame::text("x")));
}

#[test]
fn a_started_frame_is_finished_whatever_is_dropped() {
    let o = Outbox::new(1 << 20, 100);
    assert!(o.push(&Frame::text("first")));
    assert!(o.push(&Frame::text("second")));
    let mut out = Vec::new();
    write(&o, &mut out, 3);
    o.finish();
    o.push_close(&[0x03, 0xe8]);
    while write(&o, &mut out, usize::MAX).is_some() {}
    let expected = encoded(&[(opcode::TEXT, b"first"), (opcode::CLOSE, &[0x03, 0xe8])]);
    assert_eq!(out, expected);
}

#[test]
fn empty_frames_are_bounded_too() {
    let o = Outbox::new(1 << 20, 100);
    for _ in 0..100 {
        assert!(o.push(&Frame::text("")));
    }
    assert!(!o.push(&Frame::text("")));
    assert!(matches!(o.ending(), Ending::Close(1008, _)));
    let by_bytes = Outbox::new(20, 1000);
    for _ in 0..10 {
        assert!(by_bytes.push(&Frame::binary(Vec::new())));
    }
    assert!(!by_bytes.push(&Frame::binary(Vec::new())));
}

#[test]
fn a_kicked_connection_takes_no_input_a_leaving_one_does() {
    let kicked = Outbox::new(100, 10);
    assert!(kicked.takes_input());
    kicked.close(4000, "kicked");
    kicked.close_leaving(1012, "moving");
    assert!(!kicked.takes_input(), "the consumer's close comes first");
    assert_eq!(kicked.ending(), Ending::Close(4000, "kicked".into()));
    let leaving = Outbox::new(100, 10);
    leaving.close_leaving(1012, "moving");
    assert!(leaving.takes_input());
    assert!(!leaving.push(&Frame::text("x")), "nothing more is sent");
    leaving.finish();
    assert!(!leaving.takes_input(), "the connection ended");
}

#[test]
fn first_close_wins() {
    let o = Outbox::new(100, 10);
    o.close(1001, "bye");
    o.close(1011, "crash");
    assert_eq!(o.ending(), Ending::Close(1001, "bye".into()));
    assert!(!o.is_open());
}

#[test]
fn frames_of_a_batch_not_yet_durable_wait_behind_it_in_order() {
    let o = Outbox::new(1 << 20, 100);
    assert!(o.push(&Frame::text("before")));
    let batch = journal::append(b"an input");
    assert!(o.push_in(&Frame::text("caused"), batch));
    assert!(
        o.push(&Frame::Pong(Bytes::new())),
        "a host frame queues behind it"
    );
    assert!(o.has_gated());
    let mut out = Vec::new();
    write(&o, &mut out, usize::MAX);
    assert_eq!(out, encoded(&[(opcode::TEXT, b"before")]));
    assert!(!o.has_writable(), "the front waits for its batch");
    assert_eq!(
        write(&o, &mut out, usize::MAX),
        None,
        "nothing to write, not a full socket"
    );
    let _ = journal::seal();
    journal::release(batch);
    assert!(o.has_writable() && !o.has_gated());
    write(&o, &mut out, usize::MAX);
    assert_eq!(
        out,
        encoded(&[
            (opcode::TEXT, b"before"),
            (opcode::TEXT, b"caused"),
            (opcode::PONG, b"")
        ])
    );
}

#[test]
fn a_release_hands_the_queue_back_and_a_gated_close_waits() {
    let o = Outbox::new(1 << 20, 100);
    let batch = journal::append(b"kick");
    o.close_in(4000, "kicked", batch);
    assert!(!o.close_releasable());
    assert!(
        !o.takes_input(),
        "a kicked client changes nothing, even before the close leaves"
    );
    assert!(
        o.wake.notified().now_or_never().is_some(),
        "closing wakes the task"
    );
    let _ = journal::seal();
    journal::release(batch);
    assert!(o.close_releasable());
    assert!(
        o.wake.notified().now_or_never().is_some(),
        "the release wakes the task to send the close"
    );
}

#[test]
fn frames_that_never_became_durable_are_dropped_with_their_document() {
    let o = Outbox::new(1 << 20, 100);
    let batch = journal::append(b"lost");
    assert!(o.push_in(&Frame::text("never seen"), batch));
    o.drop_gated();
    o.close(1012, "journal");
    assert!(o.is_empty());
    let _ = journal::seal();
    journal::release(batch);
    let mut out = Vec::new();
    assert_eq!(write(&o, &mut out, usize::MAX), None);
    assert!(out.is_empty());
}
