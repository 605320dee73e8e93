//! Token buckets, the rate limiter every limit of the edge uses: a bucket refills at a
//! steady rate up to its capacity (the burst a quiet client may spend at once), and each
//! request takes what it costs. Also the key one client address is counted under.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How fast a bucket refills, in tokens per second, and up to how many (the burst a
/// quiet client may spend at once).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub capacity: f64,
}

impl From<(f64, f64)> for Rate {
    /// `(per_sec, capacity)`, as the configuration gives them.
    fn from((per_sec, capacity): (f64, f64)) -> Rate {
        Rate { per_sec, capacity }
    }
}

/// Tokens refilling at a [`Rate`]; starts full.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: Rate,
    tokens: TokenBuckets<1>,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(rate: f64, capacity: f64, now: Instant) -> TokenBucket {
        let rate = Rate::from((rate, capacity));
        TokenBucket {
            rate,
            tokens: TokenBuckets::full(&[rate], now),
        }
    }

    /// Takes `cost` tokens at `now`, or says how long until they would be there (the
    /// bucket is left as it was).
    pub fn take(&mut self, cost: f64, now: Instant) -> Result<(), Duration> {
        self.tokens.take(0, cost, &[self.rate], now)
    }

    /// Whether the bucket would be full at `now` (nothing to remember about its client).
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens.levels(&[self.rate], now)[0] >= self.rate.capacity
    }
}

/// `N` token buckets refilling on one clock, each at its own [`Rate`], which the caller
/// passes in rather than every bucket keeping it: a connection's rates are its plugin's
/// configuration, the same for all its connections, so each keeps only its levels and
/// one time (32 bytes for its two buckets instead of 80). Start full.
#[derive(Debug, Clone, Copy)]
pub struct TokenBuckets<const N: usize> {
    tokens: [f64; N],
    at: Instant,
}

impl<const N: usize> TokenBuckets<N> {
    /// Full buckets at `now`.
    pub fn full(rates: &[Rate; N], now: Instant) -> TokenBuckets<N> {
        TokenBuckets {
            tokens: rates.map(|rate| rate.capacity),
            at: now,
        }
    }

    /// Takes `cost` tokens from bucket `bucket` at `now`, or says how long until they
    /// would be there (that bucket is left as it was).
    pub fn take(
        &mut self,
        bucket: usize,
        cost: f64,
        rates: &[Rate; N],
        now: Instant,
    ) -> Result<(), Duration> {
        // Refilling every bucket to `now` changes none of their levels at any later time
        // (each is the lesser of its capacity and a straight line), so they share `at`.
        self.tokens = self.levels(rates, now);
        self.at = now.max(self.at);
        let tokens = &mut self.tokens[bucket];
        if *tokens >= cost {
            *tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (cost - *tokens) / rates[bucket].per_sec,
            ))
        }
    }

    fn levels(&self, rates: &[Rate; N], now: Instant) -> [f64; N] {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let mut levels = self.tokens;
        for (level, rate) in levels.iter_mut().zip(rates) {
            *level = (*level + elapsed * rate.per_sec).min(rate.capacity);
        }
        levels
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
    fn buckets_on_one_clock_refill_as_buckets_of_their_own() {
        let rates = [Rate::from((10.0, 3.0)), Rate::from((100.0, 50.0))];
        let t0 = Instant::now();
        let mut pair = TokenBuckets::full(&rates, t0);
        let mut alone = [
            TokenBucket::full(10.0, 3.0, t0),
            TokenBucket::full(100.0, 50.0, t0),
        ];
        // Takes from one bucket at times the other is not touched: both agree with a
        // bucket of their own every time.
        let takes = [
            (0, 1.0, 0),
            (1, 40.0, 0),
            (0, 2.0, 10),
            (0, 1.0, 20),
            (1, 20.0, 150),
        ];
        for (bucket, cost, ms) in takes {
            let now = t0 + Duration::from_millis(ms);
            assert_eq!(
                pair.take(bucket, cost, &rates, now).is_ok(),
                alone[bucket].take(cost, now).is_ok(),
                "{cost} from {bucket} at {ms} ms"
            );
        }
        let wait = pair.take(0, 3.0, &rates, t0 + Duration::from_millis(150));
        let expected = alone[0].take(3.0, t0 + Duration::from_millis(150));
        assert_eq!(wait, expected);
        assert!(wait.is_err());
        assert!(std::mem::size_of::<TokenBuckets<2>>() <= 32);
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
