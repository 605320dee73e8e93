//! A `/ws/{plugin}/{document}` request on the document's owner lane: check the upgrade,
//! find the plugin, open the document, let the consumer decide, answer `101`, then serve
//! the socket ([`crate::lane::socket`]).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::WebhookEvent;
use crate::document::outbox::{CLOSE_TIMEOUT, Outbox};
use crate::document::{ClientAnswer, DocumentCell, DocumentError};
use crate::guest::plugin::Plugin;
use crate::guest::{ConnectInfo, Decision};
use crate::lane::admission::{admit_address, origin_allowed, token_checked};
use crate::lane::live::{Live, Upgraded};
use crate::lane::lookup::{answer_document_error, find_plugin, refuse_document, rejection};
use crate::lane::sessions::{self, Session};
use crate::lane::{ConnectionGuard, Lane};
use crate::metrics::Rejection;
use crate::net::access_token::{Admitted, TOKEN_SUBPROTOCOL};
use crate::net::http::{self, RequestHead};
use crate::net::websocket::frame::{close_payload, encode, opcode};
use wasmroom_wire::session::{self as session_frames, Resume, SUBPROTOCOL, take_resume};

/// Upgrades a `/ws/{plugin}/{document}` request on the document's owner lane. Returns
/// the socket to serve, or `None` when the client was answered otherwise.
pub async fn serve(
    lane: Rc<Lane>,
    stream: TcpStream,
    peer: SocketAddr,
    head: RequestHead,
    plugin: &str,
    document: &str,
    guard: ConnectionGuard,
) -> Option<Live> {
    let upgraded = upgrade(&lane, stream, peer, head, plugin, document).await?;
    // A resumed session is the connection it was: counted and announced once.
    if !upgraded.resumed {
        lane.metrics.websockets.inc();
        lane.webhook(
            plugin,
            WebhookEvent::Connected,
            document,
            Some(upgraded.id),
            None,
        );
    }
    Some(Live::new(lane, upgraded, guard))
}

