//! Several hosts on one PostgreSQL: three real wasmroom processes on 127.0.0.1-3 behind a
//! real nginx (`nginx-config --store-shared`), a real PostgreSQL started by the test.
//! Documents move when a host dies, freezes, restarts or comes back; at no moment do two
//! hosts accept messages for one document, and nothing saved is lost.

mod support;

use std::collections::BTreeMap;

use std::time::{Duration, Instant};

use anyhow::Context;
use support::cluster::*;
use support::postgres::Postgres;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_hosts_documents_come_back_on_the_others_with_their_state() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, &["chat"])?;
    let mut clients = Vec::new();
    for i in 0..30 {
        let mut ws = connect_retrying(&cluster.nginx.url(&format!("/ws/chat/d{i}?name=w"))).await?;
        recv_json(&mut ws).await?;
        send_text(&mut ws, &format!("line {i}")).await?;
        clients.push(ws);
    }
    for i in 0..30 {
        cluster.wait_saved(&format!("d{i}"), &format!("line {i}"))?;
    }
    // Every document has exactly one live owner, and each host serves only its own.
    let owners = cluster.owners()?;
    assert_eq!(owners.len(), 30);
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for (doc, (owner, _)) in &owners {
        let owner = owner
            .clone()
            .with_context(|| format!("{doc} has no owner"))?;
        *per_host.entry(owner).or_default() += 1;
    }
    let mut live = 0;
    for h in 0..3 {
        for lane in 0..2 {
            let (_, body) = http(cluster.host(h).addr(lane), "GET", "/stats", b"").await?;
            let stats: serde_json::Value = serde_json::from_str(&body)?;
            live += stats["documents"].as_u64().unwrap_or(0);
        }
    }
    assert_eq!(live, 30, "one instance per document: {per_host:?}");
    eprintln!("documents per host: {per_host:?}");
    // The host with the most documents dies without a word.
    let (victim_name, _) = per_host.iter().max_by_key(|(_, n)| **n).unwrap();
    let victim = (0..3)
        .find(|h| &format!("127.0.0.{}", h + 1) == victim_name)
        .unwrap();
    let killed_at = Instant::now();
    cluster.hosts[victim].as_mut().unwrap().kill9()?;
    cluster.hosts[victim] = None;
    // Whatever host nginx now sends them to opens them from the last snapshot.
    for i in 0..30 {
        let history = cluster.history(&format!("d{i}")).await?;
        assert!(history.contains(&format!("line {i}")), "d{i}: {history}");
    }
    eprintln!(
        "every document back {:?} after the kill (lease TTL 2 s)",
        killed_at.elapsed()
    );
    let owners = cluster.owners()?;
    for (doc, (owner, _)) in &owners {
        assert_ne!(owner.as_deref(), Some(victim_name.as_str()), "{doc}");
        assert!(owner.is_some(), "{doc} is served but has no owner");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_host_never_applies_a_message_after_its_lease() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(2, &["chat"])?;
    let (a, b) = (cluster.host(0), cluster.host(1));
    let mut on_a = a.connect(0, "/ws/chat/z?name=a").await?;
    recv_json(&mut on_a).await?;
    send_text(&mut on_a, "before the freeze").await?;
    cluster.wait_saved("z", "before the freeze")?;
    let epoch_a = cluster.owners()?["z"].1;
    // Host A stops dead (a long GC pause, a frozen VM): its sockets stay open.
    a.signal("STOP")?;
    // After A's lease expires, B takes the document over from the store.
    let mut on_b = connect_retrying(&b.url(0, "/ws/chat/z?name=b")).await?;
    let history = recv_json(&mut on_b).await?;
    assert!(
        history.to_string().contains("before the freeze"),
        "{history}"
    );
    send_text(&mut on_b, "after the takeover").await?;
    cluster.wait_saved("z", "after the takeover")?;
    let (owner, epoch_b) = cluster.owners()?["z"].clone();
    assert_eq!(owner.as_deref(), Some("127.0.0.2"));
    assert!(epoch_b > epoch_a, "a takeover bumps the epoch");
    // A wakes up and its old client speaks: A must not apply it, and tells it to go.
    a.signal("CONT")?;
    send_text(&mut on_a, "from the zombie").await?;
    assert_eq!(expect_close(&mut on_a).await?.0, 1012);
    // B's document never saw it, and A wrote nothing over B's state.
    let (_, history) = http(b.addr(0), "GET", "/docs/chat/z", b"").await?;
    assert!(history.contains("after the takeover"), "{history}");
    assert!(!history.contains("from the zombie"), "{history}");
    tokio::time::sleep(Duration::from_millis(1500)).await; // two of A's checkpoints
    assert!(!cluster.saved("z", "from the zombie")?);
    assert!(cluster.saved("z", "after the takeover")?);
    let lost = metric(a.addr(0), "wasmroom_leases_lost_total", &[]).await?;
    assert!(lost >= 1.0, "A counted no lost lease");
    // A serves again under a new registration.
    let _again = connect_retrying(&a.url(0, "/ws/chat/elsewhere?name=a")).await?;
    drop(on_b);
    Ok(())
}

