//! A raw client of the session subprotocol (`wasmroom.session.v1`, docs/sessions.md):
//! the hello, numbered data frames and acknowledgements, spoken frame by frame so that a
//! test controls every number.

use anyhow::{Context, bail};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::fault_proxy::FaultProxy;
use super::{PATIENCE, Server, Ws, recv_text, send_text};

pub const SUBPROTOCOL: &str = "wasmroom.session.v1";

/// Opens a session socket at `url`.
pub async fn session_socket_at(url: &str) -> anyhow::Result<Ws> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", SUBPROTOCOL.parse()?);
    let (ws, response) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request))
        .await
        .context("connect timed out")??;
    let chosen = response.headers().get("sec-websocket-protocol");
    anyhow::ensure!(
        chosen.is_some_and(|p| p == SUBPROTOCOL),
        "the host did not answer with the session subprotocol: {chosen:?}"
    );
    Ok(ws)
}

/// Reads the hello: the session's id and whether it was resumed.
pub async fn hello(ws: &mut Ws) -> anyhow::Result<(String, bool)> {
    let text = recv_text(ws).await?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts[..] {
        ["!hello", id, "new"] => Ok((id.to_owned(), false)),
        ["!hello", id, "resumed"] => Ok((id.to_owned(), true)),
        _ => bail!("expected a hello, got {text:?}"),
    }
}

/// A session frame from the host.
#[derive(Debug, PartialEq)]
pub enum FromHost {
    Data(u64, String),
    Ack(u64),
}

pub async fn next(ws: &mut Ws) -> anyhow::Result<FromHost> {
    let text = recv_text(ws).await?;
    if let Some(n) = text.strip_prefix("!ack ") {
        return Ok(FromHost::Ack(n.parse()?));
    }
    let (seq, payload) = text.split_once(':').context("no sequence number")?;
    Ok(FromHost::Data(seq.parse()?, payload.to_owned()))
}

/// Reads until the host acknowledged `seq`; returns the data messages read meanwhile.
pub async fn until_ack(ws: &mut Ws, seq: u64) -> anyhow::Result<Vec<(u64, String)>> {
    let mut data = Vec::new();
    loop {
        match next(ws).await? {
            FromHost::Ack(n) if n >= seq => return Ok(data),
            FromHost::Ack(_) => {}
            FromHost::Data(n, text) => data.push((n, text)),
        }
    }
}

pub async fn send_data(ws: &mut Ws, seq: u64, text: &str) -> anyhow::Result<()> {
    send_text(ws, &format!("{seq}:{text}")).await
}

/// Opens a session socket at `path` (with a resume's query, if any).
pub async fn session_socket(server: &Server, path: &str) -> anyhow::Result<Ws> {
    session_socket_at(&server.url(0, path)).await
}

/// Asks the probe something over a plain socket.
pub async fn ask(server: &Server, document: &str, command: &str) -> anyhow::Result<String> {
    let mut ws = server.connect(0, &format!("/ws/probe/{document}")).await?;
    send_text(&mut ws, command).await?;
    let answer = recv_text(&mut ws).await?;
    ws.close(None).await?;
    Ok(answer)
}

/// Drops a socket without a close frame: what a cut looks like to the host.
pub fn cut(ws: Ws) {
    drop(ws);
}

/// Cuts every connection once a socket that carried messages is open (mid-stream: a
/// line read late may come while the clients reconnect).
pub fn cut_mid_stream(proxy: &FaultProxy) -> anyhow::Result<()> {
    proxy.wait_for(|c| c.open && c.downstream_bytes > 0, PATIENCE)?;
    proxy.cut();
    Ok(())
}
