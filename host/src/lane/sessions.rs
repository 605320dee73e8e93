//! The lane's sessions (docs/sessions.md): which connection each session id names,
//! parking a session whose socket broke, handing it to the socket that resumes it, and
//! ending it when its grace runs out; and reading a session client's frames
//! ([`unframe`]).
//!
//! A session is lane-local: every socket of a document is served by its owner lane, so a
//! resume arrives where the session lives. The connection's own state (numbers, replay
//! buffer) is in its [`Outbox`]; this table only finds it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::document::outbox::{Ending, Incoming, Outbox};
use crate::document::{DocumentCell, DocumentKey};
use crate::guest::Message;
use wasmroom_wire::session::{self as session_frames, ClientText};

/// One session of this lane.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub key: DocumentKey,
    pub doc: DocumentCell,
    /// The connection's id in its document.
    pub connection: u64,
    pub outbox: Rc<Outbox>,
    /// A socket serves it now (else it is parked).
    served: Cell<bool>,
    /// A new socket is taking it over.
    claimed: Cell<bool>,
    /// The socket serving it must stop: a new one resumes it (its task is woken through
    /// the outbox's [`Wake`](crate::document::outbox::Wake) and checks this).
    superseded: Cell<bool>,
    /// Whether it is served or claimed changed.
    changed: Notify,
}

/// The lane's sessions, by id.
#[derive(Debug, Default)]
pub struct Sessions {
    table: RefCell<HashMap<String, Rc<Session>>>,
}

/// A new session id: 128 random bits in hex.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    // The OS's generator does not fail where wasmroom runs; an id from the clock instead
    // would be guessable, so failing loudly is the honest answer.
    getrandom::fill(&mut bytes).expect("the OS random generator works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// Registers a new session of connection `connection`, served by a socket now.
    pub fn start(
        &self,
        id: String,
        key: DocumentKey,
        doc: DocumentCell,
        connection: u64,
        outbox: Rc<Outbox>,
    ) -> Rc<Session> {
        let session = Rc::new(Session {
            id: id.clone(),
            key,
            doc,
            connection,
            outbox,
            served: Cell::new(true),
            claimed: Cell::new(false),
            superseded: Cell::new(false),
            changed: Notify::new(),
        });
        self.table.borrow_mut().insert(id, session.clone());
        session
    }

    /// Registers session `id` of connection `connection`, carried from the document's
    /// last host: parked, no socket serves it yet.
    pub fn start_parked(
        &self,
        id: String,
        key: DocumentKey,
        doc: DocumentCell,
        connection: u64,
        outbox: Rc<Outbox>,
    ) -> Rc<Session> {
        let session = self.start(id, key, doc, connection, outbox);
        session.served.set(false);
        session
    }

    /// Session `id` of document `key`, claimed for a client that received every message
    /// up to `last`, if it can resume: it exists, no other socket is taking it over, its
    /// connection is open and its replay buffer holds everything after `last`. A socket
    /// still serving it is told to stop.
    pub fn claim(&self, id: &str, key: &DocumentKey, last: u64) -> Option<Rc<Session>> {
        let session = self.table.borrow().get(id).cloned()?;
        if &session.key != key || session.claimed.get() || !session.outbox.can_resume(last) {
            return None;
        }
        session.claimed.set(true);
        if session.served.get() {
            // Its socket did not notice the cut yet: it stops and parks the session.
            session.superseded.set(true);
            session.outbox.wake.notify_one();
        }
        Some(session)
    }

    /// Forgets session `id`.
    pub fn remove(&self, id: &str) {
        self.table.borrow_mut().remove(id);
    }
}

impl Session {
    /// Whether the socket serving it must stop (checked before each wait).
    pub fn is_superseded(&self) -> bool {
        self.superseded.get()
    }

    /// Waits until no socket serves this claimed session (its old one parked it).
    pub async fn released(&self) {
        loop {
            let changed = self.changed.notified();
            if !self.served.get() {
                return;
            }
            changed.await;
        }
    }

    /// Its connection ended for good (a close from either side): a socket waiting to
    /// take it over finds it gone.
    pub fn ended(&self, sessions: &Sessions) {
        sessions.remove(&self.id);
        self.served.set(false);
        self.changed.notify_waiters();
    }

