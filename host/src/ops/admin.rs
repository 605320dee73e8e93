//! The admin API on `--admin-port`: metrics, health, the live documents of every lane,
//! and actions (save a document now, evict it, reload the plugins).
//!
//! It runs on a thread of its own and reaches the lanes only through their command
//! channels, so a slow admin client never touches a lane. Bound to 127.0.0.1 by default;
//! on any other address a bearer token is required (see [`Config::validate`]), and when a
//! token is configured every route but `/healthz` and `/readyz` requires it.
//!
//! | request | answer |
//! |---|---|
//! | `GET /healthz`, `GET /readyz` | as on the lanes; `/readyz` is 503 once shutdown began |
//! | `GET /metrics` | every metric (OpenMetrics text) |
//! | `GET /admin/documents` | every lane with its figures and live documents (JSON) |
//! | `POST /admin/documents/{plugin}/{doc}/snapshot` | saves the document now |
//! | `POST /admin/documents/{plugin}/{doc}/evict` | closes its sockets (1001), saves it, drops it |
//! | `POST /admin/reload` | re-reads the plugins directory (like SIGHUP); answers `/plugins` |
//!
//! [`Config::validate`]: crate::config::Config::validate

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use crate::guest::registry::Registry;
use crate::lane::commands::{AdminReply, AdminRequest, SHUTTING_DOWN};
use crate::lane::{Health, LaneCommand, Lanes};
use crate::metrics::Metrics;
use crate::net::http::{self, RequestHead};
use crate::net::route::{Route, route};
use crate::reload::Reloader;

/// What the admin API reads and acts on.
#[derive(Debug, Clone)]
pub struct AdminContext {
    /// The bearer token every route but the health checks requires, if set.
    pub token: Option<String>,
    /// How long a client may take to send its request head.
    pub handshake_timeout: Duration,
    /// The plugins (`/plugins`, instance gauges).
    pub registry: Arc<Registry>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// The lanes, reached through their command channels.
    pub lanes: Arc<Lanes>,
    /// Readiness.
    pub health: Arc<Health>,
    /// `POST /admin/reload`.
    pub reloader: Reloader,
}

