//! The public-sector room rules (`[policy]`), over the client API of one
//! server: each rule's allowed and refused path. The rules between an
//! agents' server and the external partners' server are in
//! `federation/policy.rs`.

use serde_json::{json, Value};

use crate::harness::{enc, state_path, Reply, Session, TestServer};

const AGENTS: &str = "[policy]\naccess_rules = true\nexternal_servers = [\"externes.example\"]\n";
const EXTERNAL: &str = "@partner:externes.example";

/// A server with the rules on; its first account (a server admin, who
/// bypasses the rules) is made first and set aside.
async fn agents_server(extra: &str) -> (TestServer, Session) {
    let server = TestServer::start_with(&format!("{AGENTS}{extra}")).await;
    let admin = server.client().register("admin").await;
    (server, admin)
}

async fn state(session: &Session, room: &str, kind: &str) -> Value {
    session.client.get(&state_path(room, kind, "")).await.assert_ok().clone()
}

/// A refusal naming `rule` in its error text.
fn assert_refused(reply: &Reply, status: u16, errcode: &str, rule: &str) {
    reply.assert_error(status, errcode);
    let text = reply.body["error"].as_str().unwrap_or_default();
    assert!(text.contains(rule), "the error names the rule {rule}: {text}");
}

#[tokio::test]
async fn new_rooms_get_an_access_rule_the_imposed_power_levels_and_history_visibility() {
    let (server, _admin) = agents_server("").await;
    let alice = server.client().register("alice").await;
    let bob = server.client().register("bob").await;

    let private = alice.create_room(json!({ "preset": "private_chat" })).await;
    assert_eq!(state(&alice, &private, "im.vector.room.access_rules").await, json!({ "rule": "restricted" }));
    assert_eq!(state(&alice, &private, "m.room.history_visibility").await["history_visibility"], "invited");
    let levels = state(&alice, &private, "m.room.power_levels").await;
    for (key, level) in [("invite", 50), ("state_default", 100), ("kick", 50), ("ban", 50), ("redact", 50)] {
        assert_eq!(levels[key], level, "{key}");
    }
    for (kind, level) in
        [("m.room.encryption", 100), ("m.room.power_levels", 100), ("m.room.server_acl", 100), ("m.room.name", 50)]
    {
        assert_eq!(levels["events"][kind], level, "{kind}");
    }

    let forum = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(state(&alice, &forum, "m.room.history_visibility").await["history_visibility"], "shared");

    let dm = alice
        .create_room(json!({ "is_direct": true, "invite": [bob.user_id], "preset": "trusted_private_chat" }))
        .await;
    assert_eq!(state(&alice, &dm, "im.vector.room.access_rules").await, json!({ "rule": "direct" }));

    // What a Tchap-like client sends: the rule in initial_state.
    let partners = alice
        .create_room(json!({
            "initial_state": [{ "type": "im.vector.room.access_rules", "state_key": "", "content": { "rule": "unrestricted" } }],
        }))
        .await;
    assert_eq!(state(&alice, &partners, "im.vector.room.access_rules").await["rule"], "unrestricted");
}

#[tokio::test]
async fn creations_whose_rule_contradicts_is_direct_or_publicity_are_refused() {
    let (server, _admin) = agents_server("").await;
    let alice = server.client().register("alice").await;
    let rule =
        |rule: &str| json!([{ "type": "im.vector.room.access_rules", "state_key": "", "content": { "rule": rule } }]);
    let create = |body: Value| alice.client.post("/_matrix/client/v3/createRoom", body);

    let reply = create(json!({ "is_direct": true, "initial_state": rule("restricted") })).await;
    assert_refused(&reply, 400, "M_INVALID_PARAM", "access_rules.change");
    let reply = create(json!({ "initial_state": rule("direct") })).await;
    assert_refused(&reply, 400, "M_INVALID_PARAM", "access_rules.change");
    let reply = create(json!({ "initial_state": rule("open") })).await;
    assert_refused(&reply, 400, "M_INVALID_PARAM", "unknown access rule");
    let reply = create(json!({ "is_direct": true, "preset": "public_chat" })).await;
    assert_refused(&reply, 400, "M_INVALID_PARAM", "access_rules.direct");
    let reply = create(json!({ "visibility": "public", "initial_state": rule("unrestricted") })).await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "directory.publication");
    let reply = create(json!({ "invite": [EXTERNAL] })).await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "access_rules.restricted");
    // The refused creations left no room behind.
    let joined = alice.client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(joined.assert_ok()["joined_rooms"], json!([]));
}

