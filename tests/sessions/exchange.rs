//! Drives tests/sessions/exchange.mjs: two `clients/js` rooms exchanging numbered messages
//! through the probe's `relay`, their progress read line by line so that a test can cut,
//! refuse or reload at chosen points, and their result checked.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use crate::support::PATIENCE;

/// What the Node script reported so far.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Numbered messages received, both rooms together.
    pub(crate) progress: usize,
    /// The other messages each room received (what the consumer broadcast itself).
    pub(crate) others: [Vec<String>; 2],
    /// The final report, once printed.
    pub(crate) result: Option<serde_json::Value>,
}

/// A running exchange; the Node process is killed when this is dropped.
pub(crate) struct Exchange {
    node: Child,
    lines: mpsc::UnboundedReceiver<std::io::Result<String>>,
    pub(crate) seen: Seen,
}

impl Exchange {
    /// Starts `count` messages from each room at `url` (the result also waits for
    /// `others` other messages in each room).
    pub(crate) fn start(url: &str, count: usize, others: usize) -> anyhow::Result<Exchange> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        anyhow::ensure!(
            root.join("clients/js/dist/index.js").exists()
                && root.join("tests/sessions/node_modules/ws").exists(),
            "clients/js is not built or tests/sessions not installed: run `cargo xtask test`"
        );
        let mut node = Command::new("node")
            .arg(root.join("tests/sessions/exchange.mjs"))
            .args([url, &count.to_string(), &others.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot run `node` (Node.js 20 or later must be on PATH)")?;
        let stdout = node.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Exchange {
            node,
            lines,
            seen: Seen::default(),
        })
    }

    /// Reads the script's lines until `done` holds of what it reported.
    pub(crate) async fn until(
        &mut self,
        what: &str,
        done: impl Fn(&Seen) -> bool,
    ) -> anyhow::Result<()> {
        while !done(&self.seen) {
            anyhow::ensure!(
                self.seen.result.is_none(),
                "the exchange ended before {what}: {:?}",
                self.seen
            );
            let line = tokio::time::timeout(PATIENCE, self.lines.recv())
                .await
                .with_context(|| {
                    format!(
                        "no progress in {PATIENCE:?} while waiting for {what}: {:?}",
                        self.seen
                    )
                })?
                .with_context(|| {
                    format!("the exchange stopped before {what}: {:?}", self.seen)
                })??;
            if let Some(n) = line.strip_prefix("progress ") {
                self.seen.progress = n.parse()?;
            } else if let Some(other) = line.strip_prefix("other ") {
                let (room, text) = other
                    .split_once(' ')
                    .context("an other line without text")?;
                self.seen.others[room.parse::<usize>()?].push(text.to_owned());
            } else if let Some(result) = line.strip_prefix("result ") {
                self.seen.result = Some(serde_json::from_str(result)?);
            } else {
                bail!("unexpected line from exchange.mjs: {line:?}");
            }
        }
        Ok(())
    }

    /// Waits for the result and checks it: every message was acknowledged and arrived
    /// exactly once, in order, and no session was lost. Returns the result.
    pub(crate) async fn finish(mut self, count: usize) -> anyhow::Result<serde_json::Value> {
        self.until("the result", |s| s.result.is_some()).await?;
        let result = self.seen.result.take().expect("waited for");
        let _ = self.node.wait();
        assert_eq!(result["acked"], serde_json::json!([count, count]));
        for (room, from) in [(0, "b"), (1, "a")] {
            let expected: Vec<String> = (1..=count).map(|k| format!("{from}:{k}")).collect();
            assert_eq!(
                result["received"][room],
                serde_json::json!(expected),
                "what room {room} received"
            );
        }
        assert_eq!(result["resets"], 0, "no session was lost");
        Ok(result)
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let _ = self.node.kill();
        let _ = self.node.wait();
    }
}

/// What the probe relays to both rooms to end an exchange started with one "other"
/// message to wait for: it then cannot end before what the test does first (a move).
#[allow(dead_code)] // tests/sessions.rs drives exchanges that end on their own
pub(crate) const DONE: &str = "relay done";

/// Sends [`DONE`] over a plain socket at `url` (retrying while the document moves).
#[allow(dead_code)]
pub(crate) async fn say_done(url: &str) -> anyhow::Result<()> {
    let mut ws = crate::support::cluster::connect_retrying(url).await?;
    crate::support::send_text(&mut ws, DONE).await?;
    ws.close(None).await?;
    Ok(())
}
