//! wasmroom: a WebSocket server for per-document real-time logic.
//!
//! Each port is a *lane*: one OS thread running a single-threaded tokio runtime. Every
//! document lives on exactly one lane, in its own WebAssembly instance (a *consumer*
//! loaded from `{plugin}.wasm`), and every socket of that document is served by that lane.
//!
//! # Layout
//!
//! - [`server`]: start the lanes and the epoch ticker, stop them ([`Server`]).
//! - [`lane`]: one port's thread: accept loop, document table.
//! - [`shutdown`]: a lane's shutdown: save, close with 1012, drain, save again.
//! - [`crash_loop`]: a document that keeps trapping is refused for a while.
//! - [`routing`]: which lane owns a document (nginx's consistent hash); hand-over.
//! - [`nginx`]: the nginx config `wasmroom nginx-config` prints.
//! - [`connection`]: one socket: request head, routing, hand-over, HTTP answers.
//! - [`websocket`]: the upgrade, then a WebSocket's reader and writer.
//! - [`static_files`]: `--static DIR`, a web app served on the lane ports.
//! - [`route`]: the paths wasmroom answers; document id rules.
//! - [`http`]: request head parsing, client address, plain responses, the 101.
//! - [`document`]: one live document: its instance, connections, timers; effects; traps;
//!   its state in and out of instances (snapshot, restore, hot-reload migration).
//! - [`instance`]: a document's consumer instance; guest calls with the deadline armed.
//! - [`housekeeping`]: each document's driver: timers, checkpoints, idle eviction.
//! - [`outbox`]: a connection's bounded outbound queue.
//! - [`guest`]: bindings generated from `wit/` and the host functions guests call.
//! - [`timers`]: a document's pending timers.
//! - [`wasi`]: the WASI imports (granting nothing, never blocking, output to the log).
//! - [`plugin`]: compiling (with an on-disk cache) and checking one `{plugin}.wasm`.
//! - [`registry`]: the current version of every plugin, shared by the lanes.
//! - [`reload`]: watching the plugins directory; hot reload into the lanes.
//! - [`runtime`]: the shared wasmtime engine (pooling allocator, epoch deadline).
//! - [`storage`]: durable snapshots of documents (atomic files by default).
//! - [`admin`]: the admin API (`--admin-port`): documents per lane, save, evict, reload.
//! - [`top`]: `wasmroom top`, a terminal view of the admin API.
//! - [`metrics`]: Prometheus metrics (`GET /metrics`), bounded labels, cheap handles.
//! - [`config`]: defaults, TOML file, validation.
//!
//! See `ARCHITECTURE.md` for the path of a message and the invariants.

pub mod admin;
pub mod config;
pub mod connection;
pub mod crash_loop;
pub mod document;
pub mod guest;
pub mod housekeeping;
pub mod http;
pub mod instance;
pub mod lane;
pub mod metrics;
pub mod nginx;
pub mod outbox;
pub mod plugin;
pub mod registry;
pub mod reload;
pub mod route;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod static_files;
pub mod storage;
pub mod timers;
pub mod top;
pub mod wasi;
pub mod websocket;

pub use config::{Config, Limits};
pub use server::{Server, StartError};
