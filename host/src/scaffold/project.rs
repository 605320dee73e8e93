//! A project as files: templates filled with the plugin's name, written into a directory
//! that must not exist yet or be empty (nothing of the user's is ever overwritten).

use std::path::{Path, PathBuf};

use super::NewError;

/// One file of a project.
#[derive(Debug, Clone)]
pub struct File {
    /// Relative to the project's directory.
    pub path: PathBuf,
    pub contents: Vec<u8>,
    /// A script the build command runs (mode 755).
    pub executable: bool,
}

impl File {
    pub fn text(path: impl Into<PathBuf>, text: String) -> File {
        File::bytes(path, text.into_bytes())
    }

    pub fn bytes(path: impl Into<PathBuf>, contents: Vec<u8>) -> File {
        File {
            path: path.into(),
            contents,
            executable: false,
        }
    }

    pub fn executable(mut self) -> File {
        self.executable = true;
        self
    }
}

/// `template` with `{{name}}` replaced by the plugin's name and `{{crate}}` by the same
/// name as a Rust identifier (`-` becomes `_`, as in the file cargo writes).
pub(super) fn fill(template: &str, name: &str) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
}

/// Writes `files` under `dir`, which must not exist or be an empty directory. The check
/// comes first: a refused directory is left as it was.
pub(super) fn write_new(dir: &Path, files: &[File]) -> Result<(), NewError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| NewError::Io { path, source }
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(NewError::NotEmpty(dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(NewError::NotADirectory(dir.to_path_buf()));
        }
        Err(e) => return Err(io(dir)(e)),
    }
    for file in files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, &file.contents).map_err(io(&path))?;
        if file.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(io(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Vec<File> {
        vec![
            File::text("sub/a.txt", "a".into()),
            File::text("run.sh", "#!/bin/sh\n".into()).executable(),
        ]
    }

    #[test]
    fn a_non_empty_directory_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mine.txt"), "keep").unwrap();
        let err = write_new(dir.path(), &one()).unwrap_err();
        assert!(matches!(err, NewError::NotEmpty(_)), "{err}");
        assert!(!dir.path().join("sub").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("mine.txt")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn a_file_in_the_way_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            write_new(&file, &one()),
            Err(NewError::NotADirectory(_))
        ));
    }

    #[test]
    fn new_and_empty_directories_get_the_files_scripts_executable() {
        use std::os::unix::fs::PermissionsExt;
        let (parent, empty) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for target in [parent.path().join("new/deeper"), empty.path().to_path_buf()] {
            write_new(&target, &one()).unwrap();
            assert_eq!(
                std::fs::read_to_string(target.join("sub/a.txt")).unwrap(),
                "a"
            );
            let mode = std::fs::metadata(target.join("run.sh"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o111, 0o111);
        }
    }

    #[test]
    fn fill_names_the_plugin_and_the_crate() {
        assert_eq!(fill("{{name}} {{crate}}", "my-room"), "my-room my_room");
    }
}
