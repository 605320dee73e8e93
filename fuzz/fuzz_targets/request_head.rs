//! An HTTP request head as a client sends it, then its path routed.
//!
//! Beyond "no panic": the bytes after the head are the input's tail; the path carries no
//! query; every strict prefix of a complete head is "incomplete, read more" (the host
//! parses again after each read, so a head split across reads must not be refused); a
//! routed document id keeps the id rules and survives re-encoding (see `checked_route`);
//! `Sec-WebSocket-Key` passes exactly when it is base64 of 16 bytes (see
//! `valid_websocket_key`), and the key returned is the header's value, trimmed.

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use wasmroom_fuzz::{checked_route, valid_websocket_key};
use wasmroom_wire::head::{client_address, parse_head};
use wasmroom_wire::websocket::{KeyError, check_key};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = parse_head(data) else {
        return;
    };
    assert!(data.ends_with(&head.rest));
    assert!(!head.path.contains('?'), "{:?}", head.path);
    let consumed = data.len() - head.rest.len();
    for cut in [consumed - 1, consumed / 2] {
        assert!(
            matches!(parse_head(&data[..cut]), Ok(None)),
            "a prefix of {cut} bytes of a {consumed}-byte head is not incomplete"
        );
    }
    let _ = head.subprotocols();
    let _ = head.header_has_token("connection", "upgrade");
    let peer = SocketAddr::from(([127, 0, 0, 1], 9));
    let _ = client_address(&head, peer, true);
    checked_route(&head.path);
    let value = head.header("sec-websocket-key");
    match check_key(value) {
        Ok(key) => {
            assert!(valid_websocket_key(key), "{key:?} passed");
            assert_eq!(Some(key), value.map(|v| v.trim_matches([' ', '\t'])));
        }
        Err(KeyError::Missing) => assert!(value.is_none()),
        Err(why) => {
            let trimmed = value.expect("a value").trim_matches([' ', '\t']);
            assert!(!valid_websocket_key(trimmed), "{trimmed:?}: {why}");
        }
    }
});
