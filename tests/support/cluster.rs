//! A cluster for tests: a real PostgreSQL, wasmroom hosts on 127.0.0.1, .2, ... (two lanes
//! each, on fixed ports so that a restarted host comes back where nginx expects it), and a
//! real nginx in front (`nginx-config --routing hash --store-shared`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::nginx::Nginx;
use super::postgres::Postgres;
use super::{PATIENCE, Server, Ws, http};

/// One cluster at a time: each runs a PostgreSQL, three hosts and nginx on two cores.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const HOST_CONFIG: &str = "\
checkpoint_secs = 1
idle_grace_secs = 600
http_idle_grace_ms = 600000
[store]
lease_ttl_ms = 2000
handoff_timeout_ms = 3000
[plugin.chat.settings]
history = \"100000\"
";

/// A PostgreSQL, `hosts` wasmroom hosts of two lanes each, and nginx in front.
pub struct Cluster {
    // Dropped in this order: the hosts first, the store they use last.
    pub hosts: Vec<Option<Server>>,
    pub nginx: Nginx,
    pub config: tempfile::NamedTempFile,
    pub pg: Postgres,
}

impl Cluster {
    pub fn start(hosts: usize, plugins: &[&str]) -> anyhow::Result<Cluster> {
        Self::start_configured(hosts, plugins, HOST_CONFIG)
    }

    /// Like [`Cluster::start`], every host with `config`.
    pub fn start_configured(
        hosts: usize,
        plugins: &[&str],
        config: &str,
    ) -> anyhow::Result<Cluster> {
        let pg = Postgres::start()?;
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile()?;
        std::io::Write::write_all(&mut file, config.as_bytes())?;
        let config = file;
        let mut started = Vec::new();
        let mut lanes = Vec::new();
        for h in 0..hosts {
            let ip = format!("127.0.0.{}", h + 1);
            let ports = [free_port(&ip)?, free_port(&ip)?];
            lanes.push(
                ports
                    .iter()
                    .map(|p| format!("{ip}:{p}"))
                    .collect::<Vec<_>>(),
            );
            started.push(Some(launch(&pg, &config, plugins, &ip, &ports)?));
        }
        let all: Vec<String> = lanes.iter().flatten().cloned().collect();
        let nginx = Nginx::start_for(&all, &["--routing", "hash", "--store-shared"])?;
        Ok(Cluster {
            pg,
            hosts: started,
            nginx,
            config,
        })
    }

    pub fn launch(&self, plugins: &[&str], ip: &str, ports: &[u16]) -> anyhow::Result<Server> {
        launch(&self.pg, &self.config, plugins, ip, ports)
    }

    pub fn host(&self, h: usize) -> &Server {
        self.hosts[h].as_ref().expect("the host runs")
    }

    /// `wasmroom store ls --json`: document -> (owner, epoch), for live owners.
    pub fn owners(&self) -> anyhow::Result<BTreeMap<String, (Option<String>, i64)>> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmroom"))
            .args([
                "store",
                "ls",
                "--json",
                "--lease-ttl-ms",
                "2000",
                "--store",
                &self.pg.url,
            ])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "store ls failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut owners = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let row: serde_json::Value = serde_json::from_str(line)?;
            owners.insert(
                row["document"].as_str().unwrap_or_default().to_owned(),
                (
                    row["owner"].as_str().map(str::to_owned),
                    row["epoch"].as_i64().unwrap_or(0),
                ),
            );
        }
        Ok(owners)
    }

    /// Whether the snapshot of `doc` in the store holds `text`.
    pub fn saved(&self, doc: &str, text: &str) -> anyhow::Result<bool> {
        let found = self.pg.sql(&format!(
            "SELECT count(*) FROM wasmroom.documents WHERE doc = '{doc}' AND position(convert_to('{text}', 'UTF8') in snapshot) > 0"
        ))?;
        Ok(found == "1")
    }

    pub fn wait_saved(&self, doc: &str, text: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        while !self.saved(doc, text)? {
            anyhow::ensure!(Instant::now() < deadline, "{doc}: {text:?} never saved");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The chat history of `doc` through nginx (any host may have to take it over).
    pub async fn history(&self, doc: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = http(self.nginx.addr, "GET", &format!("/docs/chat/{doc}"), b"").await;
            match got {
                Ok((200, body)) => return Ok(body),
                other => {
                    anyhow::ensure!(Instant::now() < deadline, "{doc}: no history ({other:?})");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Starts a host on `ip` and `ports` with the shared store and the cluster's config.
pub fn launch(
    pg: &Postgres,
    config: &tempfile::NamedTempFile,
    plugins: &[&str],
    ip: &str,
    ports: &[u16],
) -> anyhow::Result<Server> {
    let config = config.path().to_str().context("temp path")?;
    Server::start_host(
        plugins,
        ip,
        ports,
        &["--store", &pg.url, "--config", config],
    )
}

pub fn free_port(ip: &str) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// Connects until a host accepts (a document may be on its way between hosts).
pub async fn connect_retrying(url: &str) -> anyhow::Result<Ws> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => return Ok(ws),
            Err(e) => {
                anyhow::ensure!(Instant::now() < deadline, "cannot connect to {url}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