#[tokio::test]
async fn clients_may_raise_the_imposed_power_levels_but_not_lower_them() {
    let (server, _admin) = agents_server("").await;
    let alice = server.client().register("alice").await;
    let reply = alice
        .client
        .post("/_matrix/client/v3/createRoom", json!({ "power_level_content_override": { "invite": 0 } }))
        .await;
    assert_refused(&reply, 400, "M_INVALID_PARAM", "power_levels.creation");
    let reply = alice
        .client
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "power_level_content_override": { "events": { "m.room.encryption": 0 } } }),
        )
        .await;
    assert_refused(&reply, 400, "M_INVALID_PARAM", "m.room.encryption");

    let room = alice
        .create_room(json!({ "power_level_content_override": { "invite": 100, "events": { "m.room.name": 100 } } }))
        .await;
    let levels = state(&alice, &room, "m.room.power_levels").await;
    assert_eq!((levels["invite"].as_i64(), levels["state_default"].as_i64()), (Some(100), Some(100)));
    assert_eq!(levels["events"]["m.room.name"], 100);
    assert_eq!(levels["events"]["m.room.encryption"], 100, "the floors not given are filled in");
}

#[tokio::test]
async fn the_access_rule_goes_only_from_restricted_to_unrestricted() {
    let (server, _admin) = agents_server("").await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    let path = state_path(&room, "im.vector.room.access_rules", "");
    let reply = alice.client.put(&path, json!({ "rule": "direct" })).await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "access_rules.change");
    let unrestricted = alice.client.put(&path, json!({ "rule": "unrestricted" })).await.assert_ok()["event_id"].clone();
    // The same rule again changes nothing: the existing event, as for any repeated state.
    let again = alice.client.put(&path, json!({ "rule": "unrestricted" })).await.assert_ok()["event_id"].clone();
    assert_eq!(again, unrestricted);
    for back in ["restricted", "direct", "anything"] {
        let reply = alice.client.put(&path, json!({ "rule": back })).await;
        assert_refused(&reply, 403, "M_FORBIDDEN", "access_rules.change");
    }
    assert_eq!(state(&alice, &room, "im.vector.room.access_rules").await["rule"], "unrestricted");

    // A published room stays restricted.
    let forum = alice.create_room(json!({ "preset": "public_chat", "visibility": "public" })).await;
    let path = state_path(&forum, "im.vector.room.access_rules", "");
    let reply = alice.client.put(&path, json!({ "rule": "unrestricted" })).await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "published");
}

#[tokio::test]
async fn external_partners_stay_out_of_restricted_rooms_and_get_no_power_in_unrestricted_ones() {
    let (server, _admin) = agents_server("").await;
    let alice = server.client().register("alice").await;
    let bob = server.client().register("bob").await;
    let room = alice.create_room(json!({})).await;
    let reply = alice.invite(&room, EXTERNAL).await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "access_rules.restricted");
    alice.invite(&room, &bob.user_id).await.assert_ok();

    alice
        .client
        .put(&state_path(&room, "im.vector.room.access_rules", ""), json!({ "rule": "unrestricted" }))
        .await
        .assert_ok();
    let mut levels = state(&alice, &room, "m.room.power_levels").await;
    levels["users"][EXTERNAL] = json!(10);
    let reply = alice.client.put(&state_path(&room, "m.room.power_levels", ""), levels.clone()).await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "access_rules.unrestricted");
    levels["users"].as_object_mut().unwrap().remove(EXTERNAL);
    levels["users_default"] = json!(1);
    let reply = alice.client.put(&state_path(&room, "m.room.power_levels", ""), levels.clone()).await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "users_default");
    levels["users_default"] = json!(0);
    levels["users"][bob.user_id.as_str()] = json!(50);
    alice.client.put(&state_path(&room, "m.room.power_levels", ""), levels).await.assert_ok();
}

