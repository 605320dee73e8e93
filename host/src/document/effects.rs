//! Carrying out what a guest call asked of the host (its effects, recorded while it ran),
//! in order, once it returned: frames into the recipients' outboxes, closes.

use std::collections::HashMap;
use std::rc::Rc;

use crate::document::outbox::Outbox;
use crate::guest::Effect;

/// Carries out what a guest call asked, once it returned; `batch` is the journal batch
/// it waits for (0: none).
pub(crate) fn apply(outboxes: &HashMap<u64, Rc<Outbox>>, effect: Effect, batch: u64) {
    match effect {
        Effect::Send(id, frame) => {
            if let Some(outbox) = outboxes.get(&id) {
                outbox.push_in(&frame, batch);
            }
        }
        Effect::Broadcast(frame, except) => {
            for (id, outbox) in outboxes {
                if !except.contains(id) {
                    outbox.push_in(&frame, batch);
                }
            }
        }
        Effect::Close(id, code, reason) => {
            if let Some(outbox) = outboxes.get(&id) {
                outbox.close_in(code, &reason, batch);
            }
        }
    }
}
