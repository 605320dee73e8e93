//! `wasmroom top`: a terminal view of the admin API, refreshed every second: each lane's
//! sockets, documents and messages per second, and the heaviest documents by memory and
//! by messages per second.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::document::DocumentInfo as Document;
use crate::lane::commands::LaneInfo as Lane;

/// Why `top` stopped.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The admin API is not reachable: is `--admin-port` set, and is this its address?
    #[error("cannot reach the admin API at {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The admin API refused (401: pass `--token` or set `WASMROOM_ADMIN_TOKEN`).
    #[error("the admin API answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
    /// The answer is not what this version of `top` understands.
    #[error("unexpected answer from the admin API: {0}")]
    Parse(String),
}

/// `GET /admin/documents`.
#[derive(Debug, Deserialize)]
pub struct Snapshot {
    /// Every lane.
    pub lanes: Vec<Lane>,
}

/// Fetches `GET /admin/documents` from `addr`.
pub fn fetch(addr: &str, token: Option<&str>) -> Result<Snapshot, TopError> {
    let connect = |source| TopError::Connect {
        addr: addr.to_owned(),
        source,
    };
    let mut stream = TcpStream::connect(addr).map_err(connect)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(connect)?;
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET /admin/documents HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\n\r\n"
    )
    .map_err(connect)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(connect)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| TopError::Parse("no end of the response head".into()))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| TopError::Parse("no status".into()))?;
    if status != 200 {
        return Err(TopError::Status {
            status,
            body: body.trim().to_owned(),
        });
    }
    serde_json::from_str(body).map_err(|e| TopError::Parse(e.to_string()))
}

/// Renders one screen. `previous` (with the time since it was taken) gives the rates.
pub fn render(now: &Snapshot, previous: Option<(&Snapshot, Duration)>, heaviest: usize) -> String {
    let mut out = String::new();
    let secs = previous.map(|(_, d)| d.as_secs_f64().max(0.001));
    let rate = |now: u64, before: Option<u64>| match (before, secs) {
        (Some(b), Some(s)) => format!("{:.0}", now.saturating_sub(b) as f64 / s),
        _ => "-".to_owned(),
    };
    let lanes_before: HashMap<usize, &Lane> = previous
        .map(|(p, _)| p.lanes.iter().map(|l| (l.lane, l)).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "{:<5} {:>6} {:>8} {:>6} {:>10} {:>10} {:>7}\n",
        "LANE", "PORT", "SOCKETS", "DOCS", "IN MSG/S", "OUT MSG/S", "LEASE"
    ));
    for l in &now.lanes {
        let before = lanes_before.get(&l.lane);
        out.push_str(&format!(
            "{:<5} {:>6} {:>8} {:>6} {:>10} {:>10} {:>7}\n",
            l.lane,
            l.port,
            l.websockets,
            l.documents.len(),
            rate(l.messages_in, before.map(|b| b.messages_in)),
            rate(l.messages_out, before.map(|b| b.messages_out)),
            l.lease.as_deref().unwrap_or("-"),
        ));
    }
    let docs_before: HashMap<(&str, &str), u64> = previous
        .map(|(p, _)| {
            p.lanes
                .iter()
                .flat_map(|l| &l.documents)
                .map(|d| ((d.plugin.as_str(), d.document.as_str()), d.messages))
                .collect()
        })
        .unwrap_or_default();
    let mut docs: Vec<(&Lane, &Document, f64)> = now
        .lanes
        .iter()
        .flat_map(|l| l.documents.iter().map(move |d| (l, d)))
        .map(|(l, d)| {
            let before = docs_before.get(&(d.plugin.as_str(), d.document.as_str()));
            let per_sec = match (before, secs) {
                (Some(&b), Some(s)) => d.messages.saturating_sub(b) as f64 / s,
                _ => 0.0,
            };
            (l, d, per_sec)
        })
        .collect();
    let row = |out: &mut String, (l, d, per_sec): &(&Lane, &Document, f64)| {
        let name = format!("{}/{}", d.plugin, d.document);
        let short: String = name.chars().take(40).collect();
        let version: String = d.version.chars().take(8).collect();
        out.push_str(&format!(
            "{:<40} {:>4} {:>8} {:>6} {:>10.1} {:>8.0} {:>6}\n",
            short,
            l.lane,
            version,
            d.connections,
            d.memory_bytes as f64 / 1024.0,
            per_sec,
            d.epoch
        ));
    };
    let header = format!(
        "{:<40} {:>4} {:>8} {:>6} {:>10} {:>8} {:>6}\n",
        "DOCUMENT", "LANE", "VERSION", "CONNS", "MEM KIB", "MSG/S", "EPOCH"
    );
    docs.sort_by_key(|d| std::cmp::Reverse(d.1.memory_bytes));
    out.push_str("\nHeaviest by memory\n");
    out.push_str(&header);
    for d in docs.iter().take(heaviest) {
        row(&mut out, d);
    }
    docs.sort_by(|a, b| b.2.total_cmp(&a.2));
    out.push_str("\nBusiest by messages/s\n");
    out.push_str(&header);
    for d in docs.iter().take(heaviest) {
        row(&mut out, d);
    }
    out
}

