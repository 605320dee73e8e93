//! The plugin settings behind `wasmroom:consumer/context` (added in 0.1.1; the host
//! functions are in [`crate::guest::host`]): `[plugin.NAME.settings]` live in one cell
//! per plugin that every document of the plugin shares, so a config reload (SIGHUP)
//! reaches live documents at their next call.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use crate::config::{Config, ConfigError};

/// One plugin's settings, as of the last (re)load of the config.
#[derive(Debug, Default)]
pub struct PluginSettings(RwLock<Arc<BTreeMap<String, String>>>);

impl PluginSettings {
    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn set(&self, values: BTreeMap<String, String>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(values);
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
}
