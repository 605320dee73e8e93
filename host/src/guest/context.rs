//! The plugin settings behind `wasmroom:consumer/context` (added in 0.1.1; the host
//! functions are in [`crate::guest::host`]): `[plugin.NAME.settings]` live in one cell
//! per plugin that every document of the plugin shares, so a config reload (SIGHUP)
//! reaches live documents at their next call. Each document reads its own copy
//! ([`DocumentSettings`]), taken before a call when the cell has changed: one call sees
//! one set of settings, whenever the SIGHUP comes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::{Config, ConfigError};

type Values = Arc<BTreeMap<String, String>>;

/// One plugin's settings, as of the last (re)load of the config.
#[derive(Debug, Default)]
pub struct PluginSettings {
    values: RwLock<Values>,
    /// Bumped by every (re)load, under the lock; read without it to see whether a copy
    /// is current.
    generation: AtomicU64,
}

impl PluginSettings {
    /// The value of `name`, if set, as of now.
    pub fn get(&self, name: &str) -> Option<String> {
        self.current().1.get(name).cloned()
    }

    fn current(&self) -> (u64, Values) {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        (self.generation.load(Ordering::Acquire), values.clone())
    }

    fn set(&self, values: BTreeMap<String, String>) {
        let mut current = self.values.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(values);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// A document's copy of its plugin's settings, refreshed between calls only.
///
/// In journal mode the copy changes only where the journal says: before an input, when
/// the document journals the new settings ([`DocumentSettings::changed`]), and during a
/// replay, to what the snapshot or a journal entry recorded ([`DocumentSettings::pin`]).
#[derive(Debug)]
pub struct DocumentSettings {
    cell: Arc<PluginSettings>,
    generation: u64,
    values: Values,
    /// Journal mode: never refreshed behind the journal's back.
    journaled: bool,
    /// A replay: the recorded settings, whatever the cell says.
    pinned: bool,
}

/// A generation no cell has: the next look at the cell compares values.
const UNSEEN: u64 = u64::MAX;

impl DocumentSettings {
    /// A copy of `cell` as it is now.
    pub fn new(cell: Arc<PluginSettings>) -> DocumentSettings {
        let (generation, values) = cell.current();
        DocumentSettings {
            cell,
            generation,
            values,
            journaled: false,
            pinned: false,
        }
    }

    /// Journal mode: the copy changes only through [`Self::changed`] and [`Self::pin`].
    pub fn journal(&mut self) {
        self.journaled = true;
    }

    /// Takes the plugin's settings again if they changed (before a call: never during
    /// one), unless the journal decides when.
    pub fn refresh(&mut self) {
        if self.journaled || self.pinned {
            return;
        }
        if self.cell.generation.load(Ordering::Acquire) != self.generation {
            (self.generation, self.values) = self.cell.current();
        }
    }

    /// Journal mode, before an input: the plugin's settings, taken as this copy, if they
    /// differ from it (for the journal to record before the input).
    pub fn changed(&mut self) -> Option<Vec<(String, String)>> {
        if self.pinned || self.cell.generation.load(Ordering::Acquire) == self.generation {
            return None;
        }
        let (generation, values) = self.cell.current();
        self.generation = generation;
        if values == self.values {
            return None;
        }
        self.values = values;
        Some(self.list())
    }

    /// A replay: the settings `recorded` (by a snapshot or a journal entry), until
    /// [`Self::unpin`].
    pub fn pin(&mut self, recorded: &[(String, String)]) {
        self.values = Arc::new(recorded.iter().cloned().collect());
        self.pinned = true;
    }

    /// The replay is over: the next [`Self::changed`] compares the copy with the cell.
    pub fn unpin(&mut self) {
        self.pinned = false;
        self.generation = UNSEEN;
    }

    /// Every setting of this copy, by name.
    pub fn list(&self) -> Vec<(String, String)> {
        self.values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The value of `name` in this copy, if set.
    pub fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }
}

/// Every plugin's settings cell, by plugin name.
#[derive(Debug, Default)]
pub struct SettingsTable {
    by_plugin: RwLock<HashMap<String, Arc<PluginSettings>>>,
}

impl SettingsTable {
    /// The settings `config` gives every plugin.
    pub fn load(config: &Config) -> Result<SettingsTable, ConfigError> {
        let table = SettingsTable::default();
        table.replace(config)?;
        Ok(table)
    }

    /// Reads every plugin's settings from `config` again. All or nothing: on error no
    /// plugin's settings change.
    pub fn replace(&self, config: &Config) -> Result<(), ConfigError> {
        let fresh = config
            .plugin
            .keys()
            .map(|name| Ok((name.clone(), config.settings_for(name)?)))
            .collect::<Result<BTreeMap<_, _>, ConfigError>>()?;
        let cells = self.by_plugin.read().unwrap_or_else(|p| p.into_inner());
        // Plugins that lost their settings keep a cell, emptied.
        for (name, cell) in cells.iter() {
            if !fresh.contains_key(name) {
                cell.set(BTreeMap::new());
            }
        }
        drop(cells);
        for (name, values) in fresh {
            self.for_plugin(&name).set(values);
        }
        Ok(())
    }

    /// `plugin`'s cell (created empty on first use).
    pub fn for_plugin(&self, plugin: &str) -> Arc<PluginSettings> {
        if let Some(cell) = self
            .by_plugin
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(plugin)
        {
            return cell.clone();
        }
        self.by_plugin
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(plugin.to_owned())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_reaches_cells_handed_out_before() {
        let first: Config = toml::from_str("[plugin.chat.settings]\ngreeting = \"hello\"").unwrap();
        let table = SettingsTable::load(&first).unwrap();
        let chat = table.for_plugin("chat");
        let other = table.for_plugin("other");
        assert_eq!(chat.get("greeting").as_deref(), Some("hello"));
        assert_eq!(other.get("greeting"), None);
        let second: Config =
            toml::from_str("[plugin.chat.settings]\ngreeting = \"bonjour\"").unwrap();
        table.replace(&second).unwrap();
        assert_eq!(chat.get("greeting").as_deref(), Some("bonjour"));
        let broken: Config =
            toml::from_str("[plugin.chat.settings]\ngreeting = \"${WASMROOM_TEST_SURELY_UNSET}\"")
                .unwrap();
        assert!(table.replace(&broken).is_err());
        assert_eq!(
            chat.get("greeting").as_deref(),
            Some("bonjour"),
            "a failed reload changes nothing"
        );
        table.replace(&Config::default()).unwrap();
        assert_eq!(chat.get("greeting"), None);
    }

    #[test]
    fn a_documents_copy_changes_only_when_refreshed() {
        let first: Config = toml::from_str("[plugin.chat.settings]\ngreeting = \"hello\"").unwrap();
        let table = SettingsTable::load(&first).unwrap();
        let mut copy = DocumentSettings::new(table.for_plugin("chat"));
        let second: Config =
            toml::from_str("[plugin.chat.settings]\ngreeting = \"bonjour\"").unwrap();
        table.replace(&second).unwrap();
        assert_eq!(
            copy.get("greeting").as_deref(),
            Some("hello"),
            "a reload in the middle of a call changes nothing in it"
        );
        copy.refresh();
        assert_eq!(copy.get("greeting").as_deref(), Some("bonjour"));
        table.replace(&Config::default()).unwrap();
        copy.refresh();
        assert_eq!(copy.get("greeting"), None);
    }
}
