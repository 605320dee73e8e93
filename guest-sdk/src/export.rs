//! [`export!`](crate::export): a [`Consumer`](crate::Consumer) as the component's
//! exports, and the glue it expands to (`__private`).

/// Exports a [`Consumer`](crate::Consumer) as the component's `wasmroom:consumer/consumer` and
/// `wasmroom:consumer/batch` interfaces.
/// Use it once per plugin crate: `wasmroom_sdk::export!(MyConsumer);`.
#[macro_export]
macro_rules! export {
    ($consumer:ty) => {
        const _: () = {
            struct __WasmroomGuest;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$consumer>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            impl $crate::wit::exports::wasmroom::consumer::consumer::Guest for __WasmroomGuest {
                fn open(
                    document: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::open::<$consumer>(&STATE, &document)
                }
                fn on_connect(
                    info: $crate::wit::exports::wasmroom::consumer::consumer::ConnectInfo,
                ) -> $crate::wit::exports::wasmroom::consumer::consumer::Decision {
                    $crate::__private::on_connect::<$consumer>(&STATE, info)
                }
                fn on_message(
                    connection: u64,
                    msg: $crate::wit::exports::wasmroom::consumer::consumer::Message,
                ) {
                    $crate::__private::on_message::<$consumer>(&STATE, connection, msg)
                }
                fn on_disconnect(connection: u64, code: u16) {
                    $crate::__private::with::<$consumer, _>(&STATE, |c| {
                        c.on_disconnect(connection, code)
                    })
                }
                fn on_timer(id: u64) {
                    $crate::__private::with::<$consumer, _>(&STATE, |c| c.on_timer(id))
                }
                fn on_request(
                    request: $crate::wit::exports::wasmroom::consumer::consumer::HttpRequest,
                ) -> $crate::wit::exports::wasmroom::consumer::consumer::HttpResponse {
                    $crate::__private::on_request::<$consumer>(&STATE, request)
                }
                fn snapshot() -> ::std::vec::Vec<u8> {
                    $crate::__private::with::<$consumer, _>(&STATE, |c| {
                        $crate::Consumer::snapshot(c)
                    })
                }
                fn restore(
                    state: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::with::<$consumer, _>(&STATE, |c| {
                        $crate::Consumer::restore(c, &state)
                    })
                }
            }

            impl $crate::wit::exports::wasmroom::consumer::batch::Guest for __WasmroomGuest {
                fn on_messages(
                    connection: u64,
                    messages: ::std::vec::Vec<
                        $crate::wit::exports::wasmroom::consumer::batch::Message,
                    >,
                ) -> u32 {
                    $crate::__private::on_messages::<$consumer>(&STATE, connection, messages)
                }
            }

    $crate::wit::__export_room!(__WasmroomGuest with_types_in $crate::wit);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use crate::host::CLOSED;
    use crate::wit::exports::wasmroom::consumer::consumer as e;
    use crate::wit::wasmroom::consumer::types as t;
    use crate::{Connect, Consumer, Decision, Message, Request};
    use std::cell::RefCell;
    use std::thread::LocalKey;

    type Slot<C> = LocalKey<RefCell<Option<C>>>;

    pub fn open<C: Consumer>(slot: &'static Slot<C>, document: &str) -> Result<(), String> {
        let state = C::open(document);
        slot.with(|s| *s.borrow_mut() = Some(state));
        Ok(())
    }

    pub fn with<C: Consumer, R>(slot: &'static Slot<C>, f: impl FnOnce(&mut C) -> R) -> R {
        slot.with(|s| {
            let mut s = s.borrow_mut();
            // The host always calls `open` first; anything else is a host bug worth a trap.
            let consumer = s.as_mut().expect("wasmroom called a hook before open");
            CLOSED.with_borrow_mut(Vec::clear);
            f(consumer)
        })
    }

    pub fn on_connect<C: Consumer>(slot: &'static Slot<C>, info: e::ConnectInfo) -> e::Decision {
        let connect = Connect {
            id: info.id,
            path: info.path,
            query: info.query,
            headers: info.headers,
            subprotocols: info.subprotocols,
            remote_address: info.remote_address,
        };
        match with(slot, |c| c.on_connect(&connect)) {
            Decision::Accept { subprotocol } => e::Decision::Accept(subprotocol),
            Decision::Reject { status, reason } => {
                e::Decision::Reject(t::Rejection { status, reason })
            }
        }
    }

    pub fn on_message<C: Consumer>(slot: &'static Slot<C>, from: u64, msg: e::Message) {
        with(slot, |c| c.on_message(from, from_wit(msg)))
    }

    pub fn on_messages<C: Consumer>(
        slot: &'static Slot<C>,
        from: u64,
        msgs: Vec<e::Message>,
    ) -> u32 {
        let count = msgs.len();
        let msgs = msgs.into_iter().map(from_wit).collect();
        let handled = with(slot, |c| c.on_messages(from, msgs)).min(count);
        u32::try_from(handled).unwrap_or(u32::MAX)
    }

    fn from_wit(msg: e::Message) -> Message {
        match msg {
            e::Message::Text(s) => Message::Text(s),
            e::Message::Binary(b) => Message::Binary(b),
        }
    }

    pub fn on_request<C: Consumer>(slot: &'static Slot<C>, r: e::HttpRequest) -> e::HttpResponse {
        let request = Request {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            body: r.body,
        };
        let response = with(slot, |c| c.on_request(request));
        e::HttpResponse {
            status: response.status,
            headers: response.headers,
            body: response.body,
        }
    }
}
