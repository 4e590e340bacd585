//! Three servers and a link that can be cut: a TCP proxy between a.test and
//! b.test (c.test reaches both directly). While the link is down, both sides
//! change the room's power levels and topic; once it heals, the three
//! servers hold the same resolved state.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

use super::{free_port, start_peer, TestCa};
use crate::harness::{enc, Session};

/// A TCP proxy to `target` that refuses and drops every connection while cut.
pub(super) struct Link {
    pub(super) port: u16,
    cut: watch::Sender<bool>,
}

impl Link {
    pub(super) async fn to(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watching) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if *watching.borrow() {
                    continue; // dropped: the link is down
                }
                let mut watching = watching.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watching.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut }
    }

    pub(super) fn set_down(&self, down: bool) {
        self.cut.send_replace(down);
    }
}

/// The room's state events of `kind` as `session` sees them, by state key: content and event id.
async fn state_of(session: &Session, room: &str) -> Vec<(String, String, Value)> {
    let reply = session.client.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room))).await;
    let mut state: Vec<(String, String, Value)> = reply
        .assert_ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let key = format!("{} {}", e["type"].as_str().unwrap_or(""), e["state_key"].as_str().unwrap_or(""));
            (key, e["event_id"].as_str().unwrap_or("").to_owned(), e["content"].clone())
        })
        .collect();
    state.sort_by(|x, y| x.0.cmp(&y.0));
    state
}

async fn put_state(session: &Session, room: &str, kind: &str, content: Value) -> ruma::OwnedEventId {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/", enc(room));
    let reply = session.client.put(&path, content).await;
    ruma::OwnedEventId::try_from(reply.assert_ok()["event_id"].as_str().unwrap()).unwrap()
}

/// Waits until `check` holds for the state each session sees (30 s at most).
async fn until_states(
    sessions: &[&Session],
    room: &str,
    what: &str,
    check: impl Fn(&[Vec<(String, String, Value)>]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut states = Vec::new();
        for session in sessions {
            states.push(state_of(session, room).await);
        }
        if check(&states) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {states:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn power_levels(state: &[(String, String, Value)]) -> Value {
    state.iter().find(|(key, _, _)| key == "m.room.power_levels ").map(|(_, _, c)| c.clone()).unwrap_or_default()
}

#[tokio::test]
async fn after_a_partition_every_server_resolves_to_the_same_state() {
    let ca = TestCa::new();
    let (port_a, port_b, port_c) = (free_port(), free_port(), free_port());
    let to_a = Link::to(SocketAddr::from(([127, 0, 0, 1], port_a))).await;
    let to_b = Link::to(SocketAddr::from(([127, 0, 0, 1], port_b))).await;
    let a = start_peer(&ca, "a.test", port_a, &[("b.test", to_b.port), ("c.test", port_c)], "").await;
    let b = start_peer(&ca, "b.test", port_b, &[("a.test", to_a.port), ("c.test", port_c)], "").await;
    let c = start_peer(&ca, "c.test", port_c, &[("a.test", port_a), ("b.test", port_b)], "").await;
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;
    let carol = c.client().register("carol").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    for (user, server) in [(&bob, "a.test"), (&carol, "a.test")] {
        let path = format!("/_matrix/client/v3/join/{}?server_name={server}", enc(&room));
        user.client.post(&path, json!({})).await.assert_ok();
    }
    let mut levels = power_levels(&state_of(&alice, &room).await);
    levels["users"] = json!({ "@bob:b.test": 100, "@carol:c.test": 50 });
    put_state(&alice, &room, "m.room.power_levels", levels.clone()).await;
    let sessions = [&alice, &bob, &carol];
    until_states(&sessions, &room, "bob's power everywhere", |states| {
        states.iter().all(|state| power_levels(state)["users"]["@bob:b.test"] == 100)
    })
    .await;

    // The link between a.test and b.test goes down; both sides change the room.
    to_a.set_down(true);
    to_b.set_down(true);
    let mut from_a = levels.clone();
    from_a["events_default"] = json!(10);
    from_a["users"]["@carol:c.test"] = json!(0);
    let levels_a = put_state(&alice, &room, "m.room.power_levels", from_a.clone()).await;
    let topic_a = put_state(&alice, &room, "m.room.topic", json!({ "topic": "from a" })).await;
    let mut from_b = levels.clone();
    from_b["state_default"] = json!(60);
    let levels_b = put_state(&bob, &room, "m.room.power_levels", from_b.clone()).await;
    let topic_b = put_state(&bob, &room, "m.room.topic", json!({ "topic": "from b" })).await;
    // Neither side knows the other's changes yet.
    assert!(a.services().rooms.get_pdu(&levels_b).unwrap().is_none());
    assert!(b.services().rooms.get_pdu(&levels_a).unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Healed: the same resolved state on the three servers.
    to_a.set_down(false);
    to_b.set_down(false);
    until_states(&sessions, &room, "the same state everywhere", |states| {
        states.windows(2).all(|pair| pair[0] == pair[1])
    })
    .await;
    // Every server holds both sides' events, and the state is one of the two forks' (resolved).
    for server in [&a, &b, &c] {
        for event in [&levels_a, &topic_a, &levels_b, &topic_b] {
            assert!(server.services().rooms.get_pdu(event).unwrap().is_some(), "{event} missing");
        }
    }
    let resolved = power_levels(&state_of(&carol, &room).await);
    assert!(resolved == from_a || resolved == from_b, "{resolved}");
    // And the room goes on: a message from each side reaches the others.
    alice.send_text(&room, "after-a", "healed from a").await;
    bob.send_text(&room, "after-b", "healed from b").await;
    until_states(&sessions, &room, "the same state after new messages", |states| {
        states.windows(2).all(|pair| pair[0] == pair[1])
    })
    .await;
}
