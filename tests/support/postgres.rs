//! A real PostgreSQL for the tests: Debian's server binaries, `initdb` into a temporary
//! directory and `postgres` on a free port, run as an unprivileged user when the tests
//! run as root (PostgreSQL refuses root). Stopped and removed when dropped; it can be
//! stopped and started again on the same port and data (a store outage).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The user the server runs as when the tests run as root.
const SERVICE_USER: &str = "wasmroom-pg";

/// A running PostgreSQL server with a `wasmroom` database.
pub struct Postgres {
    running: bool,
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The URL hosts use: `postgres://wasmroom@127.0.0.1:PORT/wasmroom`.
    pub url: String,
}

impl Postgres {
    /// Initialises a cluster and starts it; fails with what to install when the server
    /// binaries are missing.
    pub fn start() -> anyhow::Result<Postgres> {
        let bin = binaries()?;
        let dir = tempfile::Builder::new().prefix("wasmroom-pg-").tempdir()?;
        let data = dir.path().join("data");
        let as_root = is_root();
        if as_root {
            ensure_service_user()?;
            // The user must reach the directory and own the cluster's.
            std::fs::create_dir_all(&data)?;
            chown(dir.path())?;
            chown(&data)?;
            set_mode(dir.path(), 0o755)?;
        }
        let status = run_as(
            as_root,
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().context("temp path")?,
                "-A",
                "trust",
                "-U",
                "wasmroom",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .output()
        .context("cannot run initdb")?;
        anyhow::ensure!(
            status.status.success(),
            "initdb failed ({}): {}",
            status.status,
            String::from_utf8_lossy(&status.stderr)
        );
        let port = free_port()?;
        let mut pg = Postgres {
            running: false,
            dir,
            bin,
            port,
            url: format!("postgres://wasmroom@127.0.0.1:{port}/wasmroom"),
        };
        pg.start_server()?;
        let status = Command::new(pg.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "wasmroom",
                "wasmroom",
            ])
            .status()
            .context("cannot run createdb")?;
        anyhow::ensure!(status.success(), "createdb failed ({status})");
        Ok(pg)
    }

    /// Starts the server (again) on its port and data (`pg_ctl start`, which returns
    /// once it accepts connections).
    pub fn start_server(&mut self) -> anyhow::Result<()> {
        let data = self.dir.path().join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let out = run_as(
            is_root(),
            &self.bin.join("pg_ctl"),
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                data.to_str().context("temp path")?,
                "-l",
                log.to_str().context("temp path")?,
                "-o",
                &options,
            ],
        )
        .stdin(Stdio::null())
        .output()
        .context("cannot run pg_ctl start")?;
        anyhow::ensure!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("PostgreSQL did not start on port {}", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: clients are disconnected), keeping its data.
    pub fn stop_server(&mut self) -> anyhow::Result<()> {
        if std::mem::take(&mut self.running) {
            let data = self.dir.path().join("data");
            let out = run_as(
                is_root(),
                &self.bin.join("pg_ctl"),
                &[
                    "stop",
                    "-w",
                    "-m",
                    "fast",
                    "-D",
                    data.to_str().context("temp path")?,
                ],
            )
            .stdin(Stdio::null())
            .output()
            .context("cannot run pg_ctl stop")?;
            anyhow::ensure!(
                out.status.success(),
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Where the server listens (for a proxy in front of it).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The URL of the same database reached through `addr` (a proxy in front of it).
    pub fn url_through(&self, addr: SocketAddr) -> String {
        format!("postgres://wasmroom@{addr}/wasmroom")
    }

    /// Runs SQL with `psql` and returns its unaligned output.
    pub fn sql(&self, query: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "wasmroom",
                "-d",
                "wasmroom",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                query,
            ])
            .output()
            .context("cannot run psql")?;
        anyhow::ensure!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop_server();
    }
}

/// Debian's server binaries (`/usr/lib/postgresql/VERSION/bin`), newest first.
fn binaries() -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists() && p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().context(
        "PostgreSQL's server is not installed: `cargo xtask test` installs Debian's postgresql \
         package (or run: apt-get install postgresql)",
    )
}

fn is_root() -> bool {
    // The effective user is root when /proc says uid 0.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn ensure_service_user() -> anyhow::Result<()> {
    let exists = Command::new("id")
        .arg(SERVICE_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    if !exists {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ])
            .status()
            .context("cannot run useradd")?;
        // Another test may have created it meanwhile.
        let now = Command::new("id")
            .arg(SERVICE_USER)
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success() || now.success(),
            "useradd {SERVICE_USER} failed"
        );
    }
    Ok(())
}

fn chown(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("chown")
        .arg(format!("{SERVICE_USER}:"))
        .arg(path)
        .status()?;
    anyhow::ensure!(status.success(), "chown {} failed", path.display());
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A command, run as the service user when the tests run as root.
fn run_as(as_root: bool, program: &Path, args: &[&str]) -> Command {
    if as_root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", SERVICE_USER, "--"]).arg(program).args(args);
        cmd
    } else {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
