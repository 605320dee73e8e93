//! A text cut into chunks of a few KiB, for applying many steps to a long text: each
//! step walks the chunk list and edits one chunk (or removes a run of them) instead of
//! scanning and shifting the whole text. A diff of 1,000 steps on a 1 MB text costs a
//! few milliseconds this way, against over 100 ms (the guest deadline) on a `String`.
//!
//! Positions count chars. Callers check ranges first: out-of-range positions are clamped,
//! never a panic.

/// Target chunk size in bytes; a chunk is split once it grows beyond twice this.
const CHUNK: usize = 2048;

#[derive(Debug)]
struct Chunk {
    text: String,
    /// `text.chars().count()`.
    chars: usize,
}

/// A text as a list of non-empty chunks.
#[derive(Debug)]
pub(crate) struct Chunked {
    chunks: Vec<Chunk>,
}

impl Chunked {
    pub(crate) fn new(text: &str) -> Chunked {
        let mut chunks = Vec::with_capacity(text.len() / CHUNK + 1);
        push_pieces(&mut chunks, text);
        Chunked { chunks }
    }

    /// Inserts `text` before char `pos`.
    pub(crate) fn insert(&mut self, pos: usize, text: &str) {
        if text.is_empty() {
            return;
        }
        let Some((i, off)) = self.locate(pos, true) else {
            push_pieces(&mut self.chunks, text);
            return;
        };
        let chunk = &mut self.chunks[i];
        let at = byte_offset(&chunk.text, off);
        if chunk.text.len() + text.len() <= 2 * CHUNK {
            chunk.text.insert_str(at, text);
            chunk.chars += text.chars().count();
        } else {
            let joined = [&chunk.text[..at], text, &chunk.text[at..]].concat();
            let mut pieces = Vec::with_capacity(joined.len() / CHUNK + 1);
            push_pieces(&mut pieces, &joined);
            self.chunks.splice(i..=i, pieces);
        }
    }

    /// Deletes chars `pos..pos + len`.
    pub(crate) fn delete(&mut self, pos: usize, len: usize) {
        let Some((first, mut off)) = self.locate(pos, false) else {
            return;
        };
        let mut left = len;
        let mut emptied = false;
        for chunk in &mut self.chunks[first..] {
            if left == 0 {
                break;
            }
            let take = left.min(chunk.chars - off);
            if take == chunk.chars {
                chunk.text.clear();
            } else {
                let start = byte_offset(&chunk.text, off);
                let end = start + byte_offset(&chunk.text[start..], take);
                chunk.text.replace_range(start..end, "");
            }
            chunk.chars -= take;
            emptied |= chunk.chars == 0;
            left -= take;
            off = 0;
        }
        if emptied {
            self.chunks.retain(|c| c.chars > 0);
        }
    }

    /// The chunk holding char `pos` and the offset in it, in chars. With `at_end`, a
    /// position just after a chunk's last char belongs to that chunk (where an insert
    /// goes). `None` if there is no such chunk.
    fn locate(&self, mut pos: usize, at_end: bool) -> Option<(usize, usize)> {
        for (i, chunk) in self.chunks.iter().enumerate() {
            if pos < chunk.chars || (at_end && pos == chunk.chars) {
                return Some((i, pos));
            }
            pos -= chunk.chars;
        }
        // Past the end: clamp an insert to the end.
        let last = self.chunks.len().checked_sub(1)?;
        at_end.then(|| (last, self.chunks[last].chars))
    }

    pub(crate) fn into_string(self) -> String {
        let mut text = String::with_capacity(self.chunks.iter().map(|c| c.text.len()).sum());
        for chunk in &self.chunks {
            text.push_str(&chunk.text);
        }
        text
    }
}

/// Appends `text` to `chunks` in pieces of about [`CHUNK`] bytes, cut at char boundaries.
fn push_pieces(chunks: &mut Vec<Chunk>, mut text: &str) {
    while !text.is_empty() {
        let mut end = text.len().min(CHUNK);
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let (piece, rest) = text.split_at(end);
        chunks.push(Chunk {
            text: piece.to_owned(),
            chars: piece.chars().count(),
        });
        text = rest;
    }
}

/// The byte offset of the `chars`-th char of `text` (its length if there are fewer).
pub(crate) fn byte_offset(text: &str, chars: usize) -> usize {
    let Some(skip) = chars.checked_sub(1) else {
        return 0;
    };
    let mut it = text.chars();
    it.nth(skip);
    text.len() - it.as_str().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same edits on a `Vec<char>`, the obviously right way.
    fn naive_insert(text: &mut Vec<char>, pos: usize, s: &str) {
        text.splice(pos..pos, s.chars());
    }

    fn naive_delete(text: &mut Vec<char>, pos: usize, len: usize) {
        text.drain(pos..pos + len);
    }

    /// A small deterministic generator (no dependency needed).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) as usize) % n.max(1)
        }
    }

    #[test]
    fn random_edits_match_a_plain_char_vector() {
        let alphabet = ['a', 'é', '🎉', '\n', 'ß', 'z'];
        let mut rng = Lcg(7);
        for round in 0..40 {
            let start: String = (0..rng.below(3 * CHUNK * (round % 4)))
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let mut naive: Vec<char> = start.chars().collect();
            let mut chunked = Chunked::new(&start);
            for _ in 0..200 {
                let len = naive.len();
                if len == 0 || rng.below(2) == 0 {
                    // Mostly small inserts, sometimes one larger than a chunk.
                    let size = if rng.below(20) == 0 {
                        5 * CHUNK
                    } else {
                        1 + rng.below(10)
                    };
                    let s: String = (0..size)
                        .map(|_| alphabet[rng.below(alphabet.len())])
                        .collect();
                    let pos = rng.below(len + 1);
                    naive_insert(&mut naive, pos, &s);
                    chunked.insert(pos, &s);
                } else {
                    let pos = rng.below(len);
                    // Sometimes a delete spanning many chunks.
                    let max = if rng.below(10) == 0 { len - pos } else { 8 };
                    let n = 1 + rng.below(max.min(len - pos));
                    naive_delete(&mut naive, pos, n);
                    chunked.delete(pos, n);
                }
            }
            let expected: String = naive.into_iter().collect();
            assert_eq!(chunked.into_string(), expected, "round {round}");
        }
    }

    #[test]
    fn edits_at_the_edges() {
        let mut t = Chunked::new("");
        t.insert(0, "bc");
        t.insert(0, "a");
        t.insert(3, "d");
        t.delete(0, 4);
        t.insert(0, "é");
        assert_eq!(t.into_string(), "é");
        // Out of range (callers check first): clamped, no panic.
        let mut t = Chunked::new("ab");
        t.insert(9, "c");
        t.delete(1, 9);
        t.delete(5, 1);
        assert_eq!(t.into_string(), "a");
    }

    #[test]
    fn byte_offsets_count_chars() {
        assert_eq!(byte_offset("aé🎉b", 0), 0);
        assert_eq!(byte_offset("aé🎉b", 2), 3);
        assert_eq!(byte_offset("aé🎉b", 3), 7);
        assert_eq!(byte_offset("aé🎉b", 4), 8);
        assert_eq!(byte_offset("aé🎉b", 9), 8);
    }
}
