//! The session subprotocol's frames and resume query (`wire/src/session.rs`), as a client
//! sends them. The input: the first byte picks what the rest is (a text frame, a binary
//! frame, or a query string).
//!
//! Beyond "no panic": a text frame read as data message `seq` is exactly what the host
//! would write for that message (`text_data(seq, payload)`), so one frame has one
//! reading; an ack reads back as `ack(n)`; a binary data frame is `binary_data(seq,
//! payload)`; no sequence number is 0. A resume taken out of a query names a well-formed
//! session id, and the query the consumer sees keeps no `session=` or `last=` pair.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmroom_wire::session::{
    BINARY_PREFIX, ClientText, ack, binary_data, client_binary, client_text, is_session_id,
    take_resume, text_data,
};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            match client_text(&text) {
                Ok(ClientText::Data { seq, start }) => {
                    assert!(seq > 0);
                    assert!(text.is_char_boundary(start));
                    assert_eq!(text_data(seq, &text[start..]), text);
                }
                Ok(ClientText::Ack(n)) => assert_eq!(ack(n), text),
                Err(_) => {}
            }
        }
        1 => {
            if let Ok(seq) = client_binary(rest) {
                assert!(seq > 0);
                assert_eq!(binary_data(seq, &rest[BINARY_PREFIX..]), rest);
            }
        }
        _ => {
            let query = String::from_utf8_lossy(rest);
            let (resume, left) = take_resume(&query);
            if let Some(resume) = resume {
                assert!(is_session_id(&resume.session));
            }
            assert!(
                left.split('&')
                    .all(|p| !p.starts_with("session=") && !p.starts_with("last="))
            );
        }
    }
});
