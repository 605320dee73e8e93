//! Routes and document ids. The input is a path, as text (invalid UTF-8 replaced).
//!
//! Beyond "no panic": a path that routes to a document gives a valid id that survives
//! re-encoding and never contains `*`, however the path spelled it (`checked_route`); and
//! the input taken as an id, percent-encoded into a `/ws/` and a `/docs/` path, routes
//! back to itself exactly when it keeps the id rules (`*` among what they refuse: an
//! access token's document claim reads it as a pattern), and is refused otherwise.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmroom_fuzz::{checked_route, encode_id, valid_document_id};
use wasmroom_wire::route::{Route, route};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    checked_route(&text);

    let id = text.as_ref();
    for minimal in [false, true] {
        let encoded = encode_id(id, minimal);
        let (plugin, document) = ("chat".to_owned(), id.to_owned());
        let socket = route(&format!("/ws/chat/{encoded}"));
        let docs = route(&format!("/docs/chat/{encoded}/history"));
        if valid_document_id(id) {
            let expected = Route::Socket { plugin, document };
            assert_eq!(socket, Ok(expected.clone()), "{encoded:?}");
            let Route::Socket { plugin, document } = expected else {
                unreachable!()
            };
            assert_eq!(
                docs,
                Ok(Route::Document { plugin, document }),
                "{encoded:?}"
            );
        } else {
            assert!(
                socket.is_err() && docs.is_err(),
                "{encoded:?}: {socket:?} {docs:?}"
            );
        }
    }
});
