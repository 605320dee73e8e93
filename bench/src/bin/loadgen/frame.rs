//! The few pieces of RFC 6455 framing the lean generator needs: masked client frames
//! written into a caller's buffer, and unmasked server frames parsed in place.

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xa;

/// The generator's masking key: any key does, the server does the same work for every key.
pub(crate) const MASK: [u8; 4] = [0x5a, 0xc3, 0x96, 0x3c];

/// Frames larger than this are a protocol error here (the relay sends small messages).
const MAX_PAYLOAD: u64 = 64 << 20;

/// Appends one masked client frame (FIN set) carrying `payload` to `out`.
pub(crate) fn encode_masked(out: &mut Vec<u8>, opcode: u8, mask: [u8; 4], payload: &[u8]) {
    push_masked_header(out, opcode, mask, payload.len());
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// Appends the header of a masked client frame (FIN set) whose payload, `len` bytes
/// masked with `mask`, the caller appends next.
pub(crate) fn push_masked_header(out: &mut Vec<u8>, opcode: u8, mask: [u8; 4], len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
}

/// XORs `data` with `mask`, `data[0]` being byte `offset` of the payload.
pub(crate) fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(offset + i) & 3];
    }
}

/// The header of one server frame, as found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    /// Where the payload starts, counted from the frame's first byte.
    pub(crate) payload_at: usize,
    pub(crate) payload_len: usize,
}

impl Header {
    /// Length of the whole frame (header and payload).
    pub(crate) fn frame_len(&self) -> usize {
        self.payload_at + self.payload_len
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// A server must not mask its frames.
    Masked,
    TooLarge,
}

/// Parses the header of the server frame at the start of `buf`. `Ok(None)`: the header is
/// not complete yet. The payload may still be incomplete: compare `frame_len()` with the
/// bytes at hand.
pub(crate) fn parse_header(buf: &[u8]) -> Result<Option<Header>, ParseError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b1 & 0x80 != 0 {
        return Err(ParseError::Masked);
    }
    let (payload_at, len) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (4, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (10, u64::from_be_bytes(b.try_into().expect("8 bytes"))),
            None => return Ok(None),
        },
        n => (2, u64::from(n)),
    };
    if len > MAX_PAYLOAD {
        return Err(ParseError::TooLarge);
    }
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        payload_at,
        payload_len: len as usize,
    }))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `v` as 16 lower-case hex digits.
pub(crate) fn write_hex16(v: u64, out: &mut [u8; 16]) {
    for (i, d) in out.iter_mut().enumerate() {
        *d = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// Reads 16 hex digits at the start of `b`.
pub(crate) fn read_hex16(b: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in b.get(..16)? {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = v << 4 | u64::from(d);
    }
    Some(v)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Unmasks a client frame: (opcode, payload).
    pub(crate) fn decode_masked(frame: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(frame[1] & 0x80, 0x80, "client frames are masked");
        let mut unmasked = frame.to_vec();
        unmasked[1] &= 0x7f;
        let h = parse_header(&unmasked).unwrap().unwrap();
        let mask: [u8; 4] = frame[h.payload_at..h.payload_at + 4].try_into().unwrap();
        let mut payload = frame[h.payload_at + 4..].to_vec();
        assert_eq!(payload.len(), h.payload_len);
        apply_mask(&mut payload, mask, 0);
        (h.opcode, payload)
    }

    #[test]
    fn masked_frames_of_every_length_class_round_trip() {
        for len in [0, 1, 16, 100, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = vec![0xee];
            encode_masked(&mut out, OP_TEXT, [1, 2, 3, 4], &payload);
            assert_eq!(out[1], 0x80 | OP_TEXT);
            assert_eq!(decode_masked(&out[1..]), (OP_TEXT, payload), "length {len}");
        }
    }

    #[test]
    fn server_headers_with_short_and_extended_lengths() {
        assert_eq!(parse_header(&[]), Ok(None));
        assert_eq!(parse_header(&[0x81]), Ok(None));
        let h = parse_header(&[0x81, 100]).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.payload_at, h.frame_len()),
            (true, 1, 2, 102)
        );
        assert_eq!(parse_header(&[0x02, 126, 1]), Ok(None));
        let h = parse_header(&[0x02, 126, 1, 0]).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.payload_at, h.payload_len),
            (false, 2, 4, 256)
        );
        assert_eq!(parse_header(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0]), Ok(None));
        let h = parse_header(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_at, h.payload_len), (10, 65536));
        assert_eq!(parse_header(&[0x81, 0x85]), Err(ParseError::Masked));
        assert_eq!(
            parse_header(&[0x82, 127, 0xff, 0, 0, 0, 0, 0, 0, 0]),
            Err(ParseError::TooLarge)
        );
    }

    #[test]
    fn hex_timestamps_round_trip() {
        let mut b = [0u8; 16];
        for v in [0, 1, 0xdead_beef, u64::MAX] {
            write_hex16(v, &mut b);
            assert_eq!(std::str::from_utf8(&b).unwrap(), format!("{v:016x}"));
            assert_eq!(read_hex16(&b), Some(v));
        }
        assert_eq!(read_hex16(b"0123"), None);
        assert_eq!(read_hex16(b"000000000000000g"), None);
    }
}
