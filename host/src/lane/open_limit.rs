//! How many documents one client address may open: a token bucket per address (IPv6 by
//! its /64, which one subscriber usually holds whole), so that one client cannot hold
//! the instance pool full by opening document after document. Only opening counts:
//! joining or reading a document that is already live is free.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::Limits;

/// Addresses tracked at most; beyond, buckets that have refilled are forgotten first, and
/// while every tracked address is busy new addresses are refused (memory stays bounded
/// even against a client with a whole IPv6 prefix of addresses).
const MAX_TRACKED: usize = 65_536;

/// The buckets of one lane.
#[derive(Debug)]
pub struct OpenLimiter {
    rate: f64,
    burst: f64,
    buckets: RefCell<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
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
        let key = bucket_key(client);
        let mut buckets = self.buckets.borrow_mut();
        if !buckets.contains_key(&key) && buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, b| self.refilled(*b, now) < self.burst);
            if buckets.len() >= MAX_TRACKED {
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.refilled(*bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.rate).min(self.burst)
    }
}

/// IPv4 addresses count alone; IPv6 addresses by their /64.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
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
