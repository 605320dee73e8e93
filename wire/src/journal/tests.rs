use super::*;

fn entry(seq: u64, record: Record) -> Entry {
    Entry {
        plugin: "chat".into(),
        document: "room 1".into(),
        incarnation: 3,
        seq,
        clock_ms: 1_700_000_000_000 + seq,
        record,
    }
}

/// One entry of every kind, with non-trivial fields.
fn every_kind() -> Vec<Entry> {
    let headers = vec![
        ("host".to_owned(), "example.com".to_owned()),
        ("x-a".to_owned(), String::new()),
    ];
    [
        Record::Open {
            seed: [9; 32],
            next_connection_id: 1,
            settings: vec![("greeting".into(), "héllo".into())],
            version: None,
        },
        Record::Open {
            seed: [7; 32],
            next_connection_id: 3,
            settings: Vec::new(),
            version: Some("0123456789abcdef".into()),
        },
        Record::Version {
            version: "fedcba9876543210".into(),
        },
        Record::Settings {
            settings: Vec::new(),
        },
        Record::Connect {
            id: 7,
            path: "/ws/chat/room%201".into(),
            query: "a=b".into(),
            headers: headers.clone(),
            subprotocols: vec!["y-protocol".into(), String::new()],
            remote_address: "127.0.0.1:5000".into(),
            claims: Some(r#"{"sub":"ann"}"#.into()),
            accepted: true,
            session: Some("0123456789abcdef0123456789abcdef".into()),
        },
        Record::Connect {
            id: 8,
            path: String::new(),
            query: String::new(),
            headers: Vec::new(),
            subprotocols: Vec::new(),
            remote_address: String::new(),
            claims: None,
            accepted: false,
            session: None,
        },
        Record::Message {
            connection: 7,
            text: true,
            data: "hi ✓".as_bytes().to_vec(),
        },
        Record::Message {
            connection: 7,
            text: false,
            data: vec![0xff, 0, 1],
        },
        Record::Disconnect {
            connection: 7,
            code: 1006,
        },
        Record::Timer { id: u64::MAX },
        Record::Messages {
            connection: 7,
            messages: vec![
                Payload {
                    text: true,
                    data: "a ✓".as_bytes().to_vec(),
                },
                Payload {
                    text: false,
                    data: Vec::new(),
                },
            ],
        },
        Record::Request {
            method: "POST".into(),
            path: "/docs/chat/room/x".into(),
            query: String::new(),
            headers,
            body: b"{}".to_vec(),
            claims: None,
        },
        Record::Checkpoint { hash: [0xab; 32] },
        Record::TimerDropped { id: 13 },
        Record::Detach {
            connection: 7,
            code: 1001,
        },
    ]
    .into_iter()
    .enumerate()
    .map(|(i, record)| entry(i as u64 + 1, record))
    .collect()
}

#[test]
fn every_kind_round_trips_through_frames() {
    let entries = every_kind();
    let mut bytes = Vec::new();
    for e in &entries {
        let framed = frame(e);
        assert_eq!(framed[FRAME_HEADER_LEN], e.record.version());
        assert_eq!(decode(&framed[FRAME_HEADER_LEN..]).as_ref(), Ok(e));
        assert_eq!(encode(e), framed[FRAME_HEADER_LEN..]);
        bytes.extend_from_slice(&framed);
    }
    let mut frames = Frames::new(&bytes);
    let read: Vec<Entry> = frames.by_ref().collect();
    assert_eq!(read, entries);
    assert_eq!(frames.valid_len(), bytes.len());
    assert_eq!(frames.stop(), Some(&Stop::End));
}

#[test]
fn a_torn_tail_at_every_offset_keeps_the_whole_frames_before_it() {
    let entries = every_kind();
    let mut bytes = Vec::new();
    let mut ends = vec![0];
    for e in &entries {
        bytes.extend_from_slice(&frame(e));
        ends.push(bytes.len());
    }
    for cut in 0..bytes.len() {
        let mut frames = Frames::new(&bytes[..cut]);
        let read: Vec<Entry> = frames.by_ref().collect();
        let whole = ends.iter().filter(|&&end| end <= cut).count() - 1;
        assert_eq!(read, entries[..whole], "cut at {cut}");
        assert_eq!(frames.valid_len(), ends[whole], "cut at {cut}");
        let expected = if cut == ends[whole] {
            Stop::End
        } else {
            Stop::Damaged(FrameError::Truncated)
        };
        assert_eq!(frames.stop(), Some(&expected), "cut at {cut}");
    }
}

#[test]
fn a_flipped_bit_anywhere_is_detected() {
    let entries = every_kind();
    let first = frame(&entries[0]);
    let second = frame(&entries[2]);
    let bytes = [first.clone(), second.clone()].concat();
    for at in first.len()..bytes.len() {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << bit;
            let mut frames = Frames::new(&damaged);
            let read: Vec<Entry> = frames.by_ref().collect();
            // The first frame is intact; the second is never read as an entry.
            assert_eq!(read, entries[..1], "byte {at} bit {bit}");
            assert_eq!(frames.valid_len(), first.len());
            assert!(matches!(frames.stop(), Some(Stop::Damaged(_))));
        }
    }
}

