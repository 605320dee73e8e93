//! Behind a real nginx: Debian's nginx, started by the test as an unprivileged process
//! with its own prefix, on a config printed by `wasmroom nginx-config`.

mod support;

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail, ensure};
use futures_util::future::try_join_all;
use serde_json::Value;
use support::nginx::Nginx;
use support::{PATIENCE, Server, Ws, handshake, http, recv_text, send_text};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn connect(url: &str) -> anyhow::Result<Ws> {
    let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
        .await
        .context("connect timed out")?
        .with_context(|| format!("connect to {url}"))?;
    Ok(ws)
}

/// Connects from a chosen loopback source address, with extra request headers.
async fn connect_from(
    source: IpAddr,
    to: SocketAddr,
    path: &str,
    headers: &[(&'static str, &str)],
) -> anyhow::Result<Ws> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(to).await?;
    let mut request = format!("ws://{to}{path}").into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse()?);
    }
    let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
    Ok(ws)
}

/// `/stats` of every lane.
async fn all_stats(server: &Server) -> anyhow::Result<Vec<Value>> {
    let mut stats = Vec::new();
    for &addr in &server.addrs {
        let (_, body) = http(addr, "GET", "/stats", b"").await?;
        stats.push(serde_json::from_str(&body)?);
    }
    Ok(stats)
}

fn sum(stats: &[Value], key: &str) -> u64 {
    stats.iter().map(|s| s[key].as_u64().unwrap_or(0)).sum()
}

