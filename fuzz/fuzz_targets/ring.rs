//! nginx's consistent-hash ring. The input is text: server names one a line, then an
//! empty line, then keys one a line.
//!
//! Beyond "no panic": the owner is one of the servers and the same when asked twice;
//! and a ring over some of the servers (a process serving some of nginx's upstream
//! servers: here all but the first, and every other one) names the same owner for every
//! key the whole ring gives to one of them, which is what lets lanes agree with nginx
//! without knowing all of its servers.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmroom_wire::ring::Ring;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (servers, keys) = text.split_once("\n\n").unwrap_or((&text, ""));
    // A ring needs a server, and `split` always gives one (the host's has one per lane).
    // At most 64: more only slow the search down (160 points each, three rings).
    let servers: Vec<&str> = servers.split('\n').take(64).collect();
    let whole = Ring::new(&servers);
    let subsets: [Vec<usize>; 2] = [
        (1..servers.len()).collect(),
        (0..servers.len()).step_by(2).collect(),
    ];
    let parts: Vec<(Ring, &Vec<usize>)> = subsets
        .iter()
        .filter(|kept| !kept.is_empty())
        .map(|kept| {
            (
                Ring::new(&kept.iter().map(|&i| servers[i]).collect::<Vec<_>>()),
                kept,
            )
        })
        .collect();
    for key in keys.split('\n') {
        let owner = whole.owner(key.as_bytes());
        assert!(owner < servers.len());
        assert_eq!(owner, whole.owner(key.as_bytes()));
        for (part, kept) in &parts {
            if let Some(at) = kept.iter().position(|&i| i == owner) {
                assert_eq!(part.owner(key.as_bytes()), at, "{key:?}");
            }
        }
    }
});
