//! A lane: one port, one OS thread, one single-threaded tokio runtime.
//!
//! The lane owns its listener, its documents and their connections. Nothing on the
//! message path takes a lock or hops to another thread: a connection task calls its
//! document directly, and the document queues frames to the other connections' tasks,
//! all on this thread. What the lanes share is read-only or atomic ([`Services`]).
//!
//! A connection for a document another lane owns is handed over before its upgrade: the
//! socket itself moves to the owner lane's thread ([`LaneCommand::Adopt`]), so every socket
//! of a document is served where the document lives (see [`crate::routing`]).
//!
//! The files, in the order a connection meets them: [`run`] (accept loop, commands),
//! [`connection`] (request head, routing, hand-over, plain HTTP answers), [`requests`]
//! (`/docs/...` to a document), [`lookup`] (plugin and document for a request), [`upgrade`] (the WebSocket handshake and the consumer's
//! decision), [`socket`] (a WebSocket after the upgrade), [`batch`] (its messages of one
//! read grouped into guest calls), [`sessions`] (sessions that
//! outlive a socket); [`open`] (the document
//! table; a journaled document's replay as it opens: [`replay`]), [`housekeeping`] (timers, checkpoints, idle documents), [`crash_loop`],
//! [`migrate`] (hot reload), [`admin`] (the admin API's requests), [`shutdown`].

pub mod address_limit;
pub mod admin;
pub mod admission;
pub mod batch;
pub mod commands;
pub mod connection;
pub mod crash_loop;
pub mod delivery_log;
pub mod departure;
pub mod flusher;
pub mod handback;
pub mod housekeeping;
pub mod journal;
pub mod live;
pub mod lookup;
pub mod migrate;
pub mod open;
pub mod open_limit;
pub mod recovery;
pub mod replay;
pub mod requests;
pub mod run;
pub mod services;
pub mod sessions;
pub mod shutdown;
pub mod socket;
pub mod state;
pub mod table;
pub mod task;
pub mod upgrade;

pub use commands::{Handover, LaneCommand};
pub use run::run;
pub use services::Services;
pub use state::{ConnectionGuard, HandOverError, Lane};
pub use table::{Health, LaneAddress, Lanes};
