//! The bytes of an entry's body: little-endian, every field in declaration order (the
//! layout is in the parent module's documentation).

use super::{
    Entry, FrameError, Payload, RECORD_VERSION_1, RECORD_VERSION_2, RECORD_VERSION_3,
    RECORD_VERSION_4, RECORD_VERSION_5, Record,
};

const OPEN: u8 = 1;
const SETTINGS: u8 = 2;
const CONNECT: u8 = 3;
const MESSAGE: u8 = 4;
const DISCONNECT: u8 = 5;
const TIMER: u8 = 6;
const REQUEST: u8 = 7;
const CHECKPOINT: u8 = 8;
const MESSAGES: u8 = 9;
const VERSION: u8 = 10;
const TIMER_DROPPED: u8 = 11;
const DETACH: u8 = 12;

/// The body versions this build reads: each kind's (see [`Record::version`]).
const VERSIONS: [u8; 5] = [
    RECORD_VERSION_1,
    RECORD_VERSION_2,
    RECORD_VERSION_3,
    RECORD_VERSION_4,
    RECORD_VERSION_5,
];

/// Encodes an entry's body (without the frame's length and CRC).
pub fn encode(entry: &Entry) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64 + entry.document.len()));
    w.u8(entry.record.version());
    w.str(&entry.plugin);
    w.str(&entry.document);
    w.u64(entry.incarnation);
    w.u64(entry.seq);
    w.u64(entry.clock_ms);
    match &entry.record {
        Record::Open {
            seed,
            next_connection_id,
            settings,
            version,
        } => {
            w.u8(OPEN);
            w.0.extend_from_slice(seed);
            w.u64(*next_connection_id);
            w.pairs(settings);
            // Version 4 only: present, so not an option.
            if let Some(version) = version {
                w.str(version);
            }
        }
        Record::Version { version } => {
            w.u8(VERSION);
            w.str(version);
        }
        Record::Settings { settings } => {
            w.u8(SETTINGS);
            w.pairs(settings);
        }
        Record::Connect {
            id,
            path,
            query,
            headers,
            subprotocols,
            remote_address,
            claims,
            accepted,
            session,
        } => {
            w.u8(CONNECT);
            w.u64(*id);
            w.str(path);
            w.str(query);
            w.pairs(headers);
            w.u32(subprotocols.len());
            for p in subprotocols {
                w.str(p);
            }
            w.str(remote_address);
            w.option(claims.as_deref());
            w.u8(u8::from(*accepted));
            // Version 3 only (one encoding per entry): present, so not an option.
            if let Some(session) = session {
                w.str(session);
            }
        }
        Record::Message {
            connection,
            text,
            data,
        } => {
            w.u8(MESSAGE);
            w.u64(*connection);
            w.u8(u8::from(*text));
            w.bytes(data);
        }
        Record::Messages {
            connection,
            messages,
        } => {
            w.u8(MESSAGES);
            w.u64(*connection);
            w.u32(messages.len());
            for m in messages {
                w.u8(u8::from(m.text));
                w.bytes(&m.data);
            }
        }
        Record::Disconnect { connection, code } => {
            w.u8(DISCONNECT);
            w.u64(*connection);
            w.0.extend_from_slice(&code.to_le_bytes());
        }
        Record::Timer { id } => {
            w.u8(TIMER);
            w.u64(*id);
        }
        Record::Request {
            method,
            path,
            query,
            headers,
            body,
            claims,
        } => {
            w.u8(REQUEST);
            w.str(method);
            w.str(path);
            w.str(query);
            w.pairs(headers);
            w.bytes(body);
            w.option(claims.as_deref());
        }
        Record::Checkpoint { hash } => {
            w.u8(CHECKPOINT);
            w.0.extend_from_slice(hash);
        }
        Record::TimerDropped { id } => {
            w.u8(TIMER_DROPPED);
            w.u64(*id);
        }
        Record::Detach { connection, code } => {
            w.u8(DETACH);
            w.u64(*connection);
            w.0.extend_from_slice(&code.to_le_bytes());
        }
    }
    w.0
}

