//! `wasmroom check` (and `deploy`): a component loaded as serving it would, with the
//! same engine settings, then its trial run ([`crate::guest::trial`]).

use std::path::{Path, PathBuf};

use crate::guest::engine::{Engines, EpochTicker};
use crate::guest::plugin::{CacheWrite, Plugin, PluginError, Runtimes, load_with};
use crate::guest::trial::{TrialFailure, TrialNotes, trial};

/// Why `wasmroom check` refuses a component.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// It does not load as a plugin (see [`PluginError`]).
    #[error(transparent)]
    Load(#[from] PluginError),
    /// Its exports type-check but its trial run failed: an export traps, or `restore`
    /// refuses the consumer's own snapshot.
    #[error("{path} fails its trial run: {failure}")]
    Trial {
        /// The file.
        path: PathBuf,
        /// The hook, and what happened.
        failure: TrialFailure,
    },
}

/// Loads `path` with a minimal engine, for `wasmroom check`: the same validation as
/// serving it under `config`, without a server, then the trial run
/// ([`crate::guest::trial`]). With `cache` (`{data}/.compiled`, what `serve --data` uses)
/// the compiled artifact is read from there or written there, so the first `serve` with
/// the same engine settings (`[limits]`) does not compile again.
pub fn check(
    path: &Path,
    config: &crate::config::Config,
    cache: Option<&Path>,
) -> Result<(Plugin, TrialNotes), CheckError> {
    // The engines of `config` (an artifact is cached for the engine settings that made
    // it), with a pool of one document.
    let mut config = config.clone();
    config.limits.max_documents = 1;
    let engines = Engines::new(&config).map_err(|e| PluginError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let runtimes = Runtimes::new(engines.clone()).map_err(|e| PluginError::Contract {
        path: path.to_owned(),
        reason: format!("{e:#}"),
    })?;
    let plugin = load_with(&runtimes, path, cache, None, CacheWrite::Before)?
        .expect("no current version to compare with");
    // The deadline of each trial call needs the epoch to move.
    let _ticker = EpochTicker::start(engines).map_err(|e| PluginError::Invalid {
        path: path.to_owned(),
        reason: format!("cannot start the epoch ticker: {e}"),
    })?;
    let notes = trial(&plugin, &config).map_err(|failure| CheckError::Trial {
        path: path.to_owned(),
        failure,
    })?;
    Ok((plugin, notes))
}
