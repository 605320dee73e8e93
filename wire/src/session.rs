//! The session subprotocol `wasmroom.session.v1` (docs/sessions.md): the prefixes that
//! number data messages, the control frames (`!ack`, `!hello`), and the query parameters
//! of a resume. Pure functions over what a client sent or what the host will send.

/// The subprotocol a client offers to get a session.
pub const SUBPROTOCOL: &str = "wasmroom.session.v1";

/// Bytes before a binary data message's payload: its sequence number, big-endian.
pub const BINARY_PREFIX: usize = 8;

/// A text frame a session client sent, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientText {
    /// Data message `seq`; the payload starts at byte `start` of the frame.
    Data { seq: u64, start: usize },
    /// The client has every data message up to this one.
    Ack(u64),
}

/// Why a session frame is refused (the connection is closed with 1002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("malformed session frame")]
    Malformed,
}

/// Reads a text frame of a session client.
pub fn client_text(text: &str) -> Result<ClientText, FrameError> {
    if let Some(rest) = text.strip_prefix("!ack ") {
        return number(rest).map(ClientText::Ack);
    }
    let colon = text.find(':').ok_or(FrameError::Malformed)?;
    let seq = number(&text[..colon])?;
    if seq == 0 {
        return Err(FrameError::Malformed);
    }
    Ok(ClientText::Data {
        seq,
        start: colon + 1,
    })
}

/// Reads a binary frame of a session client: its sequence number (the payload follows
/// [`BINARY_PREFIX`] bytes).
pub fn client_binary(bytes: &[u8]) -> Result<u64, FrameError> {
    let prefix: [u8; BINARY_PREFIX] = bytes
        .get(..BINARY_PREFIX)
        .and_then(|p| p.try_into().ok())
        .ok_or(FrameError::Malformed)?;
    match u64::from_be_bytes(prefix) {
        0 => Err(FrameError::Malformed),
        seq => Ok(seq),
    }
}

/// A decimal number without sign or leading zeros (`0` itself allowed).
fn number(digits: &str) -> Result<u64, FrameError> {
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !ok {
        return Err(FrameError::Malformed);
    }
    digits.parse().map_err(|_| FrameError::Malformed)
}

/// What goes before a data message's payload: `<seq>:` on a text frame, `seq` as 8 bytes
/// big-endian on a binary one. On the stack: a host writes it straight before the
/// payload, without a framed copy per recipient.
#[derive(Debug, Clone, Copy)]
pub struct DataPrefix {
    bytes: [u8; 21],
    len: u8,
}

impl DataPrefix {
    /// The prefix of data message `seq` in a text (or binary) frame.
    pub fn new(seq: u64, binary: bool) -> DataPrefix {
        let mut bytes = [0u8; 21];
        if binary {
            bytes[..BINARY_PREFIX].copy_from_slice(&seq.to_be_bytes());
            return DataPrefix {
                bytes,
                len: BINARY_PREFIX as u8,
            };
        }
        // Decimal digits, most significant first, then the colon.
        let mut digits = [0u8; 20];
        let (mut n, mut at) = (seq, digits.len());
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let len = digits.len() - at;
        bytes[..len].copy_from_slice(&digits[at..]);
        bytes[len] = b':';
        DataPrefix {
            bytes,
            len: len as u8 + 1,
        }
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Data message `seq` as a text frame's payload.
pub fn text_data(seq: u64, text: &str) -> String {
    let mut framed = String::with_capacity(text.len() + 21);
    framed.push_str(&seq.to_string());
    framed.push(':');
    framed.push_str(text);
    framed
}

/// Data message `seq` as a binary frame's payload.
pub fn binary_data(seq: u64, bytes: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(bytes.len() + BINARY_PREFIX);
    framed.extend_from_slice(&seq.to_be_bytes());
    framed.extend_from_slice(bytes);
    framed
}

/// The acknowledgement of every data message up to `seq`.
pub fn ack(seq: u64) -> String {
    format!("!ack {seq}")
}

/// The first frame of a session's socket.
pub fn hello(id: &str, resumed: bool) -> String {
    format!("!hello {id} {}", if resumed { "resumed" } else { "new" })
}

/// A resume asked for in a query: the session's id and the last data message the client
/// received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub session: String,
    pub last: u64,
}

/// Takes `session` and `last` out of a query string (without its `?`): the resume they
/// ask for (both present and well formed) and the query without them, which is what the
/// consumer sees.
pub fn take_resume(query: &str) -> (Option<Resume>, String) {
    let mut session = None;
    let mut last = None;
    let mut rest: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if let Some(v) = pair.strip_prefix("session=") {
            session = Some(v);
        } else if let Some(v) = pair.strip_prefix("last=") {
            last = number(v).ok();
        } else {
            rest.push(pair);
        }
    }
    let resume = match (session, last) {
        (Some(s), Some(last)) if is_session_id(s) => Some(Resume {
            session: s.to_owned(),
            last,
        }),
        _ => None,
    };
    (resume, rest.join("&"))
}

/// Whether `id` looks like an id the host gives: 32 lowercase hex digits.
pub fn is_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frames_read_back() {
        let framed = text_data(42, "héllo: world");
        let Ok(ClientText::Data { seq, start }) = client_text(&framed) else {
            panic!("data expected");
        };
        assert_eq!((seq, &framed[start..]), (42, "héllo: world"));
        assert_eq!(client_text("!ack 7"), Ok(ClientText::Ack(7)));
        assert_eq!(client_text("!ack 0"), Ok(ClientText::Ack(0)));
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in [
            "",
            "hello",
            ":x",
            "0:x",
            "01:x",
            "-1:x",
            "1x:y",
            "!ack",
            "!ack 01",
            "!ack x",
            "99999999999999999999:x",
        ] {
            assert_eq!(client_text(bad), Err(FrameError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn binary_frames_read_back() {
        let framed = binary_data(300, b"\x00\x01");
        assert_eq!(client_binary(&framed), Ok(300));
        assert_eq!(&framed[BINARY_PREFIX..], b"\x00\x01");
        assert_eq!(client_binary(&[0; 7]), Err(FrameError::Malformed));
        assert_eq!(client_binary(&[0; 8]), Err(FrameError::Malformed));
    }

    #[test]
    fn resume_is_taken_out_of_the_query() {
        let id = "0123456789abcdef0123456789abcdef";
        let (resume, rest) = take_resume(&format!("a=1&session={id}&last=5&b=2"));
        assert_eq!(
            resume,
            Some(Resume {
                session: id.to_owned(),
                last: 5
            })
        );
        assert_eq!(rest, "a=1&b=2");
        assert_eq!(take_resume("session=nothex&last=1").0, None);
        assert_eq!(take_resume(&format!("session={id}")).0, None);
        assert_eq!(take_resume("a=1"), (None, "a=1".to_owned()));
    }

    #[test]
    fn data_prefixes_are_what_the_framed_payloads_start_with() {
        for seq in [0, 1, 9, 10, 12_345, u64::MAX] {
            let text = text_data(seq, "x");
            assert_eq!(
                DataPrefix::new(seq, false).as_bytes(),
                &text.as_bytes()[..text.len() - 1]
            );
            let binary = binary_data(seq, b"x");
            assert_eq!(
                DataPrefix::new(seq, true).as_bytes(),
                &binary[..BINARY_PREFIX]
            );
        }
    }
}