    /// Whether it still exists and can be served (after [`Session::released`]).
    pub fn is_open(&self) -> bool {
        self.outbox.is_open()
    }

    /// A claim that did not complete (the new socket broke first): the session stays
    /// parked until its grace runs out.
    pub fn unclaim(&self) {
        self.claimed.set(false);
        self.changed.notify_waiters();
    }

    /// The claiming socket serves it from now on: the hello and what the client missed
    /// are queued.
    pub fn resume(&self, last: u64, hello: &str) {
        self.outbox.resume(last, hello);
        self.superseded.set(false);
        self.claimed.set(false);
        self.served.set(true);
        self.changed.notify_waiters();
    }
}

/// The socket of `session` broke without a close: the consumer sees nothing while the
/// session waits up to `grace` (`session_grace_ms`) for a resume. `slots` (the connection's places
/// in the lane's and its address's counts) are held meanwhile. Without a resume the
/// session ends: `end` runs with the code to report (1006, or the host's close code when
/// the connection was closed meanwhile: the consumer's close, a crash, the document
/// leaving, the queue overflowing).
///
/// Not an `async fn`: it would keep its arguments beside the future it awaits, and this
/// future is part of every idle socket's task.
pub fn park<T>(
    sessions: &Sessions,
    grace: Duration,
    session: Rc<Session>,
    slots: T,
    end: impl FnOnce(u16),
) -> impl Future<Output = ()> {
    session.served.set(false);
    session.changed.notify_waiters();
    wait_parked(sessions, grace, session, slots, end)
}

/// [`park`] for a session parked already ([`Sessions::start_parked`]): a resume may
/// have taken it over before this task first ran.
pub async fn wait_parked<T>(
    sessions: &Sessions,
    grace: Duration,
    session: Rc<Session>,
    slots: T,
    end: impl FnOnce(u16),
) {
    let deadline = Instant::now() + grace;
    let outbox = session.outbox.clone();
    let sleep = tokio::time::sleep_until(deadline.into());
    tokio::pin!(sleep);
    loop {
        if session.served.get() {
            // Resumed: a new socket serves it. A wake-up this task took is handed on.
            outbox.wake.notify_one();
            drop(slots);
            return;
        }
        let expired = Instant::now() >= deadline && !session.claimed.get();
        if expired || !outbox.is_open() {
            break;
        }
        let changed = session.changed.notified();
        tokio::select! {
            _ = &mut sleep, if Instant::now() < deadline => {}
            _ = outbox.wake.notified() => {}
            _ = changed => {}
        }
    }
    sessions.remove(&session.id);
    let code = match outbox.ending() {
        Ending::Close(code, _) => code,
        _ => 1006,
    };
    end(code);
    drop(slots);
}

/// A session client's message, its framing read.
#[derive(Debug)]
pub enum Unframed {
    /// Apply this message, the client's number `seq`.
    Apply(Message, u64),
    /// A control frame (an `!ack`), handled.
    Control,
    /// A resend of a message applied already: drop it, acknowledge again.
    Duplicate,
    /// A protocol error: close with 1002 and this reason.
    Refused(&'static str),
}

/// Strips a session client's framing from `message` and checks its number against
/// what `outbox`'s session applied and the `waiting` messages after it that wait in a
/// batch; an `!ack` is handled here.
pub fn unframe(outbox: &Outbox, message: Message, waiting: u64) -> Unframed {
    let (message, seq) = match message {
        Message::Text(mut text) => match session_frames::client_text(&text) {
            Ok(ClientText::Ack(n)) => {
                outbox.session_acked(n);
                return Unframed::Control;
            }
            Ok(ClientText::Data { seq, start }) => {
                text.replace_range(..start, "");
                (Message::Text(text), seq)
            }
            Err(_) => return Unframed::Refused("malformed session frame"),
        },
        Message::Binary(mut bytes) => match session_frames::client_binary(&bytes) {
            Ok(seq) => {
                bytes.drain(..session_frames::BINARY_PREFIX);
                (Message::Binary(bytes), seq)
            }
            Err(_) => return Unframed::Refused("malformed session frame"),
        },
    };
    match outbox.incoming(seq, waiting) {
        Incoming::Apply => Unframed::Apply(message, seq),
        Incoming::Duplicate => Unframed::Duplicate,
        Incoming::Gap => Unframed::Refused("session message out of sequence"),
    }
}