/// The review's scenario: the holder's heartbeat row is locked (its heartbeat waits on the
/// lock) and the holder does not hear the other host's request to hand the document back
/// (its notifications are held up, as when only some of its connections get through).
/// The other host takes the document once the holder's heartbeat is older than the TTL;
/// from then on the old holder never applies a message to it, whatever its heartbeat
/// answers once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_heartbeat_waits_on_a_lock_never_applies_after_a_takeover()
-> anyhow::Result<()> {
    use support::fault_proxy::{Direction, FaultProxy};
    let _one = ONE_AT_A_TIME.lock().await;
    let pg = Postgres::start()?;
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile()?;
    // The asker waits long enough for the holder's lease to run out in the store.
    let waiting = HOST_CONFIG.replace("handoff_timeout_ms = 3000", "handoff_timeout_ms = 10000");
    std::io::Write::write_all(&mut config, waiting.as_bytes())?;
    let config = config.path().to_str().context("temp path")?.to_owned();
    let proxy = FaultProxy::start_on("127.0.0.1".parse()?, pg.addr())?;
    let through = pg.url_through(proxy.addr());
    let a = Server::start_host(
        &["chat"],
        "127.0.0.1",
        &[free_port("127.0.0.1")?],
        &["--store", &through, "--config", &config],
    )?;
    let b = Server::start_host(
        &["chat"],
        "127.0.0.2",
        &[free_port("127.0.0.2")?],
        &["--store", &pg.url, "--config", &config],
    )?;
    let mut c1 = a.connect(0, "/ws/chat/lock?name=c1").await?;
    let mut c2 = a.connect(0, "/ws/chat/lock?name=c2").await?;
    recv_json(&mut c1).await?;
    recv_json(&mut c2).await?;
    send_text(&mut c1, "before").await?;
    loop {
        let m = recv_json(&mut c2).await?;
        if m["type"] == "message" {
            assert_eq!(m["text"], "before");
            break;
        }
    }
    // A hears no request to hand the document back.
    let listen = {
        let proxy_finder = std::sync::Arc::new(proxy);
        let p = proxy_finder.clone();
        let found = tokio::task::spawn_blocking(move || {
            p.wait_for(|c| c.open && c.saw_upstream(b"LISTEN "), PATIENCE)
        })
        .await??;
        proxy_finder.stall_one(found.id, Direction::Downstream);
        proxy_finder
    };
    // A test session locks A's heartbeat row.
    let (locker, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let row = locker
        .query_one(
            "SELECT id, heartbeat_at::text FROM wasmroom.hosts WHERE name = '127.0.0.1'",
            &[],
        )
        .await?;
    let (id, beat): (i64, String) = (row.get(0), row.get(1));
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT id FROM wasmroom.hosts WHERE id = {id} FOR UPDATE"
        ))
        .await?;
    // B gets a connection for the document: it asks A (unheard), then takes it once A's
    // heartbeat in the store is older than the TTL.
    let mut c3 = b.connect(0, "/ws/chat/lock?name=c3").await?;
    let history = recv_json(&mut c3).await?;
    assert_eq!(history["type"], "history");
    locker.batch_execute("COMMIT").await?;
    // The heartbeat that waited on the lock has answered (or given up) once A's row is
    // renewed, or A registered anew.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = pg.sql(&format!(
            "SELECT coalesce((SELECT heartbeat_at::text FROM wasmroom.hosts WHERE id = {id}), 'gone'), \
             (SELECT count(*) FROM wasmroom.hosts WHERE name = '127.0.0.1')"
        ))?;
        if !now.starts_with(&beat) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "A's heartbeat never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A's clients may speak now: nothing they send reaches the others or the document.
    let _ = send_text(&mut c1, "after the takeover").await;
    listen.resume(Direction::Both);
    let deadline = Instant::now() + PATIENCE;
    loop {
        anyhow::ensure!(Instant::now() < deadline, "A kept its sockets open");
        match tokio::time::timeout(PATIENCE, futures_util::StreamExt::next(&mut c2)).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) => {
                assert!(
                    !text.contains("after the takeover"),
                    "A applied a message after B took the document: {text}"
                );
            }
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame)))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                assert_eq!(code, 1012);
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) => break,
            Err(_) => anyhow::bail!("c2 heard nothing"),
        }
    }
    send_text(&mut c3, "on b").await?;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, body) = http(b.addr(0), "GET", "/docs/chat/lock", b"").await?;
        assert!(!body.contains("after the takeover"), "{body}");
        if body.contains("on b") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "B never applied its own line: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let epochs = pg.sql("SELECT epoch FROM wasmroom.documents WHERE doc = 'lock'")?;
    assert_eq!(epochs, "2", "A never took it again");
    drop((a, b));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_moves_every_document_and_loses_no_line() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3, &["chat"])?;
    let docs: Vec<String> = (0..9).map(|i| format!("r{i}")).collect();
    let mut sent = 0usize;
    for h in 0..3 {
        // Every document gets a line, then host h restarts (SIGTERM: saves, releases).
        for doc in &docs {
            let line = format!("{doc} round {h}");
            let deadline = Instant::now() + PATIENCE;
            // Seen by a second client: the line was applied before the restart. Just after
            // a host came back, nginx's two workers may still disagree about it, so the
            // GET can reach the returning host, which asks for the document back while the
            // line is in flight to the holder: the holder saves, hands the document over
            // and closes the socket with 1012, and the line was never applied. A client
            // sends it again after 1012, and so does this one.
            loop {
                let mut ws =
                    connect_retrying(&cluster.nginx.url(&format!("/ws/chat/{doc}?name=w"))).await?;
                recv_json(&mut ws).await?;
                send_text(&mut ws, &line).await?;
                let body = cluster.history(doc).await?;
                if body.contains(&line) {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{doc}: {line} never applied: {body}"
                );
            }
            sent += 1;
        }
        let mut host = cluster.hosts[h].take().unwrap();
        let stopped = Instant::now();
        let status =
            tokio::task::spawn_blocking(move || host.terminate().map(|s| (s, host))).await??;
        assert!(status.0.success(), "{:?}", status.0);
        let mut moved = Duration::ZERO;
        for doc in &docs {
            let body = cluster.history(doc).await?;
            moved = moved.max(stopped.elapsed());
            assert!(body.contains(&format!("{doc} round {h}")), "{doc}: {body}");
        }
        eprintln!("host {h} stopped: every document served again within {moved:?}");
        cluster.hosts[h] = Some(status.1.restart()?);
    }
    for doc in &docs {
        let body = cluster.history(doc).await?;
        for h in 0..3 {
            assert!(body.contains(&format!("{doc} round {h}")), "{doc}: {body}");
        }
    }
    eprintln!("{sent} lines, none lost");
    Ok(())
}

