//! The y-websocket protocol for one document, without host calls: every method returns
//! what the host should do, in order, so that the protocol can be tested natively.
//!
//! Behaviour (that of the reference `@y/websocket-server`):
//! - a new connection gets sync step 1 (the server's state vector) and, if any client is
//!   present, the awareness states of all of them;
//! - sync step 1 from a client is answered with step 2 (what the client lacks);
//! - sync step 2 and updates are applied, and what they changed is broadcast as an update
//!   to every connection;
//! - an awareness update is applied and what it changed is broadcast to every connection,
//!   the sender included (a lone client would otherwise hear nothing and its 30 s
//!   watchdog would reconnect);
//! - when a connection goes, the awareness states it announced are removed and the
//!   removal is broadcast.
//!
//! Each message is one binary frame, as the y-websocket client expects.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use yrs::encoding::read::{Cursor, Read};
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::protocol::{MSG_AUTH, MSG_AWARENESS, MSG_QUERY_AWARENESS, MSG_SYNC};
use yrs::sync::{Awareness, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, OffsetKind, Options, ReadTxn, StateVector, Transact, Update};

/// A connection of the document, as the host names it.
pub(crate) type Conn = u64;

/// The server's Yjs client id. Never used for a change (the server authors none, see
/// [`Room::new`]); above the 32-bit range that Yjs clients draw their ids from, so it never
/// equals a client's awareness id.
const SERVER_CLIENT_ID: u64 = 1 << 32;

/// Close code for a message that is not y-websocket. In 4400-4499, which the y-websocket
/// client takes as final: it would only send the same message again.
pub(crate) const CLOSE_MALFORMED: u16 = 4400;

/// The awareness state that means "gone".
const NULL_STATE: &str = "null";

/// What the room asks of the host, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Out {
    /// One binary frame to one connection.
    Send(Conn, Vec<u8>),
    /// One binary frame to every connection of the document.
    Broadcast(Vec<u8>),
    /// Close a connection.
    Close(Conn, u16, String),
    /// A warning for the host's log.
    Warn(String),
}

/// One Yjs document, the awareness states of its clients and who announced them.
pub(crate) struct Room {
    awareness: Awareness,
    /// Updates the current transaction produced, collected by the document's observer.
    changes: Rc<RefCell<Vec<Vec<u8>>>>,
    /// Awareness client id → the connection that last announced a state for it.
    owners: HashMap<u64, Conn>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("owners", &self.owners)
            .finish_non_exhaustive()
    }
}

impl Room {
    /// An empty document named `guid`; `clock` gives milliseconds since the epoch (the
    /// awareness timestamps). No randomness: the client id and guid are fixed.
    pub(crate) fn new(guid: &str, clock: fn() -> u64) -> Room {
        let options = Options {
            client_id: ClientID::new(SERVER_CLIENT_ID),
            guid: guid.into(),
            collection_id: None,
            // As Yjs counts; the server edits no text, so this only matters for readers.
            offset_kind: OffsetKind::Utf16,
            skip_gc: false,
            auto_load: false,
            should_load: true,
            // Cleaning up formatting would make the server author deletions under its fixed
            // client id; every client does that cleanup itself anyway.
            cleanup_formatting: false,
        };
        let doc = Doc::with_options(options);
        let changes: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
        let sink = changes.clone();
        doc.observe_update_v1("wasmroom", move |_, event| {
            sink.borrow_mut().push(event.update.clone());
        })
        .expect("a new document has no transaction open");
        Room {
            awareness: Awareness::with_clock(doc, clock),
            changes,
            owners: HashMap::new(),
        }
    }

    /// Connection `conn` joined: sync step 1 and the present awareness states.
    pub(crate) fn connect(&self, conn: Conn) -> Vec<Out> {
        let sv = self.awareness.doc().transact().state_vector();
        let mut out = vec![Out::Send(
            conn,
            Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1(),
        )];
        match self.awareness.update() {
            Ok(update) if !update.clients.is_empty() => {
                out.push(Out::Send(conn, Message::Awareness(update).encode_v1()));
            }
            Ok(_) => {}
            Err(e) => out.push(Out::Warn(format!("cannot encode awareness: {e}"))),
        }
        out
    }

    /// A binary frame from `from`, who may edit.
    #[cfg(test)]
    pub(crate) fn message(&mut self, from: Conn, data: &[u8]) -> Vec<Out> {
        self.message_from(from, data, false)
    }

