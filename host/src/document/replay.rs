//! Rebuilding a document from its journal (journal mode; see ARCHITECTURE.md, "the input
//! journal"): after its snapshot is restored, every journaled input since is made again,
//! in order, from the clock and random stream it had. Nothing leaves: no connection is
//! attached yet, so what the guest sends goes nowhere, and nothing is journaled again.
//!
//! Replay must reach exactly the state the clients saw. A gap in the sequence, an input
//! that traps now, or a connection decided otherwise than when it was made means it
//! cannot: the document refuses to open ([`DocumentError::Unreplayable`]) rather than
//! serve a state nobody saw.
//!
//! A timer or a departure whose call trapped (`TimerDropped`, `Detach`) is over without
//! a call: the timer cancelled, the connection gone from those the consumer sees.
//!
//! The connections open when the journal ends were cut by the crash or the restart: the
//! consumer hears of each (`on-disconnect` with 1006), as journaled inputs of its own;
//! but a session's (carried in the snapshot or joined in the journal) stays, its messages
//! numbered again as they were, for its client to resume
//! ([`crate::document::carried_sessions`]).

use std::time::Instant;

use wasmroom_wire::journal::{Entry, Record};

use crate::document::error::DocumentError;
use crate::document::live::Document;
use crate::document::versions::ReplayVersions;
use crate::guest::{ConnectInfo, Decision, HttpRequest, Message};

/// What a connection cut without a close frame is reported with (RFC 6455's "abnormal
/// closure").
const CUT: u16 = 1006;

impl Document {
    /// Replays the journal entries after the document's last input (its snapshot's, or
    /// its journaled `open`), moving it to the plugin versions its hot reloads moved it
    /// to (`versions`), then tells the consumer that the connections still open in them
    /// are gone. Returns how many inputs were replayed. (A lane replays in slices
    /// instead: [`Self::replay_some`], then [`Self::replay_finished`].)
    pub fn replay(&mut self, versions: &ReplayVersions) -> Result<usize, DocumentError> {
        let replayed = self.replay_until(None, versions)?;
        self.replay_finished();
        Ok(replayed)
    }

    /// Replays at most `max` of the journal entries after the document's last input;
    /// returns how many (0: the journal is replayed).
    pub fn replay_some(
        &mut self,
        max: usize,
        versions: &ReplayVersions,
    ) -> Result<usize, DocumentError> {
        let entries = self.pending(None, max);
        self.replay_entries(&entries, versions)
    }

    /// The journal is replayed: the config's settings apply again, and the connections
    /// it leaves open are reported gone, but sessions' (carried here, or joined in the
    /// journal), whose clients resume them.
    pub fn replay_finished(&mut self) {
        self.replay_done();
        if self.tail.is_some() {
            let mut open = self.guest_connections();
            open.retain(|id| !self.outboxes.get(id).is_some_and(|o| o.is_open()));
            self.cut_connections(open);
        }
    }

    /// Replays the journal entries after the document's last input up to input `until`
    /// (inclusive; `None`: all), and nothing more: the connections open there stay open
    /// as far as the consumer knows (a rebuild after a trap keeps their sockets;
    /// `wasmroom replay` looks at the document at that point). Returns how many inputs
    /// were replayed.
    pub fn replay_until(
        &mut self,
        until: Option<u64>,
        versions: &ReplayVersions,
    ) -> Result<usize, DocumentError> {
        let entries = self.pending(until, usize::MAX);
        self.replay_entries(&entries, versions)
    }

    /// At most `max` of the journal entries after the document's last input, up to input
    /// `until` (inclusive; `None`: all).
    fn pending(&self, until: Option<u64>, max: usize) -> Vec<Entry> {
        let Some(tail) = &self.tail else {
            return Vec::new();
        };
        let after = self.lineage.inputs();
        tail.borrow()
            .entries()
            .filter(|e| e.seq > after && until.is_none_or(|u| e.seq <= u))
            .take(max)
            .cloned()
            .collect()
    }

    /// Replays `entries`, in order, outputs and logs muted, nothing journaled again.
    fn replay_entries(
        &mut self,
        entries: &[Entry],
        versions: &ReplayVersions,
    ) -> Result<usize, DocumentError> {
        self.replaying = true;
        self.mute(true);
        let replayed = entries
            .iter()
            .try_for_each(|entry| self.replay_one(entry, versions));
        self.mute(false);
        self.replaying = false;
        replayed?;
        Ok(entries.len())
    }

