//! Journal mode: the plugin settings a document's consumer sees (`context.setting`) are
//! one of its inputs. A change (a SIGHUP, another host's config) is journaled as a
//! `Settings` entry before the next input, a snapshot records the settings it was taken
//! with (format version 5) and a new document's `open` the ones it started with; a
//! replay sees exactly those ([`DocumentSettings::pin`]), whatever the config says when
//! it runs, and afterwards the document goes on with the config's, journaling them if
//! they differ.

use std::time::Instant;

use wasmroom_wire::journal::Record;

use crate::document::live::Document;
use crate::guest::CallStart;
use crate::guest::context::DocumentSettings;

impl Document {
    /// The next input starts at `started`; a settings change since the last one is
    /// journaled first (an entry of its own, with the number before the input's).
    pub(super) fn next_input(&mut self, started: Instant) -> CallStart {
        if self.journaled
            && !self.replaying
            && let Some(settings) = self.settings_mut().and_then(|s| s.changed())
        {
            let start = self.lineage.entry(self.lineage.clock_ms());
            tracing::debug!(plugin = %self.plugin.name, doc = %self.id, seq = self.lineage.inputs(), "settings changed: journaled before the next input");
            self.journal(start, || Record::Settings { settings });
        }
        self.lineage.input(started)
    }

    /// The settings the consumer sees now, by name (recorded by snapshots and `open`).
    pub(super) fn settings_now(&self) -> Vec<(String, String)> {
        self.instance
            .as_ref()
            .map(|i| i.store.data().settings.list())
            .unwrap_or_default()
    }

    /// A replay: the consumer sees `recorded` until [`Self::replay_done`].
    pub(super) fn pin_settings(&mut self, recorded: &[(String, String)]) {
        if let Some(settings) = self.settings_mut() {
            settings.pin(recorded);
        }
    }

    /// The replay is over: the config's settings apply again, journaled before the
    /// next input if they differ from the replayed ones.
    pub(super) fn replay_done(&mut self) {
        if let Some(settings) = self.settings_mut() {
            settings.unpin();
        }
    }

    fn settings_mut(&mut self) -> Option<&mut DocumentSettings> {
        self.instance
            .as_mut()
            .map(|i| &mut i.store.data_mut().settings)
    }
}
