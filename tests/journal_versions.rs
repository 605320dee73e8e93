//! Journal mode and new plugin builds: every input is replayed by the plugin version that
//! made it, whether the new build came by hot reload or by a restart, and `wasmroom
//! replay` does the same. The `tag` build of chat stores every line as `[v2] TEXT`: a
//! line replayed by the wrong version shows it.

mod support;

use support::*;

/// Chat in journal mode, checkpoints an hour apart: only the journal keeps the lines.
fn journaled_chat() -> anyhow::Result<Server> {
    Server::start_with_config(
        &["chat"],
        1,
        "checkpoint_secs = 3600\n[plugin.chat]\ndurability = \"journal\"\n",
    )
}

fn tagged_chat() -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(
        built_plugins_dir().join("variants").join("chat-tag.wasm"),
    )?)
}

/// Says `lines` on `doc` and waits until another client saw each (so each is durable).
async fn say(server: &Server, doc: &str, lines: &[&str]) -> anyhow::Result<()> {
    let mut writer = server.connect(0, &format!("/ws/chat/{doc}?name=w")).await?;
    assert_eq!(recv_json(&mut writer).await?["type"], "history");
    let mut reader = server.connect(0, &format!("/ws/chat/{doc}?name=r")).await?;
    assert_eq!(recv_json(&mut reader).await?["type"], "history");
    for line in lines {
        send_text(&mut writer, line).await?;
        loop {
            let m = recv_json(&mut reader).await?;
            if m["type"] == "message" {
                break;
            }
        }
    }
    Ok(())
}

/// The document's lines, as its export (`GET /docs/chat/{doc}`) holds them.
async fn lines(server: &Server, doc: &str) -> anyhow::Result<Vec<String>> {
    let (status, body) = http(server.addr(0), "GET", &format!("/docs/chat/{doc}"), b"").await?;
    anyhow::ensure!(status == 200, "GET: {status} {body}");
    support::streaming::chat_texts(&body)
}

