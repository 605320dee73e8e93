//! The input journal's records and how they are framed in a file (see ARCHITECTURE.md,
//! "the input journal"). Pure: the file store (`host/src/store/journal_file/`) owns the
//! files, the fuzz target `journal` feeds arbitrary bytes to [`Frames`].
//!
//! A hand-written little-endian codec, like the snapshot's, rather than serde + postcard:
//! the bytes are a durable format that a replay tool in another language must read, so
//! they are spelled out here field by field; there is exactly one encoding per entry
//! (no varints, no lenient tags), which the fuzz target checks both ways; and `wire`
//! stays free of serde.
//!
//! A segment file is a [`SegmentHeader`] followed by frames, little-endian:
//!
//! ```text
//! segment header (37 bytes):
//!   b"WRJRNL\r\n"   magic
//!   u8             segment format version (1)
//!   u32            lane
//!   u64            segment number (per lane, 1, 2, ...)
//!   u64            the previous segment's valid length when this one was started
//!   u32            reserved (0)
//!   u32            CRC-32 of the 33 bytes above
//! frame:
//!   u32            body length
//!   u32            CRC-32 (crc32fast, IEEE) of the body
//!   body:
//!     u8           record format version: 5 for a `TimerDropped` or a `Detach`, 4 for a
//!                  `Version` entry and an `Open` that names its plugin version (the
//!                  version follows the other fields), 3 for a `Connect` of a session (its
//!                  session id follows the other fields), 2 for a `Messages` entry, 1 for
//!                  the others (a body of another version, or a kind in another version,
//!                  is refused: one encoding per entry, and a build that reads only
//!                  version 1 reads every journal without batches, sessions, plugin
//!                  versions or dropped inputs)
//!     str          plugin            (str: u32 length + UTF-8)
//!     str          document
//!     u64          incarnation
//!     u64          seq
//!     u64          clock_ms
//!     u8           record kind, then its fields in declaration order
//!                  (bytes: u32 length + bytes; list: u32 count + items; bool: u8 0|1;
//!                   option: u8 0|1 + value; seed and hash: 32 bytes): 1 Open,
//!                  2 Settings, 3 Connect, 4 Message, 5 Disconnect, 6 Timer, 7 Request,
//!                  8 Checkpoint, 9 Messages (a list of at least one payload: bool text,
//!                  bytes data), 10 Version (str: the plugin version), 11 TimerDropped
//!                  (u64 id), 12 Detach (u64 connection, u16 code)
//! ```

/// The newest version of a frame body this build writes and reads (see
/// [`Record::version`]).
pub const RECORD_VERSION: u8 = RECORD_VERSION_5;
/// The version that added [`Record::TimerDropped`] and [`Record::Detach`], the only kinds
/// written as version 5.
pub const RECORD_VERSION_5: u8 = 5;
/// The version that added [`Record::Version`] and the plugin version of a
/// [`Record::Open`], the only records written as version 4.
pub const RECORD_VERSION_4: u8 = 4;
/// The version that added the session of a [`Record::Connect`], the only records written
/// as version 3.
pub const RECORD_VERSION_3: u8 = 3;
/// The version that added [`Record::Messages`], the only kind written as version 2.
pub const RECORD_VERSION_2: u8 = 2;
/// The version of every other record's body.
pub const RECORD_VERSION_1: u8 = 1;
/// The version of a segment header this build writes and reads.
pub const SEGMENT_VERSION: u8 = 1;
/// A segment file's first bytes.
pub const SEGMENT_MAGIC: &[u8; 8] = b"WRJRNL\r\n";
/// The length of a [`SegmentHeader`] on disk.
pub const SEGMENT_HEADER_LEN: usize = 37;
/// The length of a frame's `len | crc32` prefix.
pub const FRAME_HEADER_LEN: usize = 8;

/// One journal entry: one guest call of a document that returned (an input), or a
/// checkpoint of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The document's plugin.
    pub plugin: String,
    /// The document's id.
    pub document: String,
    /// Which opening of the document on its host wrote it. A later incarnation's entry
    /// with a seq already used replaces the earlier incarnation's entries from that seq on
    /// (records that were in flight when the document was dropped and reopened).
    pub incarnation: u64,
    /// The document's entry number: 1, 2, 3... gap-free per document, continuing across
    /// snapshots. Every entry takes the next number, a [`Record::Checkpoint`] too, so a
    /// snapshot taken at checkpoint `seq` covers every entry up to and including it.
    pub seq: u64,
    /// The call's frozen clock `D` (Unix ms).
    pub clock_ms: u64,
    /// What happened.
    pub record: Record,
}

