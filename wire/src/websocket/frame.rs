//! WebSocket frames as a server sees them (RFC 6455, section 5): headers of client
//! frames parsed and checked, payloads unmasked in place, server frames encoded
//! unmasked into a buffer. No extensions are negotiated, so the reserved bits must be 0.

/// Opcodes (section 5.2).
pub mod opcode {
    /// A continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text message (UTF-8).
    pub const TEXT: u8 = 0x1;
    /// A binary message.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// Why a client's bytes are not a WebSocket stream this server accepts; each maps to a
/// close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A protocol violation: close 1002.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A frame or message over the size limit: close 1009.
    #[error("message too large")]
    TooLarge,
    /// A text message (or close reason) that is not UTF-8: close 1007.
    #[error("invalid UTF-8 in a text message")]
    BadUtf8,
}

impl FrameError {
    /// The close code and reason to answer with.
    pub fn close(&self) -> (u16, &'static str) {
        match self {
            FrameError::Protocol(_) => (1002, "protocol error"),
            FrameError::TooLarge => (1009, "message too large"),
            FrameError::BadUtf8 => (1007, "invalid UTF-8 in a text message"),
        }
    }
}

/// The header of a client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The final frame of its message.
    pub fin: bool,
    /// Its opcode.
    pub opcode: u8,
    /// The masking key (client frames are always masked).
    pub mask: [u8; 4],
    /// Payload length.
    pub len: u64,
    /// Bytes of the header itself (2 to 14).
    pub header_len: usize,
}

impl Header {
    /// Whether this is a control frame (close, ping, pong).
    pub fn is_control(&self) -> bool {
        self.opcode >= opcode::CLOSE
    }
}

/// Parses the header of a client frame at the start of `buf`: `Ok(None)` while it is
/// incomplete. Data frames longer than `max_len` are refused before their payload
/// arrives.
pub fn parse_header(buf: &[u8], max_len: u64) -> Result<Option<Header>, FrameError> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(FrameError::Protocol(
            "reserved bits set without an extension",
        ));
    }
    let fin = first & 0x80 != 0;
    let opcode = first & 0x0F;
    if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
        return Err(FrameError::Protocol("unknown opcode"));
    }
    if second & 0x80 == 0 {
        return Err(FrameError::Protocol("client frames must be masked"));
    }
    let (len, at) = match second & 0x7F {
        // A length must take the fewest bytes it fits in (section 5.2).
        126 => match buf.get(2..4) {
            Some(b) => match u16::from_be_bytes([b[0], b[1]]) {
                0..126 => return Err(FrameError::Protocol("a 16-bit length below 126")),
                len => (u64::from(len), 4),
            },
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => match u64::from_be_bytes(b.try_into().expect("8 bytes")) {
                0..=0xFFFF => return Err(FrameError::Protocol("a 64-bit length below 65536")),
                len if len >> 63 != 0 => {
                    return Err(FrameError::Protocol("payload length with its top bit set"));
                }
                len => (len, 10),
            },
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let is_control = opcode >= opcode::CLOSE;
    if is_control && (!fin || len > 125) {
        return Err(FrameError::Protocol(
            "control frames must be whole and at most 125 bytes",
        ));
    }
    // Control frames are bounded above; the limit is for messages.
    if !is_control && len > max_len {
        return Err(FrameError::TooLarge);
    }
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: mask.try_into().expect("4 bytes"),
        len,
        header_len: at + 4,
    }))
}

/// Unmasks `payload`, whose first byte is byte `offset` of its frame's payload.
pub fn unmask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = [0u8; 8];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(offset + i) % 4];
    }
    let word = u64::from_ne_bytes(key);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i];
    }
}

/// The header of a server frame (final, unmasked) with `len` payload bytes: the buffer
/// and how many of its bytes are the header (2, 4 or 10).
#[inline] // once per delivery, from the host's outbox
pub fn server_header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = 0x80 | opcode;
    let used = match len {
        n if n < 126 => {
            header[1] = n as u8;
            2
        }
        n if n <= 0xFFFF => {
            header[1] = 126;
            header[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            4
        }
        n => {
            header[1] = 127;
            header[2..10].copy_from_slice(&(n as u64).to_be_bytes());
            10
        }
    };
    (header, used)
}

