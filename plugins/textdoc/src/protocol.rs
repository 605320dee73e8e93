//! The central-authority protocol without the host: the document, the rules for a diff,
//! the messages, the snapshot. Plain Rust, tested natively (`cargo test -p textdoc`); the
//! crate root only moves these messages between the host and this module.
//!
//! Invariants of [`TextDoc`]:
//! - `history` holds consecutive versions ending at `v` (or is empty), each diff with at
//!   least one step;
//! - it never holds more than [`HISTORY_STEPS`] steps or about [`HISTORY_BYTES`] bytes of
//!   encoded steps: the oldest whole diffs are dropped first;
//! - `history_steps` and `history_bytes` are the totals of `history`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chunked::Chunked;

/// At most this many accepted steps are kept for clients that are behind.
pub(crate) const HISTORY_STEPS: usize = 1000;
/// ... and at most about this many bytes of them, encoded. A client further behind than
/// one message can carry has to refetch anyway.
pub(crate) const HISTORY_BYTES: usize = 1 << 20;
/// At most this many steps in one diff, which keeps the worst diff (1,000 steps on a
/// 1 MB text) at a few milliseconds, far below the host's deadline per guest call.
pub(crate) const MAX_STEPS: usize = 1000;
/// The text, encoded as a JSON string, is at most this long, so that the `doc` and
/// `refetch` messages and the HTTP answer fit in the host's default message limit.
pub(crate) const MAX_TEXT_JSON_BYTES: usize = 1_000_000;
/// The host's default `max_message_bytes`. A `behind` answer larger than this becomes a
/// `refetch`; a diff whose `steps` broadcast would be larger is refused.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The snapshot format this version writes and reads.
const FORMAT: u32 = 1;

/// One edit. Positions and lengths count Unicode scalar values (Rust `char`s), not
/// bytes and not UTF-16 code units. Steps of a diff apply in order, each to the text
/// left by the previous one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum Step {
    /// `{"op":"insert","pos":3,"text":"ab"}`: insert `text` (not empty) before the
    /// `pos`-th char; `pos` may equal the length (append).
    Insert { pos: u64, text: String },
    /// `{"op":"delete","pos":3,"len":2}`: delete the chars `pos..pos+len` (`len` ≥ 1).
    Delete { pos: u64, len: u64 },
}

/// The steps of one accepted diff and the version they produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Diff {
    pub(crate) v: u64,
    pub(crate) steps: Vec<Step>,
}

/// The state of one document.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TextDoc {
    text: String,
    v: u64,
    history: VecDeque<Diff>,
    history_steps: usize,
    history_bytes: usize,
}

/// What a client message produces: exactly one reply to the sender, and possibly a
/// message for every other client of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) reply: String,
    pub(crate) broadcast: Option<String>,
}

/// Why a whole-text replacement (HTTP `PUT`) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplaceError {
    /// The caller expected another version; the current one is attached.
    Conflict { current: u64 },
    /// The text is larger than [`MAX_TEXT_JSON_BYTES`] allows.
    TooLarge,
}

/// A replacement that was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replaced {
    /// The version after the replacement (unchanged if the text was the same).
    pub(crate) v: u64,
    /// The `steps` message for every client, if anything changed.
    pub(crate) broadcast: Option<String>,
}

/// Messages from the server.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Out<'a> {
    Doc {
        v: u64,
        text: &'a str,
    },
    Confirm {
        rid: u64,
        v: u64,
    },
    Steps {
        v: u64,
        steps: &'a [Step],
    },
    Behind {
        rid: u64,
        v: u64,
        diffs: Vec<&'a Diff>,
    },
    Refetch {
        rid: u64,
        v: u64,
        text: &'a str,
    },
    Error {
        rid: Option<u64>,
        reason: &'a str,
    },
}

fn json(out: &Out<'_>) -> String {
    serde_json::to_string(out).expect("server messages serialize")
}

