//! Operating a running server: the admin API ([`admin`], which reaches the lanes only
//! through their command channels), `wasmroom top` ([`top`], a client of the admin API)
//! and the nginx config `wasmroom nginx-config` prints ([`nginx_config`]); the text
//! log's one-event-one-line writer ([`log_lines`]); `wasmroom replay` ([`replay`]: a
//! document as it was after one of its inputs, from the data directory, read only).

pub mod admin;
pub mod log_lines;
pub mod nginx_config;
pub mod replay;
pub mod top;
