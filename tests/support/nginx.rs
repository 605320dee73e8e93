//! A real nginx for the tests: Debian's, started as an unprivileged process with its own
//! prefix, on a config printed by `wasmroom nginx-config`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use super::{PATIENCE, Server};

/// An nginx master process serving one generated config.
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

fn nginx_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NGINX") {
        return Ok(path.into());
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into()])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file());
    on_path.context("nginx is not installed: `apt-get install nginx` (.ci/run does this)")
}

impl Nginx {
    /// Starts nginx in front of every lane of `server` with `wasmroom nginx-config ARGS`.
    pub fn start(server: &Server, args: &[&str]) -> anyhow::Result<Nginx> {
        let lanes: Vec<String> = server.addrs.iter().map(|a| a.to_string()).collect();
        Nginx::start_for(&lanes, args)
    }

    /// Starts nginx in front of `lanes` (`HOST:PORT` each, of one or several hosts).
    pub fn start_for(lanes: &[String], args: &[&str]) -> anyhow::Result<Nginx> {
        // nginx cannot take a listening socket from us, so its port is bound and released
        // first; a parallel test may take it in between. nginx then fails to bind and exits,
        // and another port is tried.
        for _ in 0..5 {
            if let Some(nginx) = Nginx::start_on_a_free_port(lanes, args)? {
                return Ok(nginx);
            }
        }
        bail!("nginx could not bind a free port in 5 attempts")
    }

    /// Starts nginx; `None` if its port was taken before nginx could bind it.
    fn start_on_a_free_port(lanes: &[String], args: &[&str]) -> anyhow::Result<Option<Nginx>> {
        let binary = nginx_binary()?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmroom"));
        cmd.arg("nginx-config")
            .args(["--listen", &addr.to_string()])
            .args(args);
        for lane in lanes {
            cmd.args(["--upstream", lane]);
        }
        let out = cmd.output()?;
        ensure!(
            out.status.success(),
            "nginx-config failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, &out.stdout)?;
        let mut child = Command::new(&binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-e", "stderr", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[nginx] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let mut nginx = Nginx {
            child,
            dir,
            addr,
            log,
        };
        // Its own "start worker process" line, not just a connectable port: whoever took the
        // port would accept connections too.
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = nginx.child.try_wait()? {
                if nginx.log_contains("Address already in use") {
                    return Ok(None);
                }
                bail!("nginx exited at start ({status})");
            }
            if nginx.log_contains("start worker process")
                && std::net::TcpStream::connect(nginx.addr).is_ok()
            {
                return Ok(Some(nginx));
            }
            ensure!(Instant::now() < deadline, "nginx: not listening in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn wait_until(&self, done: impl Fn(&Nginx) -> bool, what: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if done(self) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nginx: not {what} in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// `nginx -s reload`, then waits until the old workers were told to quit.
    pub fn reload(&self) -> anyhow::Result<()> {
        let status = Command::new(nginx_binary()?)
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"))
            .args(["-e", "stderr", "-s", "reload"])
            .status()?;
        ensure!(status.success(), "nginx -s reload failed");
        self.wait_until(
            |n| n.log_contains("gracefully shutting down"),
            "reloaded (old workers quitting)",
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Not if it has exited (and been reaped): its pid may belong to someone else now.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SIGTERM: the master stops its workers too (SIGKILL would orphan them).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
