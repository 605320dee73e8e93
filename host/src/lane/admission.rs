//! Who may come in, decided before any guest code runs: the web page a browser request
//! comes from (`Origin`, 403), the access token (401), how many WebSockets the client's
//! address holds already (429), and the CORS headers a `/docs/...` answer carries for
//! pages the plugin names.

use std::net::IpAddr;

use tokio::net::TcpStream;

use crate::lane::Lane;
use crate::lane::address_limit::AddressSlot;
use crate::metrics::Rejection;
use crate::net::access_token::{Admitted, hide_credentials};
use crate::net::http::{self, RequestHead};
use crate::net::origin::OriginPolicy;

/// Whether the page `head` comes from may reach `plugin`'s documents; answers 403 when
/// not. Requests without `Origin` (not from a browser) always may.
pub async fn origin_allowed(
    lane: &Lane,
    stream: &mut TcpStream,
    plugin: &str,
    head: &RequestHead,
) -> bool {
    let Some(origin) = head.header("origin") else {
        return true;
    };
    let policy = lane.services.config.origin_policy_for(plugin);
    if policy.allows(Some(origin), head.header("host")) {
        return true;
    }
    lane.metrics.rejected(Rejection::Origin);
    tracing::debug!(
        lane = lane.index,
        plugin,
        origin = origin.escape_debug().to_string(),
        "origin not allowed"
    );
    let _ = http::write_text(stream, 403, "origin not allowed").await;
    false
}

/// The verified access token of a request for `plugin`'s `document`: `Some(None)` when
/// the plugin takes no tokens; `None` after answering 401 with the reason when the token
/// is missing or fails a check. Once admitted, `head` holds nothing a consumer may not
/// see: no token, no client-sent `x-wasmroom-claims` ([`hide_credentials`]). Every path
/// to a guest call passes here first.
pub async fn token_checked(
    lane: &Lane,
    stream: &mut TcpStream,
    plugin: &str,
    document: &str,
    head: &mut RequestHead,
) -> Option<Option<Admitted>> {
    let Some(verifier) = lane.services.tokens.for_plugin(plugin) else {
        hide_credentials(head, None);
        return Some(None);
    };
    match verifier.check(head, document) {
        Ok(admitted) => {
            hide_credentials(head, Some(&verifier));
            Some(Some(admitted))
        }
        Err(why) => {
            lane.metrics.rejected(Rejection::Token);
            tracing::debug!(lane = lane.index, plugin, document, "refused: {why}");
            let _ = http::write_response(
                stream,
                401,
                &[("www-authenticate".to_owned(), "Bearer".to_owned())],
                format!("{why}\n").as_bytes(),
            )
            .await;
            None
        }
    }
}

/// Counts one more WebSocket of `client`, or answers 429 when its address holds
/// `max_connections_per_address` already.
pub async fn admit_address(
    lane: &Lane,
    stream: &mut TcpStream,
    client: IpAddr,
) -> Option<AddressSlot> {
    if let Some(slot) = lane.services.addresses.admit(client) {
        return Some(slot);
    }
    lane.metrics.rejected(Rejection::AddressConnections);
    tracing::debug!(lane = lane.index, %client, "too many connections from one address");
    let _ = http::write_response(
        stream,
        429,
        &[("retry-after".to_owned(), "1".to_owned())],
        b"too many connections from this address\n",
    )
    .await;
    None
}

/// The headers of a `/docs/...` answer: the consumer's own, without any CORS header
/// (the host decides those), plus `Access-Control-Allow-Origin` for `named_origin`, the
/// requesting page when the plugin's `allowed_origins` names it.
pub fn answer_headers(
    named_origin: Option<&str>,
    consumer: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = consumer
        .into_iter()
        .filter(|(name, _)| !name.to_ascii_lowercase().starts_with("access-control-"))
        .collect();
    if let Some(origin) = named_origin {
        headers.push(("access-control-allow-origin".into(), origin.to_owned()));
        headers.push(("vary".into(), "Origin".into()));
    }
    headers
}

/// The answer to a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) from
/// a page the plugin names, or `None` when `head` is not one (it goes to the consumer).
pub fn preflight(policy: &OriginPolicy, head: &RequestHead) -> Option<Vec<(String, String)>> {
    let origin = head.header("origin")?;
    if head.method != "OPTIONS"
        || head.header("access-control-request-method").is_none()
        || !policy.names(origin)
    {
        return None;
    }
    let mut headers = vec![
        ("access-control-allow-origin".to_owned(), origin.to_owned()),
        (
            "access-control-allow-methods".to_owned(),
            "GET, HEAD, PUT, POST, PATCH, DELETE".to_owned(),
        ),
        ("access-control-max-age".to_owned(), "600".to_owned()),
        ("vary".to_owned(), "Origin".to_owned()),
    ];
    if let Some(asked) = head.header("access-control-request-headers") {
        // Echoed only when it is a plain list of header names.
        let names = asked.split(',').map(str::trim);
        if names.clone().all(http::is_token) {
            headers.push(("access-control-allow-headers".to_owned(), asked.to_owned()));
        }
    }
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &str) -> RequestHead {
        http::parse_head(format!("{lines}\r\n\r\n").as_bytes())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn cors_only_for_named_pages() {
        let consumer = vec![
            ("Access-Control-Allow-Origin".to_owned(), "*".to_owned()),
            ("content-type".to_owned(), "text/plain".to_owned()),
        ];
        let h = answer_headers(Some("https://app.example.com"), consumer.clone());
        assert_eq!(
            h,
            vec![
                ("content-type".to_owned(), "text/plain".to_owned()),
                (
                    "access-control-allow-origin".to_owned(),
                    "https://app.example.com".to_owned()
                ),
                ("vary".to_owned(), "Origin".to_owned()),
            ]
        );
        // A page no policy names gets no CORS header, not even the consumer's.
        let h = answer_headers(None, consumer);
        assert_eq!(
            h,
            vec![("content-type".to_owned(), "text/plain".to_owned())]
        );
    }

    #[test]
    fn preflights_are_answered_for_named_pages() {
        let listed = OriginPolicy::parse(Some(&["https://app.example.com".to_owned()])).unwrap();
        let pre = head(
            "OPTIONS /docs/chat/a HTTP/1.1\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: content-type, x-token",
        );
        let h = preflight(&listed, &pre).unwrap();
        assert!(h.contains(&(
            "access-control-allow-headers".to_owned(),
            "content-type, x-token".to_owned()
        )));
        assert!(preflight(&OriginPolicy::SameHost, &pre).is_none());
        let evil = head(
            "OPTIONS /docs/chat/a HTTP/1.1\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: x-ok, not a name",
        );
        let h = preflight(&listed, &evil);
        assert!(h.is_none_or(|h| h.iter().all(|(n, _)| n != "access-control-allow-headers")));
    }
}
