//! Token buckets, the rate limiter every limit of the edge uses: a bucket refills at a
//! steady rate up to its capacity (the burst a quiet client may spend at once), and each
//! request takes what it costs. Also the key one client address is counted under.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Tokens refilling at `rate` per second up to `capacity`; starts full.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(rate: f64, capacity: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            at: now,
        }
    }

    /// Takes `cost` tokens at `now`, or says how long until they would be there (the
    /// bucket is left as it was).
    pub fn take(&mut self, cost: f64, now: Instant) -> Result<(), Duration> {
        self.tokens = self.level(now);
        self.at = now.max(self.at);
        if self.tokens >= cost {
            self.tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((cost - self.tokens) / self.rate))
        }
    }

    /// Whether the bucket would be full at `now` (nothing to remember about its client).
    pub fn is_full(&self, now: Instant) -> bool {
        self.level(now) >= self.capacity
    }

    fn level(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.rate).min(self.capacity)
    }
}

/// The key a client address is counted under: IPv4 addresses alone (IPv4-mapped IPv6
/// too), IPv6 addresses by their /64, which one subscriber usually holds whole.
pub fn address_key(ip: IpAddr) -> IpAddr {
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

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(10.0, 3.0, t0);
        for _ in 0..3 {
            assert!(b.take(1.0, t0).is_ok());
        }
        let wait = b.take(1.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert!(b.take(1.0, t0 + Duration::from_millis(100)).is_ok());
        assert!(!b.is_full(t0 + Duration::from_millis(100)));
        assert!(b.is_full(t0 + Duration::from_secs(1)));
        // A cost larger than what is there leaves the bucket as it was.
        let mut b = TokenBucket::full(10.0, 5.0, t0);
        assert!(b.take(6.0, t0).is_err());
        assert!(b.take(5.0, t0).is_ok());
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
