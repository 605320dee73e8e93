//! A message whose bytes are still arriving: the frames of a fragmented message, or one
//! frame split across reads. Binary bytes are appended as they come. Text is checked as
//! it comes, so that bytes that are not UTF-8 end the connection (1007) with the piece
//! that holds them rather than when the message is complete, and it is kept as the
//! `String` the message becomes, so no byte is checked twice. Between two pieces only the
//! start of a character that a piece's end cut off (at most 3 bytes) waits for the rest.

use crate::websocket::decoder::Event;
use crate::websocket::frame::{FrameError, opcode};

/// A message being assembled.
#[derive(Debug)]
pub(crate) enum Message {
    Text(PartialText),
    Binary(Vec<u8>),
}

impl Message {
    /// An empty message of the data frame opcode `op` (text or binary).
    pub(crate) fn new(op: u8) -> Message {
        if op == opcode::TEXT {
            Message::Text(PartialText::default())
        } else {
            Message::Binary(Vec::new())
        }
    }

    /// Payload bytes received so far (what counts against the size limit).
    pub(crate) fn len(&self) -> usize {
        match self {
            Message::Text(text) => text.len(),
            Message::Binary(bytes) => bytes.len(),
        }
    }

    /// Bytes allocated for it.
    pub(crate) fn capacity(&self) -> usize {
        match self {
            Message::Text(text) => text.text.capacity(),
            Message::Binary(bytes) => bytes.capacity(),
        }
    }

    /// Appends the next unmasked payload bytes; fails at once on text that is not UTF-8.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        match self {
            Message::Text(text) => text.push(bytes),
            Message::Binary(data) => {
                data.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// The complete message; text must not end inside a character.
    pub(crate) fn finish(self) -> Result<Event, FrameError> {
        match self {
            Message::Text(text) => text.finish().map(Event::Text),
            Message::Binary(bytes) => Ok(Event::Binary(bytes)),
        }
    }
}

/// Text whose bytes arrive in pieces, checked piece by piece.
#[derive(Debug, Default)]
pub(crate) struct PartialText {
    /// The characters that arrived whole.
    text: String,
    /// The start of a character the last piece's end cut off (`cut_len` bytes of it).
    cut: [u8; 4],
    cut_len: usize,
}

impl PartialText {
    fn len(&self) -> usize {
        self.text.len() + self.cut_len
    }

    /// Appends `bytes`: an error if they cannot continue valid UTF-8.
    fn push(&mut self, mut bytes: &[u8]) -> Result<(), FrameError> {
        if self.cut_len > 0 {
            // Complete the character the last piece cut off, with just the bytes it needs.
            let need = char_width(self.cut[0]) - self.cut_len;
            let take = need.min(bytes.len());
            self.cut[self.cut_len..self.cut_len + take].copy_from_slice(&bytes[..take]);
            self.cut_len += take;
            bytes = &bytes[take..];
            let piece = &self.cut[..self.cut_len];
            match std::str::from_utf8(piece) {
                Ok(c) => {
                    self.text.push_str(c);
                    self.cut_len = 0;
                }
                // Still cut: this piece was too short to complete it.
                Err(_) if starts_a_char(piece) => {
                    debug_assert!(bytes.is_empty());
                    return Ok(());
                }
                Err(_) => return Err(FrameError::BadUtf8),
            }
        }
        // The piece is checked once, up to a character its end may cut off (found by
        // looking at its last 3 bytes), which waits for the next piece.
        let (whole, cut) = bytes.split_at(cut_point(bytes));
        let whole = std::str::from_utf8(whole).map_err(|_| FrameError::BadUtf8)?;
        self.text.push_str(whole);
        if !cut.is_empty() {
            if !starts_a_char(cut) {
                return Err(FrameError::BadUtf8);
            }
            self.cut[..cut.len()].copy_from_slice(cut);
            self.cut_len = cut.len();
        }
        Ok(())
    }

    /// The text, once the message is complete: a character left cut off is an error.
    fn finish(self) -> Result<String, FrameError> {
        if self.cut_len > 0 {
            return Err(FrameError::BadUtf8);
        }
        Ok(self.text)
    }
}

/// How many bytes the character led by `lead` takes, by its leading bits (1 for a byte
/// that cannot lead one of several bytes).
fn char_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// Where the last character of `bytes` starts if `bytes` ends before it does, else
/// `bytes.len()`. Only the leading bits are read here; whether the bytes are valid is
/// for the caller to check.
fn cut_point(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let at = bytes.len() - back;
        // The first byte, going back, that is not a continuation byte (10xxxxxx).
        if bytes[at] & 0xC0 != 0x80 {
            return if char_width(bytes[at]) > back {
                at
            } else {
                bytes.len()
            };
        }
    }
    bytes.len()
}

