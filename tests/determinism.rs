//! What a consumer observes depends on the document's inputs, not on the host or the
//! moment (issue 30, stage 2): one clock per call that never goes back, random from the
//! document's seed, canonical NaNs, connection ids of the document's own.

mod support;

use support::*;
use wasmroom::store::{Snapshot, decode, encode};

/// The probe's answer to `command` on `ws`, as JSON.
async fn ask(ws: &mut Ws, command: &str) -> anyhow::Result<serde_json::Value> {
    send_text(ws, command).await?;
    recv_json(ws).await
}

/// The id the probe's document gave the connection `ws`.
async fn id_of(ws: &mut Ws) -> anyhow::Result<u64> {
    send_text(ws, "id").await?;
    Ok(recv_text(ws).await?.parse()?)
}

/// The snapshot file of probe document `document` under `data`.
fn snapshot_file(data: &std::path::Path, document: &str) -> std::path::PathBuf {
    data.join("probe").join(format!("{document}.snap"))
}

#[tokio::test]
async fn a_call_sees_one_clock_and_it_never_goes_back() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let mut ws = server.connect(0, "/ws/probe/clocks").await?;
    let mut last = 0;
    for _ in 0..3 {
        let seen = ask(&mut ws, "clocks").await?;
        // Every clock read twice, 20,000 monotonic reads apart: the same each time.
        let now_ms = seen["now_ms"][0].as_u64().unwrap();
        assert_eq!(seen["now_ms"][1], now_ms, "{seen}");
        let ns = (u128::from(now_ms) * 1_000_000).to_string();
        assert_eq!(seen["wall_ns"], serde_json::json!([ns, ns]), "{seen}");
        assert_eq!(
            seen["system_time_ns"],
            serde_json::json!([ns, ns]),
            "{seen}"
        );
        let mono = now_ms * 1_000_000;
        assert_eq!(
            seen["monotonic_ns"],
            serde_json::json!([mono, mono]),
            "{seen}"
        );
        assert_eq!(seen["instant_elapsed_ns"], "0", "{seen}");
        assert_eq!(seen["spins"], 20_000, "the clock never moved: {seen}");
        assert_eq!(
            seen["resolution_ns"],
            serde_json::json!([1_000_000, 1_000_000])
        );
        // Pollables follow the call's clock: due now is ready, anything later is not.
        assert_eq!(
            seen["ready"],
            serde_json::json!({"zero": true, "now": true, "later": false}),
            "{seen}"
        );
        assert!(now_ms >= last, "the document's clock went back: {seen}");
        last = now_ms;
    }
    Ok(())
}

#[tokio::test]
async fn nans_are_canonical() -> anyhow::Result<()> {
    let server = Server::start(&["probe"], 1, &[])?;
    let mut ws = server.connect(0, "/ws/probe/floats").await?;
    // 0/0 is a NaN with its sign bit set on x86-64; Wasm's canonical NaN has none.
    let bits = ask(&mut ws, "nan 0 0").await?;
    assert_eq!(
        bits,
        serde_json::json!({"f64": "0x7ff8000000000000", "f32": "0x7fc00000"})
    );
    let bits = ask(&mut ws, "nan 1 2").await?;
    assert_eq!(
        bits,
        serde_json::json!({"f64": "0x3fe0000000000000", "f32": "0x3f000000"})
    );
    Ok(())
}

/// Connects to `document`, asks for `random` twice, and hangs up.
async fn draws(server: &Server, document: &str) -> anyhow::Result<[serde_json::Value; 2]> {
    let mut ws = server.connect(0, &format!("/ws/probe/{document}")).await?;
    let first = ask(&mut ws, "random").await?;
    let second = ask(&mut ws, "random").await?;
    Ok([first, second])
}

#[tokio::test]
async fn random_comes_from_the_documents_seed() -> anyhow::Result<()> {
    let mut server = Server::start(&["probe"], 1, &[])?;
    let [a, a_again] = draws(&server, "a").await?;
    let [b, _] = draws(&server, "b").await?;
    for draw in ["secure", "secure_u64", "insecure"] {
        assert_ne!(
            a[draw], a_again[draw],
            "each call draws anew: {a} {a_again}"
        );
    }
    for draw in ["secure", "secure_u64", "insecure", "insecure_seed"] {
        assert_ne!(a[draw], b[draw], "two new documents draw alike: {a} {b}");
    }
    // `a` is saved with its seed; a copy of its snapshot opens as `copy`.
    assert!(server.terminate()?.success());
    let file = snapshot_file(server.data.path(), "a");
    let saved = decode(&std::fs::read(&file)?, "probe", "a").map_err(anyhow::Error::msg)?;
    assert!(saved.continuity.is_some(), "{saved:?}");
    std::fs::write(
        snapshot_file(server.data.path(), "copy"),
        encode(&saved, "probe", "copy"),
    )?;
    let server = server.restart()?;
    // Opened from the same snapshot, called the same way: the same draws, std's
    // hash-map keys included.
    let reopened = draws(&server, "a").await?;
    let copy = draws(&server, "copy").await?;
    assert_eq!(reopened, copy);
    assert_ne!(reopened[0], a, "a reopened document is not a new one");
    Ok(())
}