#[test]
fn bodies_are_canonical_and_versioned() {
    let e = &every_kind()
        .into_iter()
        .find(|e| matches!(e.record, Record::Message { .. }))
        .expect("every kind has a message");
    let body = encode(e);
    let mut future = body.clone();
    future[0] = RECORD_VERSION + 1;
    assert_eq!(
        decode(&future),
        Err(FrameError::Version(RECORD_VERSION + 1))
    );
    // A message in the body version of batches: not the one encoding of this entry.
    let mut newer = body.clone();
    newer[0] = RECORD_VERSION_2;
    assert!(matches!(decode(&newer), Err(FrameError::Invalid(_))));
    let mut trailing = body.clone();
    trailing.push(0);
    assert!(matches!(decode(&trailing), Err(FrameError::Invalid(_))));
    // The text flag of a message (its last byte before the data's length and data).
    let flag = body.len() - 4 - "hi ✓".len() - 1;
    let mut two = body.clone();
    two[flag] = 2;
    assert!(matches!(decode(&two), Err(FrameError::Invalid(_))));
    let text_not_utf8 = Entry {
        record: Record::Message {
            connection: 1,
            text: true,
            data: vec![0xff],
        },
        ..e.clone()
    };
    assert!(matches!(
        decode(&encode(&text_not_utf8)),
        Err(FrameError::Invalid(_))
    ));
    // Zeros where a file was extended but never written: not an entry.
    let mut frames = Frames::new(&[0; 64]);
    assert_eq!(frames.next(), None);
    assert!(matches!(frames.stop(), Some(Stop::Damaged(_))));
    assert_eq!(frames.valid_len(), 0);
}

#[test]
fn segment_headers_round_trip_and_reject_damage() {
    let header = SegmentHeader {
        lane: 3,
        number: 12,
        previous_len: 4096,
    };
    let bytes = header.encode();
    assert_eq!(&bytes[..8], SEGMENT_MAGIC);
    assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
    for at in 0..bytes.len() {
        let mut damaged = bytes;
        damaged[at] ^= 0x10;
        assert!(SegmentHeader::decode(&damaged).is_err(), "byte {at}");
        assert!(SegmentHeader::decode(&bytes[..at]).is_err(), "cut at {at}");
    }
}

