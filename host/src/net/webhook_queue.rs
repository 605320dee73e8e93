//! One plugin's webhook queue: the events waiting for the application's backend, bounded
//! in events (`max_pending`) and in bytes (`max_pending_bytes`), oldest dropped first,
//! and holding at most one waiting `saved` per document (the newest). Plain data under
//! its owner's lock: no I/O, no clock, every step O(1) but the removal of a replaced
//! `saved` (found by its document and a binary search, then a move of the shorter side
//! of the queue).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::config::WebhookEvent;

/// What the byte budget counts for an event besides its document id and its export: its
/// queue entry, its other fields and its JSON envelope, roughly.
pub const EVENT_OVERHEAD_BYTES: usize = 128;

/// What a `saved` event carries: the consumer's own export of the document (its
/// `GET` answer when that is 200), else the snapshot bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// The body of the consumer's `GET` answer, with its content type.
    Consumer {
        /// `content-type` of the answer, if it had one.
        content_type: Option<String>,
        /// The body.
        body: Vec<u8>,
    },
    /// The snapshot's state bytes.
    Snapshot(Vec<u8>),
}

/// One event for the backend.
#[derive(Debug, Clone)]
pub struct Event {
    /// What happened.
    pub kind: WebhookEvent,
    /// The document.
    pub document: String,
    /// The connection (`connected`, `disconnected`).
    pub connection: Option<u64>,
    /// The close code (`disconnected`).
    pub code: Option<u16>,
    /// The export (`saved`).
    pub export: Option<Export>,
}

impl Event {
    /// The bytes this event counts for in the queue's byte budget: what it holds (its
    /// document id and export) plus [`EVENT_OVERHEAD_BYTES`].
    pub fn queued_bytes(&self) -> usize {
        let export = match &self.export {
            Some(Export::Consumer { content_type, body }) => {
                content_type.as_ref().map_or(0, String::len) + body.len()
            }
            Some(Export::Snapshot(bytes)) => bytes.len(),
            None => 0,
        };
        EVENT_OVERHEAD_BYTES + self.document.len() + export
    }
}

/// The event at the head of the queue, handed to the delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its sequence number (unique in the process).
    pub id: u64,
    /// The event.
    pub event: Arc<Event>,
    /// When it was queued (ms since the epoch).
    pub at_ms: u64,
}

/// What appending one event cost the queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Events dropped to make room (the new one itself when it is larger than the whole
    /// byte budget).
    pub dropped: u64,
    /// Older `saved` events of the same document taken out (0 or 1).
    pub replaced: u64,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    event: Arc<Event>,
    at_ms: u64,
    bytes: usize,
}

/// The events of one plugin waiting for its backend, oldest first.
#[derive(Debug)]
pub struct Pending {
    /// In ascending id order (ids are taken under the owner's lock).
    entries: VecDeque<Entry>,
    /// The sum of the entries' `bytes`.
    bytes: usize,
    /// The id of the front entry once its delivery started: it is never replaced (a
    /// newer `saved` queues behind it), though a bound may still drop it.
    in_flight: Option<u64>,
    /// Document -> id of its waiting `saved` (not the one in flight).
    saved: HashMap<String, u64>,
    max_events: usize,
    max_bytes: usize,
}

impl Pending {
    /// An empty queue holding at most `max_events` events and `max_bytes` bytes.
    pub fn new(max_events: usize, max_bytes: usize) -> Pending {
        Pending {
            entries: VecDeque::new(),
            bytes: 0,
            in_flight: None,
            saved: HashMap::new(),
            max_events,
            max_bytes,
        }
    }

    /// Events queued (the one in flight included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes queued, as the budget counts them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends event `id` (above every id queued so far). A `saved` takes the place of
    /// its document's waiting `saved` at the end of the queue, so what is delivered keeps
    /// the order things happened in; then the oldest events make room under both bounds.
    /// An event larger than the whole byte budget is dropped, the queue untouched.
    pub fn push(&mut self, id: u64, event: Event, at_ms: u64) -> Pushed {
        debug_assert!(self.entries.back().is_none_or(|last| last.id < id));
        let bytes = event.queued_bytes();
        if bytes > self.max_bytes {
            return Pushed {
                dropped: 1,
                replaced: 0,
            };
        }
        let mut pushed = Pushed::default();
        if event.kind == WebhookEvent::Saved
            && let Some(older) = self.saved.remove(&event.document)
        {
            self.remove(older);
            pushed.replaced += 1;
        }
        while !self.entries.is_empty()
            && (self.entries.len() >= self.max_events || self.bytes + bytes > self.max_bytes)
        {
            self.drop_oldest();
            pushed.dropped += 1;
        }
        if event.kind == WebhookEvent::Saved {
            self.saved.insert(event.document.clone(), id);
        }
        self.bytes += bytes;
        self.entries.push_back(Entry {
            id,
            event: Arc::new(event),
            at_ms,
            bytes,
        });
        pushed
    }

