//! A document's connections: the ids it gives them, a connection joining (`on-connect`)
//! and leaving (`on-disconnect`).
//!
//! Ids come from the document's own counter, kept in its snapshot: 1, 2, 3... in the
//! order connections ask to join, each given once, also across restarts and hosts (as
//! far as the document's saved state goes: like the state, ids given since the last
//! write are lost with it when the process dies or the consumer crashes). They stay far
//! below 2^53, so a JavaScript consumer's numbers hold them exactly.
//!
//! The counter is written with every snapshot, but a moved counter alone does not make
//! a checkpoint write while the document has connections (a viewer joining writes
//! nothing): it must be written before the document leaves memory, so it counts as a
//! change once the connections are gone or the document is leaving the host.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::document::error::DocumentError;
use crate::document::live::Document;
use crate::document::outbox::Outbox;
use crate::guest::{ConnectInfo, Decision};
use wasmroom_wire::journal::Record;

impl Document {
    /// The id a connection asking to join gets (whether or not it is accepted).
    pub fn next_connection_id(&mut self) -> u64 {
        self.lineage.next_connection_id()
    }

    /// Whether ids were given since the counter was last written and the document is
    /// about to leave memory (no connections, or leaving this host): it must be saved
    /// even if its state is the same, or a restart would give those ids again.
    pub fn ids_unsaved(&self) -> bool {
        self.lineage.continuity().next_connection_id != self.persistence.saved_ids
            && (self.outboxes.is_empty() || self.leaving)
    }

    /// A connection asks to join, with the claims of its verified access token, if any.
    /// `outbox` receives what the guest sends it, even before the upgrade completes. On
    /// rejection the connection is forgotten.
    pub fn connect(
        &mut self,
        info: ConnectInfo,
        outbox: Rc<Outbox>,
        claims: Option<Arc<str>>,
    ) -> Result<Decision, DocumentError> {
        let id = info.id;
        let session = outbox.session_id();
        let record = |decision: &Decision| Record::Connect {
            id,
            path: info.path.clone(),
            query: info.query.clone(),
            headers: info.headers.clone(),
            subprotocols: info.subprotocols.clone(),
            remote_address: info.remote_address.clone(),
            claims: claims.as_deref().map(str::to_owned),
            accepted: matches!(decision, Decision::Accept(_)),
            session: session.clone(),
        };
        self.attach(id, outbox, claims.clone());
        let mut decision = self.call("on-connect", record, |room, store| {
            room.wasmroom_consumer_consumer()
                .call_on_connect(store, &info)
        });
        if let Ok(Decision::Reject(r)) = &mut decision
            && !(400..=599).contains(&r.status)
        {
            self.output_corrected(
                format_args!("refused a connection with status {}", r.status),
                403,
            );
            r.status = 403;
        }
        if matches!(decision, Ok(Decision::Accept(_))) {
            self.had_sockets = true;
        } else {
            self.detach(id);
        }
        decision
    }

    pub(super) fn attach(&mut self, id: u64, outbox: Rc<Outbox>, claims: Option<Arc<str>>) {
        if let Some(instance) = self.instance.as_mut() {
            let state = instance.store.data_mut();
            state.connections.insert(id);
            if let Some(claims) = claims {
                state.claims.insert(id, claims);
            }
        }
        self.outboxes.insert(id, outbox);
        self.idle_since = None;
    }

    pub(super) fn detach(&mut self, id: u64) -> bool {
        if let Some(instance) = self.instance.as_mut() {
            let state = instance.store.data_mut();
            state.connections.remove(&id);
            state.closing.remove(&id);
            state.claims.remove(&id);
        }
        let known = self.outboxes.remove(&id).is_some();
        self.carried.remove(&id);
        self.notify_if_gone();
        if self.outboxes.is_empty() && self.idle_since.is_none() {
            self.idle_since = Some(Instant::now());
            self.wake.notify_one();
        }
        known
    }

    /// Wakes whoever waits for the connections to be gone ([`Document::connections_gone`]),
    /// if they are: none left but carried sessions'.
    pub(super) fn notify_if_gone(&self) {
        if self.only_carried_left() {
            self.emptied.notify_waiters();
        }
    }

    /// Connection `id` left with `code`.
    pub fn disconnect(&mut self, id: u64, code: u16) {
        if self.detach(id) && self.instance.is_some() {
            self.departed(id, code);
        }
    }

    /// The consumer hears that connection `id`, no longer among its connections, left
    /// with `code`: an input, which a trap drops in journal mode (the connection was
    /// leaving anyway; [`crate::document::dropped`]).
    pub(super) fn departed(&mut self, id: u64, code: u16) {
        let record = |_: &()| Record::Disconnect {
            connection: id,
            code,
        };
        let dropped = Record::Detach {
            connection: id,
            code,
        };
        let _ = self.call_droppable("on-disconnect", record, dropped, |room, store| {
            room.wasmroom_consumer_consumer()
                .call_on_disconnect(store, id, code)
        });
    }
}
