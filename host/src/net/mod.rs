//! The HTTP and WebSocket edge, as plain functions over bytes and streams: request heads
//! and responses ([`http`]), the WebSocket protocol ([`websocket`]), the paths wasmroom
//! answers and document ids ([`route`]), which pages may open them ([`origin`]), a folder
//! of static files ([`static_files`]), the byte budget for what is still arriving
//! ([`budget`]), rate limits ([`token_bucket`]), access tokens ([`access_token`]) and
//! webhooks to the application's backend ([`webhook`], their queues in
//! [`webhook_queue`], what the backend's answers mean in [`webhook_answer`]). Knows
//! nothing of lanes or documents.

pub mod access_token;
pub mod budget;
pub mod http;
pub mod static_files;
pub mod token_bucket;
pub mod webhook;
pub mod webhook_answer;
pub mod webhook_queue;

// Pure parsers live in the `wasmroom-wire` crate (fuzzed there); the lane reaches them
// here, beside the I/O that feeds them.
pub use wasmroom_wire::{origin, route, websocket};
