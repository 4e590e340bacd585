//! The public-sector rules between servers: an agents' server (a.test,
//! `external_servers = ["b.test"]`) and the external partners' server
//! (b.test, `externals_mode`), each enforcing its rules on what it sends and
//! on what arrives over federation — also from a server without the rules.

use serde_json::json;

use super::rooms::{joined_members, wait_for_message};
use super::two_servers;
use crate::harness::{enc, state_path, Reply, Session};

const AGENTS: &str = "[policy]\naccess_rules = true\nexternal_servers = [\"b.test\"]\n";
const EXTERNALS: &str = "[policy]\naccess_rules = true\nexternals_mode = true\n";

fn assert_refused(reply: &Reply, rule: &str) {
    reply.assert_error(403, "M_FORBIDDEN");
    let text = reply.body["error"].as_str().unwrap_or_default();
    assert!(text.contains(rule), "the error names the rule {rule}: {text}");
}

async fn join_via_a(session: &Session, room: &str) -> Reply {
    session.client.post(&format!("/_matrix/client/v3/join/{}?server_name=a.test", enc(room)), json!({})).await
}

#[tokio::test]
async fn partners_of_the_externals_server_enter_only_unrestricted_rooms_they_are_invited_to_and_get_no_power() {
    let (_ca, a, b) = two_servers(AGENTS, EXTERNALS).await;
    let (_admin_a, _admin_b) = (a.client().register("admin").await, b.client().register("admin").await);
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;

    // A restricted room: a.test refuses to invite bob (nothing is sent).
    let restricted = alice.create_room(json!({})).await;
    assert_refused(&alice.invite(&restricted, &bob.user_id).await, "access_rules.restricted");
    // A forum: b.test does not let bob in, invited or not.
    let forum = alice.create_room(json!({ "preset": "public_chat", "visibility": "public" })).await;
    assert_refused(&join_via_a(&bob, &forum).await, "externals.join");
    // b.test's users create no rooms.
    assert_refused(&bob.client.post("/_matrix/client/v3/createRoom", json!({})).await, "externals.create_room");

    // A room for partners: invited, bob joins and both talk.
    let rule =
        json!([{ "type": "im.vector.room.access_rules", "state_key": "", "content": { "rule": "unrestricted" } }]);
    let partners = alice.create_room(json!({ "initial_state": rule, "name": "Partners" })).await;
    alice.invite(&partners, &bob.user_id).await.assert_ok();
    join_via_a(&bob, &partners).await.assert_ok();
    assert_eq!(joined_members(&alice, &partners).await, ["@alice:a.test", "@bob:b.test"]);
    bob.send_text(&partners, "t1", "bonjour").await;
    wait_for_message(&alice, &partners, "bonjour").await;

    // No power for him, from a.test's rules.
    let mut levels = alice.client.get(&state_path(&partners, "m.room.power_levels", "")).await.assert_ok().clone();
    levels["users"]["@bob:b.test"] = json!(50);
    assert_refused(
        &alice.client.put(&state_path(&partners, "m.room.power_levels", ""), levels).await,
        "access_rules.unrestricted",
    );
}

#[tokio::test]
async fn the_externals_server_holds_its_rules_against_a_server_without_them() {
    // a.test runs plain Matrix (as a server without the rules would).
    let (_ca, a, b) = two_servers("", EXTERNALS).await;
    let (_admin_a, _admin_b) = (a.client().register("admin").await, b.client().register("admin").await);
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;

    // A room a.test marked restricted: b.test refuses the invite it is asked to sign.
    let restricted = alice.create_room(json!({})).await;
    alice
        .client
        .put(&state_path(&restricted, "im.vector.room.access_rules", ""), json!({ "rule": "restricted" }))
        .await
        .assert_ok();
    assert_refused(&alice.invite(&restricted, &bob.user_id).await, "access_rules.restricted");
    let sync = bob.client.get("/_matrix/client/v3/sync?timeout=0").await;
    assert!(sync.assert_ok()["rooms"]["invite"].get(&restricted).is_none(), "bob holds no invite");

    // An unrestricted room: bob joins, then a.test makes him a moderator.
    let partners = alice.create_room(json!({})).await;
    alice
        .client
        .put(&state_path(&partners, "im.vector.room.access_rules", ""), json!({ "rule": "unrestricted" }))
        .await
        .assert_ok();
    alice.invite(&partners, &bob.user_id).await.assert_ok();
    join_via_a(&bob, &partners).await.assert_ok();
    alice.send_text(&partners, "t1", "welcome").await;
    wait_for_message(&bob, &partners, "welcome").await;
    let mut levels = alice.client.get(&state_path(&partners, "m.room.power_levels", "")).await.assert_ok().clone();
    levels["users"]["@bob:b.test"] = json!(100);
    let promotion = alice.client.put(&state_path(&partners, "m.room.power_levels", ""), levels).await;
    let promotion = promotion.assert_ok()["event_id"].as_str().unwrap().to_owned();

    // b.test receives the event and rejects it: its rules give partners no power.
    let services = b.services();
    let event_id = ruma::EventId::parse(&promotion).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let stored = loop {
        if let Some((_, stored)) = services.rooms.get_pdu(&event_id).unwrap() {
            break stored;
        }
        assert!(std::time::Instant::now() < deadline, "b.test never received the power levels");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(stored.status, conduit::storage::records::EventStatus::Rejected);
    let seen_by_bob = bob.client.get(&state_path(&partners, "m.room.power_levels", "")).await;
    assert!(seen_by_bob.assert_ok()["users"].get("@bob:b.test").is_none(), "{:?}", seen_by_bob.body);
}

#[tokio::test]
async fn the_agents_server_refuses_joins_a_server_without_the_rules_sends_for_its_users() {
    // b.test runs plain Matrix: a.test, resident, judges its users' joins.
    let (_ca, a, b) = two_servers(AGENTS, "").await;
    let (_admin_a, _admin_b) = (a.client().register("admin").await, b.client().register("admin").await);
    let alice = a.client().register("alice").await;
    let bob = b.client().register("bob").await;

    let forum = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_refused(&join_via_a(&bob, &forum).await, "access_rules.restricted");
    let rule =
        json!([{ "type": "im.vector.room.access_rules", "state_key": "", "content": { "rule": "unrestricted" } }]);
    let open_partners = alice.create_room(json!({ "preset": "public_chat", "initial_state": rule })).await;
    assert_refused(&join_via_a(&bob, &open_partners).await, "only when invited");
    alice.invite(&open_partners, &bob.user_id).await.assert_ok();
    join_via_a(&bob, &open_partners).await.assert_ok();
    assert_eq!(joined_members(&alice, &open_partners).await, ["@alice:a.test", "@bob:b.test"]);
    assert_eq!(joined_members(&alice, &forum).await, ["@alice:a.test"]);
}