#[tokio::test]
async fn connection_ids_are_the_documents_own_and_never_given_twice() -> anyhow::Result<()> {
    let mut server = Server::start(&["probe"], 1, &["--checkpoint", "1"])?;
    let mut x1 = server.connect(0, "/ws/probe/x").await?;
    let mut x2 = server.connect(0, "/ws/probe/x").await?;
    let mut y1 = server.connect(0, "/ws/probe/y").await?;
    assert_eq!(
        [id_of(&mut x1).await?, id_of(&mut x2).await?],
        [1, 2],
        "in the order they joined"
    );
    assert_eq!(id_of(&mut y1).await?, 1, "each document counts its own");
    drop(x2);
    // A refused connection used its id too.
    let refused = refused(&server.url(0, "/ws/probe/x?reject=403")).await?;
    assert_eq!(refused.0, 403);
    // A hot reload keeps the count.
    let old = plugin_entry(&server, "probe").await?["current"]["version"].clone();
    deploy(
        &server,
        "probe",
        &rebuilt(&built_plugins_dir().join("probe.wasm"))?,
    )?;
    wait_for_new_version(&server, "probe", &old, 2).await?;
    let mut x4 = server.connect(0, "/ws/probe/x").await?;
    assert_eq!(id_of(&mut x4).await?, 4);
    // The probe keeps no state, yet once its last connection has gone the document is
    // written: its counter must outlive it.
    let mut z1 = server.connect(0, "/ws/probe/z").await?;
    assert_eq!(id_of(&mut z1).await?, 1);
    drop(z1);
    let z = snapshot_file(server.data.path(), "z");
    let deadline = std::time::Instant::now() + PATIENCE;
    while !z.exists() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "z was never written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let saved = decode(&std::fs::read(&z)?, "probe", "z").map_err(anyhow::Error::msg)?;
    assert_eq!(saved.continuity.map(|c| c.next_connection_id), Some(2));
    drop((x1, x4, y1));

    // A restart goes on from the saved count, and a document saved by an older wasmroom
    // (snapshot version 1) above any id the process-wide counter could have given.
    assert!(server.terminate()?.success());
    let saved = decode(
        &std::fs::read(snapshot_file(server.data.path(), "x"))?,
        "probe",
        "x",
    )
    .map_err(anyhow::Error::msg)?;
    assert_eq!(saved.continuity.map(|c| c.next_connection_id), Some(5));
    let version_1 = Snapshot {
        plugin_version: saved.plugin_version.clone(),
        saved_at_ms: 0,
        timers: Vec::new(),
        state: Vec::new(),
        continuity: None,
        connections: Vec::new(),
        sessions: Vec::new(),
        settings: None,
    };
    std::fs::write(
        snapshot_file(server.data.path(), "old"),
        encode(&version_1, "probe", "old"),
    )?;
    let server = server.restart()?;
    let mut x5 = server.connect(0, "/ws/probe/x").await?;
    let mut y2 = server.connect(0, "/ws/probe/y").await?;
    let mut old = server.connect(0, "/ws/probe/old").await?;
    assert_eq!(id_of(&mut x5).await?, 5);
    assert_eq!(id_of(&mut y2).await?, 2);
    assert_eq!(id_of(&mut old).await?, 1 << 32, "still below 2^53");
    Ok(())
}

/// In journal mode the settings a call saw are part of its input: a replay after
/// `kill -9` sees the settings each input saw (the snapshot's, then each change a SIGHUP
/// made, as journaled), not the config's when it runs; after it the config's apply.
#[tokio::test]
async fn a_replay_sees_the_settings_each_input_saw() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("wasmroom.toml");
    let write = |greeting: &str| {
        std::fs::write(
            &config,
            format!(
                "checkpoint_secs = 3600\n[plugin.probe]\ndurability = \"journal\"\n[plugin.probe.settings]\ngreeting = \"{greeting}\"\n"
            ),
        )
    };
    write("one")?;
    let path = config.to_str().expect("UTF-8").to_owned();
    let mut server = Server::start(&["probe"], 1, &["--config", &path])?;
    let mut ws = server.connect(0, "/ws/probe/settings").await?;
    send_text(&mut ws, "note-setting greeting").await?;
    write("two")?;
    server.signal("HUP")?;
    // A call sees the new settings once the server has read them.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        send_text(&mut ws, "setting greeting").await?;
        if recv_text(&mut ws).await? == "two" {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "SIGHUP not read");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    send_text(&mut ws, "note-setting greeting").await?;
    send_text(&mut ws, "notes").await?;
    assert_eq!(recv_text(&mut ws).await?, "one,two");
    server.kill9()?;

    write("three")?;
    let server = server.restart()?;
    let mut ws = server.connect(0, "/ws/probe/settings").await?;
    send_text(&mut ws, "note-setting greeting").await?;
    send_text(&mut ws, "notes").await?;
    assert_eq!(
        recv_text(&mut ws).await?,
        "one,two,three",
        "each input replayed with the settings it saw, then the config's"
    );
    Ok(())
}