/// The running admin API.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Serves the admin API on `listener` until [`AdminServer::stop`].
    pub fn start(
        listener: std::net::TcpListener,
        context: AdminContext,
    ) -> std::io::Result<AdminServer> {
        let context = Arc::new(context);
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return tracing::error!("admin API cannot listen: {e}"),
                    };
                    tracing::info!("admin listening on {addr}");
                    loop {
                        tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok((stream, _)) => {
                                    tokio::spawn(serve(stream, context.clone()));
                                }
                                Err(e) => {
                                    // Out of file descriptors and similar: back off.
                                    tracing::warn!("admin API: accept failed: {e}");
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                            },
                            _ = stopped.wait_for(|s| *s) => break,
                        }
                    }
                });
            })?;
        Ok(AdminServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the thread.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether `head` carries the configured bearer token (compared in constant time).
fn authorized(head: &RequestHead, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    // The scheme is case-insensitive (RFC 9110); the token is not.
    let Some(given) = head
        .header("authorization")
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
    else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn serve(mut stream: TcpStream, context: Arc<AdminContext>) {
    let timeout = context.handshake_timeout;
    let Ok(head) = http::read_head(&mut stream, timeout).await else {
        let _ = http::write_text(&mut stream, 400, "malformed request").await;
        return;
    };
    let json = |v: &serde_json::Value| {
        (
            vec![("content-type".to_owned(), "application/json".to_owned())],
            v.to_string().into_bytes(),
        )
    };
    let path = head.path.as_str();
    let method = head.method.as_str();
    match (method, path) {
        ("GET", "/healthz") => {
            let _ = http::write_text(&mut stream, 200, "ok").await;
            return;
        }
        ("GET", "/readyz") => {
            let (status, text) = if context.health.ready() {
                (200, "ready")
            } else {
                (
                    503,
                    "not ready: shutting down, a lane is down, or the shared store is unreachable",
                )
            };
            let _ = http::write_text(&mut stream, status, text).await;
            return;
        }
        _ => {}
    }
    if !authorized(&head, context.token.as_deref()) {
        let headers = [("www-authenticate".to_owned(), "Bearer".to_owned())];
        let _ =
            http::write_response(&mut stream, 401, &headers, b"a bearer token is required\n").await;
        return;
    }
    let (status, (headers, body)) = match (method, path) {
        ("GET", "/metrics") => {
            let text = context.metrics.render(&context.registry.live_instances());
            let headers = vec![(
                "content-type".to_owned(),
                crate::metrics::CONTENT_TYPE.to_owned(),
            )];
            (200, (headers, text.into_bytes()))
        }
        ("GET", "/admin/documents") => {
            let replies = futures_util::future::join_all(
                (0..context.lanes.len()).map(|lane| ask(&context.lanes, lane, AdminRequest::List)),
            )
            .await;
            let lanes: Vec<serde_json::Value> = replies
                .into_iter()
                .filter_map(|r| match r {
                    Some(AdminReply::Lane(info)) => serde_json::to_value(info).ok(),
                    _ => None,
                })
                .collect();
            (200, json(&serde_json::json!({ "lanes": lanes })))
        }
        ("POST", "/admin/reload") => {
            let reloader = context.reloader.clone();
            let done = tokio::task::spawn_blocking(move || reloader.reload_all()).await;
            match done {
                Ok(()) => (200, json(&context.registry.describe())),
                Err(e) => (500, json(&serde_json::json!({ "error": e.to_string() }))),
            }
        }
        ("POST", _) if path.starts_with("/admin/documents/") => act(&context.lanes, path).await,
        (_, "/metrics" | "/admin/documents" | "/admin/reload") => (
            405,
            json(&serde_json::json!({ "error": "method not allowed" })),
        ),
        _ => (404, json(&serde_json::json!({ "error": "no such route" }))),
    };
    let _ = http::write_response(&mut stream, status, &headers, &body).await;
}

/// `POST /admin/documents/{plugin}/{doc}/{snapshot|evict}`, sent to the owner lane.
async fn act(lanes: &Lanes, path: &str) -> (u16, (Vec<(String, String)>, Vec<u8>)) {
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let reply =
        |status, v: serde_json::Value| (status, (headers.clone(), v.to_string().into_bytes()));
    let rest = path.trim_start_matches("/admin/documents/");
    let Some((target, action)) = rest.rsplit_once('/') else {
        return reply(
            404,
            serde_json::json!({ "error": "expected /admin/documents/{plugin}/{doc}/{snapshot|evict}" }),
        );
    };
    let Ok(Route::Socket { plugin, document }) = route(&format!("/ws/{target}")) else {
        return reply(
            400,
            serde_json::json!({ "error": "bad plugin or document id" }),
        );
    };
    let owner = lanes.owner(&plugin, &document);
    let key = (plugin, document);
    let request = match action {
        "snapshot" => AdminRequest::Snapshot(key),
        "evict" => AdminRequest::Evict(key),
        _ => {
            return reply(
                404,
                serde_json::json!({ "error": "actions: snapshot, evict" }),
            );
        }
    };
    match ask(lanes, owner, request).await {
        Some(AdminReply::Done(Ok(done))) => reply(200, serde_json::json!({ "ok": done })),
        Some(AdminReply::Done(Err(why))) if why.ends_with("is not live") => {
            reply(404, serde_json::json!({ "error": why }))
        }
        Some(AdminReply::Done(Err(why))) if why == SHUTTING_DOWN => {
            reply(503, serde_json::json!({ "error": why }))
        }
        Some(AdminReply::Done(Err(why))) => reply(409, serde_json::json!({ "error": why })),
        _ => reply(
            503,
            serde_json::json!({ "error": "the lane is not answering" }),
        ),
    }
}

/// Sends `request` to lane `index` and waits for its answer (`None` if it is stopping).
async fn ask(lanes: &Lanes, index: usize, request: AdminRequest) -> Option<AdminReply> {
    let (tx, rx) = oneshot::channel();
    lanes
        .get(index)
        .commands
        .send(LaneCommand::Admin(request, tx))
        .ok()?;
    rx.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(auth: Option<&str>) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            path: "/metrics".into(),
            query: String::new(),
            headers: auth
                .map(|a| vec![("authorization".to_owned(), a.to_owned())])
                .unwrap_or_default(),
            rest: Vec::new(),
        }
    }

    #[test]
    fn bearer_token_checks() {
        assert!(authorized(&head(None), None));
        assert!(!authorized(&head(None), Some("s3cret")));
        assert!(!authorized(&head(Some("Bearer s3cre")), Some("s3cret")));
        assert!(!authorized(&head(Some("Bearer s3creT")), Some("s3cret")));
        assert!(!authorized(&head(Some("Basic s3cret")), Some("s3cret")));
        assert!(authorized(&head(Some("Bearer s3cret")), Some("s3cret")));
        assert!(authorized(&head(Some("bearer s3cret")), Some("s3cret")));
    }
}
