//! The data of one document's store: WASI's context, the memory caps (metered for the
//! metrics), the effects of the current call, the connections the guest may address,
//! its pending timers, and what each call starts from (its frozen clock, its random
//! stream, its copy of the settings).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message as Frame;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtx;

use crate::guest::bindings::{HostError, Message};
use crate::guest::clock::{CallClock, FrozenTime};
use crate::guest::context::{DocumentSettings, PluginSettings};
use crate::guest::output::{GuestOutput, Stream};
use crate::guest::random::{CallStream, Seed};
use crate::guest::timers::TimerTable;
use crate::guest::wasi::Sources;

/// What a guest call starts from, chosen by the document before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallStart {
    /// The document's clock `D` for the whole call, in Unix milliseconds.
    pub clock_ms: u64,
    /// The random stream the call draws from ([`crate::guest::random::stream_id`]).
    pub stream: u64,
}

/// Something a guest asked for during a call, applied by the document afterwards.
#[derive(Debug)]
pub enum Effect {
    /// Queue a frame for one connection.
    Send(u64, Frame),
    /// Queue one shared frame for every connection except some.
    Broadcast(Frame, Vec<u64>),
    /// Close a connection.
    Close(u64, u16, String),
}

/// The data of one document's store.
pub struct GuestState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// Memory and instance caps, checked by wasmtime.
    pub limits: MeteredLimits,
    /// Effects of the current call, in call order.
    pub effects: Vec<Effect>,
    /// Open connections, oldest first (ids only grow).
    pub connections: BTreeSet<u64>,
    /// Connections the guest (or the host) has started to close.
    pub closing: BTreeSet<u64>,
    /// Pending timers.
    pub timers: TimerTable,
    /// Whether the current call set or cancelled a timer.
    pub timers_changed: bool,
    /// The verified token claims (JSON) of connections that presented one.
    pub claims: HashMap<u64, Arc<str>>,
    /// The document's copy of the plugin's settings.
    pub(crate) settings: DocumentSettings,
    /// The current call's clock, read by `now-ms` and the WASI clocks.
    pub(crate) clock: CallClock,
    /// The current call's random stream.
    stream: CallStream,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_timers: u32,
    /// `plugin/document`, for log lines.
    pub(crate) tag: Arc<str>,
    /// The guest's stdout and stderr: logged, and the current call's last stderr lines
    /// kept.
    stdout: Arc<GuestOutput>,
    stderr: Arc<GuestOutput>,
    /// A replay is running: what the guest logs was logged when the inputs were new.
    pub(crate) muted: bool,
}

/// The store's limits, also counting the linear memory the instance holds (for the
/// metrics and the admin API; wasmtime asks the limiter before every memory grows).
#[derive(Debug)]
pub struct MeteredLimits {
    limits: StoreLimits,
    /// Linear memory of all the instance's memories, in bytes.
    pub memory_bytes: u64,
}

impl wasmtime::ResourceLimiter for MeteredLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_bytes += desired.saturating_sub(current) as u64;
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl std::fmt::Debug for GuestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestState")
            .field("tag", &self.tag)
            .field("connections", &self.connections.len())
            .field("timers", &self.timers.len())
            .finish_non_exhaustive()
    }
}

impl GuestState {
    /// State for a new document whose random seed is `seed`. WASI is linked but grants
    /// nothing: no files, network, environment or arguments; stdout and stderr go to the
    /// log; time and random come from the document.
    pub fn new(
        tag: Arc<str>,
        max_memory_bytes: usize,
        max_message_bytes: usize,
        max_timers: u32,
        settings: Arc<PluginSettings>,
        seed: &Seed,
    ) -> GuestState {
        let stdout = GuestOutput::new(tag.clone(), Stream::Stdout);
        let stderr = GuestOutput::new(tag.clone(), Stream::Stderr);
        let clock = CallClock::default();
        let stream = CallStream::default();
        let sources = Sources {
            clock: &clock,
            seed,
            streams: &stream,
        };
        GuestState {
            wasi: crate::guest::wasi::context(&stdout, &stderr, sources),
            table: ResourceTable::new(),
            limits: MeteredLimits {
                limits: StoreLimitsBuilder::new()
                    .memory_size(max_memory_bytes)
                    .instances(CORE_INSTANCE_LIMIT)
                    .trap_on_grow_failure(true)
                    .build(),
                memory_bytes: 0,
            },
            effects: Vec::new(),
            connections: BTreeSet::new(),
            closing: BTreeSet::new(),
            timers: TimerTable::default(),
            timers_changed: false,
            claims: HashMap::new(),
            settings: DocumentSettings::new(settings),
            clock,
            stream,
            max_message_bytes,
            max_timers,
            tag,
            stdout,
            stderr,
            muted: false,
        }
    }

    /// Mutes (or unmutes) what the guest logs and writes: a replay makes calls that
    /// were logged once already.
    pub fn mute(&mut self, muted: bool) {
        self.muted = muted;
        self.stdout.mute(muted);
        self.stderr.mute(muted);
    }

    /// A guest call begins from `start`: its clock and random stream are set, the
    /// settings taken again if they changed, and what the guest writes to stderr from
    /// now on is what a trap of this call reports.
    pub fn begin_call(&mut self, start: CallStart) {
        self.clock.set(start.clock_ms);
        self.stream.begin(start.stream);
        self.settings.refresh();
        self.stderr.begin_call();
    }

    /// The lines the guest wrote to stderr during the current call (bounded, newest
    /// last; see [`GuestOutput::tail`]).
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr.tail()
    }

    pub(crate) fn check_size(&self, msg: &Message) -> Result<(), HostError> {
        let len = match msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        };
        if len > self.max_message_bytes {
            return Err(HostError::TooLarge(self.max_message_bytes as u64));
        }
        Ok(())
    }

    pub(crate) fn check_open(&self, connection: u64) -> Result<(), HostError> {
        if !self.connections.contains(&connection) {
            return Err(HostError::UnknownConnection);
        }
        if self.closing.contains(&connection) {
            return Err(HostError::Closing);
        }
        Ok(())
    }
}

impl FrozenTime for GuestState {
    fn frozen_time(&mut self) -> (&CallClock, &mut ResourceTable) {
        (&self.clock, &mut self.table)
    }
}

/// Core instances one component may create; generous for Rust, C, JS and Python guests.
const CORE_INSTANCE_LIMIT: usize = 64;
