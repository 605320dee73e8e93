//! The WIT contract this wasmroom speaks, as the file any language's tooling reads
//! (`wasmroom wit DIR`, and the `wit/` folder of every project `wasmroom new` writes).

use std::path::{Path, PathBuf};

use super::NewError;

/// `wit/consumer.wit`, the file the host's bindings are generated from.
pub const WIT: &str = include_str!("../../../wit/consumer.wit");

/// Its file name inside a WIT folder.
pub const WIT_FILE: &str = "consumer.wit";

/// Writes [`WIT`] as `dir/consumer.wit` (creating `dir`), replacing an older copy: the
/// folder then holds the package `wasmroom:consumer` a bindings generator reads.
pub fn write_wit(dir: &Path) -> Result<PathBuf, NewError> {
    let path = dir.join(WIT_FILE);
    let io = |source| NewError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(&path, WIT).map_err(io)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_wit_is_the_package_the_host_speaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_wit(&dir.path().join("wit")).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains("package wasmroom:consumer@"));
        assert!(text.contains("world room"));
        // Written again over an older copy: no refusal.
        write_wit(&dir.path().join("wit")).unwrap();
    }
}