/// Every client sends one message; every client must receive the other clients' ones.
async fn everyone_hears_everyone(clients: &mut [Ws], round: &str) -> anyhow::Result<()> {
    for (i, ws) in clients.iter_mut().enumerate() {
        send_text(ws, &format!("{round} from {i}")).await?;
    }
    let n = clients.len();
    try_join_all(clients.iter_mut().enumerate().map(|(i, ws)| async move {
        let mut heard = std::collections::BTreeSet::new();
        while heard.len() < n - 1 {
            let text = recv_text(ws).await.with_context(|| format!("client {i}"))?;
            let (r, from) = text.split_once(" from ").context("unexpected message")?;
            ensure!(r == round, "client {i} got {text:?} during {round}");
            let from: usize = from.parse()?;
            ensure!(from != i, "client {i} heard itself");
            heard.insert(from);
        }
        Ok::<_, anyhow::Error>(())
    }))
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_four_lanes_keeps_one_instance_per_document() -> anyhow::Result<()> {
    let server = Server::start(&["relay"], 4, &[])?;
    let nginx = Nginx::start(&server, &["--routing", "any"])?;
    let url = nginx.url("/ws/relay/meeting");
    let mut clients = try_join_all((0..40).map(|_| connect(&url))).await?;
    everyone_hears_everyone(&mut clients, "hello").await?;

    let stats = all_stats(&server).await?;
    assert_eq!(sum(&stats, "documents"), 1, "one instance: {stats:?}");
    let owner = stats
        .iter()
        .find(|s| s["documents"] == 1)
        .context("no lane has the document")?;
    assert_eq!(
        owner["connections"], 40,
        "every socket on the owner: {stats:?}"
    );
    let handed = sum(&stats, "handed_over");
    assert!(
        handed > 0,
        "round-robin over 4 lanes must misroute some: {stats:?}"
    );
    assert_eq!(handed, sum(&stats, "adopted"));

    // A plain HTTP request for the document, sent straight to each lane, reaches the same
    // instance (it sees all 40 connections).
    for &lane in &server.addrs {
        let (status, body) = http(lane, "GET", "/docs/relay/meeting", b"").await?;
        assert_eq!((status, body.as_str()), (200, r#"{"connections":40}"#));
    }
    assert_eq!(sum(&all_stats(&server).await?, "documents"), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_routing_lands_on_the_owner_lane_directly() -> anyhow::Result<()> {
    let server = Server::start(&["relay"], 4, &[])?;
    let nginx = Nginx::start(&server, &["--routing", "hash"])?;
    // Ids with spaces and non-ASCII: nginx hashes the decoded $uri, as wasmroom does.
    let docs: Vec<String> = (0..12).map(|i| format!("%C3%9Cbung%20{i}")).collect();
    // Kept connected, so no document idles out before the count below.
    let mut everyone = Vec::new();
    for doc in &docs {
        let url = nginx.url(&format!("/ws/relay/{doc}"));
        let mut clients = try_join_all((0..3).map(|_| connect(&url))).await?;
        everyone_hears_everyone(&mut clients, doc).await?;
        everyone.push(clients);
        // The HTTP route is hashed the same way.
        let (status, body) = http(nginx.addr, "GET", &format!("/docs/relay/{doc}"), b"").await?;
        assert_eq!((status, body.as_str()), (200, r#"{"connections":3}"#));
    }
    let stats = all_stats(&server).await?;
    assert_eq!(
        sum(&stats, "handed_over"),
        0,
        "nginx picked every owner: {stats:?}"
    );
    assert_eq!(sum(&stats, "adopted"), 0);
    assert_eq!(sum(&stats, "documents"), 12, "{stats:?}");
    let used = stats.iter().filter(|s| s["documents"] != 0).count();
    assert!(used > 1, "12 documents all hashed to one lane: {stats:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_routing_serves_the_seeds_path_slots() -> anyhow::Result<()> {
    let server = Server::start(&["relay"], 4, &[])?;
    let nginx = Nginx::start(&server, &["--routing", "slot"])?;
    // An app that picks slots like the seed (`/ws{N}/`): whatever slot it picks for a
    // document, the sockets meet in one instance; unslotted paths are hashed.
    let mut clients = Vec::new();
    for path in [
        "/ws0/relay/paper",
        "/ws1/relay/paper",
        "/ws3/relay/paper",
        "/ws/relay/paper",
    ] {
        clients.push(connect(&nginx.url(path)).await?);
    }
    everyone_hears_everyone(&mut clients, "slots").await?;
    let (status, body) = http(nginx.addr, "GET", "/docs2/relay/paper", b"").await?;
    assert_eq!((status, body.as_str()), (200, r#"{"connections":4}"#));
    let stats = all_stats(&server).await?;
    assert_eq!(sum(&stats, "documents"), 1, "{stats:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misrouted_reject_answers_421_with_the_owner_port() -> anyhow::Result<()> {
    let server = Server::start(&["relay"], 4, &["--misrouted", "reject"])?;
    let first = server.addr(0);
    let (mut rejected, mut accepted) = (0, 0);
    // Lane 0 owns about a quarter of the documents, whatever ports the lanes got: go on
    // until both answers have been seen (20 documents at least, 400 at most).
    for i in 0..400 {
        if i >= 20 && rejected > 0 && accepted > 0 {
            break;
        }
        let path = format!("/ws/relay/doc-{i}");
        match tokio_tungstenite::connect_async(server.url(0, &path)).await {
            Ok(_) => accepted += 1,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 421);
                let port: u16 = response
                    .headers()
                    .get("x-wasmroom-owner-port")
                    .context("no owner port header")?
                    .to_str()?
                    .parse()?;
                assert_ne!(port, first.port());
                let owner = server.addrs.iter().position(|a| a.port() == port);
                let owner = owner.context("the owner port is one of the lanes")?;
                // The owner accepts it, and the HTTP route answers the same way.
                connect(&server.url(owner, &path)).await?;
                let (status, _) = http(first, "GET", &format!("/docs/relay/doc-{i}"), b"").await?;
                assert_eq!(status, 421);
                rejected += 1;
            }
            Err(e) => bail!("unexpected error: {e}"),
        }
    }
    assert!(
        rejected > 0 && accepted > 0,
        "{rejected} rejected, {accepted} accepted"
    );
    let stats = all_stats(&server).await?;
    assert_eq!(sum(&stats, "handed_over"), 0, "{stats:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_give_the_consumer_the_original_client_address() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 2, &["--proxy-headers"])?;
    let nginx = Nginx::start(&server, &["--routing", "hash"])?;
    let client: IpAddr = "127.0.0.2".parse()?;
    let mut ws = connect_from(client, nginx.addr, "/ws/probe/who", &[]).await?;
    send_text(&mut ws, "whoami").await?;
    assert_eq!(recv_text(&mut ws).await?, "127.0.0.2:0");
    // What the client claims itself comes before nginx's entry and does not count.
    let liar: IpAddr = "127.0.0.3".parse()?;
    let spoof = [("x-forwarded-for", "10.9.9.9")];
    let mut ws = connect_from(liar, nginx.addr, "/ws/probe/who", &spoof).await?;
    send_text(&mut ws, "whoami").await?;
    assert_eq!(recv_text(&mut ws).await?, "127.0.0.3:0");
    drop(nginx);

    // Without --proxy-headers the headers are ignored: the consumer sees the socket's peer.
    let plain = Server::start(&["probe"], 1, &[])?;
    let mut ws = connect_from(liar, plain.addr(0), "/ws/probe/who", &spoof).await?;
    send_text(&mut ws, "whoami").await?;
    let seen = recv_text(&mut ws).await?;
    assert!(
        seen.starts_with("127.0.0.3:") && seen != "127.0.0.3:0",
        "{seen}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_reload_keeps_established_sockets() -> anyhow::Result<()> {
    let server = Server::start(&["relay"], 4, &[])?;
    let nginx = Nginx::start(&server, &["--routing", "any"])?;
    let url = nginx.url("/ws/relay/standup");
    let mut clients = try_join_all((0..6).map(|_| connect(&url))).await?;
    everyone_hears_everyone(&mut clients, "before").await?;

    nginx.reload()?;
    // The sockets opened before the reload still carry messages both ways, and a client
    // connecting through the new workers joins the same document.
    everyone_hears_everyone(&mut clients, "after").await?;
    clients.push(connect(&url).await?);
    everyone_hears_everyone(&mut clients, "joined").await?;
    assert_eq!(sum(&all_stats(&server).await?, "documents"), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_check_sees_the_host_the_browser_used_through_nginx() -> anyhow::Result<()> {
    let server = Server::start(&["relay"], 2, &["--proxy-headers"])?;
    let nginx = Nginx::start(&server, &["--routing", "hash"])?;
    // A page served by nginx on its own (non-default) port: nginx must pass the Host with
    // its port (`$http_host`; `$host` drops it), or the page's own socket would be refused.
    let own = format!("http://{}", nginx.addr);
    let (status, answer, _ws) =
        handshake(nginx.addr, "/ws/relay/page", &[("origin", own.as_str())]).await?;
    assert_eq!(status, 101, "{answer}");
    let (status, answer, _) = handshake(
        nginx.addr,
        "/ws/relay/page",
        &[("origin", "https://elsewhere.example")],
    )
    .await?;
    assert_eq!(status, 403, "{answer}");
    Ok(())
}
