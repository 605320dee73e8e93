//! wasmroom's tables in PostgreSQL, created and upgraded by wasmroom itself: each step
//! of [`STEPS`] runs once, in order, inside one transaction that holds an advisory lock,
//! so that several hosts starting at once (or `wasmroom store migrate`) are safe.

use tokio_postgres::Client;

use crate::store::postgres::StoreError;

/// The key of the advisory lock migrations hold (any constant shared by all hosts).
const MIGRATION_LOCK: i64 = 0x7761_736d_726f_6f6d; // "wasmroom"

/// The schema, one step per version. Never edit a step that has shipped: add one.
const STEPS: &[&str] = &[
    // 1: hosts with their heartbeat, documents with their lease and snapshot, plugins.
    "CREATE TABLE wasmroom.hosts (
        id bigserial PRIMARY KEY,
        name text NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        heartbeat_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE wasmroom.documents (
        plugin text NOT NULL,
        doc text NOT NULL,
        owner bigint,
        epoch bigint NOT NULL,
        snapshot bytea,
        plugin_version text,
        size bigint NOT NULL DEFAULT 0,
        saved_at timestamptz,
        PRIMARY KEY (plugin, doc)
    );
    CREATE INDEX documents_owner ON wasmroom.documents (owner) WHERE owner IS NOT NULL;
    CREATE TABLE wasmroom.plugins (
        seq bigserial PRIMARY KEY,
        name text NOT NULL,
        version text NOT NULL,
        bytes bytea NOT NULL,
        deployed_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX plugins_by_name ON wasmroom.plugins (name, seq DESC);",
    // 2: the input journal (journal mode): one row per document and lane batch, its
    // records as they are framed in journal files. The key makes a document's history
    // linear: two hosts can never both make an input number durable.
    "CREATE TABLE wasmroom.journal (
        plugin text NOT NULL,
        doc text NOT NULL,
        first_seq bigint NOT NULL,
        last_seq bigint NOT NULL,
        epoch bigint NOT NULL,
        records bytea NOT NULL,
        PRIMARY KEY (plugin, doc, first_seq)
    );",
    // 3: the version store shared by every host (journal mode): the plugin files whose
    // versions made journal rows, so that a host that never loaded one can still replay
    // what it made when it takes a document over.
    "CREATE TABLE wasmroom.plugin_versions (
        name text NOT NULL,
        version text NOT NULL,
        bytes bytea NOT NULL,
        kept_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (name, version)
    );",
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i32 = STEPS.len() as i32;

/// Creates or upgrades the schema; returns the version it was at before.
pub async fn migrate(client: &mut Client) -> Result<i32, StoreError> {
    let tx = client.transaction().await.map_err(StoreError::query)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(StoreError::query)?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS wasmroom;
         CREATE TABLE IF NOT EXISTS wasmroom.schema_version (version int NOT NULL);",
    )
    .await
    .map_err(StoreError::query)?;
    let row = tx
        .query_opt("SELECT max(version) FROM wasmroom.schema_version", &[])
        .await
        .map_err(StoreError::query)?;
    let current: i32 = row.and_then(|r| r.get::<_, Option<i32>>(0)).unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: SCHEMA_VERSION,
        });
    }
    for (version, step) in STEPS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(step).await.map_err(StoreError::query)?;
        let version = version as i32 + 1;
        tx.execute(
            "INSERT INTO wasmroom.schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(StoreError::query)?;
    }
    tx.batch_execute(PREFER_LZ4)
        .await
        .map_err(StoreError::query)?;
    tx.commit().await.map_err(StoreError::query)?;
    Ok(current)
}

/// Snapshots are compressed with lz4 where the server has it (PostgreSQL 14+ built with
/// lz4, as Debian's is): pglz, the default, cost PostgreSQL about 40% more CPU per
/// checkpoint in `bench/store.py` (10,000 documents of 15 KiB saved every 5 s). A
/// storage setting, not a schema version: hosts of every version read both alike, so
/// it is applied whenever it is missing and never blocks a rolling upgrade. Servers
/// without lz4 keep pglz.
const PREFER_LZ4: &str = "DO $$
BEGIN
    -- Nested, so that servers before 14 (no attcompression) never plan the query.
    IF current_setting('server_version_num')::int >= 140000 THEN
        IF EXISTS (
            SELECT 1 FROM pg_attribute
            WHERE attrelid = 'wasmroom.documents'::regclass AND attname = 'snapshot'
              AND attcompression <> 'l'
        ) THEN
            BEGIN
                EXECUTE 'ALTER TABLE wasmroom.documents ALTER COLUMN snapshot SET COMPRESSION lz4';
            EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
                NULL;
            END;
        END IF;
    END IF;
END $$;";
