//! `--static DIR`: serves a folder (a web app's built files) on the lane ports, for every
//! `GET`/`HEAD` that no other route takes. `/` and directories serve their `index.html`.
//!
//! Files are read on tokio's blocking pool, never on the lane. A path that leaves the
//! folder (`..`, a symlink pointing outside) or names a hidden file (`.git/...`) is
//! answered 404, like a missing file. A client has [`WRITE_TIMEOUT`] to take a file, and
//! a file on its way out is held in the lane's byte budget (503 when it is spent).

use std::path::{Component, Path, PathBuf};

use percent_encoding::percent_decode_str;
use tokio::net::TcpStream;

use crate::net::budget::Charge;
use crate::net::http::{self, RequestHead};

/// Largest file served (a bundled app is far smaller; this bounds memory per request).
const MAX_FILE_BYTES: u64 = 16 << 20;

/// How long a client may take to receive a file.
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Answers `head` from `root`, or 404/405; the file's bytes are held in `charge`.
pub async fn serve(stream: &mut TcpStream, root: &Path, head: &RequestHead, mut charge: Charge) {
    if head.method != "GET" && head.method != "HEAD" {
        let _ = http::write_text(stream, 405, "static files answer GET and HEAD").await;
        return;
    }
    let Some(relative) = relative_path(&head.path) else {
        let _ = http::write_text(stream, 404, "not found").await;
        return;
    };
    let root = root.to_owned();
    let Ok(Some((path, size))) =
        tokio::task::spawn_blocking(move || resolve_inside(&root, &relative)).await
    else {
        let _ = http::write_text(stream, 404, "not found").await;
        return;
    };
    if !charge.resize(size as usize) {
        let _ = http::write_text(stream, 503, "server busy; retry later").await;
        return;
    }
    let read = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).ok();
        bytes.map(|b| (path, b))
    })
    .await;
    match read {
        Ok(Some((path, bytes))) => {
            let kind = mime_guess::from_path(&path).first_or_octet_stream();
            let headers = [
                ("content-type".to_owned(), kind.essence_str().to_owned()),
                // The app is rebuilt in place: let browsers check for a newer one.
                ("cache-control".to_owned(), "no-cache".to_owned()),
            ];
            let _ = if head.method == "HEAD" {
                http::write_head(stream, 200, &headers, bytes.len()).await
            } else {
                http::write_response_within(WRITE_TIMEOUT, stream, 200, &headers, &bytes).await
            };
        }
        _ => {
            let _ = http::write_text(stream, 404, "not found").await;
        }
    }
}

/// The request path as a relative file path: percent-decoded, only normal components.
fn relative_path(raw: &str) -> Option<PathBuf> {
    let decoded = percent_decode_str(raw).decode_utf8().ok()?;
    let mut out = PathBuf::new();
    for part in decoded.split('/').filter(|p| !p.is_empty()) {
        let mut components = Path::new(part).components();
        match (components.next(), components.next()) {
            // Hidden files (`.git`, `.env`) are not part of a web app.
            (Some(Component::Normal(c)), None) if !part.starts_with('.') => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

/// The file `relative` names under `root` (a directory's `index.html`) and its size, if
/// it stays inside `root` and is small enough to serve.
fn resolve_inside(root: &Path, relative: &Path) -> Option<(PathBuf, u64)> {
    let root = root.canonicalize().ok()?;
    let mut path = root.join(relative).canonicalize().ok()?;
    if path.is_dir() {
        path = path.join("index.html").canonicalize().ok()?;
    }
    if !path.starts_with(&root) {
        return None;
    }
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return None;
    }
    Some((path, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        assert_eq!(relative_path("/"), Some(PathBuf::new()));
        assert_eq!(
            relative_path("/assets/app%201.js"),
            Some(PathBuf::from("assets/app 1.js"))
        );
        assert_eq!(relative_path("/../etc/passwd"), None);
        assert_eq!(relative_path("/a/%2E%2E/%2E%2E/etc"), None);
        assert_eq!(relative_path("/./a"), None);
        assert_eq!(relative_path("/.git/config"), None);
        assert_eq!(relative_path("/a/.env"), None);
    }

    #[test]
    fn reads_files_and_index_but_not_outside() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site");
        std::fs::create_dir_all(site.join("sub")).unwrap();
        std::fs::write(site.join("index.html"), "home").unwrap();
        std::fs::write(site.join("sub/app.js"), "js").unwrap();
        std::fs::write(dir.path().join("secret"), "no").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("secret"), site.join("link")).unwrap();
        let read = |p: &str| {
            resolve_inside(&site, Path::new(p)).map(|(path, _)| std::fs::read(path).unwrap())
        };
        assert_eq!(read(""), Some(b"home".to_vec()));
        assert_eq!(read("sub/app.js"), Some(b"js".to_vec()));
        assert_eq!(read("missing"), None);
        #[cfg(unix)]
        assert_eq!(read("link"), None);
    }
}
