//! An HTTP request to a document (`/docs/{plugin}/{document}[/...]`): read its body, open
//! the document, hand the request to the consumer's `on-request`, write its answer.

use std::rc::Rc;

use tokio::net::TcpStream;

use crate::document::outbox::CLOSE_TIMEOUT;
use crate::guest::HttpRequest;
use crate::lane::Lane;
use crate::lane::lookup::{find_plugin, open_document};
use crate::metrics::Rejection;
use crate::net::http::{self, RequestHead};

/// Serves one request to a document on its owner lane.
pub async fn serve(
    lane: Rc<Lane>,
    mut stream: TcpStream,
    head: RequestHead,
    plugin: &str,
    document: &str,
) {
    let limits = &lane.services.config.limits;
    let body = match http::read_body(
        &mut stream,
        &head,
        limits.max_message_bytes,
        limits.handshake_timeout(),
    )
    .await
    {
        Ok(body) => body,
        Err(e) => {
            let status = match e {
                http::BodyError::LengthRequired => 411,
                http::BodyError::BadLength => 400,
                http::BodyError::TooLarge(_) => 413,
                http::BodyError::Timeout | http::BodyError::Io(_) => return,
            };
            lane.metrics.rejected(Rejection::BadRequest);
            let _ = http::write_text(&mut stream, status, &e.to_string()).await;
            return;
        }
    };
    let Some(plugin) = find_plugin(&lane, &mut stream, plugin).await else {
        return;
    };
    let Some(doc) = open_document(&lane, &mut stream, &plugin, document).await else {
        return;
    };
    let request = HttpRequest {
        method: head.method,
        path: head.path,
        query: head.query,
        headers: head.headers,
        body,
    };
    let response = doc.borrow_mut().request(&request);
    drop(doc);
    // A client that does not read its response must not hold the connection forever.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        match response {
            Ok(r) => http::write_response(&mut stream, r.status, &r.headers, &r.body).await,
            Err(e) => http::write_text(&mut stream, 500, &e.to_string()).await,
        }
    })
    .await;
}
