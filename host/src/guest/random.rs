//! What a consumer draws at random (`wasi:random/random`, `insecure` and
//! `insecure-seed`): derived from the document's seed, never from the process.
//!
//! A document gets a 32-byte seed from the OS when it is first opened; the seed travels
//! with its snapshot. Each guest call draws from a ChaCha20 stream keyed by the seed
//! (secure) or by a key derived from it (insecure), the stream chosen by the host before
//! the call ([`stream_id`]: which input of the document the call is, and what for). The
//! same snapshot and the same calls therefore draw the same bytes, which a replay needs;
//! two documents draw different ones. Nothing is drawn or computed unless the guest asks.
//!
//! The seed is as secret as the store that keeps it: whoever reads a snapshot can
//! predict what the document's "secure" random gave.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chacha20::ChaCha20Rng;
use chacha20::rand_core::{SeedableRng, TryRng};
use sha2::{Digest, Sha256};
use wasmtime_wasi::WasiCtxBuilder;

/// A document's random seed.
pub type Seed = [u8; 32];

/// What a guest call that draws is for: part of its stream id, so that two calls between
/// the same two inputs of a document (an input and the snapshot after it) never draw the
/// same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An input of the document (`open` of a new document, a connection, a message, a
    /// departure, a timer, an HTTP request).
    Input = 0,
    /// `snapshot`.
    Snapshot = 1,
    /// The `on-request` the host makes for a `saved` webhook's export.
    Export = 2,
    /// `open` of a new plugin version (hot reload).
    ReloadOpen = 3,
    /// `restore` of a new plugin version (hot reload).
    ReloadRestore = 4,
    /// `open` of a document that has a snapshot (no input: the snapshot follows).
    Reopen = 5,
    /// `restore` of the snapshot a document opens from.
    Restore = 6,
}

/// The stream a call draws from: the number of the document's input it is (or follows),
/// and its purpose.
pub fn stream_id(input: u64, purpose: Purpose) -> u64 {
    (input << 3) | purpose as u64
}

/// A fresh seed from the OS, for a document opened for the first time.
pub fn fresh_seed() -> Result<Seed, getrandom::Error> {
    let mut seed = [0; 32];
    getrandom::fill(&mut seed)?;
    Ok(seed)
}

/// The stream the current call draws from, set by the host before each call and read by
/// the generators inside the store's WASI context.
#[derive(Debug, Clone, Default)]
pub struct CallStream(Arc<Streams>);

#[derive(Debug, Default)]
struct Streams {
    /// The current call's stream id.
    stream: AtomicU64,
    /// Bumped by every call, so that each call starts its stream from the beginning.
    call: AtomicU64,
}

impl CallStream {
    /// The call about to run draws from `stream`.
    pub fn begin(&self, stream: u64) {
        self.0.stream.store(stream, Ordering::Relaxed);
        self.0.call.fetch_add(1, Ordering::Relaxed);
    }
}

/// One generator (secure or insecure) of a store: ChaCha20 under its key, moved to the
/// current call's stream when the guest first draws in that call.
struct StreamRng {
    rng: ChaCha20Rng,
    streams: CallStream,
    /// The call whose stream `rng` is on.
    call: u64,
}

impl StreamRng {
    fn new(key: Seed, streams: &CallStream) -> StreamRng {
        StreamRng {
            rng: ChaCha20Rng::from_seed(key),
            streams: streams.clone(),
            call: 0,
        }
    }

    fn current(&mut self) -> &mut ChaCha20Rng {
        let call = self.streams.0.call.load(Ordering::Relaxed);
        if call != self.call {
            self.call = call;
            self.rng
                .set_stream(self.streams.0.stream.load(Ordering::Relaxed));
        }
        &mut self.rng
    }
}

impl TryRng for StreamRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        self.current().try_next_u32()
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.current().try_next_u64()
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
        self.current().try_fill_bytes(dest)
    }
}

/// A key for `purpose` derived from the document's seed.
fn derived(seed: &Seed, purpose: &str) -> Seed {
    Sha256::new()
        .chain_update(b"wasmroom:")
        .chain_update(purpose.as_bytes())
        .chain_update(seed)
        .finalize()
        .into()
}

/// Gives `builder` the document's generators: secure and insecure random from `seed`
/// on the streams of `streams`, and an insecure seed (hash-map keys) derived from it.
pub fn install(builder: &mut WasiCtxBuilder, seed: &Seed, streams: &CallStream) {
    let insecure_seed = derived(seed, "insecure-seed");
    builder
        .secure_random(StreamRng::new(*seed, streams))
        .insecure_random(StreamRng::new(derived(seed, "insecure"), streams))
        .insecure_random_seed(u128::from_le_bytes(
            insecure_seed[..16].try_into().expect("16 bytes"),
        ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(rng: &mut StreamRng) -> [u8; 16] {
        let mut bytes = [0; 16];
        rng.try_fill_bytes(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn each_call_draws_its_own_stream_from_the_start() {
        let streams = CallStream::default();
        let mut a = StreamRng::new([1; 32], &streams);
        streams.begin(stream_id(1, Purpose::Input));
        let first = draw(&mut a);
        assert_ne!(draw(&mut a), first, "a call's draws follow each other");
        streams.begin(stream_id(2, Purpose::Input));
        let second = draw(&mut a);
        assert_ne!(second, first);
        // The same stream again (a replay, another document from the same snapshot)
        // gives the same bytes, whatever was drawn before.
        streams.begin(stream_id(1, Purpose::Input));
        assert_eq!(draw(&mut a), first);
        let other = CallStream::default();
        let mut b = StreamRng::new([1; 32], &other);
        other.begin(stream_id(2, Purpose::Input));
        assert_eq!(draw(&mut b), second);
        // Another purpose after the same input, or another seed: other bytes.
        other.begin(stream_id(2, Purpose::Snapshot));
        assert_ne!(draw(&mut b), second);
        let mut c = StreamRng::new([2; 32], &streams);
        streams.begin(stream_id(1, Purpose::Input));
        assert_ne!(draw(&mut c), first);
        assert_ne!(derived(&[1; 32], "insecure"), [1; 32]);
    }
}