/// Everything before the upgrade: checks, plugin, document, the consumer's decision, the
/// `101`. `None` when the client was answered otherwise.
async fn upgrade(
    lane: &Rc<Lane>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut head: RequestHead,
    plugin: &str,
    document: &str,
) -> Option<Upgraded> {
    let accept_key = match http::websocket_accept_key(&head) {
        Ok(key) => key,
        Err(why) => {
            let status = if head.header("upgrade").is_none() {
                426
            } else {
                400
            };
            lane.metrics.rejected(Rejection::NotUpgrade);
            let _ = http::write_text(&mut stream, status, &why.to_string()).await;
            return None;
        }
    };
    if !origin_allowed(lane, &mut stream, plugin, &head).await {
        return None;
    }
    // From here on `head` carries no token: what `on-connect` sees comes from it.
    let admitted = token_checked(lane, &mut stream, plugin, document, &mut head).await?;
    // A session's parameters are the host's: the consumer sees the query without them.
    let wants_session = head.subprotocols().iter().any(|p| p == SUBPROTOCOL);
    let resume = if wants_session {
        let (resume, query) = take_resume(&head.query);
        head.query = query;
        resume
    } else {
        None
    };
    let client = http::client_address(&head, peer, lane.services.config.proxy_headers);
    let address = admit_address(lane, &mut stream, client.ip()).await?;
    let plugin = find_plugin(lane, &mut stream, plugin).await?;
    let limits = &lane.services.config.limits;
    // `None`: `open` answered (or the upgrade must answer: 1013 / 1011).
    let doc = match open(lane, &mut stream, &plugin, document, client).await? {
        Opened::Ready(doc) => doc,
        Opened::CloseAfterUpgrade(code, reason) => {
            refuse_after_upgrade(stream, &accept_key, code, &reason).await;
            return None;
        }
    };
    let resuming = match resume {
        Some(resume) => resumed(lane, &mut stream, &accept_key, &doc, &resume).await,
        None => Resuming::Cannot,
    };
    if let Resuming::Broken = resuming {
        return None;
    }
    if let Resuming::Resumed(Resumed {
        id,
        outbox,
        session,
    }) = resuming
    {
        return Some(Upgraded {
            stream,
            rest: head.rest,
            doc,
            id,
            outbox,
            address,
            session: Some(session),
            resumed: true,
        });
    }
    if doc.borrow().connection_count() >= limits.max_connections_per_document {
        lane.metrics.rejected(Rejection::Capacity);
        let _ = http::write_text(
            &mut stream,
            503,
            "document at capacity: too many connections",
        )
        .await;
        return None;
    }
    // The document numbers its own connections (its counter is in its snapshot).
    let id = doc.borrow_mut().next_connection_id();
    let outbox = Outbox::new(limits.max_queued_bytes, limits.max_queued_frames);
    let session_id = wants_session.then(|| {
        // Numbered from the consumer's first message (`on-connect` may send some), after
        // the hello, which is always the first frame.
        let id = sessions::new_id();
        outbox.start_session(id.clone(), lane.services.config.session_grace());
        outbox.push_control(&session_frames::hello(&id, false), 0);
        id
    });
    let subprotocol = join(
        lane,
        &mut stream,
        &doc,
        &plugin,
        Joining {
            id,
            client,
            head: &head,
            admitted,
        },
        &outbox,
    )
    .await?;
    // A session's answer names its subprotocol, whatever the consumer chose.
    let subprotocol = match session_id {
        Some(_) => Some(SUBPROTOCOL.to_owned()),
        None => subprotocol,
    };
    if http::write_switching_protocols(&mut stream, &accept_key, subprotocol.as_deref())
        .await
        .is_err()
    {
        outbox.finish();
        doc.borrow_mut().disconnect(id, 1006);
        return None;
    }
    let session = session_id.map(|sid| {
        let key = (plugin.name.clone(), document.to_owned());
        lane.sessions
            .start(sid, key, doc.clone(), id, outbox.clone())
    });
    Some(Upgraded {
        stream,
        rest: head.rest,
        doc,
        id,
        outbox,
        address,
        session,
        resumed: false,
    })
}

/// What came of a resume.
enum Resuming {
    Resumed(Resumed),
    /// The session cannot be resumed: the client gets a new one (the explicit "cannot
    /// resume").
    Cannot,
    /// The socket broke before its `101` was out: nothing to answer; the session stays
    /// parked for another try.
    Broken,
}

/// A session taken over by a new socket.
struct Resumed {
    id: u64,
    outbox: Rc<Outbox>,
    session: Rc<Session>,
}

/// Resumes the session the client asks for: its `101` written and what it missed queued.
async fn resumed(
    lane: &Lane,
    stream: &mut TcpStream,
    accept_key: &str,
    doc: &DocumentCell,
    resume: &Resume,
) -> Resuming {
    let key = {
        let d = doc.borrow();
        (d.plugin().name.clone(), d.id().to_owned())
    };
    let Some(session) = lane.sessions.claim(&resume.session, &key, resume.last) else {
        return Resuming::Cannot;
    };
    // Its old socket, if the host has not noticed the cut, stops and parks it first.
    session.released().await;
    if !session.is_open() || !Rc::ptr_eq(doc, &session.doc) {
        session.unclaim();
        return Resuming::Cannot;
    }
    if http::write_switching_protocols(stream, accept_key, Some(SUBPROTOCOL))
        .await
        .is_err()
    {
        session.unclaim();
        return Resuming::Broken;
    }
    session.resume(resume.last, &session_frames::hello(&session.id, true));
    Resuming::Resumed(Resumed {
        id: session.connection,
        outbox: session.outbox.clone(),
        session,
    })
}

/// What opening the document gave a WebSocket request.
enum Opened {
    /// Serve it.
    Ready(DocumentCell),
    /// The protocol's way to say "later" (1013) or "broken" (1011) is a close code, so
    /// upgrade first, then close with it.
    CloseAfterUpgrade(u16, String),
}