    fn replay_one(
        &mut self,
        entry: &Entry,
        versions: &ReplayVersions,
    ) -> Result<(), DocumentError> {
        tracing::debug!(doc = %self.id, seq = entry.seq, "replaying {:?}", entry.record);
        let expected = self.lineage.inputs() + 1;
        if entry.seq != expected {
            return Err(DocumentError::Unreplayable(format!(
                "input {expected} is missing from its journal (the next is {})",
                entry.seq
            )));
        }
        if let Record::Version { version } = &entry.record {
            // Its calls drew from the streams after the input before it.
            return self.replay_move(entry, version, versions);
        }
        if let Record::Settings { settings } = &entry.record {
            self.pin_settings(settings);
            self.lineage.replayed(entry.seq, entry.clock_ms);
            return Ok(());
        }
        let start = self.lineage.replayed(entry.seq, entry.clock_ms);
        let no_record = None::<fn(&()) -> Record>;
        let diverged = |e: DocumentError| {
            DocumentError::Unreplayable(format!("input {} failed again: {e}", entry.seq))
        };
        match &entry.record {
            Record::Open { .. } => {
                return Err(DocumentError::Unreplayable(format!(
                    "input {} opens the document again",
                    entry.seq
                )));
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
                self.lineage.connection_seen(*id);
                if let Some(session) = session {
                    // What the consumer sends it is numbered again, for its client's resume.
                    self.replayed_session(*id, session, claims.as_deref());
                } else if let Some(instance) = self.instance.as_mut() {
                    let state = instance.store.data_mut();
                    state.connections.insert(*id);
                    if let Some(claims) = claims {
                        state.claims.insert(*id, claims.as_str().into());
                    }
                }
                let info = ConnectInfo {
                    id: *id,
                    path: path.clone(),
                    query: query.clone(),
                    headers: headers.clone(),
                    subprotocols: subprotocols.clone(),
                    remote_address: remote_address.clone(),
                };
                let decision = self
                    .run(
                        "on-connect",
                        Instant::now(),
                        start,
                        None::<fn(&Decision) -> Record>,
                        None,
                        |room, store| {
                            room.wasmroom_consumer_consumer()
                                .call_on_connect(store, &info)
                        },
                    )
                    .map_err(diverged)?;
                let now_accepted = matches!(decision, Decision::Accept(_));
                if now_accepted != *accepted {
                    return Err(DocumentError::Unreplayable(format!(
                        "connection {id} was {} when it joined, and is {} now",
                        decided(*accepted),
                        decided(now_accepted)
                    )));
                }
                if !now_accepted {
                    self.forget_connection(*id);
                }
            }
            Record::Message {
                connection,
                text,
                data,
            } => {
                let msg = if *text {
                    Message::Text(String::from_utf8(data.clone()).map_err(|_| {
                        DocumentError::Unreplayable(format!(
                            "input {} is a text message that is not UTF-8",
                            entry.seq
                        ))
                    })?)
                } else {
                    Message::Binary(data.clone())
                };
                self.messages += 1;
                self.run(
                    "on-message",
                    Instant::now(),
                    start,
                    no_record,
                    None,
                    |room, store| {
                        room.wasmroom_consumer_consumer()
                            .call_on_message(store, *connection, &msg)
                    },
                )
                .map_err(diverged)?;
                self.replayed_applied(*connection, 1);
            }
            Record::Messages {
                connection,
                messages,
            } => {
                self.replay_messages(start, *connection, messages)
                    .map_err(diverged)?;
                self.replayed_applied(*connection, messages.len() as u64);
            }
            Record::Disconnect { connection, code } => {
                self.forget_connection(*connection);
                self.run(
                    "on-disconnect",
                    Instant::now(),
                    start,
                    no_record,
                    None,
                    |room, store| {
                        room.wasmroom_consumer_consumer().call_on_disconnect(
                            store,
                            *connection,
                            *code,
                        )
                    },
                )
                .map_err(diverged)?;
            }
            Record::Timer { id } => {
                if let Some(instance) = self.instance.as_mut() {
                    instance.store.data_mut().timers.cancel(*id);
                }
                self.run(
                    "on-timer",
                    Instant::now(),
                    start,
                    no_record,
                    None,
                    |room, store| room.wasmroom_consumer_consumer().call_on_timer(store, *id),
                )
                .map_err(diverged)?;
            }
            Record::Request {
                method,
                path,
                query,
                headers,
                body,
                claims: _,
            } => {
                let req = HttpRequest {
                    method: method.clone(),
                    path: path.clone(),
                    query: query.clone(),
                    headers: headers.clone(),
                    body: body.clone(),
                };
                self.run(
                    "on-request",
                    Instant::now(),
                    start,
                    None::<fn(&crate::guest::HttpResponse) -> Record>,
                    None,
                    |room, store| {
                        room.wasmroom_consumer_consumer()
                            .call_on_request(store, &req)
                    },
                )
                .map_err(diverged)?;
            }
            Record::TimerDropped { id } => {
                // It fired and its call trapped: over, without a call.
                if let Some(instance) = self.instance.as_mut() {
                    instance.store.data_mut().timers.cancel(*id);
                }
                self.changes += 1;
            }
            Record::Detach { connection, .. } => {
                // It left and its `on-disconnect` trapped: gone, without a call.
                self.forget_connection(*connection);
                self.changes += 1;
            }
            other => {
                return Err(DocumentError::Unreplayable(format!(
                    "input {} is a record this version cannot replay: {other:?}",
                    entry.seq
                )));
            }
        }
        Ok(())
    }

