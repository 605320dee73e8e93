//! What the rest of the process knows of the lanes: where each listens, the channel that
//! reaches it (for [`LaneCommand`]s), which one owns a document, and whether they are all
//! up.
//!
//! This is the only way into a lane from outside its thread: the admin API, the reloader
//! and the other lanes send commands; nothing reaches into a lane's state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedSender;

use crate::lane::commands::LaneCommand;
use crate::routing::{Ring, document_key};
use crate::store::LeaseClock;

/// One lane as the other lanes see it.
#[derive(Debug)]
pub struct LaneAddress {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name in nginx's upstream (`HOST:PORT`).
    pub name: String,
    /// Where to send it work (hand-overs, migrations).
    pub commands: UnboundedSender<LaneCommand>,
    /// Connections it serves, plus those on their way to it: a hand-over counts from the
    /// moment it is sent, so the command channel holds at most the lane's cap.
    connections: AtomicUsize,
}

impl LaneAddress {
    /// A lane listening on `addr`, named `name` in nginx's upstream.
    pub fn new(addr: SocketAddr, name: String, commands: UnboundedSender<LaneCommand>) -> Self {
        LaneAddress {
            addr,
            name,
            commands,
            connections: AtomicUsize::new(0),
        }
    }

    /// Counts one more connection unless the lane has `cap` already.
    pub fn try_admit(&self, cap: usize) -> bool {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts a connection out.
    pub fn release(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Connections counted now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }
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
/// its own. Read by `/readyz` on the lanes and on the admin port. A lane that fails
/// (a panic in its own code) reports it here; the server then stops the whole process,
/// so that a supervisor restarts it instead of leaving it half alive.
#[derive(Debug, Default)]
pub struct Health {
    stopping: AtomicBool,
    lane_down: AtomicBool,
    fatal: Mutex<Option<String>>,
    failed: Notify,
    /// With a shared store: not ready while this host's lease does not hold.
    leases: Option<Arc<LeaseClock>>,
}

impl Health {
    /// Readiness that also requires `leases` to hold, when there are leases.
    pub fn new(leases: Option<Arc<LeaseClock>>) -> Health {
        Health {
            leases,
            ..Health::default()
        }
    }

    /// Shutdown has begun: readiness turns false so load balancers stop sending.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// A lane failed (`why` says how): the process is not ready, and the server stops it.
    /// The first failure is the one reported.
    pub fn fail(&self, why: String) {
        self.lane_down.store(true, Ordering::Relaxed);
        let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if fatal.is_none() {
            *fatal = Some(why);
        }
        drop(fatal);
        self.failed.notify_waiters();
        self.failed.notify_one();
    }

    /// Waits until a lane fails; returns why.
    pub async fn failure(&self) -> String {
        loop {
            let notified = self.failed.notified();
            if let Some(why) = self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                return why;
            }
            notified.await;
        }
    }

    /// Whether every lane serves, shutdown has not begun and (with a shared store) this
    /// host's lease holds.
    pub fn ready(&self) -> bool {
        !self.is_stopping()
            && !self.lane_down.load(Ordering::Relaxed)
            && self.leases.as_ref().is_none_or(|clock| clock.valid_now())
    }
}