#[test]
fn the_documented_layout_reads_as_written_by_another_encoder() {
    // The fuzz seeds were written by a Python script from the layout in the module's
    // documentation alone, not by this codec.
    let bytes = include_bytes!("../../../fuzz/corpus/journal/every_kind");
    let mut frames = Frames::new(bytes);
    let read: Vec<Entry> = frames.by_ref().collect();
    assert_eq!(frames.stop(), Some(&Stop::End));
    assert_eq!(read.len(), 9);
    assert!(
        read.iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as u64 + 1 && e.plugin == "chat" && e.document == "room")
    );
    assert_eq!(
        read[3].record,
        Record::Disconnect {
            connection: 1,
            code: 1000
        }
    );
    let segment = include_bytes!("../../../fuzz/corpus/journal/segment_header");
    assert_eq!(
        SegmentHeader::decode(segment),
        Ok(SegmentHeader {
            lane: 0,
            number: 2,
            previous_len: 4096
        })
    );
    let frames: Vec<Entry> = Frames::new(&segment[SEGMENT_HEADER_LEN..]).collect();
    assert_eq!(frames, read[..1]);
}

#[test]
fn a_batch_of_messages_is_version_2_and_never_empty() {
    let batch = every_kind()
        .into_iter()
        .find(|e| matches!(e.record, Record::Messages { .. }))
        .expect("every kind has a batch");
    let body = encode(&batch);
    assert_eq!(body[0], 2);
    assert_eq!(decode(&body), Ok(batch.clone()));
    // The same bytes as version 1: a build without batches would refuse it as such.
    let mut old = body.clone();
    old[0] = RECORD_VERSION_1;
    assert!(matches!(decode(&old), Err(FrameError::Invalid(_))));
    // Every other kind stays version 1, but a session's connect.
    assert!(
        every_kind()
            .iter()
            .filter(|e| !matches!(
                e.record,
                Record::Messages { .. }
                    | Record::Version { .. }
                    | Record::Open {
                        version: Some(_),
                        ..
                    }
                    | Record::TimerDropped { .. }
                    | Record::Detach { .. }
                    | Record::Connect {
                        session: Some(_),
                        ..
                    }
            ))
            .all(|e| encode(e)[0] == 1)
    );
    let empty = Entry {
        record: Record::Messages {
            connection: 7,
            messages: Vec::new(),
        },
        ..batch.clone()
    };
    assert!(matches!(
        decode(&encode(&empty)),
        Err(FrameError::Invalid(_))
    ));
    let not_utf8 = Entry {
        record: Record::Messages {
            connection: 7,
            messages: vec![Payload {
                text: true,
                data: vec![0xc3],
            }],
        },
        ..batch
    };
    assert!(matches!(
        decode(&encode(&not_utf8)),
        Err(FrameError::Invalid(_))
    ));
}

#[test]
fn a_batch_written_from_the_documented_layout_reads() {
    // Written by a Python script from the module's documentation, like `every_kind`.
    let bytes = include_bytes!("../../../fuzz/corpus/journal/messages");
    let read: Vec<Entry> = Frames::new(bytes).collect();
    let payload = |text, data: &[u8]| Payload {
        text,
        data: data.to_vec(),
    };
    assert_eq!(
        read,
        [Entry {
            plugin: "chat".into(),
            document: "room".into(),
            incarnation: 1,
            seq: 5,
            clock_ms: 1_700_000_000_005,
            record: Record::Messages {
                connection: 1,
                messages: vec![
                    payload(true, b"one"),
                    payload(false, &[0, 0xff]),
                    payload(true, "três".as_bytes()),
                ],
            },
        }]
    );
}

#[test]
fn a_sessions_connect_is_version_3_and_only_it() {
    let connects: Vec<Entry> = every_kind()
        .into_iter()
        .filter(|e| matches!(e.record, Record::Connect { .. }))
        .collect();
    let (session, plain) = (&connects[0], &connects[1]);
    let body = encode(session);
    assert_eq!(body[0], RECORD_VERSION_3);
    assert_eq!(decode(&body).as_ref(), Ok(session));
    // Read as version 1, the session id is trailing bytes; a plain connect as version 3
    // lacks it.
    let mut old = body.clone();
    old[0] = RECORD_VERSION_1;
    assert!(matches!(decode(&old), Err(FrameError::Invalid(_))));
    let mut plain_body = encode(plain);
    assert_eq!(plain_body[0], RECORD_VERSION_1);
    plain_body[0] = RECORD_VERSION_3;
    assert!(decode(&plain_body).is_err());
}