/// Whether `bytes` are the start of a valid UTF-8 character, without its end.
fn starts_a_char(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_err_and(|e| e.valid_up_to() == 0 && e.error_len().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `pieces` into a text message, then finishes it.
    fn text(pieces: &[&[u8]]) -> Result<String, FrameError> {
        let mut message = PartialText::default();
        for piece in pieces {
            message.push(piece)?;
        }
        message.finish()
    }

    #[test]
    fn characters_cut_between_pieces_are_joined() {
        let euro = "€".as_bytes(); // E2 82 AC
        let face = "😀".as_bytes(); // F0 9F 98 80
        assert_eq!(text(&[b"a", &euro[..1], &euro[1..], b"b"]).unwrap(), "a€b");
        assert_eq!(text(&[&euro[..2], &euro[2..]]).unwrap(), "€");
        // A character cut into single bytes, with empty pieces in between.
        let pieces = [&face[..1], b"", &face[1..2], &face[2..3], b"", &face[3..]];
        assert_eq!(text(&pieces).unwrap(), "😀");
        // The next piece completes the character and goes on.
        assert_eq!(
            text(&[&face[..3], &[face[3], b'x'], "é".as_bytes()]).unwrap(),
            "😀xé"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_fail_with_their_piece() {
        let mut message = PartialText::default();
        message.push(b"fine").unwrap();
        assert_eq!(message.push(&[b'x', 0xFF]), Err(FrameError::BadUtf8));
        // A bad lead byte at the start, a continuation without a lead.
        for bad in [
            &[0xFF][..],
            &[0x80],
            &[0xC3, 0x28],
            &[0xC0, 0x80],
            &[0xF5, 0x80],
        ] {
            let mut message = PartialText::default();
            assert_eq!(message.push(bad), Err(FrameError::BadUtf8), "{bad:x?}");
        }
        // Cut after a byte that can already not continue: E0 80 is an overlong start,
        // ED A0 a surrogate, F4 90 beyond U+10FFFF.
        for bad in [&[0xE0, 0x80][..], &[0xED, 0xA0], &[0xF4, 0x90], &[0xC1]] {
            let mut message = PartialText::default();
            assert_eq!(message.push(bad), Err(FrameError::BadUtf8), "{bad:x?}");
        }
        // A cut character the next piece does not continue.
        let mut message = PartialText::default();
        message.push(&[b'a', 0xE2, 0x82]).unwrap();
        assert_eq!(message.push(b"A"), Err(FrameError::BadUtf8));
        let mut message = PartialText::default();
        message.push(&[0xF0]).unwrap();
        assert_eq!(message.push(&[0x80]), Err(FrameError::BadUtf8));
    }

    #[test]
    fn a_message_may_not_end_inside_a_character() {
        assert_eq!(text(&[b"ab", &[0xE2, 0x82]]), Err(FrameError::BadUtf8));
        assert_eq!(text(&[&[0xF0, 0x9F], &[0x98]]), Err(FrameError::BadUtf8));
        assert_eq!(text(&[b"", b""]).unwrap(), "");
    }

    #[test]
    fn the_length_counts_a_cut_character() {
        let mut message = Message::new(opcode::TEXT);
        message.push(&[b'a', 0xE2, 0x82]).unwrap();
        assert_eq!(message.len(), 3);
        message.push(&[0xAC]).unwrap();
        assert_eq!(message.len(), 4);
        assert_eq!(message.finish().unwrap(), Event::Text("a€".into()));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any bytes cut anywhere give the verdict `from_utf8` gives them whole.
            #[test]
            fn pieces_agree_with_the_whole(
                bytes in proptest::collection::vec(
                    prop_oneof![any::<u8>(), Just(0x80u8), Just(0xE2), Just(0xF0), Just(0x9F)],
                    0..64,
                ),
                cuts in proptest::collection::vec(any::<usize>(), 0..8),
            ) {
                let whole = String::from_utf8(bytes.clone()).map_err(|_| FrameError::BadUtf8);
                let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
                points.sort_unstable();
                let mut pieces = Vec::new();
                let mut at = 0;
                for p in points.into_iter().chain([bytes.len()]) {
                    pieces.push(&bytes[at..p]);
                    at = p;
                }
                prop_assert_eq!(text(&pieces), whole);
            }

            /// Valid text cut anywhere, between or inside characters, is accepted whole.
            #[test]
            fn valid_text_cut_anywhere_is_accepted(s in "\\PC{0,40}", cut in any::<usize>()) {
                let bytes = s.as_bytes();
                let cut = cut % (bytes.len() + 1);
                prop_assert_eq!(text(&[&bytes[..cut], &bytes[cut..]]).unwrap(), s);
            }

            /// An error comes with the first piece whose bytes cannot continue valid UTF-8.
            #[test]
            fn errors_come_with_the_first_bad_piece(
                bytes in proptest::collection::vec(any::<u8>(), 1..64),
                size in 1usize..8,
            ) {
                let mut message = PartialText::default();
                let mut seen = 0;
                for piece in bytes.chunks(size) {
                    seen += piece.len();
                    let prefix = &bytes[..seen];
                    // A prefix is bad if no bytes after it can make it valid.
                    let bad = std::str::from_utf8(prefix).is_err_and(|e| e.error_len().is_some());
                    prop_assert_eq!(message.push(piece).is_err(), bad, "{:x?}", prefix);
                    if bad {
                        break;
                    }
                }
            }
        }
    }
}
