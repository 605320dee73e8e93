//! Finding what a request asks for: its plugin in the registry and its document in the
//! lane's table. Each function answers the client itself (404, 503, 500) when there is
//! nothing to serve, so callers only handle the success.

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
        Lookup::Failed(why) => {
            lane.metrics.rejected(Rejection::PluginFailed);
            let _ = http::write_text(
                stream,
                503,
                &format!("plugin '{name}' failed to load: {why}"),
            )
            .await;
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

/// Answers a document that cannot be opened with 503 (try later), 429 (this client
/// opened too many) or 500.
pub async fn refuse_document(
    lane: &Lane,
    stream: &mut TcpStream,
    plugin: &Plugin,
    document: &str,
    e: DocumentError,
) {
    if let DocumentError::OpenRateLimited(retry) = e {
        lane.metrics.rejected(Rejection::OpenRate);
        let headers = [("retry-after".to_owned(), retry.as_secs().max(1).to_string())];
        let body = format!("{e}\n");
        let _ = http::write_response(stream, 429, &headers, body.as_bytes()).await;
        return;
    }
    lane.metrics.rejected(match e {
        DocumentError::StoreUnavailable(_) => Rejection::StoreUnavailable,
        DocumentError::HeldElsewhere(_) => Rejection::Handoff,
        DocumentError::NewerVersion(_) => Rejection::NewerVersion,
        DocumentError::Moved => Rejection::Moved,
        DocumentError::PoolExhausted(_) => Rejection::PoolExhausted,
        DocumentError::CrashLoop(_) | DocumentError::Settling => Rejection::CrashLoop,
        DocumentError::Storage(_) => Rejection::Storage,
        _ => Rejection::Error,
    });
    let status = match e {
        DocumentError::PoolExhausted(_)
        | DocumentError::CrashLoop(_)
        | DocumentError::Settling
        | DocumentError::StoreUnavailable(_)
        | DocumentError::HeldElsewhere(_)
        | DocumentError::NewerVersion(_)
        | DocumentError::Moved => 503,
        _ => {
            tracing::error!(lane = lane.index, plugin = %plugin.name, doc = %document, "{e}");
            500
        }
    };
    let _ = http::write_text(stream, status, &e.to_string()).await;
}
