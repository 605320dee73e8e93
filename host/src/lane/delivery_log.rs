//! For the fault-injection tests only: a line per message a lane applies, so that a
//! checker outside the process can show that no two hosts ever applied messages of one
//! document at overlapping times (`WASMROOM_TEST_DELIVERY_LOG=FILE`; debug builds only).
//!
//! Each line is `UNIX_MICROS HOST HOLDER EPOCH PLUGIN/DOCUMENT`, written with one
//! `write` to a file opened for appending, so lines of several lanes and processes never
//! interleave and a `kill -9` loses none that a message was applied after.

use std::fs::File;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::store::Lease;

/// Where applied messages are recorded, if the tests asked for it.
#[derive(Debug)]
pub struct DeliveryLog {
    file: File,
    host: String,
}

impl DeliveryLog {
    /// The log the environment names (debug builds only), for host `host`.
    pub fn from_env(host: &str) -> Option<DeliveryLog> {
        let path = cfg!(debug_assertions)
            .then(|| std::env::var_os("WASMROOM_TEST_DELIVERY_LOG"))
            .flatten()?;
        match File::options().append(true).create(true).open(&path) {
            Ok(file) => Some(DeliveryLog {
                file,
                host: host.to_owned(),
            }),
            Err(e) => {
                tracing::error!("cannot open the delivery log {}: {e}", path.display());
                None
            }
        }
    }

    /// Records that a message of `plugin/document`, held under `lease`, was applied now.
    pub fn applied(&self, lease: Lease, plugin: &str, document: &str) {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let line = format!(
            "{micros} {} {} {} {plugin}/{document}\n",
            self.host, lease.holder, lease.epoch
        );
        // One write: appends of up to a page are not interleaved with other writers'.
        let _ = (&self.file).write_all(line.as_bytes());
    }
}
