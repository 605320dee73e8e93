//! Which web pages may open a plugin's documents: the browser's `Origin` header against
//! the request's `Host`, and against the origins an operator allows.
//!
//! Browsers send cookies with a WebSocket handshake from any page, so without this check
//! any site a user visits could open a socket to a document as that user (cross-site
//! WebSocket hijacking). A page served from the host the request names is always allowed;
//! so is a client that sends no `Origin` at all (backends and command-line tools, which
//! hold no browser's cookies). Everything else needs to be named in `allowed_origins`.

use std::fmt;

/// Which origins, beyond the request's own host, may open a plugin's documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Only pages from the host the request names (the default).
    #[default]
    SameHost,
    /// Every page: `"*"`, said explicitly.
    Any,
    /// These origins and `scheme://*.domain` patterns, and the request's own host.
    Listed(Vec<OriginRule>),
}

/// One allowed origin: `https://app.example.com`, `http://localhost:3000` or
/// `https://*.example.com` (any subdomain, not the domain itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRule {
    scheme: String,
    host: HostRule,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Exact(String),
    /// `.example.com`: the host must end with it and have a label before it.
    Subdomains(String),
}

/// Why an `allowed_origins` entry is not an origin. Fix the configuration entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "allowed origin {entry:?}: {why} (expected \"https://host[:port]\", \"https://*.domain\" or \"*\")"
)]
pub struct OriginError {
    entry: String,
    why: &'static str,
}

impl OriginPolicy {
    /// The policy of an `allowed_origins` list: `None` is the default (same host only).
    pub fn parse(list: Option<&[String]>) -> Result<OriginPolicy, OriginError> {
        let Some(list) = list else {
            return Ok(OriginPolicy::SameHost);
        };
        if list.iter().any(|e| e.trim() == "*") {
            return Ok(OriginPolicy::Any);
        }
        list.iter()
            .map(|entry| OriginRule::parse(entry))
            .collect::<Result<_, _>>()
            .map(OriginPolicy::Listed)
    }

    /// Whether a request with `origin` (the `Origin` header, if sent) and `host` (the
    /// `Host` header) may proceed.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if matches!(self, OriginPolicy::Any) {
            return true;
        }
        let Some(origin) = Origin::parse(origin) else {
            // "null" (sandboxed frames, files) and anything malformed.
            return false;
        };
        host.and_then(Authority::parse)
            .is_some_and(|host| origin.is_on(&host))
            || self.lists(&origin)
    }

    /// Whether the policy names `origin` itself (`"*"` or a matching entry): such pages
    /// get CORS headers on `/docs/...`. Same-host pages need none.
    pub fn names(&self, origin: &str) -> bool {
        match self {
            OriginPolicy::Any => true,
            OriginPolicy::SameHost => false,
            OriginPolicy::Listed(_) => Origin::parse(origin).is_some_and(|o| self.lists(&o)),
        }
    }

    fn lists(&self, origin: &Origin) -> bool {
        match self {
            OriginPolicy::Listed(rules) => rules.iter().any(|r| r.matches(origin)),
            OriginPolicy::Any => true,
            OriginPolicy::SameHost => false,
        }
    }
}

impl OriginRule {
    fn parse(entry: &str) -> Result<OriginRule, OriginError> {
        let fail = |why| OriginError {
            entry: entry.to_owned(),
            why,
        };
        let (scheme, rest) = split_scheme(entry.trim()).ok_or_else(|| fail("no scheme"))?;
        let pattern = rest.strip_prefix("*.");
        let a = Authority::parse(pattern.unwrap_or(rest)).ok_or_else(|| fail("not a host"))?;
        // Origins never contain '*', so an entry with another one would match nothing
        // (found by fuzzing: `https://*.*.example.com` was taken and never matched).
        if a.host.contains('*') {
            return Err(fail(
                "'*' only as the first label, as in https://*.example.com",
            ));
        }
        let (host, port) = if pattern.is_some() {
            // Nor can a subdomain of an IP address literal be an origin.
            if a.host.starts_with('[') {
                return Err(fail("a pattern needs a domain, not an IPv6 address"));
            }
            (HostRule::Subdomains(format!(".{}", a.host)), a.port)
        } else {
            (HostRule::Exact(a.host), a.port)
        };
        Ok(OriginRule {
            port: port.or_else(|| default_port(&scheme)),
            scheme,
            host,
        })
    }

    fn matches(&self, origin: &Origin) -> bool {
        self.scheme == origin.scheme
            && self.port == origin.port
            && match &self.host {
                HostRule::Exact(h) => *h == origin.host,
                HostRule::Subdomains(suffix) => {
                    origin.host.len() > suffix.len() && origin.host.ends_with(suffix.as_str())
                }
            }
    }
}

impl fmt::Display for OriginRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            HostRule::Exact(h) => h.clone(),
            HostRule::Subdomains(s) => format!("*{s}"),
        };
        match self.port {
            Some(p) if Some(p) != default_port(&self.scheme) => {
                write!(f, "{}://{host}:{p}", self.scheme)
            }
            _ => write!(f, "{}://{host}", self.scheme),
        }
    }
}

