//! The snapshot format, shared by every store backend (files, PostgreSQL rows).
//!
//! A snapshot file is, little-endian:
//!
//! ```text
//! b"WRSNAP\r\n"                magic (the \r\n catches text-mode mangling)
//! u16                          format version (4, 3 or 2; 1 is still read)
//! u32 + bytes                  document id
//! u32 + bytes                  plugin name
//! u32 + bytes                  plugin version (content hash of the .wasm that wrote it)
//! u64                          saved at, Unix milliseconds (the document's clock)
//! u32, then (u64, u64) each    pending timers: id, due time in Unix milliseconds
//! [u8; 32]                     version 2 and 3: the document's random seed
//! u64                          version 2 and 3: the next connection id it gives
//! u64                          version 3 and 4: the inputs the state holds (journal seq)
//! u32, then each: u64, u8, (u32 + bytes if the u8 is 1)
//!                              version 3 and 4: the connections open when it was taken,
//!                              with their token's claims if they had one
//! (see [`sessions`])           version 4 only: the sessions it carries to the next host
//! u64 + bytes                  the consumer's state (its `snapshot` export)
//! [u8; 32]                     SHA-256 of everything above
//! ```
//!
//! Version 1 files (written before documents kept a seed and their own connection ids)
//! decode with no [`Continuity`]; a snapshot without one is written as version 1. Version
//! 2 files (before documents counted their inputs) decode with `inputs: 0`, and a
//! continuity with no input counted is written as version 2. So a file that decodes is
//! always exactly the encoding of what it decodes to. Version 4 is written only for a
//! snapshot that carries sessions (a document leaving its host), version 3 otherwise.

use sha2::{Digest, Sha256};

mod sessions;
pub use sessions::{SavedFrame, SavedSession};

/// What is saved of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The plugin version that produced `state`.
    pub plugin_version: String,
    /// When it was taken, Unix milliseconds.
    pub saved_at_ms: u64,
    /// Pending timers: (id, due time in Unix milliseconds).
    pub timers: Vec<(u64, u64)>,
    /// The consumer's state.
    pub state: Vec<u8>,
    /// What the host keeps beside the state (version 2); `None` in a version 1 file.
    pub continuity: Option<Continuity>,
    /// The connections open when it was taken, with their claims (version 3, written
    /// only with inputs counted; empty in older files): a document rebuilt from its
    /// journal tells its consumer they are gone.
    pub connections: Vec<(u64, Option<String>)>,
    /// The sessions a leaving document carries to the next host (version 4; empty
    /// otherwise).
    pub sessions: Vec<SavedSession>,
}

/// What a document carries from one host (or run) to the next beside the consumer's
/// state, so that what its guest observes continues rather than starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continuity {
    /// The key of everything the document's guest draws at random.
    pub seed: [u8; 32],
    /// The id the document gives its next connection (ids are never reused by it).
    pub next_connection_id: u64,
    /// The inputs (guest calls that are inputs of the document) the state holds: its
    /// input journal goes on at `inputs + 1`, and its random streams go on from there.
    pub inputs: u64,
}

impl Snapshot {
    /// A hash of what the snapshot holds for the consumer (state, timers, seed; not when
    /// it was taken, nor the connection-id counter): two snapshots with the same hash
    /// need not both be written while the document stays in memory. (A host writes a
    /// moved counter at the latest before the document leaves memory.)
    pub fn content_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for (id, due) in &self.timers {
            h.update(id.to_le_bytes());
            h.update(due.to_le_bytes());
        }
        if let Some(c) = &self.continuity {
            h.update(c.seed);
        }
        h.update(&self.state);
        if !self.sessions.is_empty() {
            // A leaving document's sessions must be written even if its state is not new.
            let mut carried = Vec::new();
            sessions::put(&mut carried, &self.sessions);
            h.update(&carried);
        }
        h.finalize().into()
    }

    /// Whether the snapshot holds nothing a fresh document would not have: no state, no
    /// timers, and no connection id given yet. Stores keep no file or row for it.
    pub fn keeps_nothing(&self) -> bool {
        self.state.is_empty()
            && self.timers.is_empty()
            && self.continuity.is_none_or(|c| {
                // A journal may hold inputs after these: the file must say where they start.
                c.next_connection_id <= FIRST_CONNECTION_ID && c.inputs == 0
            })
    }
}

/// The id of a document's first connection.
pub const FIRST_CONNECTION_ID: u64 = 1;

