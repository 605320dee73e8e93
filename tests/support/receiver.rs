//! An HTTP server standing in for the application's backend in the webhook tests: it
//! records every request and answers as the test says (200, a refusal, a redirect, or
//! never).

use serde_json::Value;

use super::PATIENCE;

/// One request the receiver got.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The event's name, if the body is one.
    pub fn event(&self) -> Option<String> {
        let json: Value = serde_json::from_slice(&self.body).ok()?;
        Some(json["event"].as_str()?.to_owned())
    }
}

/// How the receiver answers a request: the whole HTTP response, or `None` to never
/// answer.
pub type Answer = fn(&Request) -> Option<&'static str>;

pub const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

pub fn ok(_: &Request) -> Option<&'static str> {
    Some(OK)
}

/// An HTTP server standing in for the application's backend: it records every request
/// (before answering it) and answers as `answer` says.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    pub requests: tokio::sync::mpsc::UnboundedReceiver<Request>,
}

impl Receiver {
    pub async fn start(addr: &str, answer: Answer) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, requests) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, tx, answer).await;
                });
            }
        });
        Ok(Receiver { addr, requests })
    }

    /// The next request, whatever it is.
    pub async fn next_request(&mut self) -> anyhow::Result<Request> {
        tokio::time::timeout(PATIENCE, self.requests.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("receiver stopped"))
    }

    /// The next request as (event JSON, whether its signature verifies under `secret`).
    pub async fn next(&mut self, secret: &str) -> anyhow::Result<(Value, bool)> {
        let request = self.next_request().await?;
        let signature = request
            .headers
            .iter()
            .find(|(n, _)| n == "x-wasmroom-signature")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let expected = format!("sha256={}", hmac_hex(secret.as_bytes(), &request.body));
        Ok((
            serde_json::from_slice(&request.body)?,
            signature == expected,
        ))
    }
}

/// Reads HTTP/1.1 requests (kept alive) and answers each.
async fn serve(
    mut stream: tokio::net::TcpStream,
    tx: tokio::sync::mpsc::UnboundedSender<Request>,
    answer: Answer,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut line = head.lines().next().unwrap_or_default().split(' ');
        let (method, path) = (
            line.next().unwrap_or_default(),
            line.next().unwrap_or_default(),
        );
        let headers: Vec<(String, String)> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + length {
            let mut chunk = [0u8; 65536];
            let n = stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "body cut short");
            buf.extend_from_slice(&chunk[..n]);
        }
        let request = Request {
            method: method.to_owned(),
            path: path.to_owned(),
            headers,
            body: buf[end..end + length].to_vec(),
        };
        buf.drain(..end + length);
        let Some(response) = answer(&request) else {
            // Never answers: the host's request must time out on its own.
            std::future::pending::<()>().await;
            unreachable!()
        };
        let _ = tx.send(request);
        stream.write_all(response.as_bytes()).await?;
    }
}

pub fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
