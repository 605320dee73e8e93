//! A connection's messages of one read in one guest call: `on-messages` (WIT 0.1.2), for
//! consumers that export it. The lane decides what goes into a batch and how large it may
//! be (`lane::batch`); here it is one input of the document like any other: one deadline,
//! one clock, one random stream, one journal record (`Messages`) that replays as the same
//! call.
//!
//! The consumer says how many of the messages it handled, from the first: all, unless it
//! closed the connection while handling one (the Rust SDK's default stops there). What it
//! did not handle was read but not applied, as anything a closed connection sends.

use std::time::Instant;

use wasmroom_wire::journal::{Payload, Record};

use crate::document::error::{DocumentError, NOT_APPLIED};
use crate::document::live::Document;
use crate::guest::{CallStart, Message};

/// Why a connection is closed when its consumer handled only part of a batch without
/// closing it: its stream would go on with a hole.
const DROPPED: &str = "consumer dropped messages";

impl Document {
    /// Whether its consumer takes a connection's messages in batches (`on-messages`).
    pub fn takes_batches(&self) -> bool {
        self.plugin.takes_batches()
    }

    /// Messages from connection `id` that arrived together, handed over at `now` (see
    /// [`Self::call_since`]): one `on-messages` call, one input. Returns how many the
    /// consumer handled, from the first. The caller checks [`Self::takes_batches`]; on an
    /// error the document crashed (or had already ended), and none of them applied.
    pub fn messages(
        &mut self,
        id: u64,
        msgs: &[Message],
        now: Instant,
    ) -> Result<usize, DocumentError> {
        self.messages += msgs.len() as u64;
        let batch = self.instance.as_ref().and_then(|i| i.batch());
        let record = |_: &u32| Record::Messages {
            connection: id,
            messages: msgs.iter().map(payload).collect(),
        };
        let handled = self
            .call_since("on-messages", now, record, |_, store| match &batch {
                Some(batch) => batch.call_on_messages(store, id, msgs),
                None => Err(wasmtime::Error::msg("the consumer has no on-messages")),
            })
            .inspect_err(|e| {
                if let DocumentError::InputRefused(_) = e
                    && let Some(sender) = self.outboxes.get(&id)
                {
                    // Only the sender hears of it: the document went on without them.
                    sender.close(1011, NOT_APPLIED);
                }
            })?;
        let handled = usize::try_from(handled).map_or(msgs.len(), |n| n.min(msgs.len()));
        let closed = self
            .instance
            .as_ref()
            .is_some_and(|i| i.store.data().closing.contains(&id));
        if handled < msgs.len() && !closed {
            self.output_corrected(
                format_args!(
                    "handled {handled} of {} messages without closing their connection",
                    msgs.len()
                ),
                1011,
            );
            if let Some(outbox) = self.outboxes.get(&id) {
                outbox.close(1011, DROPPED);
            }
        }
        Ok(handled)
    }

    /// Replays a `Messages` entry from `start`: the same call with the same messages,
    /// outputs dropped. A version of the consumer without `on-messages` gets `on-message`
    /// for each within that one call (one deadline, clock and random stream), stopping
    /// once it closed the connection, as the Rust SDK's default does.
    pub(super) fn replay_messages(
        &mut self,
        start: CallStart,
        connection: u64,
        payloads: &[Payload],
    ) -> Result<(), DocumentError> {
        let msgs = payloads
            .iter()
            .map(message)
            .collect::<Result<Vec<_>, _>>()?;
        self.messages += msgs.len() as u64;
        let batch = self.instance.as_ref().and_then(|i| i.batch());
        let no_record = None::<fn(&()) -> Record>;
        self.run(
            "on-messages",
            Instant::now(),
            start,
            no_record,
            None,
            |room, store| match &batch {
                Some(batch) => batch.call_on_messages(store, connection, &msgs).map(drop),
                None => {
                    let consumer = room.wasmroom_consumer_consumer();
                    for msg in &msgs {
                        consumer.call_on_message(&mut *store, connection, msg)?;
                        if store.data().closing.contains(&connection) {
                            break;
                        }
                    }
                    Ok(())
                }
            },
        )
    }
}

/// A message as its journal record holds it.
fn payload(msg: &Message) -> Payload {
    match msg {
        Message::Text(text) => Payload {
            text: true,
            data: text.as_bytes().to_vec(),
        },
        Message::Binary(data) => Payload {
            text: false,
            data: data.clone(),
        },
    }
}

/// A journaled message as the consumer gets it.
fn message(payload: &Payload) -> Result<Message, DocumentError> {
    if !payload.text {
        return Ok(Message::Binary(payload.data.clone()));
    }
    String::from_utf8(payload.data.clone())
        .map(Message::Text)
        .map_err(|_| DocumentError::Unreplayable("a text message is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_their_journal_record() {
        for msg in [
            Message::Text("héllo".into()),
            Message::Binary(vec![0, 0xff]),
            Message::Text(String::new()),
        ] {
            assert_eq!(message(&payload(&msg)).unwrap(), msg);
        }
        let broken = Payload {
            text: true,
            data: vec![0xc3],
        };
        assert!(matches!(
            message(&broken),
            Err(DocumentError::Unreplayable(_))
        ));
    }
}
