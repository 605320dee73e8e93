//! Operating a running server: the admin API ([`admin`], which reaches the lanes only
//! through their command channels), `wasmroom top` ([`top`], a client of the admin API)
//! and the nginx config `wasmroom nginx-config` prints ([`nginx_config`]).

pub mod admin;
pub mod nginx_config;
pub mod top;
