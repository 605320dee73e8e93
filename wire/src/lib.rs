//! What wasmroom reads from strangers, as pure functions over bytes: no I/O, no
//! WebAssembly, no async. The host (`wasmroom`) owns the sockets and files and calls
//! these; the fuzz targets (`fuzz/`) call the same functions with arbitrary input.
//!
//! - [`head`]: an HTTP/1.1 request head, and the client's address behind a proxy.
//! - [`route`]: which paths wasmroom answers, plugin names and document ids.
//! - [`origin`]: which web pages may open a document (`Origin` against `Host` or a list).
//! - [`websocket`]: client frames in, server frames out (RFC 6455, server side).
//! - [`snapshot`]: the snapshot format every store writes, with its checksum.
//! - [`journal`]: the input journal's entries and their framing in segment files.
//! - [`session`]: the session subprotocol's frame prefixes, control frames and resume query.
//! - [`ring`]: nginx's consistent-hash ring, so that the host agrees with nginx about
//!   which lane owns a document.

pub mod head;
pub mod journal;
pub mod origin;
pub mod ring;
pub mod route;
pub mod session;
pub mod snapshot;
pub mod websocket;