const MAGIC: &[u8; 8] = b"WRSNAP\r\n";
/// The snapshot format this build writes for a document that carries sessions (it reads
/// 1 to 4).
pub const FORMAT_VERSION: u16 = 4;
/// The format with [`Continuity`] and its input count, without sessions.
const VERSION_3: u16 = 3;
/// The format before documents counted their inputs.
const VERSION_2: u16 = 2;
/// The format before [`Continuity`].
const VERSION_1: u16 = 1;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Encodes a snapshot file.
pub fn encode(s: &Snapshot, plugin: &str, document: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.state.len() + 128);
    out.extend_from_slice(MAGIC);
    let version = match s.continuity {
        None => VERSION_1,
        Some(_) if !s.sessions.is_empty() => FORMAT_VERSION,
        Some(c) if c.inputs == 0 => VERSION_2,
        Some(_) => VERSION_3,
    };
    out.extend_from_slice(&version.to_le_bytes());
    put_bytes(&mut out, document.as_bytes());
    put_bytes(&mut out, plugin.as_bytes());
    put_bytes(&mut out, s.plugin_version.as_bytes());
    out.extend_from_slice(&s.saved_at_ms.to_le_bytes());
    out.extend_from_slice(&(s.timers.len() as u32).to_le_bytes());
    for (id, due) in &s.timers {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&due.to_le_bytes());
    }
    if let Some(c) = &s.continuity {
        out.extend_from_slice(&c.seed);
        out.extend_from_slice(&c.next_connection_id.to_le_bytes());
        if version >= VERSION_3 {
            out.extend_from_slice(&c.inputs.to_le_bytes());
            out.extend_from_slice(&(s.connections.len() as u32).to_le_bytes());
            for (id, claims) in &s.connections {
                out.extend_from_slice(&id.to_le_bytes());
                match claims {
                    Some(claims) => {
                        out.push(1);
                        put_bytes(&mut out, claims.as_bytes());
                    }
                    None => out.push(0),
                }
            }
        }
        if version == FORMAT_VERSION {
            sessions::put(&mut out, &s.sessions);
        }
    }
    out.extend_from_slice(&(s.state.len() as u64).to_le_bytes());
    out.extend_from_slice(&s.state);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "a name is not UTF-8".into())
    }
}

/// Decodes a snapshot file of `plugin`/`document`.
pub fn decode(bytes: &[u8], plugin: &str, document: &str) -> Result<Snapshot, String> {
    if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a wasmroom snapshot (bad magic)".into());
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    let mut r = Reader(&body[MAGIC.len()..]);
    let version = r.u16()?;
    if !(VERSION_1..=FORMAT_VERSION).contains(&version) {
        return Err(format!(
            "format version {version}; this wasmroom reads versions {VERSION_1} to {FORMAT_VERSION}"
        ));
    }
    if Sha256::digest(body).as_slice() != digest {
        return Err("checksum mismatch (the file is corrupt or truncated)".into());
    }
    let doc = r.string()?;
    let plug = r.string()?;
    if doc != document || plug != plugin {
        return Err(format!("the file belongs to {plug}/{doc}"));
    }
    let plugin_version = r.string()?;
    let saved_at_ms = r.u64()?;
    let count = r.u32()? as usize;
    let mut timers = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        timers.push((r.u64()?, r.u64()?));
    }
    let mut connections = Vec::new();
    let mut carried = Vec::new();
    let continuity = if version == VERSION_1 {
        None
    } else {
        let seed = r.take(32)?.try_into().expect("32 bytes");
        let next_connection_id = r.u64()?;
        let inputs = if version == VERSION_2 { 0 } else { r.u64()? };
        if version >= VERSION_3 {
            if version == VERSION_3 && inputs == 0 {
                // Written as version 2: no writer makes this file.
                return Err("version 3 with no inputs counted".into());
            }
            let count = r.u32()? as usize;
            for _ in 0..count {
                let id = r.u64()?;
                let claims = match r.take(1)?[0] {
                    0 => None,
                    1 => Some(r.string()?),
                    _ => return Err("a connection's claims flag is neither 0 nor 1".into()),
                };
                connections.push((id, claims));
            }
        }
        if version == FORMAT_VERSION {
            carried = sessions::read(&mut r)?;
            if carried.is_empty() {
                // Written as version 3 (or 2): no writer makes this file.
                return Err("version 4 with no sessions".into());
            }
        }
        Some(Continuity {
            seed,
            next_connection_id,
            inputs,
        })
    };
    let len = r.u64()? as usize;
    let state = r.take(len)?.to_vec();
    if !r.0.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(Snapshot {
        plugin_version,
        saved_at_ms,
        timers,
        state,
        continuity,
        connections,
        sessions: carried,
    })
}

#[cfg(test)]
mod tests {
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
        0x57, 0x52, 0x53, 0x4e, 0x41, 0x50, 0x0d, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x72,
        0x6f, 0x6f, 0x6d, 0x04, 0x00, 0x00, 0x00, 0x63, 0x68, 0x61, 0x74, 0x08, 0x00, 0x00, 0x00,
        0x33, 0x66, 0x32, 0x61, 0x39, 0x63, 0x30, 0x31, 0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x60, 0x52,
        0xe6, 0xcf, 0x8b, 0x01, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0,
        0x3c, 0xe7, 0xcf, 0x8b, 0x01, 0x00, 0x00, 0x1b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x7b, 0x22, 0x6d, 0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x73, 0x22, 0x3a, 0x5b, 0x22, 0x68,
        0x69, 0x22, 0x2c, 0x22, 0x74, 0x68, 0x65, 0x72, 0x65, 0x22, 0x5d, 0x7d, 0x76, 0xa1, 0x85,
        0x98, 0xf8, 0x5e, 0xc0, 0xde, 0x71, 0x57, 0xac, 0x73, 0xd9, 0x3e, 0xc3, 0xe8, 0xba, 0xe2,
        0x56, 0x14, 0x28, 0x00, 0xd8, 0x47, 0x50, 0x4d, 0x32, 0xcd, 0xe1, 0xf1, 0xb8, 0x06,
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
        assert_eq!(bytes[8..10], FORMAT_VERSION.to_le_bytes());
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
}
