//! Sessions that outlive their host (docs/sessions.md, "a graceful move" and "a crash"): a
//! SIGTERM and a restart, a hand-back between two hosts on one PostgreSQL, `kill -9` in
//! journal mode (and without: a new session), and the official JavaScript client across a
//! restart and a crash. The consumer sees one connection throughout; the client gets what
//! it missed, and nothing twice.

#[path = "sessions/exchange.rs"]
mod exchange;
mod support;

use std::time::Duration;

use anyhow::Context;

use exchange::{Exchange, say_done};
use support::fault_proxy::FaultProxy;
use support::postgres::Postgres;
use support::session_client::*;
use support::*;

/// Messages each Node client sends the other.
const EXCHANGED: usize = 100;

/// SIGTERM while `ws` reads (and answers) its close frame; returns its close code and
/// the exited server.
async fn terminated(mut server: Server, mut ws: Ws) -> anyhow::Result<(u16, Server)> {
    let closing = tokio::spawn(async move { expect_close(&mut ws).await });
    let server = tokio::task::spawn_blocking(move || server.terminate().map(|_| server)).await??;
    let (code, _) = closing.await??;
    Ok((code, server))
}

#[tokio::test]
async fn a_session_resumes_on_the_restarted_host_after_a_sigterm() -> anyhow::Result<()> {
    resumes_across_two_restarts(Server::start(&["probe"], 1, &[])?).await
}

#[tokio::test]
async fn a_journaled_session_resumes_on_the_restarted_host_after_a_sigterm() -> anyhow::Result<()> {
    let config = "[plugin.probe]\ndurability = \"journal\"\n";
    resumes_across_two_restarts(Server::start_with_config(&["probe"], 1, config)?).await
}

/// A new session at `path` of `server` that asked for its connection id (its data
/// message 1) and had two messages echoed ("a" as 2, "b" as 3), all acknowledged;
/// returns its socket, its session id and its connection id.
async fn session_with_two_echoes(
    server: &Server,
    path: &str,
) -> anyhow::Result<(Ws, String, String)> {
    let mut ws = session_socket(server, path).await?;
    let (id, _) = hello(&mut ws).await?;
    send_data(&mut ws, 1, "id").await?;
    let connection = until_ack(&mut ws, 1).await?[0].1.clone();
    send_data(&mut ws, 2, "echo a").await?;
    send_data(&mut ws, 3, "echo b").await?;
    assert_eq!(
        until_ack(&mut ws, 3).await?,
        [(2, "a".to_owned()), (3, "b".to_owned())]
    );
    Ok((ws, id, connection))
}

/// Resumes at `path` of `server` the session `id` that [`session_with_two_echoes`]
/// opened, as a client that received only message 1: it must be resumed, get the two
/// echoes again with their numbers, have its resend of message 3 applied no second time,
/// and still be connection `connection`. Returns the socket (the host sent 4 messages,
/// the client 4).
async fn resumed_after_two_echoes(
    server: &Server,
    path: &str,
    id: &str,
    connection: &str,
) -> anyhow::Result<Ws> {
    let mut ws = session_socket(server, &format!("{path}?session={id}&last=1")).await?;
    assert_eq!(hello(&mut ws).await?, (id.to_owned(), true), "resumed");
    assert_eq!(next(&mut ws).await?, FromHost::Data(2, "a".to_owned()));
    assert_eq!(next(&mut ws).await?, FromHost::Data(3, "b".to_owned()));
    send_data(&mut ws, 3, "echo b").await?;
    send_data(&mut ws, 4, "id").await?;
    assert_eq!(until_ack(&mut ws, 4).await?, [(4, connection.to_owned())]);
    Ok(ws)
}

/// A session on `server`'s probe, carried across two SIGTERMs and restarts.
async fn resumes_across_two_restarts(server: Server) -> anyhow::Result<()> {
    let (ws, id, connection) = session_with_two_echoes(&server, "/ws/probe/moved").await?;
    let (code, server) = terminated(server, ws).await?;
    // The socket was closed with 1012 ("reconnect"), and nothing the consumer sent it was
    // lost: the session travelled with the document's last snapshot.
    assert_eq!(code, 1012);
    let server = server.restart()?;
    let mut ws = resumed_after_two_echoes(&server, "/ws/probe/moved", &id, &connection).await?;
    // The consumer here saw no new connection: the session is the connection it carried.
    send_data(&mut ws, 5, "connects").await?;
    send_data(&mut ws, 6, "count").await?;
    assert_eq!(
        until_ack(&mut ws, 6).await?,
        [(5, "0".to_owned()), (6, "1".to_owned())]
    );

    // Twice: the host that resumed it carries it on in turn.
    let (_, server) = terminated(server, ws).await?;
    let server = server.restart()?;
    let mut ws = session_socket(&server, &format!("/ws/probe/moved?session={id}&last=6")).await?;
    assert_eq!(hello(&mut ws).await?, (id, true), "resumed again");
    send_data(&mut ws, 7, "id").await?;
    assert_eq!(until_ack(&mut ws, 7).await?, [(7, connection)]);
    Ok(())
}

