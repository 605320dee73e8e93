//! What a client sends, event by event: the rate limits, pings, its close, a session's
//! numbers; its messages gathered into a batch ([`Pending`]) and handed to the document
//! in one guest call, with what happens per message around that call.
//!
//! Per message, as when every message was a call of its own: the rate limits (a message
//! that breaks one is not applied, those before it are), a session's numbering (a resend
//! is dropped, a gap refused), why it cannot apply (counted in `messages_unapplied`), the
//! delivery log, the received counters, a session's last applied number. A batch ends
//! before anything that must come after the messages read so far: a ping (its pong goes
//! after their replies), the client's close, a broken limit or protocol. A consumer that
//! closes the connection while handling a batch stops there and says how many it handled
//! (WIT `on-messages`); the rest count as unapplied, as anything a closed connection
//! sends, and later batches of the read do not apply.

use std::num::NonZeroU16;
use std::time::Instant;

use tokio_tungstenite::tungstenite::Message as Frame;

use super::Connection;
use crate::config::Config;
use crate::document::DocumentError;
use crate::guest::Message;
use crate::lane::batch::Pending;
use crate::lane::sessions::{Unframed, unframe};
use crate::metrics::{RateLimit, Unapplied};
use crate::net::token_bucket::Rate;
use crate::net::websocket::Event;

/// The bucket of a connection's messages (pings count too) and that of its message
/// bytes, in [`Connection::sends`].
const MESSAGES: usize = 0;
const BYTES: usize = 1;

/// The rates of a connection's token buckets ([`Connection::sends`]): its plugin's, the
/// same for all its connections, so none keeps them.
pub(super) fn send_rates(config: &Config, plugin: &str) -> [Rate; 2] {
    let rate = config.send_rate_for(plugin);
    [Rate::from(rate.messages), Rate::from(rate.bytes)]
}

impl Connection {
    /// The rates its token buckets refill at, looked up once per read.
    pub(super) fn send_rates(&self) -> [Rate; 2] {
        send_rates(&self.lane.services.config, &self.doc.borrow().plugin().name)
    }

    /// Handles one event from the client that arrived by `now`, its messages gathered in
    /// `pending`, its send `rates` those of [`Connection::send_rates`]; returns the
    /// clock's reading after it (later than `now` if the guest was called).
    pub(super) fn event(
        &mut self,
        event: Event,
        now: Instant,
        rates: &[Rate; 2],
        pending: &mut Pending<'_>,
    ) -> Instant {
        if self.fail {
            // Closing for a broken limit: the rest of this read is not applied.
            return now;
        }
        let size = match &event {
            Event::Text(text) => text.len(),
            Event::Binary(bytes) => bytes.len(),
            Event::Ping(payload) => payload.len(),
            Event::Pong | Event::Close(_) => 0,
        };
        if matches!(event, Event::Ping(_) | Event::Text(_) | Event::Binary(_)) {
            let broken = if self.sends.take(MESSAGES, 1.0, rates, now).is_err() {
                Some(RateLimit::Messages)
            } else if self.sends.take(BYTES, size as f64, rates, now).is_err() {
                Some(RateLimit::Bytes)
            } else {
                None
            };
            if let Some(limit) = broken {
                // What came before it applies; it and the rest of the read do not.
                let now = self.hand_over(pending, now);
                tracing::debug!(lane = self.lane.index, peer = %self.peer(), ?limit, "client sends too fast: closing");
                self.lane.metrics.rate_limited(limit);
                self.fail_with(1008, "rate limit exceeded");
                return now;
            }
        }
        let message = match event {
            Event::Text(text) => Message::Text(text),
            Event::Binary(bytes) => Message::Binary(bytes),
            Event::Ping(payload) => {
                // The pong goes after the replies to the messages before the ping.
                let now = self.hand_over(pending, now);
                self.outbox.push(&Frame::Pong(payload.into()));
                return now;
            }
            Event::Pong => return now,
            Event::Close(close) => {
                let now = self.hand_over(pending, now);
                let code = close.map_or(1005, |(code, _)| code);
                self.client_closed = Some(NonZeroU16::new(code).expect("a close code is never 0"));
                // The client is leaving: what is still queued for it is dropped, and the
                // answer to its close is the last frame.
                self.outbox.finish();
                return now;
            }
        };
        let (message, seq) = match self.session {
            None => (message, None),
            Some(_) => match unframe(&self.outbox, message, pending.waiting_seqs()) {
                Unframed::Apply(message, seq) => (message, Some(seq)),
                Unframed::Control => return now,
                Unframed::Duplicate => {
                    // Applied before the client's last socket broke (or waiting in this
                    // batch): acknowledged again.
                    self.ack_due = true;
                    return now;
                }
                Unframed::Refused(reason) => {
                    let now = self.hand_over(pending, now);
                    self.fail_with(1002, reason);
                    return now;
                }
            },
        };
        let mut now = now;
        if !pending.fits(&message) {
            now = self.hand_over(pending, now);
        }
        pending.push(message, seq);
        if pending.is_full() {
            now = self.hand_over(pending, now);
        }
        now
    }

