//! How many documents one client address may open: a token bucket per address (IPv6 by
//! its /64, which one subscriber usually holds whole), so that one client cannot hold
//! the instance pool full by opening document after document. Only opening counts:
//! joining or reading a document that is already live is free.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::Limits;
use crate::net::token_bucket::{TokenBucket, address_key};

/// Addresses tracked at most; beyond, buckets that have refilled are forgotten first, and
/// while every tracked address is busy new addresses are refused (memory stays bounded
/// even against a client with a whole IPv6 prefix of addresses).
const MAX_TRACKED: usize = 65_536;

/// The buckets of one lane.
#[derive(Debug)]
pub struct OpenLimiter {
    rate: f64,
    burst: f64,
    buckets: RefCell<HashMap<IpAddr, TokenBucket>>,
}

impl OpenLimiter {
    /// Buckets with `open_rate_per_address` and `open_burst_per_address`.
    pub fn new(limits: &Limits) -> OpenLimiter {
        OpenLimiter {
            rate: f64::from(limits.open_rate_per_address),
            burst: f64::from(limits.open_burst_per_address),
            buckets: RefCell::new(HashMap::new()),
        }
    }

    /// Takes one open for `client` at `now`, or says how long until one is available.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = address_key(client);
        let mut buckets = self.buckets.borrow_mut();
        if !buckets.contains_key(&key) && buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, b| !b.is_full(now));
            if buckets.len() >= MAX_TRACKED {
                return Err(Duration::from_secs(1));
            }
        }
        buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(self.rate, self.burst, now))
            .take(1.0, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, burst: u32) -> OpenLimiter {
        OpenLimiter::new(&Limits {
            open_rate_per_address: rate,
            open_burst_per_address: burst,
            ..Limits::default()
        })
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = limiter(10, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take(a, t0).is_ok());
        }
        let wait = l.take(a, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Another address has its own bucket.
        assert!(l.take("192.0.2.2".parse().unwrap(), t0).is_ok());
        // A tenth of a second later one more open is allowed.
        assert!(l.take(a, t0 + Duration::from_millis(100)).is_ok());
        assert!(l.take(a, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let l = limiter(1, 1);
        let t0 = Instant::now();
        assert!(l.take("2001:db8::1".parse().unwrap(), t0).is_ok());
        assert!(l.take("2001:db8::ffff:2".parse().unwrap(), t0).is_err());
        assert!(l.take("2001:db8:0:1::1".parse().unwrap(), t0).is_ok());
    }
}
