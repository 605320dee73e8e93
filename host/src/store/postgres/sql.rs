//! The statements: taking a document (lease and snapshot in one round trip), releasing
//! it, the host's registration and heartbeat, notifications, plugin versions, listing.

use std::time::{Duration, Instant};

use crate::store::decode;
use crate::store::postgres::{Inner, StoreError, error_text};
use crate::store::{Lease, Opened, StorageError, StoreEvent};

/// Takes the document for `$3` unless a live host other than `$3` holds it (its
/// heartbeat younger than `$4` seconds by the server's clock), bumping the epoch; a new
/// document starts at epoch 1. Returns the new epoch and what was saved.
const TAKE: &str = "
INSERT INTO wasmroom.documents AS d (plugin, doc, owner, epoch)
VALUES ($1, $2, $3, 1)
ON CONFLICT (plugin, doc) DO UPDATE SET owner = $3, epoch = d.epoch + 1
WHERE d.owner IS NULL OR d.owner = $3 OR NOT EXISTS (
    SELECT 1 FROM wasmroom.hosts h
    WHERE h.id = d.owner AND h.heartbeat_at > now() - make_interval(secs => $4))
RETURNING d.epoch, d.snapshot, d.plugin_version";

/// Who holds a document that could not be taken, and under which epoch.
const HOLDER: &str = "
SELECT d.owner, coalesce(h.name, '(unknown host)'), d.epoch FROM wasmroom.documents d
LEFT JOIN wasmroom.hosts h ON h.id = d.owner
WHERE d.plugin = $1 AND d.doc = $2";

/// A plugin deployed through the store.
#[derive(Debug, Clone)]
pub struct DeployedPlugin {
    /// Its name.
    pub name: String,
    /// Its version (the same content hash a plugin file gets).
    pub version: String,
    /// The component.
    pub bytes: Vec<u8>,
}

/// A document as `wasmroom store ls` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListedDocument {
    /// Its plugin.
    pub plugin: String,
    /// Its id.
    pub document: String,
    /// The host holding its lease, if one does and is alive.
    pub owner: Option<String>,
    /// Its epoch (takeovers so far).
    pub epoch: i64,
    /// Bytes of its last snapshot.
    pub size: i64,
    /// When it was last saved (Unix milliseconds).
    pub saved_at_ms: Option<i64>,
    /// The plugin version that saved it.
    pub plugin_version: Option<String>,
}

impl Inner {
    /// Registers this host (a new registration: documents of an earlier one are never
    /// its own again) and starts its lease.
    pub(super) async fn register(&self) -> Result<(), StoreError> {
        let client = self.target.connect().await?;
        let sent = Instant::now();
        let row = client
            .query_one(
                "INSERT INTO wasmroom.hosts (name) VALUES ($1) RETURNING id",
                &[&self.settings.host_name],
            )
            .await
            .map_err(StoreError::query)?;
        let id: i64 = row.get(0);
        // Registrations dead for a day are history.
        let _ = client
            .execute(
                "DELETE FROM wasmroom.hosts WHERE heartbeat_at < now() - interval '1 day'",
                &[],
            )
            .await;
        self.clock.set_holder(id as u64);
        self.clock.renewed(sent);
        Ok(())
    }

    /// Registers anew after a lapse and frees what the old registration held (this
    /// host serves none of it any more).
    pub(super) async fn reregister(&self, old: u64) -> Result<(), StoreError> {
        self.register().await?;
        let client = self.target.connect().await?;
        let old = old as i64;
        client
            .execute(
                "UPDATE wasmroom.documents SET owner = NULL WHERE owner = $1",
                &[&old],
            )
            .await
            .map_err(StoreError::query)?;
        client
            .execute("DELETE FROM wasmroom.hosts WHERE id = $1", &[&old])
            .await
            .map_err(StoreError::query)?;
        Ok(())
    }

    /// Frees every document of this host and removes its registration (shutdown).
    pub(super) async fn unregister(&self) -> Result<(), StoreError> {
        let client = self
            .client()
            .await
            .map_err(|e| StoreError::Query(e.to_string()))?;
        let holder = self.clock.holder() as i64;
        self.clock.lapse();
        let freed = client
            .execute(
                "UPDATE wasmroom.documents SET owner = NULL WHERE owner = $1",
                &[&holder],
            )
            .await
            .map_err(StoreError::query)?;
        client
            .execute("DELETE FROM wasmroom.hosts WHERE id = $1", &[&holder])
            .await
            .map_err(StoreError::query)?;
        tracing::info!("left the shared store: {freed} document lease(s) released");
        Ok(())
    }