    /// Hands the messages waiting in `pending` to the document at `now`: one guest call
    /// (`on-message` for one, `on-messages` for more), what happens per message around
    /// it, and the batch's cost measured for the next one's bound. Returns the clock's
    /// reading after the call.
    pub(super) fn hand_over(&mut self, pending: &mut Pending<'_>, now: Instant) -> Instant {
        let count = pending.messages().len();
        if count == 0 {
            return now;
        }
        let metrics = &self.lane.metrics;
        if let Some(why) = self.unapplied() {
            // Read, not applied: counted apart, never as received.
            for _ in 0..count {
                metrics.unapplied(why);
            }
            pending.clear();
            return now;
        }
        let mut doc = self.doc.borrow_mut();
        if let Some(log) = &self.lane.deliveries {
            for _ in 0..count {
                log.applied(self.lease, &doc.plugin().name, doc.id());
            }
        }
        let result = match pending.messages() {
            [one] => doc.message(self.id, one, now).map(|()| 1),
            // More than one only when the consumer takes batches: the bound said so at
            // the start of this read, and no reload runs within one.
            many => doc.messages(self.id, many, now),
        };
        let after = doc.last_activity().max(now);
        drop(doc);
        let (handled, acknowledged) = match result {
            Ok(handled) => {
                pending
                    .bound
                    .measured(count, after.saturating_duration_since(now));
                (handled, handled)
            }
            // Journal mode: the consumer failed on them, and the document went on without
            // them (the sender is closing with 1011): received, never acknowledged.
            Err(DocumentError::InputRefused(_)) => (count, 0),
            // The document crashed and the outbox is closing with 1011: the messages
            // reached the consumer all the same (received, as one by one).
            Err(_) => (count, count),
        };
        metrics.messages_in.inc_by(handled as u64);
        metrics
            .bytes_in
            .inc_by(pending.bytes_of_first(handled) as u64);
        for _ in handled..count {
            // The consumer closed the connection while handling an earlier one.
            metrics.unapplied(Unapplied::Closing);
        }
        if acknowledged > 0
            && let Some(seq) = pending.seq_of(acknowledged)
        {
            self.outbox.applied(seq);
            self.ack_due = true;
        }
        pending.clear();
        after
    }

    /// Why a message that arrives now cannot change the document, if it cannot.
    fn unapplied(&self) -> Option<Unapplied> {
        if self.client_closed.is_some() || !self.outbox.takes_input() {
            // The consumer (or a broken limit) closed the connection: a kicked client
            // changes nothing more. A connection that closes because its document leaves
            // still applies what its client sent before its close frame.
            return Some(Unapplied::Closing);
        }
        if self.lane.is_frozen() {
            // The document's last state is being saved for the shutdown: the client got
            // 1012 and may send this again after it reconnects.
            return Some(Unapplied::Shutdown);
        }
        {
            let doc = self.doc.borrow();
            if doc.is_retired() || doc.is_crashed() {
                return Some(Unapplied::Moved);
            }
        }
        if let Some(clock) = self.lane.services.storage.leases()
            && !clock.holds(self.lease)
        {
            // This host may not serve the document any more (its lease lapsed, or it
            // registered anew): nothing more is applied; the client gets 1012.
            let key = {
                let d = self.doc.borrow();
                (d.plugin().name.clone(), d.id().to_owned())
            };
            self.lane.retire(&key, &self.doc, "lapsed");
            return Some(Unapplied::Moved);
        }
        None
    }
}
