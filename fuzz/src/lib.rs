//! Checks that more than one fuzz target makes: what `route` promises of the routes it
//! accepts. Document ids name storage files and are hashed onto nginx's ring, so an id
//! that routes must keep the documented rules whatever the path was. Also the rule for
//! a `Sec-WebSocket-Key`, written out again.

use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use wasmroom_wire::route::{MAX_DOCUMENT_ID_BYTES, Route, route, valid_plugin_name};

/// The rules of `route::decode_document_id`, written out again independently: 1 to 256
/// bytes, no '/', no '*' (an access token's document claim reads it as a pattern), no
/// control characters, not "." or "..".
pub fn valid_document_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DOCUMENT_ID_BYTES
        && !id.contains('/')
        && !id.contains('*')
        && !id.chars().any(char::is_control)
        && id != "."
        && id != ".."
}

/// What a browser's `encodeURIComponent` leaves alone is wider than this; escaping only
/// what a path cannot carry as is checks that ids are not decoded twice or trimmed.
const PATH_UNSAFE: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'/').add(b'?').add(b'#');

/// `id` percent-encoded for a path: every non-alphanumeric byte escaped, or (`minimal`)
/// only the bytes a path cannot carry.
pub fn encode_id(id: &str, minimal: bool) -> String {
    let set = if minimal {
        PATH_UNSAFE
    } else {
        NON_ALPHANUMERIC
    };
    utf8_percent_encode(id, set).to_string()
}

/// Routes `path`; a document route must carry a valid plugin name and a valid id, and
/// routing that id again, encoded, must give it back unchanged.
pub fn checked_route(path: &str) -> Option<Route> {
    let found = route(path).ok()?;
    if let Route::Socket { plugin, document } | Route::Document { plugin, document } = &found {
        assert!(valid_plugin_name(plugin), "plugin {plugin:?} of {path:?}");
        assert!(valid_document_id(document), "id {document:?} of {path:?}");
        // However the path spelled it (`*`, `%2A`, `%2a`), no id is a token pattern.
        assert!(!document.contains('*'), "id {document:?} of {path:?}");
        for minimal in [false, true] {
            let again = format!("/ws/{plugin}/{}", encode_id(document, minimal));
            let expected = Route::Socket {
                plugin: plugin.clone(),
                document: document.clone(),
            };
            assert_eq!(route(&again), Ok(expected), "{again:?} from {path:?}");
        }
    }
    Some(found)
}

/// The rule of `websocket::check_key`, written out again independently: base64 of 16
/// bytes is 21 characters of 6 bits, one that carries the last 2 bits (its low 4 bits
/// zero), then `==`.
pub fn valid_websocket_key(key: &str) -> bool {
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let key = key.as_bytes();
    key.len() == 24
        && key[..21].iter().all(|&c| sextet(c).is_some())
        && sextet(key[21]).is_some_and(|v| v & 0x0F == 0)
        && &key[22..] == b"=="
}