#[tokio::test]
async fn direct_rooms_hold_two_people_and_have_no_name_topic_or_avatar() {
    let (server, _admin) = agents_server("").await;
    let alice = server.client().register("alice").await;
    let bob = server.client().register("bob").await;
    let carol = server.client().register("carol").await;
    let dm = alice
        .create_room(json!({ "is_direct": true, "invite": [bob.user_id], "preset": "trusted_private_chat" }))
        .await;
    bob.join(&dm).await.assert_ok();

    let reply = alice.invite(&dm, &carol.user_id).await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "access_rules.direct");
    for (kind, content) in [
        ("m.room.name", json!({ "name": "Us" })),
        ("m.room.topic", json!({ "topic": "t" })),
        ("m.room.avatar", json!({ "url": "mxc://a/b" })),
    ] {
        let reply = alice.client.put(&state_path(&dm, kind, ""), content).await;
        assert_refused(&reply, 403, "M_FORBIDDEN", "no name, topic or avatar");
    }
    let reply = alice.client.put(&state_path(&dm, "m.room.join_rules", ""), json!({ "join_rule": "public" })).await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "cannot be public");

    // Bob leaves and comes back: still one of the two.
    bob.leave(&dm).await.assert_ok();
    alice.invite(&dm, &bob.user_id).await.assert_ok();
    bob.join(&dm).await.assert_ok();
    // A room of three cannot become direct.
    let group = alice.create_room(json!({ "invite": [bob.user_id, carol.user_id] })).await;
    let reply =
        alice.client.put(&state_path(&group, "im.vector.room.access_rules", ""), json!({ "rule": "direct" })).await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "more than two members");
}

