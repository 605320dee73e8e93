//! The protocol glue against yrs clients that behave as the y-websocket client does.

use super::*;
use yrs::{GetString, Text, TextRef};

fn clock() -> u64 {
    1_700_000_000_000
}

/// A client: its own document, and what y-websocket does with each server message.
struct Client {
    conn: Conn,
    doc: Doc,
    text: TextRef,
}

impl Client {
    fn new(conn: Conn, client_id: u64) -> Client {
        let doc = Doc::with_client_id(client_id);
        let text = doc.get_or_insert_text("t");
        Client { conn, doc, text }
    }

    fn text(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    /// Edits locally and returns the update message y-websocket sends for it.
    fn type_text(&self, s: &str) -> Vec<u8> {
        let mut txn = self.doc.transact_mut();
        let len = self.text.len(&txn);
        self.text.insert(&mut txn, len, s);
        let update = txn.encode_update_v1();
        Message::Sync(SyncMessage::Update(update)).encode_v1()
    }

    fn step1(&self) -> Vec<u8> {
        let sv = self.doc.transact().state_vector();
        Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1()
    }

    /// Handles one frame from the server; returns the reply, if any.
    fn receive(&self, frame: &[u8]) -> Option<Vec<u8>> {
        match Message::decode_v1(frame).expect("the server sends y-websocket messages") {
            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                let update = self.doc.transact().encode_state_as_update_v1(&sv);
                Some(Message::Sync(SyncMessage::SyncStep2(update)).encode_v1())
            }
            Message::Sync(SyncMessage::SyncStep2(u) | SyncMessage::Update(u)) => {
                let update = Update::decode_v1(&u).unwrap();
                self.doc.transact_mut().apply_update(update).unwrap();
                None
            }
            _ => None,
        }
    }
}

/// Delivers everything in `out` to the clients it is addressed to, feeding their replies
/// back to the room until nothing is left. Returns the frames each client received.
fn deliver(room: &mut Room, clients: &[&Client], out: Vec<Out>) -> HashMap<Conn, Vec<Vec<u8>>> {
    let mut seen: HashMap<Conn, Vec<Vec<u8>>> = HashMap::new();
    let mut queue: std::collections::VecDeque<Out> = out.into();
    while let Some(o) = queue.pop_front() {
        let targets: Vec<(&Client, Vec<u8>)> = match o {
            Out::Send(conn, frame) => clients
                .iter()
                .filter(|c| c.conn == conn)
                .map(|c| (*c, frame.clone()))
                .collect(),
            Out::Broadcast(frame) => clients.iter().map(|c| (*c, frame.clone())).collect(),
            Out::Close(conn, code, reason) => panic!("closed {conn}: {code} {reason}"),
            Out::Warn(w) => panic!("warning: {w}"),
        };
        for (client, frame) in targets {
            seen.entry(client.conn).or_default().push(frame.clone());
            if let Some(reply) = client.receive(&frame) {
                queue.extend(room.message(client.conn, &reply));
            }
        }
    }
    seen
}

/// Connects `client` the way y-websocket does: the server greets, the client sends step 1.
fn join(room: &mut Room, clients: &[&Client], client: &Client) {
    let mut out = room.connect(client.conn);
    out.extend(room.message(client.conn, &client.step1()));
    deliver(room, clients, out);
}

fn awareness_frame(entries: &[(u64, u32, &str)]) -> Vec<u8> {
    let clients = entries
        .iter()
        .map(|&(id, clock, json)| {
            (
                ClientID::new(id),
                AwarenessUpdateEntry {
                    clock,
                    json: json.into(),
                },
            )
        })
        .collect();
    Message::Awareness(AwarenessUpdate { clients }).encode_v1()
}

/// The awareness entries of a frame, sorted by client id.
fn awareness_of(frame: &[u8]) -> Vec<(u64, u32, String)> {
    let Message::Awareness(update) = Message::decode_v1(frame).unwrap() else {
        panic!("not an awareness message: {frame:?}")
    };
    let mut entries: Vec<_> = update
        .clients
        .into_iter()
        .map(|(id, e)| (id.get(), e.clock, e.json.to_string()))
        .collect();
    entries.sort();
    entries
}

