//! The HTTP and WebSocket edge, as plain functions over bytes and streams: request heads
//! and responses ([`http`]), the paths wasmroom answers and document ids ([`route`]), a
//! folder of static files ([`static_files`]), the byte budget for what is still arriving
//! ([`budget`]) and the watch over a client's WebSocket frames ([`frame_watch`]). Knows
//! nothing of lanes or documents.

pub mod budget;
pub mod frame_watch;
pub mod http;
pub mod route;
pub mod static_files;
