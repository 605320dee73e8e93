//! How many WebSockets one client address may hold at once, across every lane of the
//! process (`max_connections_per_address`): without it one client could take the whole
//! connection capacity. IPv6 addresses count by their /64, as the open limiter does.
//!
//! One mutex for the process, taken twice per WebSocket (when it opens and when it ends),
//! never on the message path.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use crate::net::token_bucket::address_key;

/// Open WebSockets per client address.
#[derive(Debug)]
pub struct AddressLimit {
    max: u32,
    open: Mutex<HashMap<Ipv6Addr, u32>>,
}

/// One counted WebSocket; the count drops with it. 24 bytes: every idle connection's
/// task holds one.
#[derive(Debug)]
pub struct AddressSlot {
    limit: Arc<AddressLimit>,
    key: Ipv6Addr,
}

/// The key `client` is counted under ([`address_key`]) in 16 bytes, an IPv4 address
/// IPv4-mapped (an `IpAddr` takes 17, so a slot would take 32).
fn compact_key(client: IpAddr) -> Ipv6Addr {
    match address_key(client) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

impl AddressLimit {
    /// At most `max` WebSockets per address.
    pub fn new(max: u32) -> Arc<AddressLimit> {
        Arc::new(AddressLimit {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more WebSocket of `client`, or `None` when it holds the maximum.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Option<AddressSlot> {
        let key = compact_key(client);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            limit: self.clone(),
            key,
        })
    }

    /// WebSockets `client` holds now.
    pub fn count(&self, client: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&compact_key(client)).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            // Forgotten at zero: the map holds only addresses with open sockets.
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_frees_on_drop() {
        let limit = AddressLimit::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = limit.admit(a).unwrap();
        let _second = limit.admit(a).unwrap();
        assert!(limit.admit(a).is_none());
        assert!(limit.admit("192.0.2.2".parse().unwrap()).is_some());
        drop(first);
        assert_eq!(limit.count(a), 1);
        assert!(limit.admit(a).is_some());
        // The same /64 counts as one client.
        let v6 = AddressLimit::new(1);
        let _held = v6.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(v6.admit("2001:db8::2".parse().unwrap()).is_none());
        drop(_held);
        assert!(v6.open.lock().unwrap().is_empty());
        // An IPv4 address and its IPv4-mapped IPv6 form are one client.
        let _v4 = v6.admit("192.0.2.9".parse().unwrap()).unwrap();
        assert!(v6.admit("::ffff:192.0.2.9".parse().unwrap()).is_none());
        assert!(std::mem::size_of::<AddressSlot>() <= 24);
    }
}