/// The answer to a message that cannot be used: `{"type":"error","rid":..,"reason":..}`.
pub(crate) fn error(rid: Option<u64>, reason: &str) -> String {
    json(&Out::Error { rid, reason })
}

/// A parsed `diff` message.
#[derive(Debug)]
struct Incoming {
    rid: u64,
    v: u64,
    steps: Vec<Step>,
}

/// The snapshot, as written.
#[derive(Serialize)]
struct SavedRef<'a> {
    format: u32,
    v: u64,
    text: &'a str,
    history: &'a VecDeque<Diff>,
}

/// The snapshot, as read.
#[derive(Deserialize)]
struct Saved {
    format: u32,
    v: u64,
    text: String,
    history: VecDeque<Diff>,
}

impl TextDoc {
    /// The current version: 0 for a new document, +1 per accepted diff.
    #[cfg(test)]
    pub(crate) fn version(&self) -> u64 {
        self.v
    }

    /// The current text.
    #[cfg(test)]
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// `{"type":"doc","v":..,"text":..}`: what a client gets when it connects.
    pub(crate) fn doc_message(&self) -> String {
        json(&Out::Doc {
            v: self.v,
            text: &self.text,
        })
    }

    /// `{"v":..,"text":..}`: the answer to `GET /docs/textdoc/{doc}`.
    pub(crate) fn http_json(&self) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            v: u64,
            text: &'a str,
        }
        serde_json::to_string(&Body {
            v: self.v,
            text: &self.text,
        })
        .expect("the document serializes")
    }

    /// Handles one text message from a client.
    pub(crate) fn handle(&mut self, raw: &str) -> Outcome {
        match parse(raw) {
            Ok(diff) => self.receive(diff),
            Err((rid, reason)) => Outcome {
                reply: error(rid, &reason),
                broadcast: None,
            },
        }
    }

    fn receive(&mut self, diff: Incoming) -> Outcome {
        let Incoming { rid, v, steps } = diff;
        if v == self.v {
            return match self.apply(steps) {
                Ok((v, broadcast)) => Outcome {
                    reply: json(&Out::Confirm { rid, v }),
                    broadcast: Some(broadcast),
                },
                Err(reason) => Outcome {
                    reply: error(Some(rid), &reason),
                    broadcast: None,
                },
            };
        }
        // Behind, and every version after `v` is still in the history (it holds
        // consecutive versions ending at the current one).
        let reply = if v < self.v && self.history.front().is_some_and(|d| d.v <= v + 1) {
            let behind = json(&Out::Behind {
                rid,
                v: self.v,
                diffs: self.history.iter().filter(|d| d.v > v).collect(),
            });
            if behind.len() <= MAX_MESSAGE_BYTES {
                behind
            } else {
                self.refetch(rid)
            }
        } else {
            // Older than the history, or ahead of the server.
            self.refetch(rid)
        };
        Outcome {
            reply,
            broadcast: None,
        }
    }

    fn refetch(&self, rid: u64) -> String {
        json(&Out::Refetch {
            rid,
            v: self.v,
            text: &self.text,
        })
    }

    /// Applies `steps` atomically as the next version; returns it and the `steps`
    /// message for the other clients. On error nothing has changed.
    fn apply(&mut self, steps: Vec<Step>) -> Result<(u64, String), String> {
        // Every range is checked before anything is applied, so applying cannot fail.
        let mut len = self.text.chars().count() as u64;
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Insert { pos, text } => {
                    if *pos > len {
                        return Err(format!(
                            "steps[{i}]: insert at {pos} is beyond the end of the text \
                             ({len} chars at that step)"
                        ));
                    }
                    len += text.chars().count() as u64;
                }
                Step::Delete { pos, len: n } => {
                    if pos.checked_add(*n).is_none_or(|end| end > len) {
                        return Err(format!(
                            "steps[{i}]: delete of {n} chars at {pos} reaches beyond the end \
                             of the text ({len} chars at that step)"
                        ));
                    }
                    len -= n;
                }
            }
        }
        // Applied to a copy (atomic even if the size check below fails), in chunks.
        let mut text = Chunked::new(&self.text);
        for step in &steps {
            // Positions fit in `usize`: they were checked against the char count.
            match step {
                Step::Insert { pos, text: new } => text.insert(*pos as usize, new),
                Step::Delete { pos, len } => text.delete(*pos as usize, *len as usize),
            }
        }
        let text = text.into_string();
        if json_str_len(&text) > MAX_TEXT_JSON_BYTES {
            return Err(format!(
                "the text would be larger than {MAX_TEXT_JSON_BYTES} bytes as JSON"
            ));
        }
        let v = self
            .v
            .checked_add(1)
            .ok_or("the version cannot grow any further")?;
        let broadcast = json(&Out::Steps { v, steps: &steps });
        if broadcast.len() > MAX_MESSAGE_BYTES {
            return Err(format!(
                "the diff is larger than {MAX_MESSAGE_BYTES} bytes when forwarded"
            ));
        }
        self.text = text;
        self.v = v;
        self.remember(Diff { v, steps });
        Ok((v, broadcast))
    }

    /// Adds an accepted diff to the history and drops the oldest ones beyond the limits.
    fn remember(&mut self, diff: Diff) {
        self.history_steps += diff.steps.len();
        self.history_bytes += diff_bytes(&diff);
        self.history.push_back(diff);
        self.trim();
    }

    fn trim(&mut self) {
        while self.history_steps > HISTORY_STEPS || self.history_bytes > HISTORY_BYTES {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.history_steps -= old.steps.len();
            self.history_bytes -= diff_bytes(&old);
        }
    }

    /// Replaces the whole text (HTTP `PUT`), as a diff from the server: the steps delete
    /// the old text and insert the new one, so connected clients rebase as usual. With
    /// `expected`, only if the current version is that one.
    pub(crate) fn replace(
        &mut self,
        text: &str,
        expected: Option<u64>,
    ) -> Result<Replaced, ReplaceError> {
        if let Some(expected) = expected
            && expected != self.v
        {
            return Err(ReplaceError::Conflict { current: self.v });
        }
        if text == self.text {
            return Ok(Replaced {
                v: self.v,
                broadcast: None,
            });
        }
        if json_str_len(text) > MAX_TEXT_JSON_BYTES {
            return Err(ReplaceError::TooLarge);
        }
        let mut steps = Vec::new();
        let old = self.text.chars().count() as u64;
        if old > 0 {
            steps.push(Step::Delete { pos: 0, len: old });
        }
        if !text.is_empty() {
            steps.push(Step::Insert {
                pos: 0,
                text: text.to_owned(),
            });
        }
        // Cannot fail: the ranges are right, the text fits, and the steps message is the
        // text plus a few bytes.
        let (v, broadcast) = self.apply(steps).map_err(|_| ReplaceError::TooLarge)?;
        Ok(Replaced {
            v,
            broadcast: Some(broadcast),
        })
    }

    /// The whole state; empty for a document that was never edited (no file is kept
    /// for it).
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        if self.v == 0 && self.text.is_empty() && self.history.is_empty() {
            return Vec::new();
        }
        serde_json::to_vec(&SavedRef {
            format: FORMAT,
            v: self.v,
            text: &self.text,
            history: &self.history,
        })
        .expect("the state serializes")
    }

    /// The state from [`TextDoc::snapshot`] bytes, checked.
    pub(crate) fn restore(bytes: &[u8]) -> Result<TextDoc, String> {
        if bytes.is_empty() {
            return Ok(TextDoc::default());
        }
        let saved: Saved =
            serde_json::from_slice(bytes).map_err(|e| format!("not a textdoc snapshot: {e}"))?;
        if saved.format != FORMAT {
            return Err(format!(
                "textdoc snapshot format {} is not {FORMAT}, the one this version reads",
                saved.format
            ));
        }
        let bad_history = || {
            format!(
                "textdoc snapshot: the history does not end at version {} in consecutive \
                 non-empty diffs",
                saved.v
            )
        };
        // The first version the history must hold, so that it ends at `v`.
        let first = saved
            .v
            .checked_add(1)
            .and_then(|next| next.checked_sub(saved.history.len() as u64))
            .ok_or_else(bad_history)?;
        for (expected, diff) in (first..).zip(&saved.history) {
            if diff.v != expected || diff.v == 0 || diff.steps.is_empty() {
                return Err(bad_history());
            }
        }
        let mut doc = TextDoc {
            text: saved.text,
            v: saved.v,
            history_steps: saved.history.iter().map(|d| d.steps.len()).sum(),
            history_bytes: saved.history.iter().map(diff_bytes).sum(),
            history: saved.history,
        };
        doc.trim();
        Ok(doc)
    }
}

