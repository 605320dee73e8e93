//! `wasmroom check`'s trial run: a throwaway document of the plugin, each hook called once
//! with plain input, so that an export that exists by its type but not in the guest's code
//! is found before a client finds it.
//!
//! Type-checking the exports ([`crate::guest::RoomPre`]) proves only that each function
//! exists with the right signature. Toolchains for dynamic languages generate every export
//! of the world and look the guest's function up when it is called: componentize-qjs
//! builds a JavaScript consumer without `onRequest` into a component whose `on-request`
//! traps ("function 'onRequest' not found"), componentize-py one whose class lacks
//! `on_request` (and does not subclass the generated protocol) into one that raises
//! `AttributeError`. Only a call shows it. The trial calls, in the order a document sees
//! them: `open`, `on-connect` (connection 1, as a client with no query, headers or token),
//! `on-message` (an empty text message), `on-messages` if it has it (an empty text and an
//! empty binary message), `on-timer` (a timer never set), `on-request`
//! (`GET`), `snapshot`, `on-disconnect` (1000); then, as a restart does, `open` and
//! `restore` of that snapshot in a fresh instance. A trap in any of them fails the check,
//! as does a `restore` that refuses the
//! consumer's own snapshot (a document could never be saved and reopened). A refusal the
//! consumer may mean (an `open` that refuses the trial document, a rejected connection)
//! ends the trial with a note. What the consumer asks of the host is dropped.

use wasmtime::Store;

use crate::config::Config;
use crate::guest::context::SettingsTable;
use crate::guest::engine::deadline_ticks;
use crate::guest::plugin::Plugin;
use crate::guest::{
    Batch, CallStart, ConnectInfo, Decision, GuestState, HttpRequest, Message, Room,
};

/// The trial document's id.
pub const DOCUMENT: &str = "wasmroom-check";

/// Why the trial failed: the hook, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{hook}: {reason}")]
pub struct TrialFailure {
    /// The hook (`on-request`, ...).
    pub hook: &'static str,
    /// The trap's message and the guest's stderr lines, or the refusal.
    pub reason: String,
}

/// What the trial found when it passed: notes on hooks it could not try.
pub type TrialNotes = Vec<String>;

/// Runs the trial on fresh instances of `plugin`. The engine's epoch must advance (an
/// [`crate::guest::engine::EpochTicker`]), or a guest that loops would hang the check.
pub fn trial(plugin: &Plugin, config: &Config) -> Result<TrialNotes, TrialFailure> {
    let mut notes = Vec::new();
    let mut first = Trial::new(plugin, config)?;
    if let Err(why) = first.call("open", |r, s| r.call_open(s, DOCUMENT))? {
        notes.push(format!(
            "open refused the trial document ({why}); the other hooks were not tried"
        ));
        return Ok(notes);
    }
    let state = first.events(&plugin.name, &mut notes)?;
    // As the server restores: into a fresh instance, right after its `open` (the first
    // gives its place in the pool back first).
    drop(first);
    let mut second = Trial::new(plugin, config)?;
    second.call("open", |r, s| r.call_open(s, DOCUMENT))?.ok();
    if let Err(why) = second.call("restore", |r, s| r.call_restore(s, &state))? {
        return Err(TrialFailure {
            hook: "restore",
            reason: format!(
                "refuses the state its own snapshot gave ({} bytes): {why}",
                state.len()
            ),
        });
    }
    Ok(notes)
}

/// One trial instance.
struct Trial {
    room: Room,
    batch: Option<Batch>,
    store: Store<GuestState>,
    deadline: u64,
    deadline_ms: u128,
    calls: u64,
}

