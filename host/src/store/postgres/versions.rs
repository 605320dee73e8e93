//! The version store's shared half (`crate::guest::versions`): journaled plugins' files
//! in `wasmroom.plugin_versions`, so that a host taking a document over replays its
//! journal rows on the versions that made them, even those it never loaded.

use crate::guest::versions::{KEEP, SharedVersions};
use crate::store::postgres::{PostgresStore, StoreError};

impl SharedVersions for PostgresStore {
    fn keep(&self, plugin: &str, version: &str, bytes: &[u8]) -> Result<(), String> {
        let inner = self.inner.clone();
        let (plugin, version, bytes) = (plugin.to_owned(), version.to_owned(), bytes.to_vec());
        self.block(async move {
            let client = inner
                .client()
                .await
                .map_err(|e| StoreError::Query(e.to_string()))?;
            // Bytes already there are not sent again; only the time is.
            let touched = client
                .execute(
                    "UPDATE wasmroom.plugin_versions SET kept_at = now()
                     WHERE name = $1 AND version = $2",
                    &[&plugin, &version],
                )
                .await
                .map_err(StoreError::query)?;
            if touched == 0 {
                client
                    .execute(
                        "INSERT INTO wasmroom.plugin_versions (name, version, bytes)
                         VALUES ($1, $2, $3)
                         ON CONFLICT (name, version) DO UPDATE SET kept_at = now()",
                        &[&plugin, &version, &bytes],
                    )
                    .await
                    .map_err(StoreError::query)?;
            }
            let keep = KEEP as i64;
            client
                .execute(
                    "DELETE FROM wasmroom.plugin_versions WHERE name = $1 AND version NOT IN (
                         SELECT version FROM wasmroom.plugin_versions WHERE name = $1
                         ORDER BY kept_at DESC LIMIT $2)",
                    &[&plugin, &keep],
                )
                .await
                .map_err(StoreError::query)?;
            Ok(())
        })
        .map_err(|e| e.to_string())
    }

    fn fetch(&self, plugin: &str, version: &str) -> Result<Option<Vec<u8>>, String> {
        let inner = self.inner.clone();
        let (plugin, version) = (plugin.to_owned(), version.to_owned());
        self.block(async move {
            let client = inner
                .client()
                .await
                .map_err(|e| StoreError::Query(e.to_string()))?;
            select(&client, &plugin, &version).await
        })
        .map_err(|e| e.to_string())
    }
}

/// `plugin`'s `version` in the shared store at `target`, read without registering a host
/// (`wasmroom replay --store`).
pub async fn read_version(
    target: &crate::store::postgres::Target,
    plugin: &str,
    version: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut client = target.connect().await?;
    crate::store::postgres::schema::migrate(&mut client).await?;
    select(&client, plugin, version).await
}

/// The bytes of `plugin`'s `version`, if kept.
async fn select(
    client: &tokio_postgres::Client,
    plugin: &str,
    version: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let row = client
        .query_opt(
            "SELECT bytes FROM wasmroom.plugin_versions WHERE name = $1 AND version = $2",
            &[&plugin, &version],
        )
        .await
        .map_err(StoreError::query)?;
    Ok(row.map(|r| r.get(0)))
}