/// Decodes an entry's body; every byte must belong to it.
pub fn decode(body: &[u8]) -> Result<Entry, FrameError> {
    let mut r = Reader(body);
    let version = r.u8()?;
    if !VERSIONS.contains(&version) {
        return Err(FrameError::Version(version));
    }
    let plugin = r.str()?;
    let document = r.str()?;
    let incarnation = r.u64()?;
    let seq = r.u64()?;
    let clock_ms = r.u64()?;
    let record = match r.u8()? {
        OPEN => Record::Open {
            seed: r.array()?,
            next_connection_id: r.u64()?,
            settings: r.pairs()?,
            version: if version == RECORD_VERSION_4 {
                Some(r.str()?)
            } else {
                None
            },
        },
        VERSION => Record::Version { version: r.str()? },
        SETTINGS => Record::Settings {
            settings: r.pairs()?,
        },
        CONNECT => Record::Connect {
            id: r.u64()?,
            path: r.str()?,
            query: r.str()?,
            headers: r.pairs()?,
            subprotocols: r.list(|r| r.str())?,
            remote_address: r.str()?,
            claims: r.option()?,
            accepted: r.bool()?,
            session: if version == RECORD_VERSION_3 {
                Some(r.str()?)
            } else {
                None
            },
        },
        MESSAGE => {
            let connection = r.u64()?;
            let Payload { text, data } = r.payload()?;
            Record::Message {
                connection,
                text,
                data,
            }
        }
        MESSAGES => {
            let connection = r.u64()?;
            let messages = r.list(|r| r.payload())?;
            if messages.is_empty() {
                return Err(FrameError::Invalid("a batch of no messages"));
            }
            Record::Messages {
                connection,
                messages,
            }
        }
        DISCONNECT => Record::Disconnect {
            connection: r.u64()?,
            code: u16::from_le_bytes(r.array()?),
        },
        TIMER => Record::Timer { id: r.u64()? },
        REQUEST => Record::Request {
            method: r.str()?,
            path: r.str()?,
            query: r.str()?,
            headers: r.pairs()?,
            body: r.bytes()?.to_vec(),
            claims: r.option()?,
        },
        CHECKPOINT => Record::Checkpoint { hash: r.array()? },
        TIMER_DROPPED => Record::TimerDropped { id: r.u64()? },
        DETACH => Record::Detach {
            connection: r.u64()?,
            code: u16::from_le_bytes(r.array()?),
        },
        _ => return Err(FrameError::Invalid("unknown record kind")),
    };
    if version != record.version() {
        return Err(FrameError::Invalid(
            "a record in another version than its kind's",
        ));
    }
    if !r.0.is_empty() {
        return Err(FrameError::Invalid("trailing bytes"));
    }
    Ok(Entry {
        plugin,
        document,
        incarnation,
        seq,
        clock_ms,
        record,
    })
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: usize) {
        let v = u32::try_from(v).expect("a journal field is below 4 GiB");
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len());
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn pairs(&mut self, pairs: &[(String, String)]) {
        self.u32(pairs.len());
        for (a, b) in pairs {
            self.str(a);
            self.str(b);
        }
    }
    fn option(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Invalid("a field runs past the body"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<usize, FrameError> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn bool(&mut self) -> Result<bool, FrameError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FrameError::Invalid("a flag is neither 0 nor 1")),
        }
    }
    fn bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let len = self.u32()?;
        self.take(len)
    }
    fn str(&mut self) -> Result<String, FrameError> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| FrameError::Invalid("a string is not UTF-8"))
    }
    fn list<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, FrameError>,
    ) -> Result<Vec<T>, FrameError> {
        let count = self.u32()?;
        // Each item takes at least 4 bytes: a count cannot reserve more than the body holds.
        let mut out = Vec::with_capacity(count.min(self.0.len() / 4));
        for _ in 0..count {
            out.push(item(self)?);
        }
        Ok(out)
    }
    fn payload(&mut self) -> Result<Payload, FrameError> {
        let text = self.bool()?;
        let data = self.bytes()?.to_vec();
        if text && std::str::from_utf8(&data).is_err() {
            return Err(FrameError::Invalid("a text message is not UTF-8"));
        }
        Ok(Payload { text, data })
    }
    fn pairs(&mut self) -> Result<Vec<(String, String)>, FrameError> {
        self.list(|r| Ok((r.str()?, r.str()?)))
    }
    fn option(&mut self) -> Result<Option<String>, FrameError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(FrameError::Invalid("an option tag is neither 0 nor 1")),
        }
    }
}
