//! The messages of one read of a connection, grouped into guest calls: a consumer that
//! exports `on-messages` (WIT 0.1.2) gets them in batches, one call each, instead of one
//! `on-message` call per message. The socket's task fills a [`Pending`] as it decodes a
//! read and hands it to the document when it is full, when something must come after
//! the messages read so far (a ping's pong, the client's close, a broken limit), and at
//! the end of the read.
//!
//! A batch is one guest call under one deadline: it keeps the lane's promise (it never
//! blocks longer than the deadline per call) whatever it holds, but a consumer must now
//! handle the whole batch within the deadline. So a batch is bounded in messages and
//! bytes, and sized from the consumer's measured cost per message: a connection starts
//! with [`FIRST_MESSAGES`] and grows towards [`MAX_MESSAGES`] only while a batch takes
//! at most [`DEADLINE_SHARE`] of the deadline. A consumer that needs a large part of its
//! deadline for one message gets one message per call, as before.

use std::time::Duration;

use crate::guest::Message;

/// At most this many messages in one call. The boundary's fixed cost per call (entry,
/// lowering, post-return: a sixth of the lane's time at saturation when paid per message)
/// spread over 64 messages is a fraction of a percent of it; more would save nothing
/// measurable while the messages share one deadline.
pub const MAX_MESSAGES: usize = 64;

/// At most this many payload bytes in one call (a larger message goes alone): the call
/// copies every payload into guest memory at once, beside the state the consumer keeps,
/// and a consumer's work grows with the bytes. 64 KiB, the lane's read buffer: about what
/// one read brings.
pub const MAX_BYTES: usize = 64 * 1024;

/// A connection's first batch holds at most this many messages: the consumer's cost per
/// message is not known yet, and a consumer that needs up to an eighth of its deadline
/// per message must not trap because messages arrived together.
pub const FIRST_MESSAGES: usize = 8;

/// A batch is sized to take at most this share of the deadline (1/4) at the consumer's
/// last measured cost per message, so that a batch whose messages cost up to four times
/// the last ones still ends in time. The bound at most doubles from one batch to the
/// next.
pub const DEADLINE_SHARE: u32 = 4;

/// How large a connection's next batch may be, kept by its task between reads (8 bytes:
/// every idle connection's task holds one).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The budget of one batch, the deadline's share, in microseconds (the deadline is
    /// whole milliseconds).
    budget_micros: u32,
    /// Messages (1: the consumer takes one at a time), at most [`MAX_MESSAGES`].
    messages: u8,
    /// The consumer exports `on-messages`.
    batches: bool,
}

impl Bound {
    /// The first bound of a connection to a consumer that takes batches (`batches`) or
    /// not, under `deadline`.
    pub fn new(batches: bool, deadline: Duration) -> Bound {
        let budget = (deadline / DEADLINE_SHARE).as_micros();
        Bound {
            budget_micros: u32::try_from(budget).unwrap_or(u32::MAX),
            messages: if batches { FIRST_MESSAGES as u8 } else { 1 },
            batches,
        }
    }

    fn budget(&self) -> Duration {
        Duration::from_micros(u64::from(self.budget_micros))
    }

    /// The consumer may have changed (a hot reload): a consumer that starts taking
    /// batches starts at [`FIRST_MESSAGES`], one that stops gets one message per call.
    pub fn consumer(&mut self, batches: bool) {
        if batches != self.batches {
            *self = Bound::new(batches, self.budget() * DEADLINE_SHARE);
        }
    }

    /// A call of `n` messages took `took`: the next batch holds as many as fit in the
    /// budget at that cost, at most twice the last bound and [`MAX_MESSAGES`], at least
    /// one.
    pub fn measured(&mut self, n: usize, took: Duration) {
        if !self.batches {
            return;
        }
        let fit = match took.as_nanos() {
            0 => MAX_MESSAGES,
            nanos => usize::try_from(self.budget().as_nanos() * n as u128 / nanos)
                .unwrap_or(MAX_MESSAGES),
        };
        let messages = fit.min(self.messages() * 2).clamp(1, MAX_MESSAGES);
        self.messages = u8::try_from(messages).expect("at most MAX_MESSAGES");
    }

    /// How many messages the next batch may hold.
    pub fn messages(&self) -> usize {
        usize::from(self.messages)
    }
}

/// The messages of a read not yet handed to the document, in the lane's batch buffer.
#[derive(Debug)]
pub struct Pending<'a> {
    messages: &'a mut Vec<Message>,
    bytes: usize,
    /// The session number of the first message, for a session's connection.
    first_seq: Option<u64>,
    /// The connection's bound, updated as calls are measured.
    pub bound: Bound,
}