    /// Takes `document` and reads its snapshot.
    pub(super) async fn open(
        &self,
        plugin: &str,
        document: &str,
        version: &str,
    ) -> Result<Opened, StorageError> {
        if !self.clock.valid_now() {
            return Err(StorageError::Unavailable(
                "this host's lease in the store has lapsed".into(),
            ));
        }
        let holder = self.clock.holder() as i64;
        let ttl = self.clock.ttl().as_secs_f64();
        let client = self.client().await?;
        let taken = self
            .timed("open", async {
                // Prepared once per pooled connection: one round trip per open.
                let take = client.prepare_cached(TAKE).await?;
                client
                    .query_opt(&take, &[&plugin, &document, &holder, &ttl])
                    .await
            })
            .await?;
        let Some(row) = taken else {
            let row = self
                .timed("holder", async {
                    let holder = client.prepare_cached(HOLDER).await?;
                    client.query_opt(&holder, &[&plugin, &document]).await
                })
                .await?;
            let (owner, host, epoch) = row
                .map(|r| {
                    (
                        r.get::<_, Option<i64>>(0),
                        r.get::<_, String>(1),
                        r.get::<_, i64>(2),
                    )
                })
                .unwrap_or((None, "(unknown host)".into(), 0));
            return Err(StorageError::HeldElsewhere {
                holder: owner.unwrap_or(0) as u64,
                host,
                epoch: epoch as u64,
            });
        };
        let lease = Lease {
            epoch: row.get::<_, i64>(0) as u64,
            holder: holder as u64,
        };
        self.metrics.lease_taken();
        let bytes: Option<Vec<u8>> = row.get(1);
        let saved_version: Option<String> = row.get(2);
        let refused = match saved_version {
            Some(saved) if saved != version => {
                match self.newer(&client, plugin, &saved, version).await? {
                    true => Some(StorageError::NewerVersion {
                        saved,
                        running: version.to_owned(),
                    }),
                    false => None,
                }
            }
            _ => None,
        };
        let snapshot = match (refused, bytes) {
            (Some(e), _) => Err(e),
            (None, Some(bytes)) => decode(&bytes, plugin, document)
                .map(Some)
                .map_err(|reason| StorageError::Corrupt {
                    what: format!("the row of {plugin}/{document} in {}", self.target),
                    reason,
                }),
            (None, None) => Ok(None),
        };
        // Read after the lease was taken: every row a former holder made durable is there.
        let opened = match snapshot {
            Ok(snapshot) => match self.journal_of(&client, plugin, document).await {
                Ok(journal) => Ok(Opened {
                    lease,
                    snapshot,
                    journal: Some(journal),
                }),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match opened {
            Ok(opened) => Ok(opened),
            Err(e) => {
                // Not opened here: let another host (or a later version) have it.
                let _ = self.release(plugin, document, lease).await;
                Err(e)
            }
        }
    }

    /// Whether version `saved` of `plugin` was deployed after `running` (versions not
    /// deployed through the store count as the oldest).
    async fn newer(
        &self,
        client: &tokio_postgres::Client,
        plugin: &str,
        saved: &str,
        running: &str,
    ) -> Result<bool, StorageError> {
        let versions = vec![saved.to_owned(), running.to_owned()];
        let rows = self
            .timed(
                "versions",
                client.query(
                    "SELECT version, max(seq) FROM wasmroom.plugins
                     WHERE name = $1 AND version = ANY($2) GROUP BY version",
                    &[&plugin, &versions],
                ),
            )
            .await?;
        let seq = |v: &str| {
            rows.iter()
                .find(|r| r.get::<_, String>(0) == v)
                .map_or(0, |r| r.get::<_, i64>(1))
        };
        Ok(seq(saved) > seq(running))
    }

    /// Frees `document` if this host still holds it under `lease` (that epoch, that
    /// registration): a release never clears a lease taken after the one it was meant for.
    pub(super) async fn release(
        &self,
        plugin: &str,
        document: &str,
        lease: Lease,
    ) -> Result<(), StorageError> {
        let client = self.client().await?;
        let (epoch, holder) = (lease.epoch as i64, lease.holder as i64);
        let released = self
            .timed("release", async {
                let release = client
                    .prepare_cached(
                        "UPDATE wasmroom.documents SET owner = NULL
                         WHERE plugin = $1 AND doc = $2 AND epoch = $3 AND owner = $4",
                    )
                    .await?;
                client
                    .execute(&release, &[&plugin, &document, &epoch, &holder])
                    .await
            })
            .await?;
        if released > 0 {
            self.metrics.lease_released();
        }
        Ok(())
    }

    /// `NOTIFY channel, payload`.
    pub(super) async fn notify(&self, channel: &str, payload: &str) -> Result<(), StorageError> {
        let client = self.client().await?;
        self.timed(
            "notify",
            client.execute("SELECT pg_notify($1, $2)", &[&channel, &payload]),
        )
        .await?;
        Ok(())
    }

    /// The newest version of every plugin (or of `name`).
    pub(super) async fn latest_plugins(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<DeployedPlugin>, StoreError> {
        let client = self
            .client()
            .await
            .map_err(|e| StoreError::Query(e.to_string()))?;
        let rows = client
            .query(
                "SELECT DISTINCT ON (name) name, version, bytes FROM wasmroom.plugins
                 WHERE $1::text IS NULL OR name = $1 ORDER BY name, seq DESC",
                &[&name],
            )
            .await
            .map_err(StoreError::query)?;
        Ok(rows
            .iter()
            .map(|r| DeployedPlugin {
                name: r.get(0),
                version: r.get(1),
                bytes: r.get(2),
            })
            .collect())
    }

    /// A notification on one of this host's channels, as an event.
    pub(super) fn event(&self, channel: &str, payload: &str) -> Option<StoreEvent> {
        if channel == "wasmroom_plugins" {
            return Some(StoreEvent::PluginDeployed {
                name: payload.to_owned(),
            });
        }
        let (epoch, document) = parse_release_request(payload)?;
        let (plugin, document) = document.split_once('/')?;
        Some(StoreEvent::ReleaseRequested {
            plugin: plugin.to_owned(),
            document: document.to_owned(),
            epoch,
        })
    }
}

/// What a host asking for a document sends its holder: `{epoch}:{plugin}/{document}`,
/// the epoch it saw the document held under (plugin names hold no `:`).
pub(super) fn release_request(epoch: u64, plugin: &str, document: &str) -> String {
    format!("{epoch}:{plugin}/{document}")
}

/// The epoch (none from hosts before the epoch was sent) and `plugin/document` of a
/// release request.
fn parse_release_request(payload: &str) -> Option<(Option<u64>, &str)> {
    let slash = payload.find('/')?;
    match payload[..slash].split_once(':') {
        Some((epoch, _)) => {
            let epoch = epoch.parse().ok()?;
            Some((Some(epoch), &payload[payload.find(':')? + 1..]))
        }
        None => Some((None, payload)),
    }
}

/// Every document, with its holder if that host is alive.
pub(super) async fn list(
    client: &tokio_postgres::Client,
    ttl: Duration,
) -> Result<Vec<ListedDocument>, StoreError> {
    let rows = client
        .query(
            "SELECT d.plugin, d.doc,
                    CASE WHEN h.heartbeat_at > now() - make_interval(secs => $1) THEN h.name END,
                    d.epoch, d.size,
                    (extract(epoch FROM d.saved_at) * 1000)::bigint, d.plugin_version
             FROM wasmroom.documents d LEFT JOIN wasmroom.hosts h ON h.id = d.owner
             ORDER BY d.plugin, d.doc",
            &[&ttl.as_secs_f64()],
        )
        .await
        .map_err(StoreError::query)?;
    Ok(rows
        .iter()
        .map(|r| ListedDocument {
            plugin: r.get(0),
            document: r.get(1),
            owner: r.get(2),
            epoch: r.get(3),
            size: r.get(4),
            saved_at_ms: r.get(5),
            plugin_version: r.get(6),
        })
        .collect())
}

/// Stores a plugin version and notifies every host.
pub(super) async fn deploy(
    client: &tokio_postgres::Client,
    name: &str,
    version: &str,
    bytes: &[u8],
) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "INSERT INTO wasmroom.plugins (name, version, bytes) VALUES ($1, $2, $3) RETURNING seq",
            &[&name, &version, &bytes],
        )
        .await
        .map_err(StoreError::query)?;
    client
        .execute("SELECT pg_notify('wasmroom_plugins', $1)", &[&name])
        .await
        .map_err(|e| StoreError::Query(error_text(&e)))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_request_carries_the_epoch_it_saw() {
        let payload = release_request(7, "chat", "room/with:colon");
        assert_eq!(
            parse_release_request(&payload),
            Some((Some(7), "chat/room/with:colon"))
        );
        // From a host that sent no epoch.
        assert_eq!(
            parse_release_request("chat/room:1"),
            Some((None, "chat/room:1"))
        );
        assert_eq!(parse_release_request("x7:chat/room"), None);
        assert_eq!(parse_release_request("no-slash"), None);
    }
}