/// Opens the document (waiting for a crashed one's last save). `None` means the client
/// was answered already.
async fn open(
    lane: &Rc<Lane>,
    stream: &mut TcpStream,
    plugin: &Arc<Plugin>,
    document: &str,
    client: SocketAddr,
) -> Option<Opened> {
    match lane
        .document_when_settled(plugin, document, client.ip())
        .await
    {
        Ok(doc) => Some(Opened::Ready(doc)),
        Err(e) => match e.client_answer() {
            ClientAnswer {
                close_after_upgrade: Some(code),
                text,
                ..
            } => {
                lane.metrics.rejected(rejection(&e));
                Some(Opened::CloseAfterUpgrade(code, text))
            }
            _ => {
                refuse_document(lane, stream, plugin, document, e).await;
                None
            }
        },
    }
}

/// A connection about to join its document.
struct Joining<'a> {
    id: u64,
    client: SocketAddr,
    head: &'a RequestHead,
    /// Its verified access token, when the plugin takes tokens.
    admitted: Option<Admitted>,
}

/// Registers the connection with the document and asks the consumer (`on-connect`).
/// Returns the subprotocol to answer with, or `None` when the client was refused (the
/// consumer's own status and reason, or 500).
async fn join(
    lane: &Lane,
    stream: &mut TcpStream,
    doc: &DocumentCell,
    plugin: &Plugin,
    joining: Joining<'_>,
    outbox: &Rc<Outbox>,
) -> Option<Option<String>> {
    let Joining {
        id,
        client,
        head,
        admitted,
    } = joining;
    // A token's subprotocol is the host's business: the consumer sees the others (with
    // tokens on, `token_checked` removed it from the header too; without, the prefix is
    // still the host's, never a consumer's choice).
    let offered: Vec<String> = head
        .subprotocols()
        .into_iter()
        .filter(|p| !p.starts_with(TOKEN_SUBPROTOCOL) && p != SUBPROTOCOL)
        .collect();
    let (claims, token_protocol) = match admitted {
        Some(a) => (Some(a.claims), a.subprotocol),
        None => (None, None),
    };
    let info = ConnectInfo {
        id,
        path: head.path.clone(),
        query: head.query.clone(),
        headers: head.headers.clone(),
        subprotocols: offered.clone(),
        remote_address: client.to_string(),
    };
    let mut decision = doc.borrow_mut().connect(info, outbox.clone(), claims);
    // Journal mode: the answer leaves once the call's record is durable.
    if decision.is_ok() && !crate::lane::journal::durable(doc).await {
        decision = Err(DocumentError::Moved);
    }
    match decision {
        Ok(Decision::Accept(Some(p))) if !offered.contains(&p) => {
            let doc = doc.borrow();
            tracing::warn!(plugin = %plugin.name, doc = %doc.id(), "consumer chose subprotocol {p:?}, which the client did not offer; ignored");
            Some(None)
        }
        // A browser that offered only the token's subprotocol fails the handshake unless
        // the answer names one it offered.
        Ok(Decision::Accept(None)) if offered.is_empty() => Some(token_protocol),
        Ok(Decision::Accept(choice)) => Some(choice),
        Ok(Decision::Reject(r)) => {
            lane.metrics.rejected(Rejection::Consumer);
            let _ = http::write_text(stream, r.status, &r.reason).await;
            None
        }
        Err(e) => {
            // A trap in `on-connect` (logged by the document), or the document ended.
            lane.metrics.rejected(Rejection::Error);
            answer_document_error(stream, &e).await;
            None
        }
    }
}

/// Completes the upgrade only to close at once with `code` (e.g. 1013 "try again later"),
/// then waits (bounded) for the client's answer.
async fn refuse_after_upgrade(mut stream: TcpStream, accept_key: &str, code: u16, reason: &str) {
    if http::write_switching_protocols(&mut stream, accept_key, None)
        .await
        .is_err()
    {
        return;
    }
    let mut close = Vec::new();
    encode(&mut close, opcode::CLOSE, &close_payload(code, reason));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        stream.write_all(&close).await?;
        // Whatever the client sends until it closes is read and dropped.
        let mut sink = vec![0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
