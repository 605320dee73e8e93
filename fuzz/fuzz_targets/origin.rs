//! `allowed_origins` entries and the `Origin`/`Host` headers of a request. The input is
//! text: the first line is the `Origin` header, the second the `Host` header (an empty
//! line: not sent), the other lines the entries of `allowed_origins`.
//!
//! Beyond "no panic": a request without `Origin` is always allowed; a policy never
//! refuses what same-host-only allows (a list only adds); what a policy `names` it
//! allows; an entry that parses on its own allows and names its own origin (for a
//! pattern `scheme://*.domain`, the origin with `a` for `*`); and a page served from the
//! authority a `Host` header names is allowed by default.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmroom_wire::origin::OriginPolicy;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let header = |line: Option<&str>| line.filter(|l| !l.is_empty()).map(str::to_owned);
    let origin = header(lines.next());
    let host = header(lines.next());
    let entries: Vec<String> = lines.map(str::to_owned).collect();
    let (origin, host) = (origin.as_deref(), host.as_deref());

    let same_host = OriginPolicy::SameHost;
    let base = same_host.allows(origin, host);
    if let Ok(policy) = OriginPolicy::parse(Some(&entries)) {
        assert!(policy.allows(None, host));
        assert!(
            !base || policy.allows(origin, host),
            "{policy:?} refuses a same-host page"
        );
        if let Some(origin) = origin {
            assert!(!policy.names(origin) || policy.allows(Some(origin), host));
        }
    }
    for entry in &entries {
        let Ok(policy) = OriginPolicy::parse(Some(std::slice::from_ref(entry))) else {
            continue;
        };
        let page = match entry.trim().split_once("://*.") {
            Some((scheme, domain)) => format!("{scheme}://a.{domain}"),
            None => entry.clone(),
        };
        assert!(
            policy.allows(Some(&page), None),
            "{entry:?} refuses {page:?}"
        );
        assert!(policy.names(&page), "{entry:?} does not name {page:?}");
    }
    // The Host header's authority as the page's origin: always the same host. (httparse
    // trims header values, so a Host with blanks around it never arrives.)
    if let Some(host) = host.filter(|h| h.trim() == *h && !h.contains('*')) {
        for scheme in ["http", "https"] {
            let page = format!("{scheme}://{host}");
            if OriginPolicy::parse(Some(std::slice::from_ref(&page))).is_ok() {
                assert!(
                    same_host.allows(Some(&page), Some(host)),
                    "{page:?} on {host:?}"
                );
            }
        }
    }
});
