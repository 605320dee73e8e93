//! An upgraded WebSocket's life in its connection's task: served
//! ([`crate::lane::socket`]) until its socket is done, then ended, or, for a session
//! whose socket broke, parked until a resume or the end of its grace
//! ([`crate::lane::sessions::park`]).

use std::future::Future;
use std::rc::Rc;

use futures_util::FutureExt;
use futures_util::future::Either;
use tokio::net::TcpStream;

use crate::document::DocumentCell;
use crate::document::outbox::Outbox;
use crate::lane::address_limit::AddressSlot;
use crate::lane::departure::over;
use crate::lane::sessions::{self, Session};
use crate::lane::socket::{Served, Socket};
use crate::lane::{ConnectionGuard, Lane};

/// An upgraded socket, about to be served by its connection's task.
pub struct Live {
    lane: Rc<Lane>,
    upgraded: Upgraded,
    guard: ConnectionGuard,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("id", &self.upgraded.id)
            .finish_non_exhaustive()
    }
}

impl Live {
    pub fn new(lane: Rc<Lane>, upgraded: Upgraded, guard: ConnectionGuard) -> Live {
        Live {
            lane,
            upgraded,
            guard,
        }
    }

    /// Serves the socket to its end (see [`live`]).
    pub fn serve(self) -> impl Future<Output = ()> {
        live(self.lane, self.upgraded, self.guard)
    }
}

/// Serves an upgraded socket to its end; a session's socket that broke parks the
/// session instead (the connection ends only if no resume comes).
///
/// Built of combinators around [`socket::serve`](crate::lane::socket::serve), not as an
/// `async fn`: every idle socket's task is mostly this future, and an `async fn` would
/// keep its arguments beside the serving future (which holds them already).
fn live(lane: Rc<Lane>, upgraded: Upgraded, guard: ConnectionGuard) -> impl Future<Output = ()> {
    let Upgraded {
        stream,
        rest,
        doc,
        id,
        outbox,
        address,
        session,
        resumed: _,
    } = upgraded;
    let socket = Socket {
        stream,
        already: rest,
    };
    let served = crate::lane::socket::serve(lane, doc, id, socket, outbox, session);
    // The handles come back with the code: kept once, by the socket's future, meanwhile.
    served.then(move |served| {
        let Served {
            code,
            lane,
            doc,
            id,
            outbox,
            session,
        } = served;
        let slots = (address, guard);
        match session {
            // No close frame either way, and the host did not close it: the client vanished.
            Some(session) if code == 1006 && outbox.is_open() => {
                // Boxed: a parked session's wait (its grace's timer among the rest) would
                // make every socket's task that much larger.
                Either::Left(Box::pin(parked(lane, doc, id, outbox, session, slots)))
            }
            Some(session) => {
                session.ended(&lane.sessions);
                over(&lane, &doc, id, &outbox, code);
                drop(slots);
                Either::Right(std::future::ready(()))
            }
            None => {
                over(&lane, &doc, id, &outbox, code);
                drop(slots);
                Either::Right(std::future::ready(()))
            }
        }
    })
}

/// A session's socket broke: the session waits for a resume, holding its connection's
/// `slots`; without one, the connection ends.
async fn parked(
    lane: Rc<Lane>,
    doc: DocumentCell,
    id: u64,
    outbox: Rc<Outbox>,
    session: Rc<Session>,
    slots: (AddressSlot, ConnectionGuard),
) {
    let end = |code| over(&lane, &doc, id, &outbox, code);
    let grace = lane.services.config.session_grace();
    sessions::park(&lane.sessions, grace, session, slots, end).await;
}

/// A connection the consumer accepted, its `101` written.
#[derive(Debug)]
pub struct Upgraded {
    pub stream: TcpStream,
    /// Bytes the client sent after its request head: the start of its frames.
    pub rest: Vec<u8>,
    pub doc: DocumentCell,
    pub id: u64,
    pub outbox: Rc<Outbox>,
    /// Counts the socket toward its address's `max_connections_per_address`.
    pub address: AddressSlot,
    /// Its session, if the client asked for one.
    pub session: Option<Rc<Session>>,
    /// The session was resumed: the consumer knows this connection already.
    pub resumed: bool,
}
