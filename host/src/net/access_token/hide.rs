//! What a consumer may see of a request: nothing of the token. The host checks the token,
//! then removes it wherever it could have come from before any guest call, since
//! consumers are not trusted with a credential a client could replay; they get the
//! verified claims instead (`context.claims`, and [`CLAIMS_HEADER`] in `on-request`).

use super::{TOKEN_PARAMETER, TOKEN_SUBPROTOCOL, TokenVerifier, bearer_token};
use crate::net::http::RequestHead;

/// The header that hands `on-request` the verified token's claims (JSON). The host sets
/// it; one a client sent is always removed first.
pub const CLAIMS_HEADER: &str = "x-wasmroom-claims";

/// Removes what no consumer may see of a request for a plugin, before any guest call:
/// the `x-wasmroom-claims` header a client sent (only the host sets it), and, when the
/// plugin takes tokens (`verifier`), every place a token can come from. A plugin without
/// `[plugin.NAME.auth]` keeps them all: its consumer may do its own authentication.
pub fn hide_credentials(head: &mut RequestHead, verifier: Option<&TokenVerifier>) {
    head.headers.retain(|(name, _)| name != CLAIMS_HEADER);
    if let Some(verifier) = verifier {
        verifier.strip(head);
    }
}

impl TokenVerifier {
    /// Removes from `head` every token this plugin could have read, wherever it came
    /// from, so that no consumer sees one: each `?token=` parameter (the rest of the
    /// query kept as it was), `Authorization: Bearer` headers, the token cookie (the
    /// other cookies kept) and `wasmroom.token.` subprotocols in `Sec-WebSocket-Protocol`.
    fn strip(&self, head: &mut RequestHead) {
        if head.query.split('&').any(is_token_parameter) {
            head.query = head
                .query
                .split('&')
                .filter(|pair| !is_token_parameter(pair))
                .collect::<Vec<_>>()
                .join("&");
        }
        let cookie = self.cookie.as_deref();
        head.headers
            .retain_mut(|(name, value)| match name.as_str() {
                "authorization" => !is_bearer(value),
                "cookie" => match cookie {
                    Some(cookie) => keep_list(value, ';', "; ", |c| cookie_name(c) != cookie),
                    None => true,
                },
                "sec-websocket-protocol" => {
                    keep_list(value, ',', ", ", |p| !p.starts_with(TOKEN_SUBPROTOCOL))
                }
                _ => true,
            });
    }
}

fn is_bearer(value: &str) -> bool {
    bearer_token(value).is_some()
}

/// Whether a query pair is `token=...` (or a bare `token`).
fn is_token_parameter(pair: &str) -> bool {
    pair.strip_prefix(TOKEN_PARAMETER)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
}

/// A cookie's name in a `Cookie` header's `name=value` entry.
fn cookie_name(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(name, _)| name).trim()
}

/// Keeps the entries of a `separator`-separated header value that `keep` accepts,
/// written back joined by `joiner`; `false` when none is left (the header goes).
/// An untouched value stays as it was.
fn keep_list(
    value: &mut String,
    separator: char,
    joiner: &str,
    keep: impl Fn(&str) -> bool,
) -> bool {
    let entries: Vec<&str> = value.split(separator).map(str::trim).collect();
    if entries.iter().all(|e| keep(e)) {
        return true;
    }
    let kept: Vec<&str> = entries
        .into_iter()
        .filter(|e| !e.is_empty() && keep(e))
        .collect();
    if kept.is_empty() {
        return false;
    }
    *value = kept.join(joiner);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::access_token::tests::{head, verifier};

    /// What a consumer sees of `head` after [`hide_credentials`].
    fn hidden(head: &RequestHead, verifier: Option<&TokenVerifier>) -> RequestHead {
        let mut head = head.clone();
        hide_credentials(&mut head, verifier);
        head
    }

    #[test]
    fn no_consumer_sees_a_token() {
        let v = verifier(None);
        let h = head(
            "/ws/p/a?x=1&token=JWT1&y=%20two&&token=JWT2&tokens=keep",
            "Authorization: Bearer JWT3\r\n\
             Cookie: theme=dark; session_token=JWT4; lang=en\r\n\
             Cookie: session_token=JWT5\r\n\
             Sec-WebSocket-Protocol: chat, wasmroom.token.JWT6, probe.v1\r\n\
             Sec-WebSocket-Protocol: wasmroom.token.JWT7\r\n\
             X-Wasmroom-Claims: {\"role\":\"admin\"}\r\n\
             X-Other: token=stays\r\n",
        );
        let seen = hidden(&h, Some(&v));
        assert_eq!(seen.path, "/ws/p/a");
        assert_eq!(seen.query, "x=1&y=%20two&&tokens=keep");
        assert_eq!(
            seen.headers,
            vec![
                ("host".to_owned(), "h".to_owned()),
                ("cookie".to_owned(), "theme=dark; lang=en".to_owned()),
                (
                    "sec-websocket-protocol".to_owned(),
                    "chat, probe.v1".to_owned()
                ),
                ("x-other".to_owned(), "token=stays".to_owned()),
            ]
        );
        assert!(!format!("{seen:?}").contains("JWT"), "{seen:?}");
        // Another scheme is not a token of the host's: the consumer may read it.
        let basic = head("/", "Authorization: Basic dXNlcjpwYXNz\r\n");
        assert_eq!(hidden(&basic, Some(&v)).headers, basic.headers);
    }

    #[test]
    fn without_tokens_only_the_claims_header_goes() {
        let h = head(
            "/docs/p/a?token=theirs",
            "Authorization: Bearer theirs\r\nCookie: session_token=theirs\r\n\
             x-wasmroom-claims: forged\r\n",
        );
        let seen = hidden(&h, None);
        assert_eq!(seen.query, "token=theirs");
        assert_eq!(
            seen.headers,
            vec![
                ("host".to_owned(), "h".to_owned()),
                ("authorization".to_owned(), "Bearer theirs".to_owned()),
                ("cookie".to_owned(), "session_token=theirs".to_owned()),
            ]
        );
        // Nothing to remove: the head stays exactly as it was.
        let plain = head("/docs/p/a?b=1&&c", "Cookie:  a=1;b=2\r\n");
        let seen = hidden(&plain, Some(&verifier(None)));
        assert_eq!((seen.query, seen.headers), (plain.query, plain.headers));
    }
}
