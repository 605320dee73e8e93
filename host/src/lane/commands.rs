//! What the rest of the process can ask of a lane, sent on its command channel: the
//! vocabulary the lane and its callers (other lanes, the reloader, the admin API) share.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::document::{DocumentInfo, DocumentKey};
use crate::guest::plugin::Plugin;
use crate::net::http::RequestHead;

/// What the rest of the process asks of a lane.
#[derive(Debug)]
pub enum LaneCommand {
    /// A new version of a plugin is loaded: move this lane's documents of it over.
    Migrate(Arc<Plugin>),
    /// A connection that another lane accepted for a document this lane owns.
    Adopt(Handover),
    /// A request of the admin API; the answer goes back on the channel.
    Admin(AdminRequest, oneshot::Sender<AdminReply>),
    /// Another host asks for this document, which it saw held here under the epoch given
    /// (if it said): save it and let it go.
    Release(DocumentKey, Option<u64>),
    /// This host's lease in the shared store lapsed: drop every document now.
    Fence,
}

/// A connection on its way to the lane that owns its document: the socket (taken off
/// the sending lane's reactor) and the request head that lane already read.
#[derive(Debug)]
pub struct Handover {
    /// The socket.
    pub stream: std::net::TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The request, read but not answered.
    pub head: RequestHead,
}

/// What a lane answers an action with once shutdown has begun.
pub const SHUTTING_DOWN: &str = "server shutting down";

/// What the admin API asks a lane.
#[derive(Debug)]
pub enum AdminRequest {
    /// The lane's figures and its live documents.
    List,
    /// Save the document now.
    Snapshot(DocumentKey),
    /// Close the document's connections (1001), save it and drop it from memory.
    Evict(DocumentKey),
}

/// A lane's answer to the admin API.
#[derive(Debug)]
pub enum AdminReply {
    /// For [`AdminRequest::List`].
    Lane(LaneInfo),
    /// For the actions: what happened, or why not.
    Done(Result<String, String>),
}

/// A lane as the admin API shows it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LaneInfo {
    /// The lane's index.
    pub lane: usize,
    /// Its port.
    pub port: u16,
    /// Open WebSockets.
    pub websockets: i64,
    /// Messages from clients, ever.
    pub messages_in: u64,
    /// Messages to clients, ever.
    pub messages_out: u64,
    /// Live documents.
    pub documents: Vec<DocumentInfo>,
    /// With a shared store: whether this host's lease holds (`held`) or not (`lapsed`).
    #[serde(default)]
    pub lease: Option<String>,
}
