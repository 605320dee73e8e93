//! The paths wasmroom answers, and how a path names a plugin and a document.
//!
//! `/ws/{plugin}/{document}` and `/docs/{plugin}/{document}[/...]` reach a document; the
//! rest are the server's own (health, readiness, stats, plugins, metrics). Document ids
//! are percent-decoded here, once, so every later step (owner lane, storage file name,
//! the consumer) sees the same id.

use percent_encoding::percent_decode_str;

/// The longest document id accepted, in bytes after percent-decoding.
pub const MAX_DOCUMENT_ID_BYTES: usize = 256;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/metrics`: every metric of the process, OpenMetrics text.
    Metrics,
    /// `/ws/{plugin}/{document}`: a WebSocket to a document.
    Socket { plugin: String, document: String },
    /// `/docs/{plugin}/{document}[/...]`: an HTTP request to a document.
    Document { plugin: String, document: String },
    /// `/healthz`: liveness.
    Health,
    /// `/stats`: this lane's document and connection counts, as JSON.
    Stats,
    /// `/readyz`: ready to serve (not shutting down).
    Ready,
    /// `/plugins`: every plugin's versions, live documents and last error, as JSON.
    Plugins,
}

/// Why a path does not route. The message is sent to the client as the 4xx body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No route for this path: 404.
    #[error("no such route: expected /ws/{{plugin}}/{{document}} or /docs/{{plugin}}/{{document}}")]
    NotFound,
    /// The plugin name is not a valid file stem: 404 (no such plugin can exist).
    #[error("invalid plugin name: use letters, digits, '-' and '_'")]
    BadPlugin,
    /// The document id is invalid: 400.
    #[error("invalid document id: {0}")]
    BadDocument(&'static str),
}

/// Maps a raw request path to a [`Route`].
pub fn route(path: &str) -> Result<Route, RouteError> {
    match path {
        "/healthz" => return Ok(Route::Health),
        "/stats" => return Ok(Route::Stats),
        "/readyz" => return Ok(Route::Ready),
        "/plugins" => return Ok(Route::Plugins),
        "/metrics" => return Ok(Route::Metrics),
        _ => {}
    }
    let (kind, rest) = if let Some(rest) = path.strip_prefix("/ws/") {
        ("ws", rest)
    } else if let Some(rest) = path.strip_prefix("/docs/") {
        ("docs", rest)
    } else {
        return Err(RouteError::NotFound);
    };
    let (plugin, rest) = rest.split_once('/').ok_or(RouteError::NotFound)?;
    if !valid_plugin_name(plugin) {
        return Err(RouteError::BadPlugin);
    }
    let plugin = plugin.to_owned();
    match kind {
        "ws" => Ok(Route::Socket {
            plugin,
            document: decode_document_id(rest)?,
        }),
        _ => {
            // `/docs/{plugin}/{doc}/anything` reaches the document; the consumer sees the
            // whole path and routes the rest itself.
            let raw_doc = rest.split_once('/').map_or(rest, |(doc, _)| doc);
            Ok(Route::Document {
                plugin,
                document: decode_document_id(raw_doc)?,
            })
        }
    }
}

/// Plugin names are file stems: ASCII letters, digits, `-` and `_`, at most 64 bytes.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Percent-decodes and validates a document id.
///
/// A document id is 1 to [`MAX_DOCUMENT_ID_BYTES`] bytes of UTF-8 after decoding, with no
/// control characters, no `/` and no `*`. Everything else (spaces, `:`, `.`, `@`, non-ASCII
/// letters) is allowed, so ids from other systems (UUIDs, `user:42`, `Übung 3`) work as is.
///
/// `*` is refused because an access token's document claim reads a trailing `*` as a
/// prefix pattern: a backend that mints `"doc": id` for a room a user named `acme-*`
/// would otherwise hand out a token for every document starting with `acme-`.
pub fn decode_document_id(raw: &str) -> Result<String, RouteError> {
    if raw.is_empty() {
        return Err(RouteError::BadDocument("empty"));
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| RouteError::BadDocument("not UTF-8 after percent-decoding"))?;
    if decoded.is_empty() {
        return Err(RouteError::BadDocument("empty"));
    }
    if decoded.len() > MAX_DOCUMENT_ID_BYTES {
        return Err(RouteError::BadDocument("longer than 256 bytes"));
    }
    if decoded.contains('/') {
        return Err(RouteError::BadDocument("contains '/'"));
    }
    if decoded.contains('*') {
        return Err(RouteError::BadDocument(
            "contains '*', which access tokens read as a pattern",
        ));
    }
    if decoded.chars().any(char::is_control) {
        return Err(RouteError::BadDocument("contains control characters"));
    }
    if decoded == "." || decoded == ".." {
        return Err(RouteError::BadDocument("'.' and '..' are reserved"));
    }
    Ok(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_sockets_documents_and_health() {
        assert_eq!(
            route("/ws/chat/room-1"),
            Ok(Route::Socket {
                plugin: "chat".into(),
                document: "room-1".into()
            })
        );
        assert_eq!(
            route("/docs/chat/room%201/history"),
            Ok(Route::Document {
                plugin: "chat".into(),
                document: "room 1".into()
            })
        );
        assert_eq!(route("/healthz"), Ok(Route::Health));
        assert_eq!(route("/"), Err(RouteError::NotFound));
        assert_eq!(route("/ws/chat"), Err(RouteError::NotFound));
        assert_eq!(route("/ws/../x"), Err(RouteError::BadPlugin));
        assert!(matches!(
            route("/docs/chat/acme-%2A/history"),
            Err(RouteError::BadDocument(_))
        ));
    }

    #[test]
    fn document_ids_are_decoded_and_validated() {
        assert_eq!(decode_document_id("%C3%9Cbung%203").unwrap(), "Übung 3");
        assert_eq!(decode_document_id("user:42").unwrap(), "user:42");
        assert!(decode_document_id("").is_err());
        assert!(decode_document_id("a%2Fb").is_err());
        assert!(decode_document_id("%00").is_err());
        assert!(decode_document_id("%FF").is_err());
        assert!(decode_document_id("..").is_err());
        // `*` is a token pattern, never part of an id, however it is written.
        for raw in ["*", "acme-*", "%2A", "a%2ab"] {
            assert_eq!(
                decode_document_id(raw),
                Err(RouteError::BadDocument(
                    "contains '*', which access tokens read as a pattern"
                )),
                "{raw}"
            );
        }
        assert!(decode_document_id(&"x".repeat(256)).is_ok());
        assert!(decode_document_id(&"x".repeat(257)).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_path_routes_or_fails_cleanly(path in "\\PC*") {
                let _ = route(&path);
            }

            #[test]
            fn decoded_ids_keep_the_documented_rules(raw in "[ -~]{0,300}") {
                if let Ok(id) = decode_document_id(&raw) {
                    prop_assert!(!id.is_empty() && id.len() <= MAX_DOCUMENT_ID_BYTES);
                    prop_assert!(!id.contains('/') && !id.contains('*'));
                    prop_assert!(!id.chars().any(char::is_control));
                }
            }
        }
    }
}
