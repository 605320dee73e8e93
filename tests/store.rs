//! The shared store's leases and fencing, against a real PostgreSQL: two registrations
//! of the library's store (two hosts) on one database, and the SQL they run.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::postgres::Postgres;
use wasmroom::metrics::Metrics;
use wasmroom::store::postgres::{PostgresStore, StoreSettings, Target};
use wasmroom::store::{Snapshot, Storage, StorageError, StoreEvent};

fn host(pg: &Postgres, name: &str, ttl: Duration) -> anyhow::Result<Arc<PostgresStore>> {
    let settings = StoreSettings {
        host_name: name.to_owned(),
        lease_ttl: ttl,
        pool_size: 2,
    };
    let (store, _events) =
        PostgresStore::start(Target::parse(&pg.url)?, settings, Metrics::new().store())?;
    Ok(store)
}

fn snapshot(text: &str) -> Snapshot {
    Snapshot {
        plugin_version: "v1".into(),
        saved_at_ms: 1,
        timers: vec![(9, 123)],
        state: text.as_bytes().to_vec(),
        continuity: Some(wasmroom::store::Continuity {
            seed: [5; 32],
            next_connection_id: 7,
            inputs: 0,
        }),
        connections: Vec::new(),
        sessions: Vec::new(),
        settings: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time_and_a_stale_holder_is_fenced() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let a = host(&pg, "host-a", Duration::from_secs(10))?;
    let b = host(&pg, "host-b", Duration::from_secs(10))?;

    let first = a.open("chat", "doc", "v1").await?;
    assert_eq!(first.lease.epoch, 1);
    assert!(first.snapshot.is_none());
    // A live host holds it: the other is told who.
    match b.open("chat", "doc", "v1").await {
        Err(StorageError::HeldElsewhere { host, .. }) => assert_eq!(host, "host-a"),
        other => anyhow::bail!("expected held elsewhere, got {other:?}"),
    }
    a.save("chat", "doc", first.lease, snapshot("by a")).await?;
    // Handed back: the next holder gets a new epoch and what was saved.
    a.release("chat", "doc", first.lease).await?;
    let second = b.open("chat", "doc", "v1").await?;
    assert_eq!(second.lease.epoch, 2);
    assert_eq!(second.snapshot, Some(snapshot("by a")));
    // The old holder's write under its old epoch matches no row: fenced.
    assert!(matches!(
        a.save("chat", "doc", first.lease, snapshot("stale")).await,
        Err(StorageError::Fenced { .. })
    ));
    b.save("chat", "doc", second.lease, snapshot("by b"))
        .await?;
    let row = pg.sql("SELECT epoch, size > 0 FROM wasmroom.documents WHERE doc = 'doc'")?;
    assert_eq!(row, "2|t");
    a.shutdown();
    b.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_hosts_documents_are_taken_over_and_its_late_writes_refused() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let a = host(&pg, "host-a", Duration::from_secs(10))?;
    let b = host(&pg, "host-b", Duration::from_secs(10))?;
    let held = a.open("chat", "d", "v1").await?;
    a.save("chat", "d", held.lease, snapshot("saved")).await?;
    // host-a's heartbeat is older than the TTL by the server's clock: its leases are free.
    pg.sql(
        "UPDATE wasmroom.hosts SET heartbeat_at = now() - interval '1 hour' WHERE name = 'host-a'",
    )?;
    let taken = b.open("chat", "d", "v1").await?;
    assert_eq!(taken.lease.epoch, held.lease.epoch + 1);
    assert_eq!(taken.snapshot, Some(snapshot("saved")));
    assert!(matches!(
        a.save("chat", "d", held.lease, snapshot("late")).await,
        Err(StorageError::Fenced { .. })
    ));
    let owner = pg.sql(
        "SELECT h.name FROM wasmroom.documents d JOIN wasmroom.hosts h ON h.id = d.owner WHERE d.doc = 'd'",
    )?;
    assert_eq!(owner, "host-b");
    a.shutdown();
    b.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_frees_only_the_epoch_it_was_meant_for() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let a = host(&pg, "host-a", Duration::from_secs(10))?;
    let first = a.open("chat", "r", "v1").await?;
    a.release("chat", "r", first.lease).await?;
    // A client came back before a stale release of the first epoch arrived: the lease
    // it took anew must survive both kinds of release of the old epoch.
    let second = a.open("chat", "r", "v1").await?;
    assert_eq!(second.lease.epoch, first.lease.epoch + 1);
    a.release("chat", "r", first.lease).await?;
    a.release_unheld("chat", "r", first.lease.epoch).await?;
    let row = pg.sql(
        "SELECT h.name, d.epoch FROM wasmroom.documents d JOIN wasmroom.hosts h ON h.id = d.owner WHERE d.doc = 'r'",
    )?;
    assert_eq!(row, format!("host-a|{}", second.lease.epoch));
    // A release of the epoch it holds frees it.
    a.release_unheld("chat", "r", second.lease.epoch).await?;
    let owner =
        pg.sql("SELECT coalesce(owner::text, 'free') FROM wasmroom.documents WHERE doc = 'r'")?;
    assert_eq!(owner, "free");
    // Another host is told the epoch the document is held under.
    let third = a.open("chat", "r", "v1").await?;
    let b = host(&pg, "host-b", Duration::from_secs(10))?;
    match b.open("chat", "r", "v1").await {
        Err(StorageError::HeldElsewhere { epoch, .. }) => assert_eq!(epoch, third.lease.epoch),
        other => anyhow::bail!("expected held elsewhere, got {other:?}"),
    }
    a.shutdown();
    b.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_answered_after_the_lease_ran_out_does_not_renew_it() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let ttl = Duration::from_millis(2000);
    let a = host(&pg, "host-a", ttl)?;
    let b = host(&pg, "host-b", ttl)?;
    let held = a.open("chat", "h", "v1").await?;
    let clock = a.clock().clone();
    assert!(clock.holds(held.lease));
    // A test session locks host-a's row: its next heartbeat waits on the lock, checked
    // before it waited, until host-a's lease has run out by the store's clock.
    let (locker, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; SELECT id FROM wasmroom.hosts WHERE name = 'host-a' FOR UPDATE")
        .await?;
    let deadline = std::time::Instant::now() + support::PATIENCE;
    let taken = loop {
        match b.open("chat", "h", "v1").await {
            Ok(taken) => break taken,
            Err(StorageError::HeldElsewhere { .. }) => {
                anyhow::ensure!(std::time::Instant::now() < deadline, "never taken over");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    assert_eq!(taken.lease.epoch, held.lease.epoch + 1);
    // host-a stopped serving on its own clock before that.
    assert!(!clock.holds(held.lease));
    locker.batch_execute("COMMIT").await?;
    // Whatever the waiting heartbeat answers now, host-a must never hold its old lease
    // again: it registers anew instead.
    let deadline = std::time::Instant::now() + support::PATIENCE;
    while clock.holder() == held.lease.holder {
        assert!(
            !clock.holds(held.lease),
            "host-a renewed a lease that had run out"
        );
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "never registered anew"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..100 {
        assert!(!clock.holds(held.lease));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.shutdown();
    b.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_with_a_bad_checksum_is_refused_and_left_alone() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let a = host(&pg, "host-a", Duration::from_secs(10))?;
    let opened = a.open("chat", "c", "v1").await?;
    a.save("chat", "c", opened.lease, snapshot("good")).await?;
    a.release("chat", "c", opened.lease).await?;
    pg.sql("UPDATE wasmroom.documents SET snapshot = set_byte(snapshot, 20, get_byte(snapshot, 20) # 1) WHERE doc = 'c'")?;
    let before = pg.sql("SELECT md5(snapshot) FROM wasmroom.documents WHERE doc = 'c'")?;
    match a.open("chat", "c", "v1").await {
        Err(StorageError::Corrupt { reason, .. }) => {
            assert!(reason.contains("checksum"), "{reason}")
        }
        other => anyhow::bail!("expected a corrupt snapshot, got {other:?}"),
    }
    let after = pg.sql("SELECT md5(snapshot) FROM wasmroom.documents WHERE doc = 'c'")?;
    assert_eq!(before, after, "a refused row is never overwritten");
    a.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_versions_document_is_not_opened_by_an_older_version() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let target = Target::parse(&pg.url)?;
    wasmroom::store::postgres::deploy(&target, "chat", "old", b"old bytes").await?;
    wasmroom::store::postgres::deploy(&target, "chat", "new", b"new bytes").await?;
    let a = host(&pg, "host-a", Duration::from_secs(10))?;
    let opened = a.open("chat", "n", "new").await?;
    let mut saved = snapshot("by the new version");
    saved.plugin_version = "new".into();
    a.save("chat", "n", opened.lease, saved).await?;
    a.release("chat", "n", opened.lease).await?;
    match a.open("chat", "n", "old").await {
        Err(StorageError::NewerVersion { saved, running }) => {
            assert_eq!((saved.as_str(), running.as_str()), ("new", "old"));
        }
        other => anyhow::bail!("expected a newer version, got {other:?}"),
    }
    // Refused, it was let go again: the new version opens it.
    let reopened = a.open("chat", "n", "new").await?;
    assert!(reopened.snapshot.is_some());
    a.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_starting_at_once_migrate_the_schema_once() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let target = Target::parse(&pg.url)?;
    let runs =
        futures_util::future::join_all((0..4).map(|_| wasmroom::store::postgres::migrate(&target)))
            .await;
    for run in runs {
        run?;
    }
    let versions = pg.sql("SELECT count(*), max(version) FROM wasmroom.schema_version")?;
    assert_eq!(
        versions,
        format!("{0}|{0}", wasmroom::store::postgres::schema::SCHEMA_VERSION)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_lapses_the_lease_and_a_new_registration_resumes() -> anyhow::Result<()> {
    let mut pg = Postgres::start()?;
    let settings = StoreSettings {
        host_name: "host-a".into(),
        lease_ttl: Duration::from_millis(1500),
        pool_size: 2,
    };
    let (a, mut events) =
        PostgresStore::start(Target::parse(&pg.url)?, settings, Metrics::new().store())?;
    let clock = a.clock().clone();
    let opened = a.open("chat", "o", "v1").await?;
    assert!(clock.holds(opened.lease));
    pg.stop_server()?;
    // No heartbeat is accepted: the lease runs out on this host's own clock.
    let lapsed = wait_for_event(&mut events, |e| *e == StoreEvent::Lapsed).await;
    assert!(lapsed, "no lapse reported");
    assert!(!clock.holds(opened.lease));
    pg.start_server()?;
    let resumed = wait_for_event(&mut events, |e| *e == StoreEvent::Resumed).await;
    assert!(resumed, "never resumed");
    // A new registration: what was opened before is not this host's any more.
    assert!(!clock.holds(opened.lease));
    assert!(clock.valid_now());
    let again = a.open("chat", "o", "v1").await?;
    assert!(clock.holds(again.lease));
    assert!(again.lease.epoch > opened.lease.epoch);
    a.shutdown();
    Ok(())
}

async fn wait_for_event(
    events: &mut tokio::sync::mpsc::Receiver<StoreEvent>,
    wanted: impl Fn(&StoreEvent) -> bool,
) -> bool {
    tokio::time::timeout(support::PATIENCE, async {
        while let Some(event) = events.recv().await {
            if wanted(&event) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

#[tokio::test]
async fn an_unreachable_store_is_a_one_line_error_without_the_password() -> anyhow::Result<()> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmroom"))
        .args([
            "serve",
            "--port",
            "0",
            "--store",
            "postgres://ann:s3cret@127.0.0.1:1/db",
        ])
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("postgres://ann@127.0.0.1:1/db"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_wasmroom"))
        .args(["serve", "--port", "0", "--store", "mysql://x@y/z"])
        .output()?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("postgres://"));
    Ok(())
}
