use super::*;

fn sample() -> Snapshot {
    Snapshot {
        plugin_version: "abc".into(),
        saved_at_ms: 1_700_000_000_000,
        timers: vec![(1, 5), (2, 6)],
        state: b"state".to_vec(),
        continuity: Some(Continuity {
            seed: [7; 32],
            next_connection_id: 42,
            inputs: 9,
        }),
        connections: vec![(40, None), (41, Some(r#"{"role":"viewer"}"#.into()))],
        sessions: Vec::new(),
        settings: None,
    }
}

fn carrying() -> Snapshot {
    Snapshot {
        sessions: vec![SavedSession {
            connection: 41,
            session: "0123456789abcdef0123456789abcdef".into(),
            sent: 7,
            applied: 3,
            floor: 5,
            parked_at_ms: 1_700_000_000_500,
            replay: vec![
                SavedFrame {
                    seq: 6,
                    binary: false,
                    payload: b"6:hi".to_vec(),
                },
                SavedFrame {
                    seq: 7,
                    binary: true,
                    payload: vec![0, 0, 0, 0, 0, 0, 0, 7, 1],
                },
            ],
        }],
        ..sample()
    }
}

/// `chat/room` as the version 1 writer wrote it (`fuzz/corpus/snapshot/chat_with_timers`).
const VERSION_1_FILE: &[u8] = &[
    0x57, 0x52, 0x53, 0x4e, 0x41, 0x50, 0x0d, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x72, 0x6f,
    0x6f, 0x6d, 0x04, 0x00, 0x00, 0x00, 0x63, 0x68, 0x61, 0x74, 0x08, 0x00, 0x00, 0x00, 0x33, 0x66,
    0x32, 0x61, 0x39, 0x63, 0x30, 0x31, 0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, 0x02, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x60, 0x52, 0xe6, 0xcf, 0x8b, 0x01,
    0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x3c, 0xe7, 0xcf, 0x8b, 0x01,
    0x00, 0x00, 0x1b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7b, 0x22, 0x6d, 0x65, 0x73, 0x73,
    0x61, 0x67, 0x65, 0x73, 0x22, 0x3a, 0x5b, 0x22, 0x68, 0x69, 0x22, 0x2c, 0x22, 0x74, 0x68, 0x65,
    0x72, 0x65, 0x22, 0x5d, 0x7d, 0x76, 0xa1, 0x85, 0x98, 0xf8, 0x5e, 0xc0, 0xde, 0x71, 0x57, 0xac,
    0x73, 0xd9, 0x3e, 0xc3, 0xe8, 0xba, 0xe2, 0x56, 0x14, 0x28, 0x00, 0xd8, 0x47, 0x50, 0x4d, 0x32,
    0xcd, 0xe1, 0xf1, 0xb8, 0x06,
];

#[test]
fn round_trips_and_rejects_damage() {
    let bytes = encode(&sample(), "chat", "doc");
    assert_eq!(bytes[8..10], VERSION_3.to_le_bytes());
    assert_eq!(decode(&bytes, "chat", "doc").unwrap(), sample());
    assert!(
        decode(&bytes, "chat", "other")
            .unwrap_err()
            .contains("belongs to")
    );
    let mut flipped = bytes.clone();
    flipped[20] ^= 1;
    assert!(
        decode(&flipped, "chat", "doc")
            .unwrap_err()
            .contains("checksum")
    );
    assert!(decode(&bytes[..bytes.len() - 5], "chat", "doc").is_err());
    let mut future = bytes.clone();
    future[8] = 9;
    assert!(
        decode(&future, "chat", "doc")
            .unwrap_err()
            .contains("format version 9")
    );
    assert!(decode(b"garbage", "chat", "doc").is_err());
}

#[test]
fn version_1_files_still_decode_and_are_written_back_as_they_were() {
    let old = decode(VERSION_1_FILE, "chat", "room").unwrap();
    assert_eq!(
        old,
        Snapshot {
            plugin_version: "3f2a9c01".into(),
            saved_at_ms: 1_700_000_000_000,
            timers: vec![(1, 1_700_000_060_000), (7, 1_700_000_120_000)],
            state: br#"{"messages":["hi","there"]}"#.to_vec(),
            continuity: None,
            connections: Vec::new(),
            sessions: Vec::new(),
            settings: None,
        }
    );
    assert_eq!(encode(&old, "chat", "room"), VERSION_1_FILE);
    // The same state with continuity is a version 3 file, and not the same content;
    // without inputs counted, a version 2 file.
    let new = Snapshot {
        continuity: sample().continuity,
        ..old.clone()
    };
    let bytes = encode(&new, "chat", "room");
    assert_eq!(bytes[8..10], 3u16.to_le_bytes());
    assert_eq!(bytes.len(), VERSION_1_FILE.len() + 52);
    assert_eq!(decode(&bytes, "chat", "room").unwrap(), new);
    assert_ne!(new.content_hash(), old.content_hash());
    let uncounted = Snapshot {
        continuity: sample().continuity.map(|c| Continuity { inputs: 0, ..c }),
        ..old.clone()
    };
    let bytes = encode(&uncounted, "chat", "room");
    assert_eq!(bytes[8..10], 2u16.to_le_bytes());
    assert_eq!(bytes.len(), VERSION_1_FILE.len() + 40);
    assert_eq!(decode(&bytes, "chat", "room").unwrap(), uncounted);
    let mut forged = bytes[..bytes.len() - 32].to_vec();
    forged[8] = 3;
    let digest = Sha256::digest(&forged);
    forged.extend_from_slice(&digest);
    assert!(
        decode(&forged, "chat", "room").is_err(),
        "version 3 needs its count"
    );
}

#[test]
fn sessions_make_a_version_4_file_and_change_the_content() {
    let bytes = encode(&carrying(), "chat", "doc");
    assert_eq!(bytes[8..10], VERSION_4.to_le_bytes());
    assert_eq!(decode(&bytes, "chat", "doc").unwrap(), carrying());
    assert_ne!(carrying().content_hash(), sample().content_hash());
    // Even with no input counted, the count and connections are written.
    let uncounted = Snapshot {
        continuity: sample().continuity.map(|c| Continuity { inputs: 0, ..c }),
        ..carrying()
    };
    let bytes = encode(&uncounted, "chat", "doc");
    assert_eq!(decode(&bytes, "chat", "doc").unwrap(), uncounted);
    // A frame outside what the session numbered is refused.
    let mut bad = carrying();
    bad.sessions[0].replay[0].seq = 5;
    let bytes = encode(&bad, "chat", "doc");
    assert!(
        decode(&bytes, "chat", "doc")
            .unwrap_err()
            .contains("outside")
    );
}

#[test]
fn only_a_document_that_gave_no_connection_id_keeps_nothing() {
    let empty = Snapshot {
        timers: Vec::new(),
        state: Vec::new(),
        continuity: Some(Continuity {
            seed: [1; 32],
            next_connection_id: FIRST_CONNECTION_ID,
            inputs: 0,
        }),
        ..sample()
    };
    assert!(empty.keeps_nothing());
    assert!(
        Snapshot {
            continuity: None,
            ..empty.clone()
        }
        .keeps_nothing()
    );
    let connected = Snapshot {
        continuity: Some(Continuity {
            seed: [1; 32],
            next_connection_id: 2,
            inputs: 0,
        }),
        ..empty.clone()
    };
    assert!(
        !connected.keeps_nothing(),
        "its ids must not be given again"
    );
    assert_eq!(
        connected.content_hash(),
        empty.content_hash(),
        "a viewer joining changes no content"
    );
    assert!(!sample().keeps_nothing());
    let journaled = Snapshot {
        continuity: empty.continuity.map(|c| Continuity { inputs: 3, ..c }),
        ..empty.clone()
    };
    assert!(
        !journaled.keeps_nothing(),
        "its journal goes on after its inputs"
    );
}

#[test]
fn recorded_settings_make_a_version_5_file_in_one_encoding() {
    let named = |settings: Vec<(&str, &str)>| Snapshot {
        settings: Some(
            settings
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
        ),
        ..sample()
    };
    for snapshot in [
        named(vec![("greeting", "héllo"), ("history", "3")]),
        // Recorded as none at all: not the same as not recorded.
        named(Vec::new()),
        Snapshot {
            sessions: carrying().sessions,
            ..named(vec![("a", "")])
        },
        Snapshot {
            continuity: sample().continuity.map(|c| Continuity { inputs: 0, ..c }),
            ..named(vec![("a", "b")])
        },
    ] {
        let bytes = encode(&snapshot, "chat", "doc");
        assert_eq!(bytes[8..10], FORMAT_VERSION.to_le_bytes());
        assert_eq!(decode(&bytes, "chat", "doc").as_ref(), Ok(&snapshot));
    }
    // Names out of order (or twice) are no writer's: refused.
    let bytes = encode(&named(vec![("b", "1"), ("a", "2")]), "chat", "doc");
    assert!(
        decode(&bytes, "chat", "doc")
            .unwrap_err()
            .contains("ascending")
    );
    let bytes = encode(&named(vec![("a", "1"), ("a", "2")]), "chat", "doc");
    assert!(decode(&bytes, "chat", "doc").is_err());
    // Settings are not the consumer's state: the content hash ignores them.
    assert_eq!(
        named(vec![("a", "b")]).content_hash(),
        sample().content_hash()
    );
}