/// Parses a client message into a diff, or says why not (with the `rid` when it could be
/// read).
fn parse(raw: &str) -> Result<Incoming, (Option<u64>, String)> {
    let value: Value =
        serde_json::from_str(raw).map_err(|e| (None, format!("malformed JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err((None, "a message is a JSON object".into()));
    };
    let rid = match map.get("rid") {
        None | Some(Value::Null) => None,
        Some(rid) => Some(
            rid.as_u64()
                .ok_or((None, "\"rid\" must be a non-negative integer".to_owned()))?,
        ),
    };
    let fail = |reason: &str| (rid, reason.to_owned());
    match map.get("type") {
        Some(Value::String(t)) if t == "diff" => {}
        Some(Value::String(t)) => return Err(fail(&format!("unknown message type {t:?}"))),
        _ => return Err(fail("\"type\" must be a string")),
    }
    let rid = rid.ok_or_else(|| fail("a diff needs a \"rid\""))?;
    let v = map
        .get("v")
        .and_then(Value::as_u64)
        .ok_or_else(|| fail("\"v\" must be the version the diff applies to"))?;
    let Some(Value::Array(raw_steps)) = map.get("steps") else {
        return Err(fail("\"steps\" must be an array"));
    };
    if raw_steps.is_empty() {
        return Err(fail("a diff needs at least one step"));
    }
    if raw_steps.len() > MAX_STEPS {
        return Err(fail(&format!("a diff has at most {MAX_STEPS} steps")));
    }
    let mut steps = Vec::with_capacity(raw_steps.len());
    for (i, raw) in raw_steps.iter().enumerate() {
        let step = Step::deserialize(raw).map_err(|e| fail(&format!("steps[{i}]: {e}")))?;
        match &step {
            Step::Insert { text, .. } if text.is_empty() => {
                return Err(fail(&format!(
                    "steps[{i}]: an insert needs a non-empty text"
                )));
            }
            Step::Delete { len: 0, .. } => {
                return Err(fail(&format!(
                    "steps[{i}]: a delete needs a len of at least 1"
                )));
            }
            _ => steps.push(step),
        }
    }
    Ok(Incoming { rid, v, steps })
}

/// The length of `s` encoded as a JSON string by serde_json, quotes included.
fn json_str_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// About the encoded size of a diff in the history.
fn diff_bytes(diff: &Diff) -> usize {
    diff.steps
        .iter()
        .map(|s| match s {
            Step::Insert { text, .. } => 48 + json_str_len(text),
            Step::Delete { .. } => 48,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(s: &str) -> Value {
        serde_json::from_str(s).expect("the server sends JSON")
    }

    fn diff(v: u64, rid: u64, steps: Value) -> String {
        json!({"type": "diff", "v": v, "rid": rid, "steps": steps}).to_string()
    }

    fn ins(pos: u64, text: &str) -> Value {
        json!({"op": "insert", "pos": pos, "text": text})
    }

    fn del(pos: u64, len: u64) -> Value {
        json!({"op": "delete", "pos": pos, "len": len})
    }

    /// A document at version 1 with `text`.
    fn doc_with(text: &str) -> TextDoc {
        let mut doc = TextDoc::default();
        let out = doc.handle(&diff(0, 0, json!([ins(0, text)])));
        assert_eq!(parse_json(&out.reply)["type"], "confirm");
        doc
    }

    /// Asserts that `out` is an error reply with `rid`, mentioning `needle`, and no
    /// broadcast.
    fn assert_error(out: &Outcome, rid: Option<u64>, needle: &str) {
        let reply = parse_json(&out.reply);
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["rid"], json!(rid), "{reply}");
        let reason = reply["reason"].as_str().unwrap();
        assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
        assert_eq!(out.broadcast, None);
    }

    #[test]
    fn a_new_document_is_empty_at_version_0() {
        let doc = TextDoc::default();
        assert_eq!(
            parse_json(&doc.doc_message()),
            json!({"type": "doc", "v": 0, "text": ""})
        );
        assert_eq!(parse_json(&doc.http_json()), json!({"v": 0, "text": ""}));
    }

    #[test]
    fn a_diff_at_the_current_version_is_applied_confirmed_and_broadcast() {
        let mut doc = doc_with("hello");
        let steps = json!([ins(5, " world"), del(0, 1), ins(0, "J")]);
        let out = doc.handle(&diff(1, 7, steps.clone()));
        assert_eq!(
            parse_json(&out.reply),
            json!({"type": "confirm", "rid": 7, "v": 2})
        );
        assert_eq!(
            parse_json(out.broadcast.as_deref().unwrap()),
            json!({"type": "steps", "v": 2, "steps": steps})
        );
        assert_eq!((doc.version(), doc.text()), (2, "Jello world"));
    }

    #[test]
    fn positions_count_chars_not_bytes() {
        // é is 2 bytes, 🎉 is 4 bytes (and 2 UTF-16 units): each is one position.
        let mut doc = doc_with("aé🎉b");
        let out = doc.handle(&diff(1, 1, json!([del(1, 2), ins(1, "ü"), ins(3, "!")])));
        assert_eq!(parse_json(&out.reply)["type"], "confirm", "{}", out.reply);
        assert_eq!(doc.text(), "aüb!");
        let out = doc.handle(&diff(2, 2, json!([ins(5, "x")])));
        assert_error(&out, Some(2), "beyond the end of the text (4 chars");
    }

    #[test]
    fn a_stale_diff_gets_the_missing_diffs_and_changes_nothing() {
        let mut doc = doc_with("abc");
        doc.handle(&diff(1, 1, json!([ins(3, "d")])));
        doc.handle(&diff(2, 2, json!([del(0, 1)])));
        let before = doc.clone();
        let out = doc.handle(&diff(1, 9, json!([ins(0, "zz")])));
        assert_eq!(
            parse_json(&out.reply),
            json!({"type": "behind", "rid": 9, "v": 3, "diffs": [
                {"v": 2, "steps": [ins(3, "d")]},
                {"v": 3, "steps": [del(0, 1)]},
            ]})
        );
        assert_eq!(out.broadcast, None);
        assert_eq!(doc, before);
        // Rebased on the missing diffs, it applies.
        let out = doc.handle(&diff(3, 10, json!([ins(0, "zz")])));
        assert_eq!(
            parse_json(&out.reply),
            json!({"type": "confirm", "rid": 10, "v": 4})
        );
        assert_eq!(doc.text(), "zzbcd");
    }

    #[test]
    fn a_diff_ahead_of_the_server_must_refetch() {
        let mut doc = doc_with("abc");
        let before = doc.clone();
        let out = doc.handle(&diff(5, 3, json!([ins(0, "x")])));
        assert_eq!(
            parse_json(&out.reply),
            json!({"type": "refetch", "rid": 3, "v": 1, "text": "abc"})
        );
        assert_eq!(out.broadcast, None);
        assert_eq!(doc, before);
    }

    #[test]
    fn the_history_keeps_the_last_1000_steps_in_whole_diffs() {
        let mut doc = TextDoc::default();
        // Version 1: 999 steps; version 2: 1 step; 1000 in all, both kept.
        let many: Vec<Value> = (0..999).map(|_| ins(0, "a")).collect();
        doc.handle(&diff(0, 1, Value::Array(many)));
        doc.handle(&diff(1, 2, json!([ins(0, "b")])));
        let out = doc.handle(&diff(0, 3, json!([ins(0, "c")])));
        assert_eq!(parse_json(&out.reply)["type"], "behind");
        assert_eq!(parse_json(&out.reply)["diffs"][0]["v"], 1);
        // Version 3: one more step drops all 999 steps of version 1.
        doc.handle(&diff(2, 4, json!([ins(0, "d")])));
        let out = doc.handle(&diff(0, 5, json!([ins(0, "e")])));
        assert_eq!(
            parse_json(&out.reply),
            json!({"type": "refetch", "rid": 5, "v": 3, "text": doc.text()})
        );
        let out = doc.handle(&diff(1, 6, json!([ins(0, "e")])));
        let reply = parse_json(&out.reply);
        assert_eq!(reply["type"], "behind");
        let versions: Vec<u64> = reply["diffs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["v"].as_u64().unwrap())
            .collect();
        assert_eq!(versions, [2, 3]);
    }

    #[test]
    fn a_diff_of_1000_steps_replaces_the_whole_history() {
        let mut doc = TextDoc::default();
        doc.handle(&diff(0, 1, json!([ins(0, "a")])));
        let many: Vec<Value> = (0..MAX_STEPS).map(|_| ins(0, "a")).collect();
        let out = doc.handle(&diff(1, 2, Value::Array(many)));
        assert_eq!(parse_json(&out.reply)["type"], "confirm");
        assert_eq!(doc.text().len(), MAX_STEPS + 1);
        // 1001 steps: version 1 is gone, version 2 alone fills the history.
        let out = doc.handle(&diff(0, 3, json!([ins(0, "b")])));
        assert_eq!(parse_json(&out.reply)["type"], "refetch");
        let out = doc.handle(&diff(1, 4, json!([ins(0, "b")])));
        assert_eq!(parse_json(&out.reply)["diffs"][0]["v"], 2);
    }

    #[test]
    fn the_history_is_bounded_in_bytes_too() {
        let mut doc = TextDoc::default();
        let big = "x".repeat(400_000);
        for v in 0..3 {
            let out = doc.handle(&diff(v, v, json!([ins(0, &big), del(0, 400_000)])));
            assert_eq!(parse_json(&out.reply)["type"], "confirm");
        }
        assert!(doc.history_bytes <= HISTORY_BYTES);
        let out = doc.handle(&diff(1, 9, json!([ins(0, "a")])));
        let reply = parse_json(&out.reply);
        assert_eq!(reply["type"], "behind");
        assert_eq!(reply["diffs"].as_array().unwrap().len(), 2);
        let out = doc.handle(&diff(0, 9, json!([ins(0, "a")])));
        assert_eq!(parse_json(&out.reply)["type"], "refetch");
    }

    #[test]
    fn a_behind_answer_too_large_for_one_message_becomes_refetch() {
        // The byte bound keeps the history below one message; this is the safety net
        // should a history (say, restored from an older version) hold more.
        let mut doc = TextDoc::default();
        let big = "x".repeat(400_000);
        for v in 1..=3 {
            doc.history.push_back(Diff {
                v,
                steps: vec![
                    Step::Insert {
                        pos: 0,
                        text: big.clone(),
                    },
                    Step::Delete {
                        pos: 0,
                        len: 400_000,
                    },
                ],
            });
        }
        doc.v = 3;
        let out = doc.handle(&diff(2, 9, json!([ins(0, "a")])));
        assert_eq!(parse_json(&out.reply)["type"], "behind");
        let out = doc.handle(&diff(0, 9, json!([ins(0, "a")])));
        assert_eq!(
            parse_json(&out.reply),
            json!({"type": "refetch", "rid": 9, "v": 3, "text": ""})
        );
    }

    #[test]
    fn invalid_steps_are_rejected_atomically() {
        let mut doc = doc_with("abcd");
        let before = doc.clone();
        // Steps 0-1 are valid, step 2 is out of range (after them the text has 3
        // chars), step 3 would be fine: none applies.
        let out = doc.handle(&diff(
            1,
            4,
            json!([ins(0, "x"), del(0, 2), del(2, 2), ins(0, "y")]),
        ));
        assert_error(
            &out,
            Some(4),
            "steps[2]: delete of 2 chars at 2 reaches beyond",
        );
        assert_eq!(doc, before);
        for (steps, needle) in [
            (json!([ins(5, "x")]), "steps[0]: insert at 5 is beyond"),
            (json!([del(4, 1)]), "steps[0]: delete of 1 chars at 4"),
            (json!([del(u64::MAX, 2)]), "reaches beyond"),
            (
                json!([ins(0, "")]),
                "steps[0]: an insert needs a non-empty text",
            ),
            (
                json!([ins(0, "a"), del(0, 0)]),
                "steps[1]: a delete needs a len",
            ),
            (
                json!([{"op": "move", "pos": 1}]),
                "steps[0]: unknown variant `move`",
            ),
            (
                json!([{"op": "insert", "pos": -1, "text": "a"}]),
                "steps[0]",
            ),
            (json!([{"op": "insert", "pos": 0}]), "missing field `text`"),
            (json!([{"pos": 0, "len": 1}]), "missing field `op`"),
            (json!(["insert"]), "steps[0]"),
            (json!([]), "at least one step"),
            (json!({"op": "insert"}), "\"steps\" must be an array"),
        ] {
            let out = doc.handle(&diff(1, 5, steps));
            assert_error(&out, Some(5), needle);
            assert_eq!(doc, before);
        }
        let too_many: Vec<Value> = (0..=MAX_STEPS).map(|_| ins(0, "a")).collect();
        assert_error(
            &doc.handle(&diff(1, 6, Value::Array(too_many))),
            Some(6),
            "at most 1000 steps",
        );
        assert_eq!(doc, before);
    }

    #[test]
    fn malformed_messages_are_rejected_with_the_rid_when_it_can_be_read() {
        let mut doc = doc_with("abc");
        let before = doc.clone();
        for (raw, rid, needle) in [
            ("{not json", None, "malformed JSON"),
            ("[1,2]", None, "a message is a JSON object"),
            (
                r#"{"type":"diff","rid":"x","v":1}"#,
                None,
                "\"rid\" must be",
            ),
            (
                r#"{"type":"hello","rid":3}"#,
                Some(3),
                "unknown message type \"hello\"",
            ),
            (r#"{"rid":3}"#, Some(3), "\"type\" must be a string"),
            (
                r#"{"type":"diff","v":1,"steps":[]}"#,
                None,
                "needs a \"rid\"",
            ),
            (
                r#"{"type":"diff","rid":4,"steps":[]}"#,
                Some(4),
                "\"v\" must be",
            ),
            (
                r#"{"type":"diff","rid":4,"v":-1,"steps":[]}"#,
                Some(4),
                "\"v\" must be",
            ),
        ] {
            assert_error(&doc.handle(raw), rid, needle);
            assert_eq!(doc, before);
        }
    }

    #[test]
    fn the_text_has_a_size_limit() {
        let mut doc = TextDoc::default();
        let half = "\"".repeat(MAX_TEXT_JSON_BYTES / 4);
        let out = doc.handle(&diff(0, 1, json!([ins(0, &half)])));
        assert_eq!(parse_json(&out.reply)["type"], "confirm");
        let out = doc.handle(&diff(1, 2, json!([ins(0, &half)])));
        assert_error(&out, Some(2), "the text would be larger than 1000000 bytes");
        assert_eq!(doc.version(), 1);
        assert_eq!(
            doc.replace(&half.repeat(2), None),
            Err(ReplaceError::TooLarge)
        );
    }

    #[test]
    fn replacing_the_text_is_a_diff_for_everyone() {
        let mut doc = TextDoc::default();
        assert_eq!(
            doc.replace("first", Some(1)),
            Err(ReplaceError::Conflict { current: 0 })
        );
        let done = doc.replace("first", Some(0)).unwrap();
        assert_eq!(done.v, 1);
        assert_eq!(
            parse_json(done.broadcast.as_deref().unwrap()),
            json!({"type": "steps", "v": 1, "steps": [ins(0, "first")]})
        );
        let done = doc.replace("sécond", None).unwrap();
        assert_eq!(
            parse_json(done.broadcast.as_deref().unwrap()),
            json!({"type": "steps", "v": 2, "steps": [del(0, 5), ins(0, "sécond")]})
        );
        // The same text: nothing to do.
        assert_eq!(
            doc.replace("sécond", None),
            Ok(Replaced {
                v: 2,
                broadcast: None
            })
        );
        // A client at version 1 can rebase on it.
        let out = doc.handle(&diff(1, 1, json!([ins(0, "x")])));
        assert_eq!(parse_json(&out.reply)["diffs"][0]["v"], 2);
        assert_eq!(doc.replace("", None).unwrap().v, 3);
        assert_eq!(doc.text(), "");
    }

    #[test]
    fn snapshots_keep_text_version_and_history() {
        assert!(TextDoc::default().snapshot().is_empty());
        assert_eq!(TextDoc::restore(b""), Ok(TextDoc::default()));

        let mut doc = doc_with("one");
        doc.handle(&diff(1, 2, json!([ins(3, " two")])));
        let restored = TextDoc::restore(&doc.snapshot()).unwrap();
        assert_eq!(restored, doc);
        // The restored history still serves a client that is behind.
        let mut restored = restored;
        let out = restored.handle(&diff(1, 3, json!([ins(0, ">")])));
        assert_eq!(parse_json(&out.reply)["diffs"][0]["v"], 2);
        assert_eq!(restored, doc);
    }

    #[test]
    fn broken_snapshots_are_refused() {
        assert!(
            TextDoc::restore(b"{\"messages\":[]}")
                .unwrap_err()
                .contains("not a textdoc snapshot")
        );
        let other_format = json!({"format": 2, "v": 0, "text": "", "history": []});
        assert!(
            TextDoc::restore(other_format.to_string().as_bytes())
                .unwrap_err()
                .contains("format 2")
        );
        let gap = json!({"format": 1, "v": 3, "text": "ab", "history": [
            {"v": 1, "steps": [ins(0, "a")]},
            {"v": 3, "steps": [ins(1, "b")]},
        ]});
        assert!(
            TextDoc::restore(gap.to_string().as_bytes())
                .unwrap_err()
                .contains("consecutive")
        );
        let future = json!({"format": 1, "v": 0, "text": "", "history": [
            {"v": 1, "steps": [ins(0, "a")]},
        ]});
        assert!(TextDoc::restore(future.to_string().as_bytes()).is_err());
    }

    #[test]
    fn json_str_len_matches_serde_json() {
        let all_ascii: String = (0u8..128).map(char::from).collect();
        for s in [
            "",
            "plain",
            "quote\" back\\slash",
            "é🎉\u{7f}\u{2028}",
            &all_ascii,
        ] {
            assert_eq!(
                json_str_len(s),
                serde_json::to_string(s).unwrap().len(),
                "{s:?}"
            );
        }
    }
}