/// Where the frame that holds byte `offset` of `frames` ends, for server frames (no mask)
/// laid back to back from the start of `frames`. A sender that must stop after a partly
/// written frame uses it to keep the rest of that frame and nothing after it.
///
/// Panics if `frames` does not hold whole headers up to that frame.
pub fn server_frame_end(frames: &[u8], offset: usize) -> usize {
    let mut start = 0;
    loop {
        let (len, header_len) = match frames[start + 1] & 0x7F {
            126 => (
                u16::from_be_bytes([frames[start + 2], frames[start + 3]]) as usize,
                4,
            ),
            127 => (
                u64::from_be_bytes(frames[start + 2..start + 10].try_into().expect("8 bytes"))
                    as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let end = start + header_len + len;
        if end > offset {
            return end;
        }
        start = end;
    }
}

/// Appends a server frame (final, unmasked) to `out`.
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let (header, used) = server_header(opcode, payload.len());
    out.extend_from_slice(&header[..used]);
    out.extend_from_slice(payload);
}

/// The payload of a close frame with `code` and `reason` (cut to fit 125 bytes).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

/// The code and reason of a client's close frame: `None` for an empty one (1005), an
/// error for a code a peer may not send or a reason that is not UTF-8.
pub fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol(
            "a close frame with a one-byte payload",
        )),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(FrameError::Protocol("a close code a peer may not send"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::BadUtf8)?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A masked client frame.
    pub(crate) fn client_frame(fin: bool, op: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | op];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn headers_parse_at_every_length_and_wait_for_more() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 100_000] {
            let frame = client_frame(true, opcode::BINARY, &vec![7; len], [1, 2, 3, 4]);
            let header = parse_header(&frame, 1 << 20).unwrap().unwrap();
            assert_eq!(
                (header.len, header.fin, header.opcode),
                (len as u64, true, 2)
            );
            assert_eq!(header.header_len + len, frame.len());
            for cut in 0..header.header_len {
                assert_eq!(
                    parse_header(&frame[..cut], 1 << 20).unwrap(),
                    None,
                    "{len} {cut}"
                );
            }
        }
    }

    #[test]
    fn bad_headers_are_refused() {
        let ok = client_frame(true, opcode::TEXT, b"x", [0; 4]);
        let mut rsv = ok.clone();
        rsv[0] |= 0x40;
        assert!(matches!(
            parse_header(&rsv, 100),
            Err(FrameError::Protocol(_))
        ));
        let mut unmasked = ok.clone();
        unmasked[1] &= 0x7F;
        assert!(matches!(
            parse_header(&unmasked, 100),
            Err(FrameError::Protocol(_))
        ));
        let mut unknown = ok.clone();
        unknown[0] = 0x83;
        assert!(matches!(
            parse_header(&unknown, 100),
            Err(FrameError::Protocol(_))
        ));
        let fragmented_ping = client_frame(false, opcode::PING, b"", [0; 4]);
        assert!(parse_header(&fragmented_ping, 100).is_err());
        let long_ping = client_frame(true, opcode::PING, &[0; 126], [0; 4]);
        assert!(parse_header(&long_ping, 1000).is_err());
        let big = client_frame(true, opcode::BINARY, &[0; 101], [0; 4]);
        assert_eq!(parse_header(&big, 100), Err(FrameError::TooLarge));
        // Lengths not in their shortest form, refused as soon as the length is whole.
        for too_long in [
            &[0x82, 0x80 | 126, 0, 125][..],
            &[0x82, 0x80 | 126, 0, 0],
            &[0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF],
            &[0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 1],
        ] {
            assert!(
                matches!(
                    parse_header(too_long, 1 << 20),
                    Err(FrameError::Protocol(_))
                ),
                "{too_long:?}"
            );
        }
        let top_bit = [0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            parse_header(&top_bit, u64::MAX),
            Err(FrameError::Protocol(_))
        ));
    }

    #[test]
    fn unmasking_matches_bytewise_at_any_offset() {
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for offset in 0..8 {
            let mut fast = data.clone();
            unmask(&mut fast, mask, offset);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[(offset + i) % 4])
                .collect();
            assert_eq!(fast, slow, "offset {offset}");
        }
    }

    #[test]
    fn server_frames_and_close_payloads() {
        let mut out = Vec::new();
        encode(&mut out, opcode::TEXT, b"hi");
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        out.clear();
        encode(&mut out, opcode::BINARY, &[0; 300]);
        assert_eq!(&out[..4], &[0x82, 126, 1, 44]);
        let close = close_payload(1001, &"é".repeat(100));
        assert!(close.len() <= 125);
        assert_eq!(parse_close(&close).unwrap().unwrap().0, 1001);
        assert_eq!(parse_close(&[]).unwrap(), None);
        assert!(parse_close(&[3]).is_err());
        assert!(parse_close(&1005u16.to_be_bytes()).is_err());
        assert!(parse_close(&[0x03, 0xE8, 0xFF]).is_err());
    }

    #[test]
    fn the_end_of_the_frame_holding_a_byte() {
        let mut frames = Vec::new();
        encode(&mut frames, opcode::TEXT, b"abc"); // bytes 0..5
        encode(&mut frames, opcode::BINARY, &[7; 300]); // 5..309 (16-bit length)
        encode(&mut frames, opcode::BINARY, &[1; 70_000]); // 309..70_319 (64-bit length)
        encode(&mut frames, opcode::PING, b""); // 70_319..70_321
        assert_eq!(server_frame_end(&frames, 0), 5);
        assert_eq!(server_frame_end(&frames, 4), 5);
        assert_eq!(server_frame_end(&frames, 5), 309);
        assert_eq!(server_frame_end(&frames, 308), 309);
        assert_eq!(server_frame_end(&frames, 309), 70_319);
        assert_eq!(server_frame_end(&frames, 70_319), 70_321);
        assert_eq!(frames.len(), 70_321);
    }
}