/// An `Origin` header: scheme, host and the port the page was served from.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    /// The explicit port, else the scheme's default.
    port: Option<u16>,
    explicit_port: bool,
}

impl Origin {
    fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = split_scheme(text.trim())?;
        let a = Authority::parse(rest)?;
        if a.host.contains('*') {
            return None;
        }
        Some(Origin {
            port: a.port.or_else(|| default_port(&scheme)),
            explicit_port: a.port.is_some(),
            scheme,
            host: a.host,
        })
    }

    /// Whether the page was served from `host` (a `Host` header): same name, and the
    /// same port, where a `Host` without one means the scheme's default port.
    fn is_on(&self, host: &Authority) -> bool {
        self.host == host.host
            && match host.port {
                Some(p) => self.port == Some(p),
                None => !self.explicit_port || self.port == default_port(&self.scheme),
            }
    }
}

/// `host[:port]`, the host lower-cased; IPv6 hosts keep their brackets.
#[derive(Debug, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    fn parse(text: &str) -> Option<Authority> {
        let (host, port) = if text.starts_with('[') {
            let end = text.find(']')?;
            let (host, after) = text.split_at(end + 1);
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':')?)),
            }
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        let port = match port {
            Some(p) => Some(p.parse::<u16>().ok().filter(|_| !p.starts_with('+'))?),
            None => None,
        };
        let valid = |b: u8| b.is_ascii_alphanumeric() || b"-._[]:*".contains(&b);
        if host.is_empty() || !host.bytes().all(valid) {
            return None;
        }
        Some(Authority {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

fn split_scheme(text: &str) -> Option<(String, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let valid = |b: u8| b.is_ascii_alphanumeric() || b"+-.".contains(&b);
    (!scheme.is_empty() && scheme.bytes().all(valid)).then(|| (scheme.to_ascii_lowercase(), rest))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &[&str]) -> OriginPolicy {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        OriginPolicy::parse(Some(&list)).unwrap()
    }

    #[test]
    fn same_host_is_the_default() {
        let p = OriginPolicy::parse(None).unwrap();
        assert!(
            p.allows(None, Some("example.com")),
            "no Origin: not a browser"
        );
        assert!(p.allows(Some("https://example.com"), Some("example.com")));
        assert!(p.allows(Some("https://Example.COM:443"), Some("example.com")));
        assert!(p.allows(Some("http://127.0.0.1:8000"), Some("127.0.0.1:8000")));
        assert!(p.allows(Some("http://[::1]:8000"), Some("[::1]:8000")));
        assert!(!p.allows(Some("http://127.0.0.1:8001"), Some("127.0.0.1:8000")));
        assert!(!p.allows(Some("https://example.com:8443"), Some("example.com")));
        assert!(!p.allows(Some("https://evil.com"), Some("example.com")));
        assert!(!p.allows(Some("https://example.com.evil.com"), Some("example.com")));
        assert!(!p.allows(Some("null"), Some("example.com")));
        assert!(!p.allows(Some("https://example.com"), None));
        assert!(!p.names("https://example.com"));
    }

    #[test]
    fn listed_origins_and_patterns() {
        let p = policy(&[
            "https://app.example.com",
            "https://*.example.org",
            "http://localhost:3000",
        ]);
        assert!(p.allows(Some("https://app.example.com"), Some("ws.example.com")));
        assert!(p.allows(Some("https://a.b.example.org"), Some("ws.example.com")));
        assert!(!p.allows(Some("https://example.org"), Some("ws.example.com")));
        assert!(!p.allows(Some("http://a.example.org"), Some("ws.example.com")));
        assert!(!p.allows(Some("https://a.example.org:8443"), Some("ws.example.com")));
        assert!(p.allows(Some("http://localhost:3000"), Some("ws.example.com")));
        assert!(!p.allows(Some("http://localhost:3001"), Some("ws.example.com")));
        // The request's own host stays allowed.
        assert!(p.allows(Some("https://ws.example.com"), Some("ws.example.com")));
        assert!(p.names("https://x.example.org"));
        assert!(!p.names("https://ws.example.com"));
    }

    #[test]
    fn star_allows_every_page() {
        let p = policy(&["*"]);
        assert!(p.allows(Some("https://anywhere.net"), Some("example.com")));
        assert!(p.allows(Some("null"), None));
        assert!(p.names("https://anywhere.net"));
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry() {
        for bad in [
            "example.com",
            "https://",
            "https://a*.example.com",
            "https://a.com:99999",
            "https://a b",
            // Patterns that no origin could match.
            "https://*.*.example.com",
            "https://*.exampl1*]:3000",
            "https://*.[::1]:8000",
        ] {
            let list = vec![bad.to_string()];
            let err = OriginPolicy::parse(Some(&list)).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert_eq!(
            OriginRule::parse("https://*.example.com:443")
                .unwrap()
                .to_string(),
            "https://*.example.com"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_header_is_judged_without_panicking(origin in ".{0,80}", host in ".{0,40}") {
                let p = policy(&["https://*.example.com"]);
                let _ = p.allows(Some(&origin), Some(&host));
                let _ = p.names(&origin);
            }
        }
    }
}
