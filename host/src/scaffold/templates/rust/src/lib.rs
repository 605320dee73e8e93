//! `{{name}}`: a counter per document, kept across restarts and hot reloads.
//!
//! Protocol: a client that joins gets `{"count":N}`; each text message adds one and
//! every client gets the new `{"count":N}`. `GET /docs/{{name}}/{document}` answers
//! `{"count":N}`. The state is saved as the count in decimal ("7").

use wasmroom_sdk::{
    Connect, ConnectionId, Consumer, Decision, Message, Request, Response, broadcast, send,
};

struct Counter {
    count: u64,
}

impl Counter {
    fn json(&self) -> String {
        format!("{{\"count\":{}}}", self.count)
    }
}

impl Consumer for Counter {
    fn open(_document: &str) -> Self {
        Counter { count: 0 }
    }

    fn on_connect(&mut self, conn: &Connect) -> Decision {
        // Sent right after the upgrade. The error (the client already left) harms nothing.
        let _ = send(conn.id, self.json());
        Decision::accept()
    }

    fn on_message(&mut self, _from: ConnectionId, msg: Message) {
        if let Message::Text(_) = msg {
            self.count += 1;
            let _ = broadcast(self.json(), &[]);
        }
    }

    fn on_request(&mut self, request: Request) -> Response {
        match request.method.as_str() {
            "GET" => Response::json(200, self.json()),
            _ => Response::text(405, "use GET"),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.count.to_string().into_bytes()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            self.count = 0;
            return Ok(());
        }
        let text = std::str::from_utf8(state).map_err(|e| e.to_string())?;
        self.count = text.parse().map_err(|e| format!("bad count {text:?}: {e}"))?;
        Ok(())
    }
}

wasmroom_sdk::export!(Counter);