    /// A binary frame from `from`; a `read_only` connection's document updates are
    /// refused (y-protocols' "permission denied", with the reason), not applied.
    pub(crate) fn message_from(&mut self, from: Conn, data: &[u8], read_only: bool) -> Vec<Out> {
        // Message types this server does not know are skipped, as the reference server
        // does; only a known type that does not decode is an error.
        match Cursor::new(data).read_var::<u32>() {
            Ok(tag)
                if [MSG_SYNC, MSG_AWARENESS, MSG_AUTH, MSG_QUERY_AWARENESS]
                    .contains(&u8::try_from(tag).unwrap_or(u8::MAX)) => {}
            Ok(tag) => return vec![Out::Warn(format!("ignored a message of type {tag}"))],
            Err(e) => return malformed(from, &e),
        }
        let message = match Message::decode_v1(data) {
            Ok(m) => m,
            Err(e) => return malformed(from, &e),
        };
        match message {
            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                let update = self
                    .awareness
                    .doc()
                    .transact()
                    .encode_state_as_update_v1(&sv);
                vec![Out::Send(
                    from,
                    Message::Sync(SyncMessage::SyncStep2(update)).encode_v1(),
                )]
            }
            Message::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update))
                if read_only =>
            {
                // A viewer's own sync step 2 after connecting is empty: nothing to refuse.
                if update == EMPTY_UPDATE {
                    return Vec::new();
                }
                let reason = "read-only: this connection's token is a viewer's".to_owned();
                vec![Out::Send(from, Message::Auth(Some(reason)).encode_v1())]
            }
            Message::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
                self.apply(from, &update)
            }
            Message::Awareness(update) => self.awareness_update(from, update),
            Message::AwarenessQuery => match self.awareness.update() {
                Ok(update) => vec![Out::Send(from, Message::Awareness(update).encode_v1())],
                Err(e) => vec![Out::Warn(format!("cannot encode awareness: {e}"))],
            },
            // Clients do not send auth messages; nothing to do.
            Message::Auth(_) | Message::Custom(..) => Vec::new(),
        }
    }

    /// Connection `conn` left: the awareness states it announced are removed, for everyone.
    pub(crate) fn disconnect(&mut self, conn: Conn) -> Vec<Out> {
        let mut gone: Vec<u64> = self
            .owners
            .iter()
            .filter(|&(_, &owner)| owner == conn)
            .map(|(&id, _)| id)
            .collect();
        gone.sort_unstable();
        if gone.is_empty() {
            return Vec::new();
        }
        // As y-protocols' `removeAwarenessStates` on the server: the state becomes null at
        // the same clock, which every client applies as a removal (a bumped clock would
        // make the same client's next announcement look stale).
        let mut removal = AwarenessUpdate {
            clients: HashMap::new(),
        };
        for &id in &gone {
            self.owners.remove(&id);
            if let Some((clock, _)) = self.awareness.meta(ClientID::new(id)) {
                removal.clients.insert(
                    ClientID::new(id),
                    AwarenessUpdateEntry {
                        clock,
                        json: NULL_STATE.into(),
                    },
                );
            }
        }
        match self.awareness.apply_update_summary(removal.clone()) {
            Ok(Some(_)) => vec![Out::Broadcast(Message::Awareness(removal).encode_v1())],
            Ok(None) => Vec::new(),
            Err(e) => vec![Out::Warn(format!("cannot remove awareness states: {e}"))],
        }
    }

    /// The whole document as one Yjs update (v1), pending parts included.
    pub(crate) fn state(&self) -> Vec<u8> {
        self.awareness
            .doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// The saved state: [`Room::state`], or nothing for an empty document (no file for it).
    /// Awareness is ephemeral and not part of it.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let state = self.state();
        if state == EMPTY_UPDATE {
            Vec::new()
        } else {
            state
        }
    }

    /// Applies a state from [`Room::snapshot`] to this fresh room.
    pub(crate) fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            return Ok(());
        }
        let update = Update::decode_v1(state).map_err(|e| format!("not a Yjs update (v1): {e}"))?;
        let result = self.awareness.doc().transact_mut().apply_update(update);
        // The clients already have this state: nothing to broadcast.
        self.changes.borrow_mut().clear();
        result.map_err(|e| format!("the Yjs update does not apply: {e}"))
    }

    /// Applies a document update from `from` and broadcasts what it changed.
    fn apply(&mut self, from: Conn, update: &[u8]) -> Vec<Out> {
        let update = match Update::decode_v1(update) {
            Ok(u) => u,
            Err(e) => return malformed(from, &e),
        };
        let result = self.awareness.doc().transact_mut().apply_update(update);
        let mut out: Vec<Out> = self
            .changes
            .borrow_mut()
            .drain(..)
            .map(|u| Out::Broadcast(Message::Sync(SyncMessage::Update(u)).encode_v1()))
            .collect();
        if let Err(e) = result {
            out.extend(malformed(from, &e));
        }
        out
    }

    /// Applies an awareness update from `from`; broadcasts what changed to everyone.
    fn awareness_update(&mut self, from: Conn, update: AwarenessUpdate) -> Vec<Out> {
        let summary = match self.awareness.apply_update_summary(update) {
            Ok(Some(summary)) => summary,
            Ok(None) => return Vec::new(),
            Err(e) => return malformed(from, &e),
        };
        for id in summary.added.iter().chain(&summary.updated) {
            self.owners.insert(id.get(), from);
        }
        for id in &summary.removed {
            self.owners.remove(&id.get());
        }
        match self.awareness.update_with_clients(summary.all_changes()) {
            Ok(changed) => vec![Out::Broadcast(Message::Awareness(changed).encode_v1())],
            Err(e) => vec![Out::Warn(format!("cannot encode awareness: {e}"))],
        }
    }
}

/// The v1 encoding of an empty document: no structs, no deletions.
const EMPTY_UPDATE: [u8; 2] = [0, 0];

fn malformed(from: Conn, error: &dyn std::fmt::Display) -> Vec<Out> {
    let reason = format!("malformed y-websocket message: {error}");
    vec![
        Out::Warn(format!("connection {from}: {reason}")),
        Out::Close(from, CLOSE_MALFORMED, reason),
    ]
}

#[cfg(test)]
mod tests;
