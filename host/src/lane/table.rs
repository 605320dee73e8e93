//! What the rest of the process knows of the lanes: where each listens, the channel that
//! reaches it (for [`LaneCommand`]s), which one owns a document, and whether they are all
//! up.
//!
//! This is the only way into a lane from outside its thread: the admin API, the reloader
//! and the other lanes send commands; nothing reaches into a lane's state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc::UnboundedSender;

use crate::lane::commands::LaneCommand;
use crate::routing::{Ring, document_key};

/// One lane as the other lanes see it.
#[derive(Debug)]
pub struct LaneAddress {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name in nginx's upstream (`HOST:PORT`).
    pub name: String,
    /// Where to send it work (hand-overs, migrations).
    pub commands: UnboundedSender<LaneCommand>,
}

/// Every lane of the process and the ring that assigns documents to them.
#[derive(Debug)]
pub struct Lanes {
    lanes: Vec<LaneAddress>,
    ring: Ring,
}

impl Lanes {
    /// The lanes, in port order.
    pub fn new(lanes: Vec<LaneAddress>) -> Lanes {
        let names: Vec<&str> = lanes.iter().map(|l| l.name.as_str()).collect();
        let ring = Ring::new(&names);
        Lanes { lanes, ring }
    }

    /// The lane that owns `document` of `plugin`.
    pub fn owner(&self, plugin: &str, document: &str) -> usize {
        if self.lanes.len() == 1 {
            return 0;
        }
        self.ring.owner(document_key(plugin, document).as_bytes())
    }

    /// Lane `index`.
    pub fn get(&self, index: usize) -> &LaneAddress {
        &self.lanes[index]
    }

    /// All lanes.
    pub fn iter(&self) -> impl Iterator<Item = &LaneAddress> {
        self.lanes.iter()
    }

    /// How many lanes there are.
    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    /// Whether there are none (never, for a started server).
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Sends `command` to every lane (those that are stopping drop it).
    pub fn broadcast(&self, command: impl Fn() -> LaneCommand) {
        for lane in &self.lanes {
            let _ = lane.commands.send(command());
        }
    }
}

/// Whether the process is ready to serve: not shutting down, and no lane has stopped on
/// its own. Read by `/readyz` on the lanes and on the admin port.
#[derive(Debug, Default)]
pub struct Health {
    stopping: AtomicBool,
    lane_down: AtomicBool,
}

impl Health {
    /// Shutdown has begun: readiness turns false so load balancers stop sending.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// A lane stopped on its own (it failed): the process is not ready.
    pub fn lane_failed(&self) {
        self.lane_down.store(true, Ordering::Relaxed);
    }

    /// Whether every lane serves and shutdown has not begun.
    pub fn ready(&self) -> bool {
        !self.is_stopping() && !self.lane_down.load(Ordering::Relaxed)
    }
}
