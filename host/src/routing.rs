//! Which lane owns a document, and how a connection reaches it.
//!
//! Every `(plugin, document)` has exactly one owner lane in the process. The owner is the
//! lane that nginx's `hash $document consistent` would pick (its ketama ring over the
//! upstream's `server host:port` lines), with `$document` = `{plugin}/{document id}`,
//! the id percent-decoded. So with hash routing nginx sends every socket straight to its
//! owner; with any other routing the lane that accepts a misrouted connection hands the
//! socket itself to the owner (or refuses it with 421, see [`Misrouted`]).
//!
//! The ring, as nginx builds it (`ngx_http_upstream_init_chash`): each server, named
//! `HOST:PORT`, gets 160 points; point `j` is `crc32(HOST \0 PORT prev)` where `prev` is
//! point `j-1` as four little-endian bytes (zero for the first). A key belongs to the first
//! point at or after `crc32(key)`, wrapping around. Because the owner is a property of the
//! ring, a process that serves only some of nginx's servers still agrees with nginx about
//! every document nginx sends it.

use serde::Deserialize;

pub use wasmroom_wire::ring::{Ring, document_key, server_name};

/// What a lane does with a connection for a document another lane owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Misrouted {
    /// Move the socket to the owner lane before the upgrade (the client notices nothing).
    #[default]
    HandOver,
    /// Answer `421 Misdirected Request` with the owner's port in `X-Wasmroom-Owner-Port`.
    Reject,
}