/// What an entry records: the input of one guest call (its export and arguments, and
/// what the host supplied beside them), or a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `open(document)` of a document without a snapshot: what it started from.
    Open {
        /// The document's random seed (ChaCha20 key of everything its guest draws).
        seed: [u8; 32],
        /// The first connection id it gives.
        next_connection_id: u64,
        /// The plugin's settings (`[plugin.NAME.settings]`) it started with.
        settings: Vec<(String, String)>,
        /// The plugin version that opened it, and makes its inputs until a
        /// [`Record::Version`] (`None` in journals written before versions were named:
        /// replayed by the version there is).
        version: Option<String>,
    },
    /// The plugin's settings changed between two calls (SIGHUP, another host): what
    /// `setting` returns from the next call on.
    Settings {
        /// Every setting, name and value.
        settings: Vec<(String, String)>,
    },
    /// `on-connect(info)`: a connection asked to join.
    Connect {
        /// `connect-info.id`.
        id: u64,
        /// `connect-info.path`.
        path: String,
        /// `connect-info.query`.
        query: String,
        /// `connect-info.headers`.
        headers: Vec<(String, String)>,
        /// `connect-info.subprotocols`.
        subprotocols: Vec<String>,
        /// `connect-info.remote-address`.
        remote_address: String,
        /// The verified claims `context.claims(id)` returns, if any.
        claims: Option<String>,
        /// The consumer's decision (a replay that decides otherwise has diverged).
        accepted: bool,
        /// The session (`wasmroom.session.v1`) the connection was opened for, if any: a
        /// replay numbers its messages again, so that its client can resume.
        session: Option<String>,
    },
    /// `on-message(connection, msg)`.
    Message {
        /// The connection.
        connection: u64,
        /// Whether `msg` is `text` (then `data` is UTF-8) or `binary`.
        text: bool,
        /// The payload.
        data: Vec<u8>,
    },
    /// `on-messages(connection, messages)` (WIT 0.1.2): the messages of one read of a
    /// connection in one call, all that the call was given (the consumer may have stopped
    /// early; a replay gives it the same list and it stops there again). Never empty.
    Messages {
        /// The connection.
        connection: u64,
        /// The messages, in order.
        messages: Vec<Payload>,
    },
    /// `on-disconnect(connection, code)`.
    Disconnect {
        /// The connection.
        connection: u64,
        /// Its close code.
        code: u16,
    },
    /// `on-timer(id)`.
    Timer {
        /// The timer.
        id: u64,
    },
    /// `on-request(request)`.
    Request {
        /// `http-request.method`.
        method: String,
        /// `http-request.path`.
        path: String,
        /// `http-request.query`.
        query: String,
        /// `http-request.headers` as the consumer saw them (`x-wasmroom-claims` included
        /// when the host added it).
        headers: Vec<(String, String)>,
        /// `http-request.body`.
        body: Vec<u8>,
        /// The verified claims of the request's token, if any.
        claims: Option<String>,
    },
    /// A hot reload moved the document to another version of its plugin here: its state
    /// went from the version before (`snapshot`) to this one (`open`, `restore`), which
    /// makes the inputs from here on. A replay does the same move, so that every input
    /// is replayed by the version that made it (the versions are kept in the data
    /// directory's version store).
    Version {
        /// The plugin version (the first 16 hex digits of its file's SHA-256).
        version: String,
    },
    /// A snapshot was taken here: the hash of what it holds (`Snapshot::content_hash`;
    /// a replay through this entry compares it).
    Checkpoint {
        /// The snapshot's content hash.
        hash: [u8; 32],
    },
    /// Timer `id` fired and its `on-timer` call trapped: the timer is over without its
    /// call (a replay cancels it and calls nothing), so that it does not fire, and trap,
    /// again at every rebuild or reopen.
    TimerDropped {
        /// The timer.
        id: u64,
    },
    /// Connection `connection` left with `code` and its `on-disconnect` call trapped: it
    /// is gone without its call (a replay removes it from the connections the consumer
    /// sees and calls nothing).
    Detach {
        /// The connection.
        connection: u64,
        /// Its close code.
        code: u16,
    },
}

/// One message of a [`Record::Messages`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Whether it is `text` (then `data` is UTF-8) or `binary`.
    pub text: bool,
    /// The payload.
    pub data: Vec<u8>,
}

impl Record {
    /// The body version this record is written in: the oldest that holds its kind, so
    /// that journals without batches stay readable by builds that predate them, and a
    /// build that predates a kind refuses it as a version it does not read.
    pub fn version(&self) -> u8 {
        match self {
            Record::Version { .. }
            | Record::Open {
                version: Some(_), ..
            } => RECORD_VERSION_4,
            Record::TimerDropped { .. } | Record::Detach { .. } => RECORD_VERSION_5,
            Record::Connect {
                session: Some(_), ..
            } => RECORD_VERSION_3,
            Record::Messages { .. } => RECORD_VERSION_2,
            _ => RECORD_VERSION_1,
        }
    }
}

