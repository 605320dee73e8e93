//! Test harness: start the real `wasmroom` binary on free ports with a chosen set of
//! plugins, and talk to it with real WebSocket and HTTP clients.

#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod fault_proxy;
pub mod nginx;
pub mod postgres;
pub mod receiver;
pub mod replay;
pub mod session_client;
pub mod streaming;
pub mod tokens;
pub mod yjs;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for something that should happen quickly. Generous: CI machines
/// are slow and shared; this bounds a hang, it does not measure speed.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Where `cargo xtask plugins` leaves the built components.
pub fn built_plugins_dir() -> PathBuf {
    std::env::var_os("WASMROOM_TEST_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/plugin")
        })
}

/// A running `wasmroom serve` with its own plugins directory.
pub struct Server {
    child: Child,
    pub addrs: Vec<SocketAddr>,
    pub plugins: tempfile::TempDir,
    /// The data directory (`--data`), kept across [`Server::restart`].
    pub data: tempfile::TempDir,
    lanes: usize,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Server {
    /// Starts `lanes` lanes on free ports serving `plugins` (names of built plugins).
    pub fn start(plugins: &[&str], lanes: usize, extra: &[&str]) -> anyhow::Result<Server> {
        Self::start_with_env(plugins, lanes, extra, &[])
    }

    /// Like [`Server::start`], with environment variables for the server process.
    pub fn start_with_env(
        plugins: &[&str],
        lanes: usize,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        let dir = Self::plugins_dir(plugins)?;
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::launch(dir, tempfile::tempdir()?, lanes, extra, env)
    }

    /// A new plugins directory holding the built `plugins`.
    pub fn plugins_dir(plugins: &[&str]) -> anyhow::Result<tempfile::TempDir> {
        let dir = tempfile::tempdir()?;
        for p in plugins {
            let from = built_plugins_dir().join(format!("{p}.wasm"));
            std::fs::copy(&from, dir.path().join(format!("{p}.wasm"))).with_context(|| {
                format!(
                    "missing {}: run `cargo xtask test`, which builds the plugins",
                    from.display()
                )
            })?;
        }
        Ok(dir)
    }

    /// Like [`Server::start`], with a TOML config file holding `config`.
    pub fn start_with_config(
        plugins: &[&str],
        lanes: usize,
        config: &str,
    ) -> anyhow::Result<Server> {
        let file = tempfile::Builder::new().suffix(".toml").tempfile()?;
        std::fs::write(file.path(), config)?;
        let (_, path) = file.keep()?;
        Self::start(
            plugins,
            lanes,
            &["--config", path.to_str().expect("temp paths are UTF-8")],
        )
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory in bytes (Linux).
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS")?;
        Ok(kib * 1024)
    }

    /// Starts a server on an existing plugins directory.
    pub fn start_in(
        dir: tempfile::TempDir,
        lanes: usize,
        extra: &[&str],
    ) -> anyhow::Result<Server> {
        let extra = extra.iter().map(|s| s.to_string()).collect();
        Self::launch(dir, tempfile::tempdir()?, lanes, extra, Vec::new())
    }

    /// Starts the server again on the same plugins and data directories, on new ports.
    /// The old process must have exited (see [`Server::terminate`], [`Server::kill9`]).
    pub fn restart(mut self) -> anyhow::Result<Server> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let plugins = std::mem::replace(&mut self.plugins, tempfile::tempdir()?);
        let data = std::mem::replace(&mut self.data, tempfile::tempdir()?);
        Self::launch(
            plugins,
            data,
            self.lanes,
            self.extra.clone(),
            self.env.clone(),
        )
    }

    /// Waits for the process to exit on its own; returns its status.
    pub fn wait_for_exit(&mut self) -> anyhow::Result<ExitStatus> {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "wasmroom did not exit in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a host of a cluster: `plugins` on `bind`, one lane per port of `ports`
    /// (fixed, so that it restarts where nginx expects it), plus `extra` arguments.
    pub fn start_host(
        plugins: &[&str],
        bind: &str,
        ports: &[u16],
        extra: &[&str],
    ) -> anyhow::Result<Server> {
        Self::start_host_with_env(plugins, bind, ports, extra, &[])
    }

    /// Like [`Server::start_host`], with environment variables for the server process.
    pub fn start_host_with_env(
        plugins: &[&str],
        bind: &str,
        ports: &[u16],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        let mut args: Vec<String> = vec![
            "--bind".into(),
            bind.into(),
            "--upstream-host".into(),
            bind.into(),
        ];
        for port in ports {
            args.push("--port".into());
            args.push(port.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let dir = Self::plugins_dir(plugins)?;
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::launch(dir, tempfile::tempdir()?, ports.len(), args, env)
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    /// Kills the process with SIGKILL: no chance to save anything.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    fn launch(
        dir: tempfile::TempDir,
        data: tempfile::TempDir,
        lanes: usize,
        extra: Vec<String>,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Server> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmroom"));
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.arg("serve").arg("--plugins").arg(dir.path());
        cmd.arg("--data").arg(data.path());
        // Fixed ports (a host that restarts where nginx expects it) come with `extra`.
        if !extra.iter().any(|a| a == "--port") {
            for _ in 0..lanes {
                cmd.args(["--port", "0"]);
            }
        }
        cmd.args(&extra)
            .env("RUST_LOG", "info,wasmroom=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("cannot start wasmroom")?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[wasmroom] {line}");
                let (lines, cv) = &*sink;
                lines.lock().unwrap().push(line);
                cv.notify_all();
            }
            sink.1.notify_all();
        });
        let mut server = Server {
            child,
            addrs: Vec::new(),
            plugins: dir,
            data,
            lanes,
            extra,
            env,
            log,
        };
        // Lanes announce themselves as `lane N listening on ADDR`.
        for lane in 0..lanes {
            let addr = server.wait_for_address(&format!("lane {lane} listening on "))?;
            server.addrs.push(addr);
        }
        Ok(server)
    }