    /// Removes a replayed connection from what the guest sees (it has no socket here).
    fn forget_connection(&mut self, id: u64) {
        if let Some(instance) = self.instance.as_mut() {
            let state = instance.store.data_mut();
            state.connections.remove(&id);
            state.closing.remove(&id);
            state.claims.remove(&id);
        }
        // A session's outbox, numbering for a resume that will not come.
        self.outboxes.remove(&id);
        self.carried.remove(&id);
    }

    /// Mutes what the guest logs (a replayed input was logged when it was new).
    fn mute(&mut self, muted: bool) {
        if let Some(instance) = self.instance.as_mut() {
            instance.store.data_mut().mute(muted);
        }
    }

    /// The connections the consumer knows of.
    pub(super) fn guest_connections(&self) -> Vec<u64> {
        self.instance
            .as_ref()
            .map(|i| i.store.data().connections.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Connections the consumer knows of but that have no socket any more (the journal
    /// left them open, and the crash cut them): each leaves with 1006, an input journaled
    /// like any departure (and dropped like one if its call traps).
    pub(super) fn cut_connections(&mut self, open: Vec<u64>) {
        tracing::debug!(doc = %self.id, "cut by the crash: {open:?}");
        for id in open {
            // A departure that trapped rebuilt the document, which cut the others.
            if !self.guest_connections().contains(&id) {
                continue;
            }
            self.forget_connection(id);
            self.departed(id, CUT);
        }
    }
}

impl Document {
    /// Replays a journaled move to `version` (input `entry`): the same calls as the hot
    /// reload made, at the clock it made them.
    pub(super) fn replay_move(
        &mut self,
        entry: &Entry,
        version: &str,
        versions: &ReplayVersions,
    ) -> Result<(), DocumentError> {
        if self.plugin.version != version {
            let plugin = versions.get(version).cloned().ok_or_else(|| {
                DocumentError::Unreplayable(format!(
                    "input {} moved it to version {version} of its plugin, which this replay does not have",
                    entry.seq
                ))
            })?;
            let slot = versions.slot().ok_or_else(|| {
                DocumentError::PoolExhausted(
                    "no slot for a replayed hot reload: the pool and its reserve are in use".into(),
                )
            })?;
            let limits = self.limits.clone();
            let (_, _, said) = self
                .move_to(plugin, &limits, slot, Some(entry.clock_ms))
                .map_err(|e| {
                    DocumentError::Unreplayable(format!(
                        "input {} (the move to version {version}) failed again: {e}",
                        entry.seq
                    ))
                })?;
            // To the sessions' outboxes, numbered as they were the first time.
            self.apply_all(said);
        }
        self.lineage.replayed(entry.seq, entry.clock_ms);
        Ok(())
    }
}

fn decided(accepted: bool) -> &'static str {
    if accepted { "accepted" } else { "refused" }
}