/// Why bytes are not a frame or an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes end inside the frame (a torn write).
    #[error("truncated frame")]
    Truncated,
    /// The body does not match its CRC.
    #[error("checksum mismatch")]
    Checksum,
    /// A body or header of a version this build does not read.
    #[error("format version {0}; this build reads versions 1 to 5")]
    Version(u8),
    /// The body passed its CRC but is not an entry.
    #[error("invalid entry: {0}")]
    Invalid(&'static str),
}

/// An entry as a frame: `len: u32 | crc32: u32 | body`, ready to append to a segment.
pub fn frame(entry: &Entry) -> Vec<u8> {
    let body = encode(entry);
    let len = u32::try_from(body.len()).expect("a journal entry is below 4 GiB");
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Where a [`Frames`] reader stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Every byte was a valid frame.
    End,
    /// At a frame that is torn or damaged; the bytes from [`Frames::valid_len`] on are
    /// not entries.
    Damaged(FrameError),
}

/// The entries of concatenated frames, up to the first torn or invalid one.
#[derive(Debug)]
pub struct Frames<'a> {
    bytes: &'a [u8],
    at: usize,
    stop: Option<Stop>,
}

impl<'a> Frames<'a> {
    /// Reads the frames in `bytes` (a segment without its header, or a batch).
    pub fn new(bytes: &'a [u8]) -> Frames<'a> {
        Frames {
            bytes,
            at: 0,
            stop: None,
        }
    }

    /// How many bytes from the start are whole, valid frames read so far (after the last
    /// entry returned; the offset of the next one).
    pub fn valid_len(&self) -> usize {
        self.at
    }

    /// Why reading stopped, once [`Iterator::next`] returned `None`.
    pub fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    fn read(&self) -> Result<(Entry, usize), FrameError> {
        let rest = &self.bytes[self.at..];
        let header = rest.get(..FRAME_HEADER_LEN).ok_or(FrameError::Truncated)?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let body = rest
            .get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)
            .ok_or(FrameError::Truncated)?;
        if crc32fast::hash(body) != crc {
            return Err(FrameError::Checksum);
        }
        Ok((decode(body)?, FRAME_HEADER_LEN + len))
    }
}

impl Iterator for Frames<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.stop.is_some() {
            return None;
        }
        if self.at == self.bytes.len() {
            self.stop = Some(Stop::End);
            return None;
        }
        match self.read() {
            Ok((entry, len)) => {
                self.at += len;
                Some(entry)
            }
            Err(e) => {
                self.stop = Some(Stop::Damaged(e));
                None
            }
        }
    }
}

/// The first bytes of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The lane that writes it.
    pub lane: u32,
    /// Its number on the lane.
    pub number: u64,
    /// How many bytes of the lane's previous segment were valid when this one was started
    /// (header included): a reader ignores what lies beyond (a write abandoned after a
    /// failed sync), and treats a previous segment shorter than this as damaged.
    pub previous_len: u64,
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[..8].copy_from_slice(SEGMENT_MAGIC);
        out[8] = SEGMENT_VERSION;
        out[9..13].copy_from_slice(&self.lane.to_le_bytes());
        out[13..21].copy_from_slice(&self.number.to_le_bytes());
        out[21..29].copy_from_slice(&self.previous_len.to_le_bytes());
        // 29..33: reserved, zero.
        let crc = crc32fast::hash(&out[..33]);
        out[33..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a header from the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, FrameError> {
        let h = bytes
            .get(..SEGMENT_HEADER_LEN)
            .ok_or(FrameError::Truncated)?;
        if &h[..8] != SEGMENT_MAGIC {
            return Err(FrameError::Invalid("not a journal segment (bad magic)"));
        }
        if h[8] != SEGMENT_VERSION {
            return Err(FrameError::Version(h[8]));
        }
        let crc = u32::from_le_bytes(h[33..].try_into().expect("4 bytes"));
        if crc32fast::hash(&h[..33]) != crc {
            return Err(FrameError::Checksum);
        }
        if h[29..33] != [0; 4] {
            return Err(FrameError::Invalid("reserved header bytes are set"));
        }
        Ok(SegmentHeader {
            lane: u32::from_le_bytes(h[9..13].try_into().expect("4 bytes")),
            number: u64::from_le_bytes(h[13..21].try_into().expect("8 bytes")),
            previous_len: u64::from_le_bytes(h[21..29].try_into().expect("8 bytes")),
        })
    }
}

mod codec;

pub use codec::{decode, encode};

#[cfg(test)]
mod tests;