#[tokio::test]
async fn forums_stay_unencrypted_and_only_restricted_rooms_are_published_and_listed() {
    let (server, admin) = agents_server("").await;
    let alice = server.client().register("alice").await;
    let forum = alice.create_room(json!({ "preset": "public_chat", "visibility": "public", "name": "Forum" })).await;
    let reply = alice
        .client
        .put(&state_path(&forum, "m.room.encryption", ""), json!({ "algorithm": "m.megolm.v1.aes-sha2" }))
        .await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "cannot be encrypted");
    let reply = alice.client.put(&state_path(&forum, "m.room.join_rules", ""), json!({ "join_rule": "invite" })).await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "forum");
    let reply = alice
        .client
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }] }),
        )
        .await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "forum");

    // An encrypted private room may go public and back.
    let private = alice
        .create_room(json!({ "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }] }))
        .await;
    alice
        .client
        .put(&state_path(&private, "m.room.join_rules", ""), json!({ "join_rule": "public" }))
        .await
        .assert_ok();
    alice
        .client
        .put(&state_path(&private, "m.room.join_rules", ""), json!({ "join_rule": "invite" }))
        .await
        .assert_ok();

    // An unrestricted room is not published; an admin's (who bypasses) is not listed.
    let partners = alice
        .create_room(json!({ "preset": "public_chat", "initial_state": [{ "type": "im.vector.room.access_rules", "state_key": "", "content": { "rule": "unrestricted" } }] }))
        .await;
    let publish = |room: &str| format!("/_matrix/client/v3/directory/list/room/{}", enc(room));
    let reply = alice.client.put(&publish(&partners), json!({ "visibility": "public" })).await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "directory.publication");
    let admins = admin
        .create_room(json!({ "preset": "public_chat", "visibility": "public", "initial_state": [{ "type": "im.vector.room.access_rules", "state_key": "", "content": { "rule": "unrestricted" } }] }))
        .await;
    let listed = alice.client.get("/_matrix/client/v3/publicRooms").await;
    let ids: Vec<&str> =
        listed.assert_ok()["chunk"].as_array().unwrap().iter().filter_map(|r| r["room_id"].as_str()).collect();
    assert_eq!(ids, [forum.as_str()], "the admin's unrestricted room {admins} is published but not listed");
}

#[tokio::test]
async fn the_last_admin_leaving_promotes_the_moderators_or_else_every_member() {
    let (server, _admin) = agents_server("").await;
    let alice = server.client().register("alice").await;
    let bob = server.client().register("bob").await;
    let carol = server.client().register("carol").await;
    for version in ["10", "12"] {
        let room = alice.create_room(json!({ "room_version": version, "invite": [bob.user_id, carol.user_id] })).await;
        bob.join(&room).await.assert_ok();
        carol.join(&room).await.assert_ok();
        let mut levels = state(&alice, &room, "m.room.power_levels").await;
        levels["users"][bob.user_id.as_str()] = json!(50);
        alice.client.put(&state_path(&room, "m.room.power_levels", ""), levels).await.assert_ok();
        alice.leave(&room).await.assert_ok();
        let levels = state(&bob, &room, "m.room.power_levels").await;
        assert_eq!(levels["users"][bob.user_id.as_str()], 100, "v{version}: the moderator is promoted");
        assert!(levels["users"].get(carol.user_id.as_str()).is_none(), "v{version}: not the others");
        // The promotion came from the leaving admin, just before the leave.
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=2", enc(&room));
        let page = bob.client.get(&path).await;
        let chunk = page.assert_ok()["chunk"].as_array().unwrap().clone();
        assert_eq!(
            (chunk[0]["type"].as_str(), chunk[0]["content"]["membership"].as_str()),
            (Some("m.room.member"), Some("leave"))
        );
        assert_eq!(
            (chunk[1]["type"].as_str(), chunk[1]["sender"].as_str()),
            (Some("m.room.power_levels"), Some(alice.user_id.as_str()))
        );
        // Bob, now the last admin, leaves: carol (no moderator left) is promoted.
        bob.leave(&room).await.assert_ok();
        let levels = state(&carol, &room, "m.room.power_levels").await;
        assert_eq!(levels["users"][carol.user_id.as_str()], 100, "v{version}: the remaining member is promoted");
    }

    // Another admin stays: nothing changes.
    let room = alice.create_room(json!({ "room_version": "10", "invite": [bob.user_id] })).await;
    bob.join(&room).await.assert_ok();
    let mut levels = state(&alice, &room, "m.room.power_levels").await;
    levels["users"][bob.user_id.as_str()] = json!(100);
    alice.client.put(&state_path(&room, "m.room.power_levels", ""), levels.clone()).await.assert_ok();
    alice.leave(&room).await.assert_ok();
    assert_eq!(state(&bob, &room, "m.room.power_levels").await, levels);
}

#[tokio::test]
async fn server_admins_and_bypass_users_are_not_held_by_the_rules() {
    let (server, admin) = agents_server("bypass_users = [\"@helpdesk:test.local\"]\n").await;
    let helpdesk = server.client().register("helpdesk").await;
    for session in [&admin, &helpdesk] {
        let room = session.create_room(json!({ "power_level_content_override": { "invite": 0 } })).await;
        let reply = session.invite(&room, EXTERNAL).await;
        // Not refused by the rules: the external server is merely unreachable.
        assert_ne!(
            reply.body["error"].as_str().map(|e| e.contains("Refused by the room rule")),
            Some(true),
            "{:?}",
            reply.body
        );
        assert!(session.client.get(&state_path(&room, "im.vector.room.access_rules", "")).await.status == 404);
    }
}

#[tokio::test]
async fn without_the_policy_rooms_are_plain_matrix() {
    let server = TestServer::start().await;
    let _admin = server.client().register("admin").await;
    let alice = server.client().register("alice").await;
    let room = alice.create_room(json!({ "is_direct": true, "power_level_content_override": { "invite": 0 } })).await;
    alice.client.get(&state_path(&room, "im.vector.room.access_rules", "")).await.assert_error(404, "M_NOT_FOUND");
    assert_eq!(state(&alice, &room, "m.room.history_visibility").await["history_visibility"], "shared");
    alice.client.put(&state_path(&room, "m.room.name", ""), json!({ "name": "named" })).await.assert_ok();
}

#[tokio::test]
async fn users_of_the_externals_server_create_no_rooms_find_nobody_and_join_only_when_invited() {
    let server = TestServer::start_with(
        "[policy]\naccess_rules = true\nexternals_mode = true\n[user_directory]\nsearch_all_users = true\n",
    )
    .await;
    let admin = server.client().register("admin").await;
    let partner = server.client().register("partner").await;
    let other = server.client().register("other").await;

    let reply = partner.client.post("/_matrix/client/v3/createRoom", json!({})).await;
    assert_refused(&reply, 403, "M_FORBIDDEN", "externals.create_room");
    let search =
        partner.client.post("/_matrix/client/v3/user_directory/search", json!({ "search_term": "other" })).await;
    assert_eq!(search.assert_ok()["results"], json!([]));
    let search = admin.client.post("/_matrix/client/v3/user_directory/search", json!({ "search_term": "other" })).await;
    assert_eq!(search.assert_ok()["results"][0]["user_id"], other.user_id.as_str(), "the admin is not held");

    // A room the admin made (the rules do not hold them) for the partners.
    let unrestricted =
        json!([{ "type": "im.vector.room.access_rules", "state_key": "", "content": { "rule": "unrestricted" } }]);
    let room = admin.create_room(json!({ "initial_state": unrestricted.clone(), "preset": "public_chat" })).await;
    assert_refused(&partner.join(&room).await, 403, "M_FORBIDDEN", "only when invited");
    let private = admin.create_room(json!({ "initial_state": unrestricted })).await;
    admin.invite(&private, &partner.user_id).await.assert_ok();
    partner.join(&private).await.assert_ok();
    // Invited to a public room: still refused.
    admin.invite(&room, &partner.user_id).await.assert_ok();
    assert_refused(&partner.join(&room).await, 403, "M_FORBIDDEN", "cannot join public rooms");
}
