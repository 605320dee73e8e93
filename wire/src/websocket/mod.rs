//! The WebSocket protocol as a lane speaks it (RFC 6455, server side, no extensions):
//! [`frame`] parses and checks client frame headers, unmasks payloads and encodes server
//! frames; [`decoder`] turns the bytes of a read into events, keeping only what an
//! incomplete frame or message needs between reads (text is checked as it arrives);
//! [`handshake`] checks the client's `Sec-WebSocket-Key`. The rest of the handshake is
//! in host's `net::http`. Plain functions over bytes: the lane owns the sockets and the
//! buffers.

pub mod decoder;
pub mod frame;
pub mod handshake;
mod message;

pub use decoder::{Decoder, Event};
pub use frame::FrameError;
pub use handshake::{KeyError, check_key};
