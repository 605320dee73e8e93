//! nginx's consistent-hash ring: which of a list of servers owns a key.
//!
//! Every `(plugin, document)` has exactly one owner lane in the process. The owner is the
//! lane that nginx's `hash $document consistent` would pick (its ketama ring over the
//! upstream's `server host:port` lines), with `$document` = `{plugin}/{document id}`,
//! the id percent-decoded. So with hash routing nginx sends every socket straight to its
//! owner; with any other routing the lane that accepts a misrouted connection hands the
//! socket itself to the owner (or refuses it with 421).
//!
//! The ring, as nginx builds it (`ngx_http_upstream_init_chash`): each server, named
//! `HOST:PORT`, gets 160 points; point `j` is `crc32(HOST \0 PORT prev)` where `prev` is
//! point `j-1` as four little-endian bytes (zero for the first). A key belongs to the first
//! point at or after `crc32(key)`, wrapping around. Because the owner is a property of the
//! ring, a process that serves only some of nginx's servers still agrees with nginx about
//! every document nginx sends it.

/// Points per server on the ring (nginx: 160 per unit of weight).
const POINTS_PER_SERVER: usize = 160;

/// nginx's consistent-hash ring over a list of servers.
#[derive(Debug, Clone)]
pub struct Ring {
    /// (point, server index), sorted by point.
    points: Vec<(u32, usize)>,
}

impl Ring {
    /// The ring over `servers`, each named as in nginx's `server` line (`127.0.0.1:8000`).
    pub fn new<S: AsRef<str>>(servers: &[S]) -> Ring {
        let mut points = Vec::with_capacity(servers.len() * POINTS_PER_SERVER);
        for (index, server) in servers.iter().enumerate() {
            let name = server.as_ref();
            // As nginx splits it: the digits after the last ':' are the port.
            let (host, port) = match name.rsplit_once(':') {
                Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (host, port),
                _ => (name, ""),
            };
            let mut base = crc32fast::Hasher::new();
            base.update(host.as_bytes());
            base.update(&[0]);
            base.update(port.as_bytes());
            let mut prev = 0u32;
            for _ in 0..POINTS_PER_SERVER {
                let mut h = base.clone();
                h.update(&prev.to_le_bytes());
                prev = h.finalize();
                points.push((prev, index));
            }
        }
        points.sort_by_key(|&(point, _)| point);
        // nginx keeps one server per point value.
        points.dedup_by_key(|&mut (point, _)| point);
        Ring { points }
    }

    /// The index of the server that owns `key`.
    pub fn owner(&self, key: &[u8]) -> usize {
        let hash = crc32fast::hash(key);
        let at = self.points.partition_point(|&(point, _)| point < hash);
        self.points[at % self.points.len()].1
    }
}

/// The nginx name of a lane: `HOST:PORT`, IPv6 hosts in brackets.
pub fn server_name(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The key a document is hashed by, the same string nginx's `$wasmroom_document` holds.
pub fn document_key(plugin: &str, document: &str) -> String {
    format!("{plugin}/{document}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ports: std::ops::Range<u16>) -> Vec<String> {
        ports.map(|p| server_name("127.0.0.1", p)).collect()
    }

    #[test]
    fn points_follow_nginx_construction() {
        let ring = Ring::new(&["10.0.0.1:8000"]);
        assert_eq!(ring.points.len(), POINTS_PER_SERVER);
        // The first point by hand: crc32("10.0.0.1" \0 "8000" 00 00 00 00).
        let first = crc32fast::hash(b"10.0.0.1\x008000\x00\x00\x00\x00");
        assert!(ring.points.iter().any(|&(p, _)| p == first));
        let second =
            crc32fast::hash(&[b"10.0.0.1\x008000".as_slice(), &first.to_le_bytes()].concat());
        assert!(ring.points.iter().any(|&(p, _)| p == second));
    }

    #[test]
    fn owners_are_stable_and_spread() {
        let ring = Ring::new(&names(8000..8004));
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let key = document_key("chat", &format!("doc-{i}"));
            let owner = ring.owner(key.as_bytes());
            assert_eq!(owner, ring.owner(key.as_bytes()));
            counts[owner] += 1;
        }
        // Consistent hashing is not perfectly even; each lane still gets a fair share.
        assert!(counts.iter().all(|&c| c > 500), "{counts:?}");
    }

    #[test]
    fn adding_a_server_moves_only_keys_to_it() {
        let four = Ring::new(&names(8000..8004));
        let five = Ring::new(&names(8000..8005));
        for i in 0..2000 {
            let key = format!("chat/doc-{i}");
            let (before, after) = (four.owner(key.as_bytes()), five.owner(key.as_bytes()));
            assert!(
                after == before || after == 4,
                "{key} moved from {before} to {after}"
            );
        }
    }

    #[test]
    fn a_subset_of_servers_agrees_with_the_whole_ring() {
        // Two hosts in nginx; this process serves the second one's four ports.
        let mut all = names(8000..8004);
        all.extend((8000..8004).map(|p| server_name("10.0.0.2", p)));
        let whole = Ring::new(&all);
        let mine = Ring::new(&all[4..]);
        for i in 0..2000 {
            let key = format!("chat/doc-{i}");
            let owner = whole.owner(key.as_bytes());
            if owner >= 4 {
                assert_eq!(mine.owner(key.as_bytes()) + 4, owner, "{key}");
            }
        }
    }

    #[test]
    fn ipv6_names_are_bracketed() {
        assert_eq!(server_name("::1", 8000), "[::1]:8000");
        assert_eq!(server_name("[::1]", 8000), "[::1]:8000");
        assert_eq!(server_name("example.org", 80), "example.org:80");
    }
}