fn broadcasts(out: &[Out]) -> Vec<&[u8]> {
    out.iter()
        .filter_map(|o| match o {
            Out::Broadcast(f) => Some(f.as_slice()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_connection_gets_sync_step_1_and_no_awareness_when_nobody_is_there() {
    let room = Room::new("doc", clock);
    let out = room.connect(7);
    assert_eq!(out.len(), 1);
    let Out::Send(7, frame) = &out[0] else {
        panic!("{out:?}")
    };
    // messageSync, syncStep1, varUint8Array of an empty state vector.
    assert_eq!(frame, &[0, 0, 1, 0]);
}

#[test]
fn two_clients_converge_through_the_room() {
    let mut room = Room::new("doc", clock);
    let a = Client::new(1, 101);
    let b = Client::new(2, 102);
    join(&mut room, &[&a, &b], &a);
    join(&mut room, &[&a, &b], &b);
    let out = room.message(a.conn, &a.type_text("hello "));
    // One update, to everyone (the sender too, as the reference server does).
    assert_eq!(broadcasts(&out).len(), 1);
    deliver(&mut room, &[&a, &b], out);
    let out = room.message(b.conn, &b.type_text("world"));
    deliver(&mut room, &[&a, &b], out);
    assert_eq!(a.text(), "hello world");
    assert_eq!(b.text(), "hello world");
    // An update the room already has changes nothing and is not broadcast again.
    let again = {
        let txn = a.doc.transact();
        txn.encode_state_as_update_v1(&StateVector::default())
    };
    let out = room.message(
        a.conn,
        &Message::Sync(SyncMessage::Update(again)).encode_v1(),
    );
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_viewer_is_refused_with_a_reason_and_changes_nothing() {
    let mut room = Room::new("doc", clock);
    let editor = Client::new(1, 101);
    let viewer = Client::new(2, 102);
    join(&mut room, &[&editor, &viewer], &editor);
    join(&mut room, &[&editor, &viewer], &viewer);
    let out = room.message_from(viewer.conn, &viewer.type_text("vandalism"), true);
    let [Out::Send(to, frame)] = out.as_slice() else {
        panic!("expected one answer to the viewer: {out:?}");
    };
    assert_eq!(*to, viewer.conn);
    assert_eq!(
        Message::decode_v1(frame).unwrap(),
        Message::Auth(Some(
            "read-only: this connection's token is a viewer's".into()
        ))
    );
    assert_eq!(
        room.state(),
        Room::new("doc", clock).state(),
        "nothing applied"
    );
    // Its empty sync step 2 (nothing of its own) is not refused; the editor still edits.
    let empty = Message::Sync(SyncMessage::SyncStep2(vec![0, 0])).encode_v1();
    assert!(room.message_from(viewer.conn, &empty, true).is_empty());
    let out = room.message(editor.conn, &editor.type_text("hello"));
    deliver(&mut room, &[&editor, &viewer], out);
    // The viewer keeps its own local edit (the client's business); nobody else sees it.
    assert_eq!(editor.text(), "hello");
    assert!(viewer.text().contains("hello"), "{}", viewer.text());
}

#[test]
fn a_viewer_gets_the_document_and_its_cursor_and_name_reach_everyone() {
    let mut room = Room::new("doc", clock);
    let editor = Client::new(1, 101);
    join(&mut room, &[&editor], &editor);
    let out = room.message(editor.conn, &editor.type_text("read me"));
    deliver(&mut room, &[&editor], out);
    // The viewer's sync step 1 is answered with the whole document, as anyone's.
    let viewer = Client::new(2, 102);
    let out = room.message_from(viewer.conn, &viewer.step1(), true);
    let [Out::Send(to, frame)] = out.as_slice() else {
        panic!("expected sync step 2 to the viewer: {out:?}");
    };
    assert_eq!(*to, viewer.conn);
    assert!(viewer.receive(frame).is_none());
    assert_eq!(viewer.text(), "read me");
    // Its awareness (a y-prosemirror cursor and a name) goes to everyone, itself included.
    let state = r##"{"user":{"name":"Vic","color":"#30638e"},"cursor":null}"##;
    let out = room.message_from(viewer.conn, &awareness_frame(&[(102, 1, state)]), true);
    assert_eq!(broadcasts(&out).len(), 1, "{out:?}");
    assert_eq!(
        awareness_of(broadcasts(&out)[0]),
        vec![(102, 1, state.to_owned())]
    );
}

#[test]
fn a_late_joiner_gets_everything_from_the_room_and_brings_its_offline_edit() {
    let mut room = Room::new("doc", clock);
    let a = Client::new(1, 101);
    join(&mut room, &[&a], &a);
    let out = room.message(a.conn, &a.type_text("from a;"));
    deliver(&mut room, &[&a], out);
    room.disconnect(a.conn);

    // Edited before connecting; nobody else is connected.
    let c = Client::new(3, 103);
    let _ = c.type_text("offline c;");
    join(&mut room, &[&c], &c);
    let text = c.text();
    assert!(
        text.contains("from a;") && text.contains("offline c;"),
        "{text}"
    );

    // A fresh client sees the offline edit: the room has it.
    let d = Client::new(4, 104);
    join(&mut room, &[&c, &d], &d);
    assert_eq!(d.text(), text);
}

#[test]
fn awareness_goes_to_everyone_and_is_removed_when_its_connection_goes() {
    let mut room = Room::new("doc", clock);
    // A lone client hears its own state back.
    let out = room.message(1, &awareness_frame(&[(101, 1, r#"{"user":"ann"}"#)]));
    assert_eq!(broadcasts(&out).len(), 1);
    assert_eq!(
        awareness_of(broadcasts(&out)[0]),
        vec![(101, 1, r#"{"user":"ann"}"#.to_owned())]
    );

    // A newcomer gets the present states on connect, after sync step 1.
    let out = room.connect(2);
    let Out::Send(2, frame) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(
        awareness_of(frame),
        vec![(101, 1, r#"{"user":"ann"}"#.to_owned())]
    );
    room.message(2, &awareness_frame(&[(102, 5, r#"{"user":"bob"}"#)]));
    // A stale or repeated state changes nothing and is not broadcast.
    assert!(
        room.message(2, &awareness_frame(&[(101, 1, r#"{"user":"ann"}"#)]))
            .is_empty()
    );

    // Connection 1 drops without a word: its state is removed for everyone, at the same
    // clock (as y-protocols' removeAwarenessStates does).
    let out = room.disconnect(1);
    assert_eq!(
        awareness_of(broadcasts(&out)[0]),
        vec![(101, 1, "null".to_owned())]
    );
    assert!(room.disconnect(1).is_empty());
    let out = room.connect(3);
    assert_eq!(
        awareness_of(match &out[1] {
            Out::Send(3, f) => f,
            other => panic!("{other:?}"),
        }),
        vec![(102, 5, r#"{"user":"bob"}"#.to_owned())]
    );
    // The same client back with a newer clock is a client again.
    let out = room.message(4, &awareness_frame(&[(101, 2, r#"{"user":"ann"}"#)]));
    assert_eq!(broadcasts(&out).len(), 1);
    assert_eq!(broadcasts(&room.disconnect(4)).len(), 1);
}

#[test]
fn a_client_that_removes_its_own_state_leaves_nothing_to_remove() {
    let mut room = Room::new("doc", clock);
    room.message(1, &awareness_frame(&[(101, 1, r#"{"x":1}"#)]));
    // What y-websocket sends on destroy(): null at the next clock.
    let out = room.message(1, &awareness_frame(&[(101, 2, "null")]));
    assert_eq!(
        awareness_of(broadcasts(&out)[0]),
        vec![(101, 2, "null".to_owned())]
    );
    assert!(room.disconnect(1).is_empty());
}

#[test]
fn awareness_query_is_answered_with_every_state() {
    let mut room = Room::new("doc", clock);
    room.message(1, &awareness_frame(&[(101, 3, "{}")]));
    let out = room.message(2, &[3]);
    let [Out::Send(2, frame)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(awareness_of(frame), vec![(101, 3, "{}".to_owned())]);
}

#[test]
fn snapshots_are_the_document_only_and_restore_to_the_same_bytes() {
    let mut room = Room::new("doc", clock);
    assert!(
        room.snapshot().is_empty(),
        "an empty document saves nothing"
    );
    assert_eq!(room.state(), EMPTY_UPDATE);
    let a = Client::new(1, 101);
    join(&mut room, &[&a], &a);
    let out = room.message(a.conn, &a.type_text("kept"));
    deliver(&mut room, &[&a], out);
    room.message(1, &awareness_frame(&[(101, 1, "{}")]));

    let saved = room.snapshot();
    assert_eq!(
        saved,
        room.snapshot(),
        "the same state encodes to the same bytes"
    );
    let mut back = Room::new("doc", clock);
    back.restore(&saved).unwrap();
    assert_eq!(back.snapshot(), saved);
    // Awareness is not saved; the restored document reaches a client.
    assert_eq!(back.connect(9).len(), 1);
    let c = Client::new(3, 103);
    join(&mut back, &[&c], &c);
    assert_eq!(c.text(), "kept");

    let mut fresh = Room::new("doc", clock);
    fresh.restore(&[]).unwrap();
    assert!(fresh.restore(&[1, 2, 3]).is_err());
}

#[test]
fn malformed_messages_close_the_sender_and_unknown_types_are_skipped() {
    let mut room = Room::new("doc", clock);
    for bad in [&[][..], &[0, 1, 200][..], &[0, 9, 0][..], &[1, 5, 1, 1][..]] {
        let out = room.message(4, bad);
        assert!(
            out.iter()
                .any(|o| matches!(o, Out::Close(4, CLOSE_MALFORMED, _))),
            "{bad:?}: {out:?}"
        );
    }
    // An update whose bytes do not decode.
    let out = room.message(
        4,
        &Message::Sync(SyncMessage::Update(vec![9, 9, 9])).encode_v1(),
    );
    assert!(matches!(
        out.last(),
        Some(Out::Close(4, CLOSE_MALFORMED, _))
    ));
    // A message type from a newer protocol is skipped, the connection stays.
    let out = room.message(4, &[7, 1, 0]);
    assert!(matches!(out.as_slice(), [Out::Warn(_)]), "{out:?}");
    // Auth messages from a client mean nothing to the server.
    assert!(room.message(4, &[2, 1]).is_empty());
}
