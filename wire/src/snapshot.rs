//! The snapshot format, shared by every store backend (files, PostgreSQL rows).
//!
//! A snapshot file is, little-endian:
//!
//! ```text
//! b"WRSNAP\r\n"                magic (the \r\n catches text-mode mangling)
//! u16                          format version (5, 4, 3 or 2; 1 is still read)
//! u32 + bytes                  document id
//! u32 + bytes                  plugin name
//! u32 + bytes                  plugin version (content hash of the .wasm that wrote it)
//! u64                          saved at, Unix milliseconds (the document's clock)
//! u32, then (u64, u64) each    pending timers: id, due time in Unix milliseconds
//! [u8; 32]                     version 2 and 3: the document's random seed
//! u64                          version 2 and 3: the next connection id it gives
//! u64                          version 3 to 5: the inputs the state holds (journal seq)
//! u32, then each: u64, u8, (u32 + bytes if the u8 is 1)
//!                              version 3 to 5: the connections open when it was taken,
//!                              with their token's claims if they had one
//! (see [`settings`])           version 5 only: the plugin settings its consumer saw
//! (see [`sessions`])           version 4 and 5: the sessions it carries to the next host
//! u64 + bytes                  the consumer's state (its `snapshot` export)
//! [u8; 32]                     SHA-256 of everything above
//! ```
//!
//! Version 1 files (written before documents kept a seed and their own connection ids)
//! decode with no [`Continuity`]; a snapshot without one is written as version 1. Version
//! 2 files (before documents counted their inputs) decode with `inputs: 0`, and a
//! continuity with no input counted is written as version 2. So a file that decodes is
//! always exactly the encoding of what it decodes to. Version 5 is written only for a
//! snapshot that records its settings (journal mode), version 4 for one that carries
//! sessions (a document leaving its host) without them, version 3 otherwise.

use sha2::{Digest, Sha256};

mod sessions;
mod settings;
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
    /// The sessions a leaving document carries to the next host (version 4 and 5; empty
    /// otherwise).
    pub sessions: Vec<SavedSession>,
    /// The plugin settings the consumer saw when it was taken, by name (version 5,
    /// journal mode: a replay from it sees them); `None`: not recorded.
    pub settings: Option<Vec<(String, String)>>,
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
/// The newest snapshot format this build writes, for a document that records its
/// settings (it reads 1 to 5).
pub const FORMAT_VERSION: u16 = 5;
/// The format for a document that carries sessions without recording its settings.
const VERSION_4: u16 = 4;
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
        Some(_) if s.settings.is_some() => FORMAT_VERSION,
        Some(_) if !s.sessions.is_empty() => VERSION_4,
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
            settings::put(&mut out, s.settings.as_deref().unwrap_or_default());
        }
        if version >= VERSION_4 {
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
    let mut recorded = None;
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
            recorded = Some(settings::read(&mut r)?);
        }
        if version >= VERSION_4 {
            carried = sessions::read(&mut r)?;
            if version == VERSION_4 && carried.is_empty() {
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
        settings: recorded,
    })
}

#[cfg(test)]
mod tests;
