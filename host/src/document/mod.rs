//! One live document, knowing nothing of lanes or sockets: [`live`] (the document, its
//! guest calls and their effects, traps), [`batch`] (a connection's messages of one read in
//! one call), [`open`] (its instance created and opened), [`connections`] (the ids it gives, joining and
//! leaving), [`carried_sessions`] (sessions that travel with a document to its next host), [`lineage`] (its clock, random seed and connection-id counter: what each
//! call starts from), [`instance`] (its consumer instance and the deadline), [`outbox`]
//! (a connection's bounded queue of frames), [`state`] (snapshot, restore, migration to
//! a new plugin version), [`recording`] and [`replay`] (writing its journal, rebuilding it from there), [`versions`] (the plugin version each replayed input runs on), [`settings`] (the plugin settings as journaled inputs), [`rebuild`] (a trap in journal mode: the document rebuilt in place without the input), [`dropped`] (a timer or a departure whose call trapped, journaled as dropped before that rebuild), [`leaving`] (draining its sockets before it leaves this host,
//! or retiring it at once), [`trap`] (what a trap reports, to the log and to `/plugins`)
//! and [`error`] (why a document cannot open or serve, and the one answer a client gets
//! for it).

pub mod batch;
pub mod carried_sessions;
pub mod connections;
pub mod dropped;
pub mod effects;
pub mod error;
pub mod info;
pub mod instance;
pub mod journal;
pub mod leaving;
pub mod lineage;
pub mod live;
pub mod open;
pub mod outbox;
pub mod rebuild;
pub mod recording;
pub mod replay;
pub mod settings;
pub mod state;
pub mod trap;
pub mod versions;

pub use error::{ClientAnswer, DocumentError};
pub use info::DocumentInfo;
pub use instance::DocumentConfig;
pub use live::{Document, DocumentCell, DocumentKey, Persistence};
