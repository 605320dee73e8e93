//! The Wasm side of a document: the shared engines ([`engine`]; which one compiles a
//! plugin: [`initial_memory`]), plugins compiled and checked ([`plugin`]; `wasmroom check`'s trial run: [`trial`]) and their
//! current versions ([`registry`]) and the versions journals name ([`versions`]), the bindings generated from `wit/` ([`bindings`]),
//! the state each document's store carries ([`state`]), the host functions a consumer
//! calls ([`host`], [`context`]), pending timers ([`timers`]), WASI ([`wasi`]), what
//! consumers write to stdout and stderr ([`output`]), and what makes a call depend on its
//! input only: the frozen clock ([`clock`]) and the document's random ([`random`]).
//!
//! Host functions never touch sockets. They check their arguments against the document's
//! state, then record an [`Effect`]; the document applies the effects in order once the
//! guest call has returned. That keeps a guest call free of I/O and keeps the store data
//! `Send`, as wasmtime requires, while the lane's own state stays `!Send`.

pub mod bindings;
pub mod check;
pub mod clock;
pub mod context;
pub mod engine;
pub mod host;
pub mod initial_memory;
pub mod output;
pub mod plugin;
pub mod random;
pub mod registry;
pub mod state;
pub mod timers;
pub mod trial;
pub mod versions;
pub mod wasi;

pub use bindings::{
    Batch, ConnectInfo, Decision, HostError, HttpRequest, HttpResponse, LogLevel, Message,
    Rejection, Room, RoomPre,
};
pub use host::{frame, truncate_reason, valid_close_code};
pub use state::{CallStart, Effect, GuestState, MeteredLimits};