impl Trial {
    /// An instance under the limits and settings `config` gives the plugin.
    fn new(plugin: &Plugin, config: &Config) -> Result<Trial, TrialFailure> {
        let settings = SettingsTable::load(config)
            .map(|t| t.for_plugin(&plugin.name))
            .map_err(|e| TrialFailure {
                hook: "settings",
                reason: e.to_string(),
            })?;
        let engine = plugin.pre.instance_pre().engine().clone();
        let state = GuestState::new(
            format!("{}/{DOCUMENT}", plugin.name).into(),
            config.max_memory_for(&plugin.name),
            config.limits.max_message_bytes,
            config.limits.max_timers,
            settings,
            &[7; 32],
        );
        let mut store = Store::new(&engine, state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        let deadline_ms = config.guest_deadline_for(&plugin.name).as_millis();
        let deadline = deadline_ticks(config.guest_deadline_for(&plugin.name));
        store.set_epoch_deadline(deadline);
        let (room, batch) = plugin.instantiate(&mut store).map_err(|e| TrialFailure {
            hook: "instantiate",
            reason: format!("{e:#}"),
        })?;
        Ok(Trial {
            room,
            batch,
            store,
            deadline,
            deadline_ms,
            calls: 0,
        })
    }

    /// The hooks of an open document, once each; returns its snapshot.
    fn events(&mut self, plugin: &str, notes: &mut TrialNotes) -> Result<Vec<u8>, TrialFailure> {
        const ID: u64 = 1;
        let info = ConnectInfo {
            id: ID,
            path: format!("/ws/{plugin}/{DOCUMENT}"),
            query: String::new(),
            headers: Vec::new(),
            subprotocols: Vec::new(),
            remote_address: "127.0.0.1:1".into(),
        };
        self.store.data_mut().connections.insert(ID);
        let accepted = match self.call("on-connect", |r, s| r.call_on_connect(s, &info))? {
            Decision::Accept(_) => true,
            Decision::Reject(r) => {
                notes.push(format!(
                    "on-connect rejected a connection without a token or query ({} {}); on-message was not tried",
                    r.status, r.reason
                ));
                self.store.data_mut().connections.remove(&ID);
                false
            }
        };
        if accepted {
            let empty = Message::Text(String::new());
            self.call("on-message", |r, s| r.call_on_message(s, ID, &empty))?;
            if let Some(batch) = self.batch.clone() {
                let two = [empty, Message::Binary(Vec::new())];
                self.call("on-messages", |_, s| batch.call_on_messages(s, ID, &two))?;
            }
        }
        self.call("on-timer", |r, s| r.call_on_timer(s, u64::MAX >> 11))?;
        let request = HttpRequest {
            method: "GET".into(),
            path: format!("/docs/{plugin}/{DOCUMENT}"),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        self.call("on-request", |r, s| r.call_on_request(s, &request))?;
        let state = self.call("snapshot", |r, s| r.call_snapshot(s))?;
        if accepted {
            self.store.data_mut().connections.remove(&ID);
            self.call("on-disconnect", |r, s| r.call_on_disconnect(s, ID, 1000))?;
        }
        Ok(state)
    }

    /// One guest call with the deadline armed; its effects dropped.
    fn call<R>(
        &mut self,
        hook: &'static str,
        f: impl FnOnce(
            &crate::guest::bindings::exports::wasmroom::consumer::consumer::Guest,
            &mut Store<GuestState>,
        ) -> wasmtime::Result<R>,
    ) -> Result<R, TrialFailure> {
        self.calls += 1;
        self.store.set_epoch_deadline(self.deadline);
        self.store.data_mut().begin_call(CallStart {
            clock_ms: crate::guest::clock::unix_ms(),
            stream: self.calls,
        });
        let result = f(self.room.wasmroom_consumer_consumer(), &mut self.store);
        self.store.data_mut().effects.clear();
        result.map_err(|e| {
            let root = e.root_cause().to_string();
            let mut reason = root.lines().next().unwrap_or_default().trim().to_owned();
            if matches!(
                e.downcast_ref::<wasmtime::Trap>(),
                Some(wasmtime::Trap::Interrupt)
            ) {
                reason = format!("ran past the {} ms deadline", self.deadline_ms);
            }
            let stderr = self.store.data().stderr_tail();
            if !stderr.is_empty() {
                reason.push_str("; stderr: ");
                reason.push_str(&stderr.join(" | "));
            }
            TrialFailure {
                hook,
                reason: format!("traps ({reason})"),
            }
        })
    }
}