impl<'a> Pending<'a> {
    /// An empty batch in `buffer` (emptied first), bounded by `bound`.
    pub fn new(buffer: &'a mut Vec<Message>, bound: Bound) -> Pending<'a> {
        buffer.clear();
        Pending {
            messages: buffer,
            bytes: 0,
            first_seq: None,
            bound,
        }
    }

    /// The messages waiting.
    pub fn messages(&self) -> &[Message] {
        self.messages
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// How many session messages wait (their numbers follow the last applied one).
    pub fn waiting_seqs(&self) -> u64 {
        if self.first_seq.is_some() {
            self.messages.len() as u64
        } else {
            0
        }
    }

    /// Whether `msg` may join the messages waiting (else they go first).
    pub fn fits(&self, msg: &Message) -> bool {
        self.is_empty()
            || (self.messages.len() < self.bound.messages() && self.bytes + size(msg) <= MAX_BYTES)
    }

    /// Adds a message (the client's number `seq`, for a session), after [`Self::fits`].
    pub fn push(&mut self, msg: Message, seq: Option<u64>) {
        if self.is_empty() {
            self.first_seq = seq;
        }
        self.bytes += size(&msg);
        self.messages.push(msg);
    }

    /// Whether the batch is as large as it may be: hand it over now.
    pub fn is_full(&self) -> bool {
        self.messages.len() >= self.bound.messages() || self.bytes >= MAX_BYTES
    }

    /// The payload bytes of the first `n` messages.
    pub fn bytes_of_first(&self, n: usize) -> usize {
        self.messages[..n].iter().map(size).sum()
    }

    /// The session number of the `n`th message (n > 0), if they are a session's.
    pub fn seq_of(&self, n: usize) -> Option<u64> {
        self.first_seq.map(|first| first + n as u64 - 1)
    }

    /// Empties the batch (the buffer keeps its capacity for the lane's next one).
    pub fn clear(&mut self) {
        self.messages.clear();
        self.bytes = 0;
        self.first_seq = None;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        // The lane's buffer holds no message of a read that is over.
        self.messages.clear();
    }
}

/// A message's payload bytes.
fn size(msg: &Message) -> usize {
    match msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_millis(100);

    fn text(n: usize) -> Message {
        Message::Text("x".repeat(n))
    }

    #[test]
    fn a_batch_is_bounded_in_messages_and_bytes() {
        let mut buffer = vec![text(3)];
        let mut p = Pending::new(&mut buffer, Bound::new(true, DEADLINE));
        assert!(p.is_empty());
        for _ in 0..FIRST_MESSAGES {
            assert!(p.fits(&text(1)) && !p.is_full());
            p.push(text(1), None);
        }
        assert!(p.is_full() && !p.fits(&text(1)));
        assert_eq!(p.bytes_of_first(3), 3);
        p.clear();
        p.push(text(MAX_BYTES - 10), None);
        assert!(!p.fits(&text(11)) && p.fits(&text(10)));
        p.clear();
        // A message larger than the bound goes alone.
        assert!(p.fits(&text(MAX_BYTES * 2)));
        p.push(text(MAX_BYTES * 2), None);
        assert!(p.is_full());
        drop(p);
        assert!(buffer.is_empty());
    }

    #[test]
    fn the_bound_follows_the_cost_per_message() {
        let mut b = Bound::new(true, DEADLINE);
        assert_eq!(b.messages(), FIRST_MESSAGES);
        // Fast: it doubles up to the maximum.
        b.measured(8, Duration::from_micros(8));
        assert_eq!(b.messages(), 16);
        for _ in 0..10 {
            b.measured(b.messages(), Duration::ZERO);
        }
        assert_eq!(b.messages(), MAX_MESSAGES);
        // 5 ms a message: 25 ms (a quarter of the deadline) holds five.
        b.measured(10, Duration::from_millis(50));
        assert_eq!(b.messages(), 5);
        // A message that takes most of the deadline: one at a time again.
        b.measured(1, Duration::from_millis(60));
        assert_eq!(b.messages(), 1);
        // Then it grows back only as the cost allows.
        b.measured(1, Duration::from_millis(10));
        assert_eq!(b.messages(), 2);
        // A consumer without `on-messages` never batches; a reload may change that.
        let mut single = Bound::new(false, DEADLINE);
        single.measured(1, Duration::ZERO);
        assert_eq!(single.messages(), 1);
        single.consumer(true);
        assert_eq!(single.messages(), FIRST_MESSAGES);
        single.consumer(false);
        assert_eq!(single.messages(), 1);
        let mut buffer = Vec::new();
        let mut p = Pending::new(&mut buffer, single);
        p.push(text(1), None);
        assert!(p.is_full());
    }

    #[test]
    fn session_numbers_follow_the_first() {
        let mut buffer = Vec::new();
        let mut p = Pending::new(&mut buffer, Bound::new(true, DEADLINE));
        assert_eq!(p.waiting_seqs(), 0);
        p.push(text(1), Some(7));
        p.push(text(1), Some(8));
        assert_eq!(p.waiting_seqs(), 2);
        assert_eq!((p.seq_of(1), p.seq_of(2)), (Some(7), Some(8)));
        p.clear();
        p.push(text(1), None);
        assert_eq!((p.waiting_seqs(), p.seq_of(1)), (0, None));
    }
}
