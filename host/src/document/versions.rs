//! Which plugin versions a replay runs a document's inputs on (journal mode): each input
//! on the version that made it. The first is the version that took the document's
//! snapshot (or that its journaled `open` names); a hot reload journals a
//! [`Record::Version`], and the replay moves the document there as the reload did
//! (`Document::replay_move`). After the replay, the opener moves it on to the version
//! there is now, which journals that move too.
//!
//! A journal written before versions were named (an `open` without one) is replayed by
//! the version there is, as it always was.

use std::collections::HashMap;
use std::sync::Arc;

use wasmroom_wire::journal::{Entry, Record};

use crate::guest::engine::{Slot, Slots};
use crate::guest::plugin::Plugin;
use crate::store::Snapshot;

/// The versions a replay may move a document to, with the pool their instances come
/// from.
#[derive(Default)]
pub struct ReplayVersions {
    plugins: HashMap<String, Arc<Plugin>>,
    slots: Option<Arc<Slots>>,
}

impl std::fmt::Debug for ReplayVersions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayVersions")
            .field("versions", &self.plugins.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ReplayVersions {
    /// None: a replay that meets a move to a version other than the document's fails.
    pub fn none() -> ReplayVersions {
        ReplayVersions::default()
    }

    /// These versions, instantiated in `slots` (the migration reserve if need be).
    pub fn new(plugins: Vec<Arc<Plugin>>, slots: Arc<Slots>) -> ReplayVersions {
        ReplayVersions {
            plugins: plugins
                .into_iter()
                .map(|p| (p.version.clone(), p))
                .collect(),
            slots: Some(slots),
        }
    }

    /// Version `version`, if this replay has it.
    pub fn get(&self, version: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(version)
    }

    /// A slot for a move's second instance.
    pub(super) fn slot(&self) -> Option<Slot> {
        self.slots.as_ref()?.for_migration()
    }
}

/// The versions the inputs after `saved` were made by, in order (the first made the
/// first of them); empty if there are none, or the journal does not name them.
pub fn needed<'a>(
    saved: Option<&Snapshot>,
    entries: impl Iterator<Item = &'a Entry>,
) -> Vec<String> {
    let covered = saved.and_then(|s| s.continuity).map_or(0, |c| c.inputs);
    let mut after = entries.filter(|e| e.seq > covered).peekable();
    let Some(first) = after.peek() else {
        return Vec::new();
    };
    let opened_by = match (saved, &first.record) {
        (Some(saved), _) => Some(saved.plugin_version.clone()),
        (None, Record::Open { version, .. }) => version.clone(),
        (None, _) => None,
    };
    let Some(opened_by) = opened_by else {
        return Vec::new();
    };
    let mut versions = vec![opened_by];
    for entry in after {
        if let Record::Version { version } = &entry.record
            && versions.last() != Some(version)
        {
            versions.push(version.clone());
        }
    }
    versions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Continuity;

    fn entry(seq: u64, record: Record) -> Entry {
        Entry {
            plugin: "chat".into(),
            document: "d".into(),
            incarnation: 1,
            seq,
            clock_ms: seq,
            record,
        }
    }

    fn message(seq: u64) -> Entry {
        entry(seq, Record::Timer { id: seq })
    }

    fn version(seq: u64, v: &str) -> Entry {
        entry(seq, Record::Version { version: v.into() })
    }

    #[test]
    fn the_inputs_after_the_snapshot_name_their_versions() {
        let open = |v: Option<&str>| {
            entry(
                1,
                Record::Open {
                    seed: [0; 32],
                    next_connection_id: 1,
                    settings: Vec::new(),
                    version: v.map(str::to_owned),
                },
            )
        };
        let journal = [
            open(Some("a")),
            message(2),
            version(3, "b"),
            message(4),
            version(5, "c"),
        ];
        assert_eq!(needed(None, journal.iter()), ["a", "b", "c"]);
        // An open written before versions were named: replayed by the version there is.
        assert!(needed(None, [open(None), message(2)].iter()).is_empty());
        let saved = |inputs| Snapshot {
            plugin_version: "b".into(),
            saved_at_ms: 0,
            timers: Vec::new(),
            state: Vec::new(),
            continuity: Some(Continuity {
                seed: [0; 32],
                next_connection_id: 1,
                inputs,
            }),
            connections: Vec::new(),
            sessions: Vec::new(),
            settings: None,
        };
        assert_eq!(needed(Some(&saved(3)), journal.iter()), ["b", "c"]);
        // A snapshot that covers the whole journal needs no version of its own.
        assert!(needed(Some(&saved(5)), journal.iter()).is_empty());
        // A move to the version that is running already is no move.
        let again = [message(4), version(5, "b"), message(6)];
        assert_eq!(needed(Some(&saved(3)), again.iter()), ["b"]);
    }
}