    /// The oldest event, now in flight (the same one again while it is retried).
    pub fn next_delivery(&mut self) -> Option<Delivery> {
        let front = self.entries.front()?;
        if self.in_flight != Some(front.id) {
            self.in_flight = Some(front.id);
            if self.saved.get(&front.event.document) == Some(&front.id) {
                self.saved.remove(&front.event.document);
            }
        }
        Some(Delivery {
            id: front.id,
            event: front.event.clone(),
            at_ms: front.at_ms,
        })
    }

    /// Takes event `id` out once its delivery ended (delivered or refused for good);
    /// false when a bound dropped it meanwhile (it was counted then).
    pub fn finish(&mut self, id: u64) -> bool {
        if self.in_flight != Some(id) {
            return false;
        }
        self.in_flight = None;
        // The event in flight is always the front: only `drop_oldest` and this take it.
        let entry = self
            .entries
            .pop_front()
            .expect("the event in flight is queued");
        debug_assert_eq!(entry.id, id);
        self.bytes -= entry.bytes;
        true
    }

    fn drop_oldest(&mut self) {
        let Some(entry) = self.entries.pop_front() else {
            return;
        };
        self.bytes -= entry.bytes;
        if self.in_flight == Some(entry.id) {
            self.in_flight = None;
        } else if self.saved.get(&entry.event.document) == Some(&entry.id) {
            self.saved.remove(&entry.event.document);
        }
    }

