//! What a journal-mode document writes to its journal (see ARCHITECTURE.md, "the input
//! journal"): an entry for every input that returned, into the lane's open batch and the
//! document's tail.

use std::cell::RefCell;
use std::rc::Rc;

use wasmroom_wire::journal::{Entry, Record};

use crate::document::journal::{self, Tail};
use crate::document::live::Document;
use crate::guest::CallStart;

impl Document {
    /// The number of its last input (its journal sequence number).
    pub fn inputs(&self) -> u64 {
        self.lineage.inputs()
    }

    /// Journal mode: its entries since its last checkpoint.
    pub fn tail(&self) -> Option<&Rc<RefCell<Tail>>> {
        self.tail.as_ref()
    }

    /// Journals an input that returned (journal mode, unless it is being replayed).
    pub(super) fn journal(&mut self, start: CallStart, record: impl FnOnce() -> Record) {
        if !self.journaled || self.replaying {
            return;
        }
        let entry = Entry {
            plugin: self.plugin.name.clone(),
            document: self.id.clone(),
            incarnation: self.incarnation,
            seq: self.lineage.inputs(),
            clock_ms: start.clock_ms,
            record: record(),
        };
        self.last_batch = journal::append(&wasmroom_wire::journal::frame(&entry));
        if let Some(tail) = &self.tail {
            tail.borrow_mut().push(self.last_batch, entry);
        }
    }
}
