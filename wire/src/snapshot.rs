//! The snapshot format, shared by every store backend (files, PostgreSQL rows).
//!
//! A snapshot file is, little-endian:
//!
//! ```text
//! b"WRSNAP\r\n"                magic (the \r\n catches text-mode mangling)
//! u16                          format version (1)
//! u32 + bytes                  document id
//! u32 + bytes                  plugin name
//! u32 + bytes                  plugin version (content hash of the .wasm that wrote it)
//! u64                          saved at, Unix milliseconds
//! u32, then (u64, u64) each    pending timers: id, due time in Unix milliseconds
//! u64 + bytes                  the consumer's state (its `snapshot` export)
//! [u8; 32]                     SHA-256 of everything above
//! ```

use sha2::{Digest, Sha256};

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
}

impl Snapshot {
    /// A hash of what the snapshot holds (state and timers, not when it was taken): two
    /// snapshots with the same hash need not both be written.
    pub fn content_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for (id, due) in &self.timers {
            h.update(id.to_le_bytes());
            h.update(due.to_le_bytes());
        }
        h.update(&self.state);
        h.finalize().into()
    }
}

const MAGIC: &[u8; 8] = b"WRSNAP\r\n";
/// The snapshot format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Encodes a snapshot file.
pub fn encode(s: &Snapshot, plugin: &str, document: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.state.len() + 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    put_bytes(&mut out, document.as_bytes());
    put_bytes(&mut out, plugin.as_bytes());
    put_bytes(&mut out, s.plugin_version.as_bytes());
    out.extend_from_slice(&s.saved_at_ms.to_le_bytes());
    out.extend_from_slice(&(s.timers.len() as u32).to_le_bytes());
    for (id, due) in &s.timers {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&due.to_le_bytes());
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
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}; this wasmroom reads version {FORMAT_VERSION}"
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
        }
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let bytes = encode(&sample(), "chat", "doc");
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
}
