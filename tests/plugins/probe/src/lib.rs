//! `probe`: a consumer for the integration tests, with hooks that misbehave on request.
//!
//! - connect with `?reject=STATUS&reason=TEXT` to be refused with that status and reason,
//!   with `?panic=TEXT` to have `on-connect` panic with TEXT; offer the `probe.v1`
//!   subprotocol to have it chosen;
//! - text commands: `timers` (sets timers 1 at 30 ms, 2 at 60 ms and 3 at 45 ms, then
//!   cancels 3), `later` (timer 9 in 1.5 s), `later MS` (timer 9 in MS ms), `echo ...`,
//!   `count`, `whoami`, `note TEXT` (kept), `notes` (every note, in order), `hoard N`
//!   (keeps N MiB more), `close-me CODE` (the consumer closes this connection), `departed`
//!   (`id:code` of every connection gone, as `on-disconnect` reported them), `spin`
//!   (never returns), `grow` (allocates without end), `panic`;
//! - every due timer broadcasts `timer N`; `restore` broadcasts how many connections it sees;
//! - `log TEXT` logs TEXT as a warning, as it is (control characters included);
//! - `claims` answers this connection's token claims (`none` without), `setting NAME`
//!   the plugin's setting (`none` if unset), `subprotocols` what `on-connect` was offered,
//!   `connect-info` all `on-connect` saw (`{"path", "query", "headers", "subprotocols"}`);
//! - the document `trap-open` traps in `open`, with control characters in its message;
//! - an HTTP request answers `probe {document}`, or `?size=N` bytes of `x`, with status
//!   200 or `?status=N`; `?panic=TEXT` panics with TEXT instead; `/docs/probe/{document}/echo`
//!   answers all `on-request` saw (`{"method", "path", "query", "headers"}`).

use std::time::Duration;

use wasmroom_sdk::{
    Connect, ConnectionId, Consumer, Decision, LogLevel, Message, Request, Response, broadcast,
    cancel_timer, claims, close, connections, log, send, set_timer, setting,
};

struct Probe {
    document: String,
    remote: Vec<(ConnectionId, String)>,
    offered: Vec<(ConnectionId, Vec<String>)>,
    /// What `on-connect` saw of each connection, as JSON.
    seen: Vec<(ConnectionId, String)>,
    departed: Vec<(ConnectionId, u16)>,
    notes: Vec<String>,
    hoard: Vec<Vec<u8>>,
}

impl Consumer for Probe {
    fn open(document: &str) -> Self {
        if document == "trap-open" {
            panic!("probe refuses to open\r\nFORGED OPEN LINE\u{1b}[2K");
        }
        Probe {
            document: document.to_owned(),
            remote: Vec::new(),
            offered: Vec::new(),
            seen: Vec::new(),
            departed: Vec::new(),
            notes: Vec::new(),
            hoard: Vec::new(),
        }
    }

    fn on_connect(&mut self, conn: &Connect) -> Decision {
        if let Some(text) = conn.query_param("panic") {
            panic!("{text}");
        }
        if let Some(status) = conn.query_param("reject") {
            let status = status.parse().unwrap_or(403);
            let reason = conn.query_param("reason").unwrap_or("rejected by probe");
            return Decision::reject(status, reason.replace("%20", " "));
        }
        self.remote.push((conn.id, conn.remote_address.clone()));
        self.offered.push((conn.id, conn.subprotocols.clone()));
        let seen = serde_json::json!({
            "path": conn.path,
            "query": conn.query,
            "headers": conn.headers,
            "subprotocols": conn.subprotocols,
        });
        self.seen.push((conn.id, seen.to_string()));
        let subprotocol = conn.subprotocols.iter().find(|p| *p == "probe.v1").cloned();
        Decision::Accept { subprotocol }
    }

