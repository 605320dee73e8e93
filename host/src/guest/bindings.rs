//! The bindings `wasmtime::component::bindgen!` generates from `wit/consumer.wit`: the
//! `room` world the host instantiates and the types both sides share. The Rust SDK reads
//! the same file; nothing here restates it.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "room",
    additional_derives: [PartialEq, Eq],
});

pub use self::wasmroom::consumer::types::{ConnectInfo, HostError, LogLevel, Message, Rejection};
pub use exports::wasmroom::consumer::consumer::{Decision, HttpRequest, HttpResponse};
