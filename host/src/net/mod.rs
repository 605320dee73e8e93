//! The HTTP edge, as plain functions over bytes and streams: request heads
//! ([`http`]), the paths wasmroom answers and document ids ([`route`]), and a folder of
//! static files ([`static_files`]). Knows nothing of lanes or documents.

pub mod http;
pub mod route;
pub mod static_files;