    /// The address a log line `... {announcement}ADDR` gives (text or JSON logs).
    pub fn wait_for_address(&mut self, announcement: &str) -> anyhow::Result<SocketAddr> {
        let line = self.wait_for_log(announcement)?;
        let message = match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(json) => json["message"].as_str().unwrap_or_default().to_owned(),
            Err(_) => line.clone(),
        };
        message
            .rsplit(announcement)
            .next()
            .and_then(|a| a.trim().parse().ok())
            .with_context(|| format!("cannot parse the address in {line:?}"))
    }

    /// The admin API's address (the server must run with `--admin-port`).
    pub fn admin_addr(&mut self) -> anyhow::Result<SocketAddr> {
        self.wait_for_address("admin listening on ")
    }

    /// Waits until a log line contains `needle`; returns it.
    pub fn wait_for_log(&mut self, needle: &str) -> anyhow::Result<String> {
        let (lines, cv) = &*self.log;
        let deadline = std::time::Instant::now() + PATIENCE * 3;
        let mut guard = lines.lock().unwrap();
        loop {
            if let Some(l) = guard.iter().find(|l| l.contains(needle)) {
                return Ok(l.clone());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("wasmroom exited ({status}) before logging {needle:?}");
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                bail!("no log line with {needle:?} in time");
            }
            guard = cv
                .wait_timeout(guard, (deadline - now).min(Duration::from_millis(200)))
                .unwrap()
                .0;
        }
    }

    /// Waits until `/stats` of `lane` satisfies `check`; returns the stats.
    pub async fn wait_for_stats(
        &self,
        lane: usize,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let (_, body) = http(self.addr(lane), "GET", "/stats", b"").await?;
            let stats: serde_json::Value = serde_json::from_str(&body)?;
            if check(&stats) {
                return Ok(stats);
            }
            if std::time::Instant::now() > deadline {
                bail!("/stats never satisfied the condition; last: {stats}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// All log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.0.lock().unwrap().clone()
    }

    pub fn addr(&self, lane: usize) -> SocketAddr {
        self.addrs[lane]
    }

    pub fn url(&self, lane: usize, path: &str) -> String {
        format!("ws://{}{path}", self.addrs[lane])
    }

    /// Opens a WebSocket on `lane`.
    pub async fn connect(&self, lane: usize, path: &str) -> anyhow::Result<Ws> {
        let (ws, _) = tokio::time::timeout(
            PATIENCE,
            tokio_tungstenite::connect_async(self.url(lane, path)),
        )
        .await
        .context("connect timed out")?
        .with_context(|| format!("connect to {path}"))?;
        Ok(ws)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill failed");
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                bail!("wasmroom did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next data message, skipping pings and pongs.
pub async fn recv(ws: &mut Ws) -> anyhow::Result<Message> {
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .context("no message in time")?
            .context("connection ended")??;
        match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return Ok(other),
        }
    }
}

/// The next text message.
pub async fn recv_text(ws: &mut Ws) -> anyhow::Result<String> {
    match recv(ws).await? {
        Message::Text(t) => Ok(t.to_string()),
        other => bail!("expected text, got {other:?}"),
    }
}

/// The next text message parsed as JSON.
pub async fn recv_json(ws: &mut Ws) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(&recv_text(ws).await?)?)
}

pub async fn send_text(ws: &mut Ws, text: &str) -> anyhow::Result<()> {
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// Waits for the server's close frame; returns its code and reason.
pub async fn expect_close(ws: &mut Ws) -> anyhow::Result<(u16, String)> {
    loop {
        match recv(ws).await? {
            Message::Close(Some(frame)) => {
                return Ok((u16::from(frame.code), frame.reason.to_string()));
            }
            Message::Close(None) => return Ok((u16::from(CloseCode::Status), String::new())),
            other => eprintln!("(skipping {other:?} while waiting for close)"),
        }
    }
}

/// Whether nothing arrives for `quiet` (used only where the absence of a message is the
/// point, after a positive signal has shown that messages do flow).
pub async fn nothing_within(ws: &mut Ws, quiet: Duration) -> bool {
    tokio::time::timeout(quiet, ws.next()).await.is_err()
}

/// A one-shot HTTP/1.1 request; returns the status and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    http_with(addr, method, path, &[], body).await
}