    fn on_message(&mut self, from: ConnectionId, msg: Message) {
        let Message::Text(text) = msg else {
            let _ = send(from, msg);
            return;
        };
        let reply = match text.as_str() {
            "timers" => {
                let ms = Duration::from_millis;
                let ok = set_timer(1, ms(30)).is_ok()
                    && set_timer(2, ms(60)).is_ok()
                    && set_timer(3, ms(45)).is_ok()
                    && cancel_timer(3);
                if ok {
                    "timers set".to_owned()
                } else {
                    "timers failed".to_owned()
                }
            }
            "later" => later(1500),
            "count" => connections().len().to_string(),
            "whoami" => self
                .remote
                .iter()
                .find(|(id, _)| *id == from)
                .map(|(_, addr)| addr.clone())
                .unwrap_or_default(),
            "spin" =>
            {
                #[allow(clippy::empty_loop)]
                loop {}
            }
            "grow" => loop {
                self.hoard.push(vec![1u8; 1 << 20]);
            },
            "panic" => panic!("probe was asked to panic"),
            "notes" => self.notes.join(","),
            "departed" => self
                .departed
                .iter()
                .map(|(id, code)| format!("{id}:{code}"))
                .collect::<Vec<_>>()
                .join(","),
            "claims" => claims(from).unwrap_or_else(|| "none".to_owned()),
            "connect-info" => self
                .seen
                .iter()
                .find(|(id, _)| *id == from)
                .map(|(_, seen)| seen.clone())
                .unwrap_or_default(),
            "subprotocols" => self
                .offered
                .iter()
                .find(|(id, _)| *id == from)
                .map(|(_, p)| p.join(","))
                .unwrap_or_default(),
            other if other.starts_with("setting ") => {
                setting(&other["setting ".len()..]).unwrap_or_else(|| "none".to_owned())
            }
            other if other.starts_with("log ") => {
                log(LogLevel::Warn, &other["log ".len()..]);
                "logged".to_owned()
            }
            other if other.starts_with("note ") => {
                self.notes.push(other["note ".len()..].to_owned());
                return;
            }
            other if other.starts_with("later ") => {
                later(other["later ".len()..].parse().unwrap_or(1500))
            }
            other => match (
                other.strip_prefix("echo "),
                other.strip_prefix("hoard "),
                other.strip_prefix("close-me "),
            ) {
                (Some(rest), _, _) => rest.to_owned(),
                (_, _, Some(code)) => {
                    let code = code.parse().unwrap_or(4000);
                    match close(from, code, "asked to") {
                        Ok(()) => return,
                        Err(e) => e.to_string(),
                    }
                }
                (_, Some(mib), _) => {
                    // Keeps MiB of touched memory, for the memory metrics.
                    let mib: usize = mib.parse().unwrap_or(0);
                    for _ in 0..mib {
                        self.hoard.push(vec![1u8; 1 << 20]);
                    }
                    format!("hoarding {} MiB", self.hoard.len())
                }
                _ => format!("unknown command: {other}"),
            },
        };
        let _ = send(from, reply);
    }

    fn on_disconnect(&mut self, conn: ConnectionId, code: u16) {
        self.remote.retain(|(id, _)| *id != conn);
        self.departed.push((conn, code));
    }

    fn on_timer(&mut self, id: u64) {
        let _ = broadcast(format!("timer {id}"), &[]);
    }

    fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        // Says who it sees: a hot reload must show the new version every connection.
        let _ = broadcast(
            format!("restored with {} connection(s)", connections().len()),
            &[],
        );
        Ok(())
    }

    fn on_request(&mut self, request: Request) -> Response {
        if let Some(text) = request.query_param("panic") {
            panic!("{text}");
        }
        if request.path.ends_with("/echo") {
            let seen = serde_json::json!({
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": request.headers,
            });
            return Response::json(200, seen.to_string());
        }
        let status = request
            .query_param("status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        match request.query_param("size").and_then(|n| n.parse().ok()) {
            Some(size) => Response::text(status, "x".repeat(size)),
            None => Response::text(status, format!("probe {}", self.document)),
        }
    }
}

/// Sets timer 9 to fire in `ms` milliseconds.
fn later(ms: u64) -> String {
    match set_timer(9, Duration::from_millis(ms)) {
        Ok(()) => "later set".to_owned(),
        Err(e) => e.to_string(),
    }
}

wasmroom_sdk::export!(Probe);
