//! The bindings `wasmtime::component::bindgen!` generates from `wit/consumer.wit`: the
//! `room` world the host instantiates and the types both sides share, and the optional
//! `batch` export (0.1.2) of the `batched-room` world, looked up beside it
//! ([`crate::guest::plugin::Plugin::batch`]). The Rust SDK reads the same file; nothing
//! here restates it.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "room",
    additional_derives: [PartialEq, Eq],
});

/// The `batched-room` world, for its `batch` export only: every other interface is the
/// `room` world's above, so a consumer's `message` is one type on both paths.
pub mod batched {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "batched-room",
        with: {
            "wasmroom:consumer/types": super::wasmroom::consumer::types,
            "wasmroom:consumer/host": super::wasmroom::consumer::host,
            "wasmroom:consumer/context": super::wasmroom::consumer::context,
        },
    });
}

pub use self::wasmroom::consumer::types::{ConnectInfo, HostError, LogLevel, Message, Rejection};
pub use batched::exports::wasmroom::consumer::batch::{
    Guest as Batch, GuestIndices as BatchIndices,
};
pub use exports::wasmroom::consumer::consumer::{Decision, HttpRequest, HttpResponse};