/// A one-shot HTTP/1.1 request with extra headers; returns the status and the body.
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{extra}content-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .context("no HTTP response in time")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, body.to_owned()))
}

/// The status and body of a refused WebSocket handshake.
pub async fn refused(url: &str) -> anyhow::Result<(u16, String)> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => bail!("the upgrade to {url} succeeded"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Ok((response.status().as_u16(), body))
        }
        Err(e) => bail!("unexpected error: {e}"),
    }
}

/// Replaces `plugins/{name}.wasm` atomically (write aside, then rename), as a deploy would.
pub fn deploy(server: &Server, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = server.plugins.path();
    let tmp = dir.join(format!(".{name}.upload"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm")))?;
    Ok(())
}

/// The same component with a custom section appended: same code, a new version (the
/// host keys versions by content hash), as a rebuilt plugin would be.
pub fn rebuilt(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    rebuilt_as(path, "v2")
}

/// [`rebuilt`] with `tag` in the section: each tag is another version.
pub fn rebuilt_as(path: &std::path::Path, tag: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = std::fs::read(path)?;
    let name = b"wasmroom-test";
    let payload = [&[name.len() as u8][..], name, tag.as_bytes()].concat();
    bytes.push(0); // custom section id
    bytes.push(payload.len() as u8); // LEB128 size (< 128)
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// The `/plugins` entry of plugin `name` (`null` when it is not listed).
pub async fn plugin_entry(server: &Server, name: &str) -> anyhow::Result<serde_json::Value> {
    let (_, body) = http(server.addr(0), "GET", "/plugins", b"").await?;
    let listed: serde_json::Value = serde_json::from_str(&body)?;
    Ok(listed["plugins"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == name))
        .cloned()
        .unwrap_or_default())
}

/// Waits until plugin `name` runs a version other than `old` with `live` documents on
/// it (a reload has moved them); returns its `/plugins` entry.
pub async fn wait_for_new_version(
    server: &Server,
    name: &str,
    old: &serde_json::Value,
    live: u64,
) -> anyhow::Result<serde_json::Value> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let entry = plugin_entry(server, name).await?;
        let current = &entry["current"];
        if current["version"].is_string()
            && current["version"] != *old
            && current["live_documents"] == live
        {
            return Ok(entry);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no reload of {name} in time: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket upgrade done by hand: the raw socket after `101`, for tests that send
/// frames no polite client library would (fragments left open, floods of empty frames).
pub async fn raw_upgrade(addr: SocketAddr, path: &str) -> anyhow::Result<TcpStream> {
    let (status, text, stream) = handshake(addr, path, &[]).await?;
    anyhow::ensure!(status == 101, "not upgraded: {text}");
    Ok(stream)
}

/// A WebSocket handshake with `headers` added (a `host` or `sec-websocket-key` among them
/// replaces the default); the status, the answer's head and body, and the socket
/// (upgraded when the status is 101).
pub async fn handshake(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String, TcpStream)> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n"
    );
    let given = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !given("host") {
        head.push_str(&format!("host: {addr}\r\n"));
    }
    if !given("sec-websocket-key") {
        head.push_str("sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut byte)).await??;
        anyhow::ensure!(n == 1, "connection closed during the handshake");
        got.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status != 101 {
        let mut body = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut body)).await;
        return Ok((status, text + &String::from_utf8_lossy(&body), stream));
    }
    Ok((status, text, stream))
}

/// A masked client frame (mask 1, 2, 3, 4).
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [1u8, 2, 3, 4];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads server frames from a raw socket until a close frame; returns its code (`None`
/// if the connection ends without one).
pub async fn raw_close_code(stream: &mut TcpStream) -> anyhow::Result<Option<u16>> {
    let mut buf = Vec::new();
    loop {
        // Parse what is there: unmasked server frames.
        while buf.len() >= 2 {
            let len7 = (buf[1] & 0x7f) as usize;
            let (len, start) = match len7 {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (
                    u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n, 2),
            };
            if buf.len() < start + len {
                break;
            }
            if buf[0] & 0x0f == 8 {
                return Ok((len >= 2).then(|| u16::from_be_bytes([buf[start], buf[start + 1]])));
            }
            buf.drain(..start + len);
        }
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .context("no close frame in time")?
            .unwrap_or(0);
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The value of a metric line `{name}{...labels containing every `labels` entry} VALUE`
/// in `/metrics` of `addr`, summed over matching lines.
pub async fn metric(addr: SocketAddr, name: &str, labels: &[&str]) -> anyhow::Result<f64> {
    let (_, text) = http(addr, "GET", "/metrics", b"").await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Waits until `metric` reaches at least `value`.
pub async fn wait_for_metric(
    addr: SocketAddr,
    name: &str,
    labels: &[&str],
    value: f64,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let now = metric(addr, name, labels).await?;
        if now >= value {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{name}{labels:?} stayed at {now}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