#[test]
fn plugin_versions_are_version_4_and_only_they() {
    let named: Vec<Entry> = every_kind()
        .into_iter()
        .filter(|e| e.record.version() == RECORD_VERSION_4)
        .collect();
    assert_eq!(named.len(), 2, "a versioned open and a version switch");
    for entry in &named {
        let body = encode(entry);
        assert_eq!(decode(&body).as_ref(), Ok(entry));
        // Read as an older version, the version is trailing bytes or an unknown kind.
        for older in [RECORD_VERSION_1, RECORD_VERSION_3] {
            let mut old = body.clone();
            old[0] = older;
            assert!(matches!(decode(&old), Err(FrameError::Invalid(_))));
        }
    }
    // An open without a version, read as version 4, lacks it.
    let unnamed = every_kind()
        .into_iter()
        .find(|e| matches!(e.record, Record::Open { version: None, .. }))
        .expect("every kind has an unnamed open");
    let mut body = encode(&unnamed);
    assert_eq!(body[0], RECORD_VERSION_1);
    body[0] = RECORD_VERSION_4;
    assert!(decode(&body).is_err());
}

#[test]
fn a_dropped_timer_or_departure_is_version_5_and_only_they() {
    let dropped: Vec<Entry> = every_kind()
        .into_iter()
        .filter(|e| {
            matches!(
                e.record,
                Record::TimerDropped { .. } | Record::Detach { .. }
            )
        })
        .collect();
    assert_eq!(dropped.len(), 2);
    for e in &dropped {
        let body = encode(e);
        assert_eq!(body[0], RECORD_VERSION_5);
        assert_eq!(decode(&body).as_ref(), Ok(e));
        // In an older body version, the kind is not that version's: refused.
        for older in [RECORD_VERSION_1, RECORD_VERSION_2, RECORD_VERSION_3] {
            let mut old = body.clone();
            old[0] = older;
            assert!(
                matches!(decode(&old), Err(FrameError::Invalid(_))),
                "{:?} as version {older}",
                e.record
            );
        }
        // Version 4 is plugin versions': not this kind's, refused.
        let mut four = body.clone();
        four[0] = RECORD_VERSION_4;
        assert!(matches!(decode(&four), Err(FrameError::Invalid(_))));
        let mut trailing = body.clone();
        trailing.push(0);
        assert!(matches!(decode(&trailing), Err(FrameError::Invalid(_))));
        assert!(matches!(
            decode(&body[..body.len() - 1]),
            Err(FrameError::Invalid(_))
        ));
    }
    // No other kind is written as version 5.
    assert!(
        every_kind()
            .iter()
            .filter(|e| !dropped.contains(e))
            .all(|e| encode(e)[0] < RECORD_VERSION_5)
    );
}

#[test]
fn dropped_inputs_written_from_the_documented_layout_read() {
    // Written by a Python script from the module's documentation, like `every_kind`.
    let bytes = include_bytes!("../../../fuzz/corpus/journal/dropped");
    let mut frames = Frames::new(bytes);
    let read: Vec<Entry> = frames.by_ref().collect();
    assert_eq!(frames.stop(), Some(&Stop::End));
    let at = |seq: u64, record| Entry {
        plugin: "probe".into(),
        document: "room".into(),
        incarnation: 2,
        seq,
        clock_ms: 1_700_000_000_000 + seq,
        record,
    };
    assert_eq!(
        read,
        [
            at(6, Record::TimerDropped { id: 13 }),
            at(
                7,
                Record::Detach {
                    connection: 2,
                    code: 1000
                }
            ),
        ]
    );
}
