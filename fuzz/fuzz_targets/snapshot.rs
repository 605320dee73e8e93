//! Snapshot files. The input is read three ways: as a file; as a file whose checksum is
//! made right (the body as is, then its SHA-256), so that the field parser behind the
//! checksum is reached; and as the source of an `arbitrary` snapshot to encode.
//!
//! Beyond "no panic": a file that decodes is exactly the encoding of what it decodes to
//! (one encoding per snapshot, no byte ignored; a version 1 file is written back as
//! version 1, a version 2 file as version 2); decode(encode(x)) == x, with and without
//! the version 2 fields; a file is read only as the document it names; and a valid file
//! with one byte changed, or cut short, is refused (the checksum covers every byte),
//! never read as another snapshot.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use wasmroom_wire::snapshot::{Continuity, SavedFrame, SavedSession, Snapshot, decode, encode};

/// The plugin and document a file names (`decode` refuses others), or any names.
fn names(file: &[u8]) -> (String, String) {
    let field = |at: usize| -> Option<(String, usize)> {
        let len = u32::from_le_bytes(file.get(at..at + 4)?.try_into().ok()?) as usize;
        let text = std::str::from_utf8(file.get(at + 4..(at + 4).checked_add(len)?)?).ok()?;
        Some((text.to_owned(), at + 4 + len))
    };
    // Magic (8 bytes) and format version (2), then the document and the plugin.
    let named = field(10).and_then(|(document, at)| Some((field(at)?.0, document)));
    named.unwrap_or_else(|| ("chat".into(), "room".into()))
}

/// Decodes `file` as the document it names; a file that decodes must be the encoding of
/// what it gave.
fn check_decode(file: &[u8]) {
    let (plugin, document) = names(file);
    if let Ok(found) = decode(file, &plugin, &document) {
        assert_eq!(encode(&found, &plugin, &document), file);
    }
}

/// Carried sessions as a writer makes them: the floor at most what was sent, and the
/// saved messages numbered after the floor, up to what was sent.
fn sessions(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<SavedSession>> {
    type Raw = (u64, String, u64, u64, u64, u64, Vec<(bool, Vec<u8>)>);
    Ok(u.arbitrary::<Vec<Raw>>()?
        .into_iter()
        .map(
            |(connection, session, sent, applied, floor, parked_at_ms, frames)| {
                let floor = floor.min(sent);
                let room = (sent - floor).min(frames.len() as u64) as usize;
                let replay = frames
                    .into_iter()
                    .take(room)
                    .zip((floor..=sent).skip(1))
                    .map(|((binary, payload), seq)| SavedFrame {
                        seq,
                        binary,
                        payload,
                    })
                    .collect();
                SavedSession {
                    connection,
                    session,
                    sent,
                    applied,
                    floor,
                    parked_at_ms,
                    replay,
                }
            },
        )
        .collect())
}

fn built(u: &mut Unstructured<'_>) -> arbitrary::Result<(Snapshot, String, String, usize, u8)> {
    let mut snapshot = Snapshot {
        plugin_version: u.arbitrary()?,
        saved_at_ms: u.arbitrary()?,
        timers: u.arbitrary()?,
        state: u.arbitrary()?,
        continuity: u.arbitrary::<Option<([u8; 32], u64, u64)>>()?.map(
            |(seed, next_connection_id, inputs)| Continuity {
                seed,
                next_connection_id,
                inputs,
            },
        ),
        connections: u.arbitrary()?,
        sessions: sessions(u)?,
        settings: u.arbitrary::<Option<std::collections::BTreeMap<String, String>>>()?
            .map(|s| s.into_iter().collect()),
    };
    // Open connections are kept by versions 3 to 5 only, which a count of inputs,
    // carried sessions or recorded settings select; sessions by versions 4 and 5 and
    // settings by version 5, which need a continuity.
    if snapshot.continuity.is_none() {
        snapshot.sessions.clear();
        snapshot.settings = None;
    }
    if snapshot.continuity.is_none_or(|c| c.inputs == 0)
        && snapshot.sessions.is_empty()
        && snapshot.settings.is_none()
    {
        snapshot.connections.clear();
    }
    Ok((
        snapshot,
        u.arbitrary()?,
        u.arbitrary()?,
        u.arbitrary()?,
        u.arbitrary()?,
    ))
}

fuzz_target!(|data: &[u8]| {
    check_decode(data);
    if let Some(body) = data.len().checked_sub(32).map(|n| &data[..n]) {
        check_decode(&[body, Sha256::digest(body).as_slice()].concat());
    }

    let Ok((snapshot, plugin, document, at, flip)) = built(&mut Unstructured::new(data)) else {
        return;
    };
    let bytes = encode(&snapshot, &plugin, &document);
    assert_eq!(decode(&bytes, &plugin, &document).as_ref(), Ok(&snapshot));
    assert!(decode(&bytes, &plugin, &format!("{document}x")).is_err());
    let at = at % bytes.len();
    let mut damaged = bytes.clone();
    damaged[at] ^= flip.max(1);
    assert!(
        decode(&damaged, &plugin, &document).is_err(),
        "byte {at} ^ {flip}"
    );
    assert!(
        decode(&bytes[..at], &plugin, &document).is_err(),
        "cut at {at}"
    );
});