#[tokio::test]
async fn a_carried_session_not_resumed_ends_and_the_consumer_hears_it() -> anyhow::Result<()> {
    let mut server = Server::start_with_config(&["probe"], 1, "session_grace_ms = 3000\n")?;
    let mut ws = session_socket(&server, "/ws/probe/abandoned").await?;
    hello(&mut ws).await?;
    send_data(&mut ws, 1, "id").await?;
    let connection = until_ack(&mut ws, 1).await?[0].1.clone();
    // Cut first: a parked session travels too.
    cut(ws);
    server.terminate()?;
    let server = server.restart()?;
    // Opening the document parks the session it carried; no client comes back for it.
    let mut asker = server.connect(0, "/ws/probe/abandoned").await?;
    send_text(&mut asker, "count").await?;
    assert_eq!(
        recv_text(&mut asker).await?,
        "2",
        "the carried connection is there"
    );
    // It ends once the grace has run out, and the consumer hears of it with 1006.
    let departed = format!("{connection}:1006");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        send_text(&mut asker, "departed").await?;
        if recv_text(&mut asker).await? == departed {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "never departed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn two_js_clients_lose_and_repeat_nothing_across_a_restart() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let server = exchange_across(server, "restarted", |s| s.terminate().map(drop)).await?;
    // The restarted host's consumer saw no connection but `say_done`'s and this
    // question's: both sessions came with the document and resumed.
    assert_eq!(ask(&server, "restarted", "connects").await?, "2");
    Ok(())
}

/// Two `clients/js` rooms exchange numbered messages in `document` through the fault
/// proxy while `stop` ends `server` (SIGTERM, `kill -9`), which then restarts on new
/// ports: every message arrives once, in order, and no session is lost. Returns the
/// restarted server.
async fn exchange_across(
    mut server: Server,
    document: &str,
    stop: impl FnOnce(&mut Server) -> anyhow::Result<()>,
) -> anyhow::Result<Server> {
    let proxy = FaultProxy::start(server.addr(0))?;
    let url = format!("ws://{}/ws/probe/{document}", proxy.addr());
    let mut exchange = Exchange::start(&url, EXCHANGED, 1)?;
    exchange.until("some traffic", |s| s.progress >= 60).await?;
    stop(&mut server)?;
    let server = server.restart()?;
    proxy.retarget(server.addr(0));
    exchange
        .until("traffic after the restart", |s| s.progress >= 120)
        .await?;
    cut_mid_stream(&proxy)?;
    say_done(&server.url(0, &format!("/ws/probe/{document}"))).await?;
    exchange.finish(EXCHANGED).await?;
    Ok(server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_to_the_host_that_asks_for_its_document() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let host = |ip: &str| -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind((ip, 0))?.local_addr()?.port();
        Server::start_host(&["probe"], ip, &[port], &["--store", &pg.url])
    };
    let (a, b) = (host("127.0.0.1")?, host("127.0.0.2")?);
    // The session lives on B.
    let mut ws = session_socket(&b, "/ws/probe/handed").await?;
    let (id, _) = hello(&mut ws).await?;
    send_data(&mut ws, 1, "id").await?;
    let connection = until_ack(&mut ws, 1).await?[0].1.clone();
    send_data(&mut ws, 2, "echo missed").await?;
    assert_eq!(until_ack(&mut ws, 2).await?, [(2, "missed".to_owned())]);
    // A connection for the document reaches A: A asks B for it, and B hands it back.
    let closing = tokio::spawn(async move { expect_close(&mut ws).await });
    let mut on_a = a.connect(0, "/ws/probe/handed").await?;
    let (code, reason) = closing.await??;
    assert_eq!(
        (code, reason.as_str()),
        (1012, "document moved to another host")
    );
    // The client resumes on A, with what it did not acknowledge.
    let mut ws = session_socket(&a, &format!("/ws/probe/handed?session={id}&last=1")).await?;
    assert_eq!(
        hello(&mut ws).await?,
        (id, true),
        "resumed on the other host"
    );
    assert_eq!(next(&mut ws).await?, FromHost::Data(2, "missed".to_owned()));
    send_data(&mut ws, 2, "echo missed").await?;
    send_data(&mut ws, 3, "id").await?;
    assert_eq!(until_ack(&mut ws, 3).await?, [(3, connection)]);
    // A's consumer met one new connection (the one that asked), and sees two.
    send_text(&mut on_a, "connects").await?;
    assert_eq!(recv_text(&mut on_a).await?, "1");
    send_text(&mut on_a, "count").await?;
    assert_eq!(recv_text(&mut on_a).await?, "2");
    Ok(())
}

/// The probe in journal mode.
const JOURNALED: &str = "[plugin.probe]\ndurability = \"journal\"\n";

#[tokio::test]
async fn a_journaled_session_resumes_after_kill_9() -> anyhow::Result<()> {
    let config = format!("checkpoint_secs = 1\n{JOURNALED}");
    let mut server = Server::start_with_config(&["probe"], 1, &config)?;
    // The document opens, and its first checkpoint is written, before the session joins.
    let _plain = server.connect(0, "/ws/probe/crashed").await?;
    server.wait_for_log("saved with")?;
    // Held open until the kill.
    let (_ws, id, connection) = session_with_two_echoes(&server, "/ws/probe/crashed").await?;
    // Killed before a checkpoint: the journal alone says it was a session's.
    server.kill9()?;
    let server = server.restart()?;
    // What it missed, numbered as it was: the replay sent it again.
    let mut ws = resumed_after_two_echoes(&server, "/ws/probe/crashed", &id, &connection).await?;
    // Once more after a checkpoint: it carries the session, and the journal goes on.
    let mut server = server;
    server.wait_for_log("saved with")?;
    send_data(&mut ws, 5, "echo c").await?;
    assert_eq!(until_ack(&mut ws, 5).await?, [(5, "c".to_owned())]);
    server.kill9()?;
    let server = server.restart()?;
    let mut ws = session_socket(&server, &format!("/ws/probe/crashed?session={id}&last=4")).await?;
    assert_eq!(hello(&mut ws).await?, (id, true), "resumed again");
    assert_eq!(next(&mut ws).await?, FromHost::Data(5, "c".to_owned()));
    send_data(&mut ws, 6, "id").await?;
    assert_eq!(until_ack(&mut ws, 6).await?, [(6, connection)]);
    Ok(())
}

#[tokio::test]
async fn without_a_journal_a_session_cut_by_kill_9_starts_anew() -> anyhow::Result<()> {
    let mut server = Server::start(&["probe"], 1, &[])?;
    let mut ws = session_socket(&server, "/ws/probe/lost").await?;
    let (id, _) = hello(&mut ws).await?;
    send_data(&mut ws, 1, "id").await?;
    until_ack(&mut ws, 1).await?;
    server.kill9()?;
    let server = server.restart()?;
    // The explicit "cannot resume": a new session, and the client resyncs.
    let mut ws = session_socket(&server, &format!("/ws/probe/lost?session={id}&last=1")).await?;
    let (new_id, resumed) = hello(&mut ws).await?;
    assert!(!resumed);
    assert_ne!(new_id, id);
    Ok(())
}

#[tokio::test]
async fn two_js_clients_lose_and_repeat_nothing_across_kill_9_in_journal_mode() -> anyhow::Result<()>
{
    let server = Server::start_with_config(&["probe"], 1, JOURNALED)?;
    exchange_across(server, "killed", Server::kill9).await?;
    Ok(())
}

#[tokio::test]
async fn without_a_journal_clients_js_emits_reset_after_kill_9() -> anyhow::Result<()> {
    use std::io::BufRead;
    let mut server = Server::start(&["probe"], 1, &[])?;
    let proxy = FaultProxy::start(server.addr(0))?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut node = std::process::Command::new("node")
        .arg(root.join("tests/sessions/reset.mjs"))
        .arg(format!("ws://{}/ws/probe/reset", proxy.addr()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run `node`")?;
    let stdout = node.stdout.take().context("no stdout")?;
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut next_line = async || -> anyhow::Result<String> {
        tokio::time::timeout(PATIENCE, lines.recv())
            .await
            .context("no line from reset.mjs in time")?
            .context("reset.mjs ended")
    };
    assert_eq!(next_line().await?, "acked");
    server.kill9()?;
    let server = server.restart()?;
    proxy.retarget(server.addr(0));
    assert_eq!(next_line().await?, "open resumed=false");
    assert_eq!(next_line().await?, "reset");
    assert_eq!(next_line().await?, "sent");
    let _ = node.wait();
    Ok(())
}