    /// Takes out the waiting event `id` (a replaced `saved`).
    fn remove(&mut self, id: u64) {
        if let Ok(at) = self.entries.binary_search_by_key(&id, |e| e.id)
            && let Some(entry) = self.entries.remove(at)
        {
            self.bytes -= entry.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: WebhookEvent, document: &str, export: usize) -> Event {
        Event {
            kind,
            document: document.into(),
            connection: None,
            code: None,
            export: (export > 0).then(|| Export::Snapshot(vec![0; export])),
        }
    }

    fn saved(document: &str, export: usize) -> Event {
        event(WebhookEvent::Saved, document, export)
    }

    /// (kind, document, export length) of every event queued, oldest first.
    fn contents(q: &Pending) -> Vec<(&'static str, String, usize)> {
        q.entries
            .iter()
            .map(|e| {
                let len = match &e.event.export {
                    Some(Export::Snapshot(b)) => b.len(),
                    _ => 0,
                };
                (e.event.kind.name(), e.event.document.clone(), len)
            })
            .collect()
    }

    /// Every invariant the queue keeps.
    fn check(q: &Pending) {
        let sum: usize = q.entries.iter().map(|e| e.bytes).sum();
        assert_eq!(q.bytes, sum, "bytes counted exactly");
        assert!(q.bytes <= q.max_bytes && q.entries.len() <= q.max_events);
        assert!(q.entries.iter().all(|e| e.bytes == e.event.queued_bytes()));
        assert!(
            q.entries
                .iter()
                .zip(q.entries.iter().skip(1))
                .all(|(a, b)| a.id < b.id)
        );
        if let Some(id) = q.in_flight {
            assert_eq!(q.entries.front().map(|e| e.id), Some(id));
        }
        let waiting_saved: HashMap<String, u64> = q
            .entries
            .iter()
            .filter(|e| e.event.kind == WebhookEvent::Saved && Some(e.id) != q.in_flight)
            .map(|e| (e.event.document.clone(), e.id))
            .collect();
        let count = q
            .entries
            .iter()
            .filter(|e| e.event.kind == WebhookEvent::Saved && Some(e.id) != q.in_flight)
            .count();
        assert_eq!(count, waiting_saved.len(), "one waiting saved per document");
        assert_eq!(q.saved, waiting_saved);
    }

    #[test]
    fn the_count_bound_drops_the_oldest() {
        let mut q = Pending::new(2, 1 << 20);
        for (id, doc) in ["a", "b", "c"].into_iter().enumerate() {
            q.push(id as u64, event(WebhookEvent::Opened, doc, 0), 0);
            check(&q);
        }
        let docs: Vec<String> = contents(&q).into_iter().map(|(_, d, _)| d).collect();
        assert_eq!(docs, ["b", "c"]);
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_until_the_new_event_fits() {
        let size = |export| saved("d0", export).queued_bytes();
        // Room for 1000 + 1000 export bytes, not a third event.
        let mut q = Pending::new(100, size(1000) * 2 + 10);
        assert_eq!(q.push(1, saved("d1", 1000), 0), Pushed::default());
        assert_eq!(q.push(2, saved("d2", 1000), 0), Pushed::default());
        assert_eq!(
            q.push(3, saved("d3", 10), 0),
            Pushed {
                dropped: 1,
                replaced: 0
            }
        );
        check(&q);
        // A large one takes the room of both older ones.
        assert_eq!(q.push(4, saved("d4", 2100), 0).dropped, 2);
        check(&q);
        assert_eq!(contents(&q), [("saved", "d4".into(), 2100)]);
        assert_eq!(q.bytes(), size(2100));
    }

    #[test]
    fn an_event_larger_than_the_budget_is_dropped_alone() {
        let mut q = Pending::new(100, 1000);
        q.push(1, saved("d", 100), 0);
        let before = q.bytes();
        assert_eq!(
            q.push(2, saved("d", 2000), 0),
            Pushed {
                dropped: 1,
                replaced: 0
            }
        );
        // The older state stays: better than none.
        assert_eq!(contents(&q), [("saved", "d".into(), 100)]);
        assert_eq!(q.bytes(), before);
        check(&q);
    }

    #[test]
    fn a_newer_saved_replaces_the_waiting_one_at_the_end() {
        let mut q = Pending::new(100, 1 << 20);
        q.push(1, event(WebhookEvent::Opened, "a", 0), 0);
        q.push(2, saved("a", 10), 0);
        q.push(3, saved("b", 20), 0);
        q.push(4, event(WebhookEvent::Closed, "a", 0), 0);
        q.push(5, event(WebhookEvent::Opened, "a", 0), 0);
        assert_eq!(
            q.push(6, saved("a", 30), 0),
            Pushed {
                dropped: 0,
                replaced: 1
            }
        );
        check(&q);
        // The new state comes after what happened before it, never before `closed`.
        assert_eq!(
            contents(&q),
            [
                ("opened", "a".into(), 0),
                ("saved", "b".into(), 20),
                ("closed", "a".into(), 0),
                ("opened", "a".into(), 0),
                ("saved", "a".into(), 30),
            ]
        );
        let expected: usize = [
            event(WebhookEvent::Opened, "a", 0).queued_bytes() * 2,
            saved("b", 20).queued_bytes(),
            event(WebhookEvent::Closed, "a", 0).queued_bytes(),
            saved("a", 30).queued_bytes(),
        ]
        .iter()
        .sum();
        assert_eq!(q.bytes(), expected);
    }

    #[test]
    fn the_saved_in_flight_is_not_replaced() {
        let mut q = Pending::new(100, 1 << 20);
        q.push(1, saved("a", 10), 0);
        assert_eq!(q.next_delivery().map(|d| d.id), Some(1));
        assert_eq!(q.push(2, saved("a", 20), 0).replaced, 0);
        check(&q);
        // The next one replaces the waiting one, not the one in flight.
        assert_eq!(q.push(3, saved("a", 30), 0).replaced, 1);
        check(&q);
        assert_eq!(
            contents(&q),
            [("saved", "a".into(), 10), ("saved", "a".into(), 30)]
        );
        // Retried: the same one again.
        assert_eq!(q.next_delivery().map(|d| d.id), Some(1));
        assert!(q.finish(1));
        check(&q);
        assert_eq!(q.next_delivery().map(|d| d.id), Some(3));
        assert!(q.finish(3) && q.is_empty() && q.bytes() == 0);
    }

    #[test]
    fn an_event_in_flight_that_a_bound_dropped_is_not_finished_twice() {
        let mut q = Pending::new(2, 1 << 20);
        q.push(1, saved("a", 10), 0);
        assert_eq!(q.next_delivery().map(|d| d.id), Some(1));
        q.push(2, saved("b", 10), 0);
        assert_eq!(q.push(3, saved("c", 10), 0).dropped, 1);
        check(&q);
        assert!(!q.finish(1), "dropped meanwhile");
        assert_eq!(q.len(), 2);
        check(&q);
        assert_eq!(q.next_delivery().map(|d| d.id), Some(2));
    }

    #[test]
    fn byte_accounting_stays_exact_through_any_mix() {
        // A fixed pseudo-random walk over pushes (every kind, few documents, sizes up to
        // past the budget), starts and ends of deliveries.
        let mut q = Pending::new(7, 4000);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut roll = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let kinds = [
            WebhookEvent::Saved,
            WebhookEvent::Saved,
            WebhookEvent::Opened,
            WebhookEvent::Closed,
        ];
        let mut in_flight = None;
        // Finished, dropped while in flight, replaced, dropped by a bound.
        let mut seen = [0u32; 4];
        for id in 1..5000u64 {
            match roll(5) {
                0 => in_flight = q.next_delivery().map(|d| d.id),
                1 => {
                    if let Some(id) = in_flight.take() {
                        seen[usize::from(!q.finish(id))] += 1;
                    }
                }
                _ => {
                    let kind = kinds[roll(4) as usize];
                    let doc = format!("d{}", roll(4));
                    let export = if kind == WebhookEvent::Saved {
                        roll(4500) as usize
                    } else {
                        0
                    };
                    let too_large = EVENT_OVERHEAD_BYTES + doc.len() + export > 4000;
                    let before = q.len();
                    let pushed = q.push(id, event(kind, &doc, export), 0);
                    assert_eq!(
                        q.len() + pushed.dropped as usize + pushed.replaced as usize,
                        before + 1,
                        "every event is queued, dropped or replaced"
                    );
                    if too_large {
                        assert_eq!((q.len(), pushed.dropped), (before, 1));
                    }
                    seen[2] += pushed.replaced as u32;
                    seen[3] += pushed.dropped as u32;
                }
            }
            check(&q);
        }
        assert!(seen.iter().all(|&n| n > 20), "every path taken: {seen:?}");
    }
}
