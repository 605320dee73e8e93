//! Finding what a request asks for: its plugin in the registry and its document in the
//! lane's table. Each function answers the client itself (404, 503, 500) when there is
//! nothing to serve, so callers only handle the success. Whatever the error says, the
//! client gets only the fixed text of [`DocumentError::client_answer`].

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::document::{DocumentCell, DocumentError};
use crate::guest::plugin::Plugin;
use crate::guest::registry::Lookup;
use crate::lane::Lane;
use crate::metrics::Rejection;
use crate::net::http;

/// Finds the plugin, answering 404/503 itself when there is none to serve.
pub async fn find_plugin(lane: &Lane, stream: &mut TcpStream, name: &str) -> Option<Arc<Plugin>> {
    if lane.is_shutting_down() {
        lane.metrics.rejected(Rejection::ShuttingDown);
        let _ = http::write_text(stream, 503, "server shutting down").await;
        return None;
    }
    match lane.services.registry.get(name) {
        Lookup::Ready(plugin) => Some(plugin),
        // Why is in the log and `/plugins`: it names files of the server.
        Lookup::Failed(_) => {
            lane.metrics.rejected(Rejection::PluginFailed);
            let text = format!("plugin '{name}' failed to load; see the server log");
            let _ = http::write_text(stream, 503, &text).await;
            None
        }
        Lookup::Missing => {
            lane.metrics.rejected(Rejection::UnknownPlugin);
            let _ = http::write_text(stream, 404, &format!("no plugin named '{name}'")).await;
            None
        }
    }
}

/// Opens the document for `client`, answering 503/500/429 itself when it cannot.
pub async fn open_document(
    lane: &Rc<Lane>,
    stream: &mut TcpStream,
    plugin: &Arc<Plugin>,
    document: &str,
    client: IpAddr,
) -> Option<DocumentCell> {
    match lane.document_when_settled(plugin, document, client).await {
        Ok(doc) => Some(doc),
        Err(e) => {
            refuse_document(lane, stream, plugin, document, e).await;
            None
        }
    }
}

/// Answers a document that cannot be opened (503 try later, 429 this client opened too
/// many, 500), counts the refusal and logs what only the operator may read.
pub async fn refuse_document(
    lane: &Lane,
    stream: &mut TcpStream,
    plugin: &Plugin,
    document: &str,
    e: DocumentError,
) {
    lane.metrics.rejected(rejection(&e));
    // A trap was logged, backtrace and all, where it happened.
    if e.client_answer().status == 500
        && !matches!(
            e,
            DocumentError::Crashed(_) | DocumentError::InputRefused(_)
        )
    {
        tracing::error!(lane = lane.index, plugin = %plugin.name, doc = %document, "{e}");
    }
    answer_document_error(stream, &e).await;
}

/// Writes what the client gets for `e` ([`DocumentError::client_answer`]): every HTTP
/// answer about a document error goes through here.
pub async fn answer_document_error(stream: &mut TcpStream, e: &DocumentError) {
    let answer = e.client_answer();
    let headers: Vec<_> = answer
        .retry_after
        .map(|seconds| ("retry-after".to_owned(), seconds.to_string()))
        .into_iter()
        .collect();
    let body = format!("{}\n", answer.text);
    let _ = http::write_response(stream, answer.status, &headers, body.as_bytes()).await;
}

/// The label a refused document counts under.
pub fn rejection(e: &DocumentError) -> Rejection {
    match e {
        DocumentError::StoreUnavailable(_) => Rejection::StoreUnavailable,
        DocumentError::HeldElsewhere(_) => Rejection::Handoff,
        DocumentError::NewerVersion(_) => Rejection::NewerVersion,
        DocumentError::Moved => Rejection::Moved,
        DocumentError::PoolExhausted(_) => Rejection::PoolExhausted,
        DocumentError::CrashLoop(_) | DocumentError::Settling => Rejection::CrashLoop,
        DocumentError::Storage(_) | DocumentError::Unreplayable(_) => Rejection::Storage,
        DocumentError::OpenRateLimited(_) => Rejection::OpenRate,
        DocumentError::Instantiate(_)
        | DocumentError::Refused(_)
        | DocumentError::Crashed(_)
        | DocumentError::InputRefused(_) => Rejection::Error,
    }
}
