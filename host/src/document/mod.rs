//! One live document, knowing nothing of lanes or sockets: [`live`] (the document, its
//! guest calls and their effects, traps), [`instance`] (its consumer instance and the
//! deadline), [`outbox`] (a connection's bounded queue of frames), [`state`] (snapshot,
//! restore, migration to a new plugin version), [`leaving`] (draining its sockets before
//! it leaves this host, or retiring it at once) and [`error`].

pub mod error;
pub mod instance;
pub mod leaving;
pub mod live;
pub mod outbox;
pub mod state;

pub use error::DocumentError;
pub use instance::DocumentConfig;
pub use live::{Document, DocumentCell, DocumentInfo, DocumentKey, Persistence};
