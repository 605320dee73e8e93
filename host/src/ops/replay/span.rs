//! Which inputs of a document `wasmroom replay` can show: from the one its snapshot
//! holds the state after (the journal before it was let go by a checkpoint) to its last,
//! and which one `--until` names.

use wasmroom_wire::journal::Entry;

use super::error::ReplayError;
use crate::config::{Config, Durability};
use crate::store::Snapshot;

/// Which inputs of a document there are to show: from its snapshot's to its last.
pub(super) struct Span<'a> {
    pub(super) plugin: &'a str,
    pub(super) document: &'a str,
    /// The input the snapshot holds the state after (none: no snapshot).
    pub(super) covered: Option<u64>,
    /// The document's last input.
    pub(super) last: u64,
    /// The plugin is in checkpoint mode and the journal holds nothing after the snapshot.
    pub(super) checkpoint_only: bool,
}

impl<'a> Span<'a> {
    pub(super) fn of(
        config: &Config,
        plugin: &'a str,
        document: &'a str,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<Span<'a>, ReplayError> {
        let covered = snapshot.map(|s| s.continuity.map_or(0, |c| c.inputs));
        let last_entry = entries.last().map(|e| e.seq);
        let last = match (covered, last_entry) {
            (None, None) => {
                return Err(ReplayError::NoSuchDocument {
                    plugin: plugin.to_owned(),
                    document: document.to_owned(),
                    data: config.data.clone(),
                });
            }
            (c, e) => c.unwrap_or(0).max(e.unwrap_or(0)),
        };
        let checkpoint_only = config.durability_for(plugin) == Durability::Checkpoint
            && last_entry.is_none_or(|e| covered.is_some_and(|c| e <= c));
        Ok(Span {
            plugin,
            document,
            covered,
            last,
            checkpoint_only,
        })
    }

    /// The input to show for `--until`.
    pub(super) fn check(&self, until: Option<u64>) -> Result<u64, ReplayError> {
        let at = until.unwrap_or(self.last);
        // Without a snapshot the document begins with its journaled `open`, input 1.
        let earliest = self.covered.unwrap_or(1);
        let (plugin, document) = (self.plugin.to_owned(), self.document.to_owned());
        if self.checkpoint_only && at != earliest {
            return Err(ReplayError::CheckpointOnly {
                plugin,
                document,
                until: at,
                covered: earliest,
            });
        }
        if at < earliest && self.covered.is_none() {
            return Err(ReplayError::BeforeOpen {
                plugin,
                document,
                until: at,
            });
        }
        if at < earliest {
            return Err(ReplayError::Trimmed {
                plugin,
                document,
                until: at,
                earliest,
            });
        }
        if at > self.last {
            return Err(ReplayError::BeyondEnd {
                plugin,
                document,
                until: at,
                last: self.last,
            });
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use wasmroom_wire::journal::Record;

    use super::*;
    use crate::store::Continuity;

    fn span(covered: Option<u64>, last: u64, checkpoint_only: bool) -> Span<'static> {
        Span {
            plugin: "chat",
            document: "doc",
            covered,
            last,
            checkpoint_only,
        }
    }

    #[test]
    fn until_lies_between_the_snapshot_and_the_last_input() {
        let s = span(Some(5), 9, false);
        assert_eq!(s.check(None).unwrap(), 9);
        assert_eq!(s.check(Some(5)).unwrap(), 5);
        assert_eq!(
            s.check(Some(4)).unwrap_err().to_string(),
            "chat/doc at input 4: the journal before input 5 was trimmed by a checkpoint; the earliest point is 5"
        );
        assert!(matches!(
            s.check(Some(10)),
            Err(ReplayError::BeyondEnd { last: 9, .. })
        ));
        let fresh = span(None, 3, false);
        assert_eq!(fresh.check(Some(1)).unwrap(), 1);
        assert!(matches!(
            fresh.check(Some(0)),
            Err(ReplayError::BeforeOpen { .. })
        ));
        let only = span(Some(7), 7, true);
        assert_eq!(only.check(None).unwrap(), 7);
        assert!(matches!(
            only.check(Some(6)),
            Err(ReplayError::CheckpointOnly { covered: 7, .. })
        ));
    }

    fn snapshot(inputs: u64) -> Snapshot {
        Snapshot {
            plugin_version: "v1".into(),
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
        }
    }

    fn entries(seqs: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        seqs.map(|seq| Entry {
            plugin: "chat".into(),
            document: "doc".into(),
            incarnation: 1,
            seq,
            clock_ms: seq,
            record: Record::Timer { id: 1 },
        })
        .collect()
    }

    #[test]
    fn a_span_runs_from_the_snapshot_to_the_last_input() {
        let journaled: Config =
            toml::from_str("[plugin.chat]\ndurability = \"journal\"\n").unwrap();
        let checkpointed = Config::default();
        let of = |config: &Config, snap: Option<u64>, seqs| {
            let snapshot = snap.map(snapshot);
            Span::of(config, "chat", "doc", snapshot.as_ref(), &entries(seqs))
        };
        let s = of(&journaled, Some(4), 1..=9).unwrap();
        assert_eq!((s.covered, s.last, s.checkpoint_only), (Some(4), 9, false));
        // Entries the snapshot covers (a segment not trimmed yet) add nothing.
        let s = of(&journaled, Some(12), 1..=9).unwrap();
        assert_eq!(
            (s.covered, s.last, s.checkpoint_only),
            (Some(12), 12, false)
        );
        let s = of(&checkpointed, Some(12), 1..=9).unwrap();
        assert!(s.checkpoint_only);
        // A plugin back in checkpoint mode still has its journal's entries.
        let s = of(&checkpointed, Some(4), 1..=9).unwrap();
        assert_eq!((s.last, s.checkpoint_only), (9, false));
        let s = of(&journaled, None, 1..=3).unwrap();
        assert_eq!((s.covered, s.last), (None, 3));
        #[allow(clippy::reversed_empty_ranges)]
        let none = of(&journaled, None, 1..=0);
        assert!(matches!(none, Err(ReplayError::NoSuchDocument { .. })));
    }
}
