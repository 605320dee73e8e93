//! `wasmroom replay` run on a test server's directories (read only, beside the server or
//! after it died).

use std::path::Path;
use std::process::{Command, Output};

use super::Server;

/// `wasmroom replay ARGS` with `config`, `server`'s data and plugins directories, and no
/// shared store from the environment.
pub fn replay(server: &Server, config: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_wasmroom"))
        .arg("replay")
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(server.data.path())
        .arg("--plugins")
        .arg(server.plugins.path())
        .args(args)
        .env_remove("WASMROOM_STORE")
        .output()?)
}
