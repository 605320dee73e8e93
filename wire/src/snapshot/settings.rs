//! The plugin settings a journaled document's snapshot holds (format version 5): what the
//! consumer's `setting` import answered at the snapshot, so that a replay of the journal
//! after it sees the settings its inputs saw, whatever the config says at the replay
//! (a `Settings` journal entry records each change after).
//!
//! After the connections, little-endian:
//!
//! ```text
//! u32, then each: u32 + bytes, u32 + bytes     name, value (UTF-8), names ascending
//! ```

use super::Reader;

pub(super) fn put(out: &mut Vec<u8>, settings: &[(String, String)]) {
    out.extend_from_slice(&(settings.len() as u32).to_le_bytes());
    for (name, value) in settings {
        super::put_bytes(out, name.as_bytes());
        super::put_bytes(out, value.as_bytes());
    }
}

pub(super) fn read(r: &mut Reader<'_>) -> Result<Vec<(String, String)>, String> {
    let count = r.u32()? as usize;
    // Each setting takes at least 8 bytes: a count cannot reserve more than the file.
    let mut settings: Vec<(String, String)> = Vec::with_capacity(count.min(r.0.len() / 8));
    for _ in 0..count {
        let name = r.string()?;
        if settings.last().is_some_and(|(last, _)| *last >= name) {
            // One encoding per snapshot: a writer lists them by name, each once.
            return Err("settings not in ascending order of their names".into());
        }
        settings.push((name, r.string()?));
    }
    Ok(settings)
}