/// A host asking for a document gets it with every line its holder's clients sent before
/// they saw the holder's close: the holder drains each socket (what arrives before the
/// client's close frame still applies), saves, and only then lets the lease go. Twenty
/// documents, each handed back while a client streams ~500 lines a second into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_host_gets_its_document_handed_back_with_every_line() -> anyhow::Result<()> {
    use support::streaming::{Stream, all_kept};
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(2, &["chat"])?;
    let runs = 20;
    let mut slowest = Duration::ZERO;
    for run in 0..runs {
        let doc = format!("h{run}");
        // B holds the document (say A was down); its client streams into it on B.
        let mut on_b = cluster
            .host(1)
            .connect(0, &format!("/ws/chat/{doc}?name=b"))
            .await?;
        recv_json(&mut on_b).await?;
        let epoch = cluster.owners()?[&doc].1;
        let stream = Stream::start(on_b, "line ", Duration::from_millis(2));
        stream.sent_at_least(10 + run * 7).await?;
        // A connection reaches A (nginx sends it there again): A asks B for it.
        let asked = Instant::now();
        let mut on_a = cluster
            .host(0)
            .connect(0, &format!("/ws/chat/{doc}?name=a"))
            .await?;
        let history = recv_json(&mut on_a).await?;
        slowest = slowest.max(asked.elapsed());
        let streamed = stream.finished().await?;
        assert_eq!(
            streamed.close,
            Some((1012, "document moved to another host".to_owned())),
            "{doc}"
        );
        let texts: Vec<String> = history["messages"]
            .as_array()
            .context("no messages")?
            .iter()
            .filter_map(|m| m["text"].as_str().map(str::to_owned))
            .collect();
        all_kept(&texts, "line ", streamed.sent).with_context(|| doc.clone())?;
        // The document lives on A only, one epoch on (B's release freed only its own).
        let (owner, now) = cluster.owners()?[&doc].clone();
        assert_eq!(owner.as_deref(), Some("127.0.0.1"), "{doc}");
        assert_eq!(now, epoch + 1, "{doc}");
    }
    eprintln!("{runs} documents handed back, the slowest in {slowest:?}");
    let mut b_docs = 0;
    for lane in 0..2 {
        let (_, stats) = http(cluster.host(1).addr(lane), "GET", "/stats", b"").await?;
        let stats: serde_json::Value = serde_json::from_str(&stats)?;
        b_docs += stats["documents"].as_u64().unwrap_or(0);
    }
    assert_eq!(b_docs, 0);
    // A asked again and again while B drained: B answered each document once.
    let handed = cluster
        .host(1)
        .log_lines()
        .iter()
        .filter(|l| l.contains("handed back to the host that asked for it"))
        .count();
    assert_eq!(handed, runs);
    let _ = cluster.hosts[1].take();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_stop_serving_while_the_store_is_down_and_come_back() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(2, &["chat"])?;
    let mut ws = connect_retrying(&cluster.nginx.url("/ws/chat/p?name=w")).await?;
    recv_json(&mut ws).await?;
    send_text(&mut ws, "saved before the outage").await?;
    cluster.wait_saved("p", "saved before the outage")?;
    cluster.pg.stop_server()?;
    // Longer than the lease: every host fences itself.
    assert_eq!(expect_close(&mut ws).await?.0, 1012);
    for h in 0..2 {
        let deadline = Instant::now() + PATIENCE;
        while http(cluster.host(h).addr(0), "GET", "/readyz", b"")
            .await?
            .0
            != 503
        {
            anyhow::ensure!(Instant::now() < deadline, "host {h} stayed ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (status, body) = http(cluster.host(0).addr(0), "GET", "/docs/chat/p", b"").await?;
    assert_eq!(status, 503, "{body}");
    cluster.pg.start_server()?;
    for h in 0..2 {
        let deadline = Instant::now() + PATIENCE;
        while http(cluster.host(h).addr(0), "GET", "/readyz", b"")
            .await?
            .0
            != 200
        {
            anyhow::ensure!(Instant::now() < deadline, "host {h} never ready again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let history = cluster.history("p").await?;
    assert!(history.contains("saved before the outage"), "{history}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_version_reaches_every_host_and_hosts_started_later() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(2, &["relay"])?;
    let mut pairs = Vec::new();
    for h in 0..2 {
        let a = cluster
            .host(h)
            .connect(0, &format!("/ws/relay/dep{h}"))
            .await?;
        let b = cluster
            .host(h)
            .connect(0, &format!("/ws/relay/dep{h}"))
            .await?;
        pairs.push((a, b));
    }
    let old = plugin_entry(cluster.host(0), "relay").await?["current"]["version"].clone();
    // The tagged relay, deployed under the plugin's name.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("relay.wasm");
    std::fs::copy(built_plugins_dir().join("variants/relay-tag.wasm"), &file)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmroom"))
        .args(["deploy", file.to_str().unwrap(), "--store", &cluster.pg.url])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for h in 0..2 {
        wait_for_new_version(cluster.host(h), "relay", &old, 1).await?;
    }
    // The live documents moved with their sockets: the tagged relay answers.
    for (a, b) in pairs.iter_mut() {
        send_text(a, "hello").await?;
        assert_eq!(recv_text(b).await?, "[v2] hello");
    }
    let new = plugin_entry(cluster.host(0), "relay").await?["current"]["version"].clone();
    // A host started afterwards serves the deployed version.
    let ip = "127.0.0.3";
    let later = cluster.launch(&["relay"], ip, &[free_port(ip)?])?;
    let entry = plugin_entry(&later, "relay").await?;
    assert_eq!(entry["current"]["version"], new);
    drop(later);
    let _ = cluster.hosts.pop();
    Ok(())
}

/// Journal mode on the shared store: `kill -9` of a host loses nothing any client saw.
/// In each of four rounds, writers stream numbered lines into five documents on host A
/// while a reader per document watches; A is killed mid-stream (each document at another
/// point of its stream), host B takes every document over, replays its journal rows, and
/// holds every line a reader saw, in order, once each: 20 documents in all. Then A comes
/// back for the next round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journaled_document_taken_over_after_kill_9_keeps_every_line_a_client_saw()
-> anyhow::Result<()> {
    use support::streaming::Stream;
    let _one = ONE_AT_A_TIME.lock().await;
    let config = "\
checkpoint_secs = 3600
idle_grace_secs = 600
http_idle_grace_ms = 600000
[store]
lease_ttl_ms = 2000
handoff_timeout_ms = 3000
[plugin.chat]
durability = \"journal\"
[plugin.chat.settings]
history = \"100000\"
";
    let mut cluster = Cluster::start_configured(2, &["chat"], config)?;
    let a_lanes = [cluster.host(0).addr(0), cluster.host(0).addr(1)];
    let b = cluster.host(1).addr(0);
    for round in 0..4 {
        let mut runs = Vec::new();
        for i in 0..5 {
            let doc = format!("t{round}-{i}");
            let a = cluster.host(0);
            let mut writer = a
                .connect(i % 2, &format!("/ws/chat/{doc}?name=writer"))
                .await?;
            assert_eq!(recv_json(&mut writer).await?["type"], "history");
            let mut reader = a
                .connect(i % 2, &format!("/ws/chat/{doc}?name=reader"))
                .await?;
            assert_eq!(recv_json(&mut reader).await?["type"], "history");
            let stream = Stream::start(writer, "line ", Duration::from_millis(2 + i as u64));
            runs.push((doc, reader, stream, Vec::<String>::new()));
        }
        let wanted = 20 + round * 17;
        while runs[0].3.len() < wanted {
            let m = recv_json(&mut runs[0].1).await?;
            if m["type"] == "message" {
                runs[0]
                    .3
                    .push(m["text"].as_str().unwrap_or_default().to_owned());
            }
        }
        cluster.hosts[0].as_mut().expect("A runs").kill9()?;
        cluster.hosts[0] = None;
        for (doc, mut reader, stream, mut seen) in runs {
            // What reached a reader before the process died was seen too.
            while let Ok(m) = recv_json(&mut reader).await {
                if m["type"] == "message" {
                    seen.push(m["text"].as_str().unwrap_or_default().to_owned());
                }
            }
            let streamed = stream.finished().await?;
            let deadline = Instant::now() + PATIENCE;
            let body = loop {
                match http(b, "GET", &format!("/docs/chat/{doc}"), b"").await {
                    Ok((200, body)) => break body,
                    other => {
                        anyhow::ensure!(
                            Instant::now() < deadline,
                            "{doc}: not taken over ({other:?})"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            let kept = support::streaming::chat_texts(&body)?;
            let expected: Vec<String> = (0..kept.len()).map(|n| format!("line {n}")).collect();
            assert_eq!(kept, expected, "{doc}: lines kept in order, once each");
            assert!(
                kept.len() >= seen.len() && !seen.is_empty(),
                "{doc}: the reader saw {} lines, {} kept (the writer sent {})",
                seen.len(),
                kept.len(),
                streamed.sent
            );
        }
        let ip = a_lanes[0].ip().to_string();
        let ports = [a_lanes[0].port(), a_lanes[1].port()];
        cluster.hosts[0] = Some(cluster.launch(&["chat"], &ip, &ports)?);
    }
    // Each document's two joins and its lines at least (a read's lines are one input for a
    // consumer that takes batches).
    let replayed = metric(b, "wasmroom_journal_replayed_inputs_total", &[]).await?;
    assert!(replayed >= 20.0 * 3.0, "B replayed {replayed} inputs");
    Ok(())
}
