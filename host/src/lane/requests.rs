//! An HTTP request to a document (`/docs/{plugin}/{document}[/...]`): check the page it
//! comes from and its access token, read its body, open the document, hand the request
//! to the consumer's `on-request` (the token replaced by its claims in
//! `x-wasmroom-claims`), write its answer (with CORS headers for pages the plugin names).

use std::net::SocketAddr;
use std::rc::Rc;

use tokio::net::TcpStream;

use crate::document::DocumentError;
use crate::guest::HttpRequest;
use crate::lane::Lane;
use crate::lane::admission::{answer_headers, origin_allowed, preflight, token_checked};
use crate::lane::lookup::{answer_document_error, find_plugin, open_document};
use crate::metrics::Rejection;
use crate::net::access_token::CLAIMS_HEADER;
use crate::net::http::{self, RequestHead};

/// Serves one request to a document on its owner lane: the plugin first (nothing is
/// read for a request that cannot be served), then the body (held in the lane's byte
/// budget while it arrives), then the document.
pub async fn serve(
    lane: Rc<Lane>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut head: RequestHead,
    plugin: &str,
    document: &str,
) {
    if !origin_allowed(&lane, &mut stream, plugin, &head).await {
        http::linger(&mut stream).await;
        return;
    }
    let origins = lane.services.config.origin_policy_for(plugin);
    if let Some(headers) = preflight(&origins, &head) {
        let _ = http::write_response(&mut stream, 204, &headers, b"").await;
        http::linger(&mut stream).await;
        return;
    }
    // A backend reads and writes documents with the same tokens (`Authorization`). From
    // here on `head` carries no token: the consumer gets the claims instead.
    let Some(admitted) = token_checked(&lane, &mut stream, plugin, document, &mut head).await
    else {
        http::linger(&mut stream).await;
        return;
    };
    // The page that gets CORS headers, if the plugin names it.
    let cors_origin = head
        .header("origin")
        .filter(|origin| origins.names(origin))
        .map(str::to_owned);
    let Some(plugin) = find_plugin(&lane, &mut stream, plugin).await else {
        http::linger(&mut stream).await;
        return;
    };
    let limits = &lane.services.config.limits;
    let mut charge = lane.charge();
    let body = match http::read_body(
        &mut stream,
        &head,
        limits.max_message_bytes,
        limits.handshake_timeout(),
        &mut charge,
    )
    .await
    {
        Ok(body) => body,
        Err(e) => {
            let (status, reason) = match e {
                http::BodyError::LengthRequired => (411, Rejection::BadRequest),
                http::BodyError::BadLength => (400, Rejection::BadRequest),
                http::BodyError::TooLarge(_) => (413, Rejection::BadRequest),
                http::BodyError::Busy => (503, Rejection::Busy),
                http::BodyError::Timeout | http::BodyError::Io(_) => return,
            };
            lane.metrics.rejected(reason);
            drop(charge);
            let _ = http::write_text(&mut stream, status, &e.to_string()).await;
            http::linger(&mut stream).await;
            return;
        }
    };
    let client = http::client_address(&head, peer, lane.services.config.proxy_headers).ip();
    let Some(doc) = open_document(&lane, &mut stream, &plugin, document, client).await else {
        return;
    };
    let mut headers = head.headers;
    if let Some(admitted) = admitted {
        headers.push((CLAIMS_HEADER.to_owned(), admitted.claims.to_string()));
    }
    let request = HttpRequest {
        method: head.method,
        path: head.path,
        query: head.query,
        headers,
        body,
    };
    let mut response = doc.borrow_mut().request(&request);
    // Journal mode: the answer leaves once the request's record is durable.
    if response.is_ok() && !crate::lane::journal::durable(&doc).await {
        response = Err(DocumentError::Moved);
    }
    drop((doc, charge));
    // Bounded by the write timeout: a client that does not read its answer cannot hold
    // the connection.
    match response {
        Ok(r) => {
            let headers = answer_headers(cors_origin.as_deref(), r.headers);
            let _ = http::write_response(&mut stream, r.status, &headers, &r.body).await;
        }
        Err(e) => answer_document_error(&mut stream, &e).await,
    }
}