/// Shows the admin API at `addr` every second until interrupted (or once).
pub fn run(addr: &str, token: Option<&str>, once: bool) -> Result<(), TopError> {
    let mut previous: Option<(Snapshot, Instant)> = None;
    loop {
        let snapshot = fetch(addr, token)?;
        let taken = Instant::now();
        let screen = render(
            &snapshot,
            previous.as_ref().map(|(p, at)| (p, taken - *at)),
            10,
        );
        if once {
            print!("{screen}");
            return Ok(());
        }
        // Clear the screen and draw from the top.
        print!("\x1b[H\x1b[2Jwasmroom top: {addr} (Ctrl-C to quit)\n\n{screen}");
        let _ = std::io::stdout().flush();
        previous = Some((snapshot, taken));
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(messages: u64, memory: u64) -> Snapshot {
        serde_json::from_value(serde_json::json!({"lanes": [{
            "lane": 0, "port": 8000, "websockets": 2, "messages_in": messages, "messages_out": messages * 2,
            "documents": [
                {"plugin": "chat", "version": "abcdef0123", "document": "big", "connections": 1,
                 "memory_bytes": memory, "messages": 0, "idle_ms": 5, "unsaved": false},
                {"plugin": "relay", "version": "0123", "document": "busy", "connections": 1,
                 "memory_bytes": 1024, "messages": messages, "idle_ms": 5, "unsaved": false}
            ]
        }]}))
        .unwrap()
    }

    #[test]
    fn rates_come_from_two_samples() {
        let before = snapshot(100, 1 << 20);
        let now = snapshot(300, 1 << 20);
        let screen = render(&now, Some((&before, Duration::from_secs(2))), 10);
        let lane = screen.lines().nth(1).unwrap();
        assert!(
            lane.split_whitespace()
                .eq(["0", "8000", "2", "2", "100", "200", "-"]),
            "{lane}"
        );
        let memory = screen
            .lines()
            .skip_while(|l| !l.starts_with("Heaviest"))
            .nth(2)
            .unwrap();
        assert!(memory.starts_with("chat/big"), "{memory}");
        let busy = screen
            .lines()
            .skip_while(|l| !l.starts_with("Busiest"))
            .nth(2)
            .unwrap();
        assert!(
            busy.starts_with("relay/busy") && busy.split_whitespace().nth(5) == Some("100"),
            "{busy}"
        );
        // A single sample has no rates.
        assert!(
            render(&now, None, 10)
                .lines()
                .nth(1)
                .unwrap()
                .ends_with('-')
        );
    }
}
