//! wasmroom: a WebSocket server for per-document real-time logic.
//!
//! Each port is a *lane*: one OS thread running a single-threaded tokio runtime. Every
//! document lives on exactly one lane, in its own WebAssembly instance (a *consumer*
//! loaded from `{plugin}.wasm`), and every socket of that document is served by that lane.
//!
//! # Layout
//!
//! Folders are layers. A module uses its own layer and the layers below it, never one
//! above (`python3 tools/layers.py --check` enforces it), top to bottom:
//!
//! - [`server`]: wires everything: binds the ports, starts the lanes, the watcher, the
//!   admin API, the epoch ticker; stops them ([`Server`]).
//! - [`ops`] (admin API, `wasmroom top`, nginx config, `wasmroom replay`) and [`reload`]
//!   (watcher and SIGHUP): outside the lanes; they reach a lane only through its command
//!   channel (`wasmroom replay` reaches none: it reads the data directory).
//!   [`scaffold`] (`wasmroom new`, `wasmroom wit`): consumer projects, outside any lane.
//! - [`lane`]: one port's thread: accept loop, connections, WebSocket connections,
//!   the document table, housekeeping (timers, checkpoints, idle documents), the
//!   crash-loop guard, hand-over between lanes, shutdown.
//! - [`document`]: one live document: its consumer instance, its connections' outboxes,
//!   effects, its state in and out of instances (snapshot, restore, migration). Knows
//!   nothing of lanes or sockets.
//! - [`guest`] (engine, plugins, registry, bindings, host functions and the `context`
//!   interface, WASI) and [`store`] (the `Storage` trait, the file and PostgreSQL
//!   backends).
//! - [`net`]: HTTP answers and bodies, static files, budgets and token buckets, access
//!   tokens (JWT); the parsers of what strangers send (heads, routes, origins, WebSocket
//!   frames, snapshot files) are the `wasmroom-wire` crate, re-exported here.
//! - [`metrics`], [`config`], [`routing`] (nginx's ring): plain data and pure
//!   functions, used by all.
//!
//! See `ARCHITECTURE.md` for the path of a message and the invariants.

pub mod cluster;
pub mod config;
pub mod document;
pub mod guest;
pub mod lane;
pub mod metrics;
pub mod net;
pub mod ops;
pub mod reload;
pub mod routing;
pub mod scaffold;
pub mod server;
pub mod store;

pub use config::{Config, Limits};
pub use server::{Server, Signals, StartError, Stopped};