async fn version(server: &Server) -> anyhow::Result<String> {
    Ok(plugin_entry(server, "chat").await?["current"]["version"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test]
async fn a_restart_with_a_new_build_replays_the_journal_on_the_version_that_made_it()
-> anyhow::Result<()> {
    let mut server = journaled_chat()?;
    let v1 = version(&server).await?;
    say(&server, "doc", &["one", "two"]).await?;
    server.kill9()?;
    // A deploy while the host was down.
    deploy(&server, "chat", &tagged_chat()?)?;
    let server = server.restart()?;
    let v2 = version(&server).await?;
    assert_ne!(v1, v2);
    assert!(
        server
            .data
            .path()
            .join("versions")
            .join(&v1)
            .join("chat.wasm")
            .is_file(),
        "the version store keeps the old build"
    );
    assert_eq!(
        lines(&server, "doc").await?,
        ["one", "two"],
        "replayed by v1"
    );
    // The document moved on to the new build, which makes the next lines.
    say(&server, "doc", &["three"]).await?;
    assert_eq!(lines(&server, "doc").await?, ["one", "two", "[v2] three"]);
    assert_eq!(
        plugin_entry(&server, "chat").await?["current"]["live_documents"],
        1
    );
    Ok(())
}

#[tokio::test]
async fn a_crash_after_a_hot_reload_replays_each_side_on_its_version() -> anyhow::Result<()> {
    let mut server = journaled_chat()?;
    let v1 = version(&server).await?;
    say(&server, "doc", &["one"]).await?;
    deploy(&server, "chat", &tagged_chat()?)?;
    wait_for_new_version(&server, "chat", &v1.clone().into(), 1).await?;
    say(&server, "doc", &["two"]).await?;
    assert_eq!(lines(&server, "doc").await?, ["one", "[v2] two"]);
    server.kill9()?;
    // `wasmroom replay` reads the same journal, on the same versions.
    let config = tempfile::NamedTempFile::new()?;
    std::fs::write(config.path(), "[plugin.chat]\ndurability = \"journal\"\n")?;
    let replay = |until: Option<&str>| -> anyhow::Result<(Vec<String>, String)> {
        let mut args = vec!["chat", "doc"];
        args.extend(until.map(|u| ["--until", u]).into_iter().flatten());
        let out = support::replay::replay(&server, config.path(), &args)?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        anyhow::ensure!(out.status.success(), "replay failed: {stderr}");
        let body = String::from_utf8(out.stdout)?;
        Ok((support::streaming::chat_texts(&body)?, stderr))
    };
    let (replayed, summary) = replay(None)?;
    assert_eq!(replayed, ["one", "[v2] two"], "{summary}");
    // Input 1 opened it, 2 and 3 the connections, 4 the first line: still on v1.
    let (early, summary) = replay(Some("4"))?;
    assert_eq!(early, ["one"]);
    assert!(
        summary.contains(&format!("plugin version {v1}")),
        "{summary}"
    );
    let server = server.restart()?;
    assert_eq!(lines(&server, "doc").await?, ["one", "[v2] two"]);
    Ok(())
}

#[tokio::test]
async fn a_journal_whose_version_is_gone_refuses_to_open() -> anyhow::Result<()> {
    let mut server = journaled_chat()?;
    let v1 = version(&server).await?;
    say(&server, "doc", &["one"]).await?;
    server.kill9()?;
    deploy(&server, "chat", &tagged_chat()?)?;
    std::fs::remove_dir_all(server.data.path().join("versions").join(&v1))?;
    let mut server = server.restart()?;
    // Replaying "one" on the new build would show a line nobody sent: refused instead.
    let (status, body) = http(server.addr(0), "GET", "/docs/chat/doc", b"").await?;
    assert_ne!(status, 200, "{body}");
    server.wait_for_log(&format!(
        "version {v1} is neither loaded nor in the version store"
    ))?;
    Ok(())
}

/// On a shared store: host A runs chat v1 in journal mode and dies; host B, which only
/// ever had the new build, takes the document over and replays A's journal rows on v1,
/// fetched from the store's half of the version store.
#[tokio::test]
async fn a_host_that_never_loaded_a_version_replays_it_from_the_shared_store() -> anyhow::Result<()>
{
    let pg = support::postgres::Postgres::start()?;
    let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(
        config.path(),
        "checkpoint_secs = 3600\n[store]\nlease_ttl_ms = 1000\n[plugin.chat]\ndurability = \"journal\"\n",
    )?;
    let args = |config: &std::path::Path| {
        vec![
            "--config".to_owned(),
            config.to_str().expect("UTF-8").to_owned(),
            "--store".to_owned(),
            pg.url.clone(),
        ]
    };
    let args = args(config.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Server::start(&["chat"], 1, &args)?;
    let v1 = version(&a).await?;
    say(&a, "doc", &["one", "two"]).await?;
    a.kill9()?;

    let dir = Server::plugins_dir(&[])?;
    std::fs::write(dir.path().join("chat.wasm"), tagged_chat()?)?;
    let b = Server::start_in(dir, 1, &args)?;
    assert_ne!(version(&b).await?, v1);
    // B takes the document once A's lease has run out.
    let deadline = std::time::Instant::now() + PATIENCE;
    let body = loop {
        let (status, body) = http(b.addr(0), "GET", "/docs/chat/doc", b"").await?;
        if status == 200 {
            break body;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "never taken over: {status} {body}; {:?}",
            b.log_lines()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        support::streaming::chat_texts(&body)?,
        ["one", "two"],
        "replayed on v1"
    );
    assert!(
        b.data
            .path()
            .join("versions")
            .join(&v1)
            .join("chat.wasm")
            .is_file(),
        "fetched into B's own store"
    );
    say(&b, "doc", &["three"]).await?;
    assert_eq!(lines(&b, "doc").await?, ["one", "two", "[v2] three"]);
    Ok(())
}
