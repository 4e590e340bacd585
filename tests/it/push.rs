//! Push rules: the spec's defaults, per-user changes, errors, and sync.

use serde_json::json;

use crate::{
    harness::{enc, TestServer},
    sync::sync,
};

#[tokio::test]
async fn push_rules_start_from_the_defaults_and_change_per_user() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let rules = alice.client.get("/_matrix/client/v3/pushrules/").await.assert_ok().clone();
    let overrides = rules["global"]["override"].as_array().unwrap();
    assert!(overrides.iter().any(|r| r["rule_id"] == ".m.rule.is_user_mention"), "{rules}");
    assert!(rules["global"]["underride"].as_array().unwrap().iter().any(|r| r["rule_id"] == ".m.rule.encrypted"));
    let body = sync(&alice, "").await;
    let in_sync = body["account_data"]["events"].as_array().unwrap().iter().find(|e| e["type"] == "m.push_rules");
    assert!(in_sync.expect("m.push_rules in the initial sync")["content"]["global"]["override"].is_array());
    let token = body["next_batch"].as_str().unwrap().to_owned();

    // Disable a default rule; add a keyword rule after another one.
    let suppress = "/_matrix/client/v3/pushrules/global/override/.m.rule.suppress_notices";
    alice.client.put(&format!("{suppress}/enabled"), json!({ "enabled": false })).await.assert_ok();
    assert_eq!(alice.client.get(&format!("{suppress}/enabled")).await.assert_ok()["enabled"], false);
    assert_eq!(bob.client.get(&format!("{suppress}/enabled")).await.assert_ok()["enabled"], true, "per user");
    let keyword = "/_matrix/client/v3/pushrules/global/content/budget";
    let rule = json!({ "pattern": "budget", "actions": ["notify", { "set_tweak": "highlight" }] });
    alice.client.put(keyword, rule).await.assert_ok();
    let stored = alice.client.get(keyword).await.assert_ok().clone();
    assert_eq!(stored["pattern"], "budget");
    assert_eq!(stored["actions"][0], "notify");
    alice.client.put(&format!("{keyword}/actions"), json!({ "actions": [] })).await.assert_ok();
    assert_eq!(alice.client.get(&format!("{keyword}/actions")).await.assert_ok()["actions"], json!([]));
    let changed = sync(&alice, &format!("since={token}&timeout=0")).await;
    assert!(changed["account_data"]["events"].to_string().contains("budget"), "the change reaches sync");

    // Errors: reserved ids, unknown rules and anchors, default rules cannot be deleted.
    let reserved = "/_matrix/client/v3/pushrules/global/override/.mine";
    alice.client.put(reserved, json!({ "actions": [] })).await.assert_error(400, "M_INVALID_PARAM");
    alice.client.get("/_matrix/client/v3/pushrules/global/override/nope").await.assert_error(404, "M_NOT_FOUND");
    let anchored = "/_matrix/client/v3/pushrules/global/content/other?before=missing";
    alice.client.put(anchored, json!({ "pattern": "x", "actions": [] })).await.assert_error(404, "M_NOT_FOUND");
    alice.client.delete(suppress, json!({})).await.assert_error(400, "M_INVALID_PARAM");
    alice
        .client
        .put("/_matrix/client/v3/pushrules/global/content/nopattern", json!({ "actions": [] }))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice.client.delete(keyword, json!({})).await.assert_ok();
    alice.client.get(keyword).await.assert_error(404, "M_NOT_FOUND");
}

fn counts(body: &serde_json::Value, room: &str) -> (u64, u64) {
    let unread = &body["rooms"]["join"][room]["unread_notifications"];
    (unread["notification_count"].as_u64().unwrap(), unread["highlight_count"].as_u64().unwrap())
}

#[tokio::test]
async fn default_rules_notify_and_highlight_mentions() {
    let server = TestServer::start().await;
    let client = server.client();
    let ([alice, bob, carol], room) = client.public_room_with(["alice", "bob", "carol"]).await;
    bob.send_text(&room, "1", "hello everyone").await;
    let notice = json!({ "msgtype": "m.notice", "body": "a bot speaks" });
    bob.send_content(&room, "2", notice).await;
    let body = sync(&alice, "").await;
    assert_eq!(counts(&body, &room), (1, 0), "a message notifies, a notice does not");

    let mention = json!({ "msgtype": "m.text", "body": "alice, look", "m.mentions": { "user_ids": [alice.user_id] } });
    let mentioned = bob.send_content(&room, "3", mention).await;
    // Bob may not notify the whole room (power below `notifications.room`); alice may.
    let room_mention = json!({ "msgtype": "m.text", "body": "everyone!", "m.mentions": { "room": true } });
    bob.send_content(&room, "4", room_mention.clone()).await;
    alice.send_content(&room, "5", room_mention).await;
    let body = sync(&alice, "").await;
    assert_eq!(counts(&body, &room), (3, 1), "bob's @room notifies alice like a message, without highlight");
    let body = sync(&carol, "").await;
    assert_eq!(counts(&body, &room), (4, 1), "alice's @room highlights for carol");

    let all = alice.client.get("/_matrix/client/v3/notifications").await.assert_ok().clone();
    let listed = all["notifications"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[1]["event"]["event_id"], mentioned.as_str(), "newest first");
    assert_eq!(listed[1]["read"], false);
    assert!(listed.iter().all(|entry| entry.as_object().unwrap().contains_key("profile_tag")));
    assert!(listed[1]["actions"].to_string().contains("highlight"));
    let highlights = alice.client.get("/_matrix/client/v3/notifications?only=highlight").await.assert_ok().clone();
    assert_eq!(highlights["notifications"].as_array().unwrap().len(), 1);
    let page = alice.client.get("/_matrix/client/v3/notifications?limit=2").await.assert_ok().clone();
    let next = page["next_token"].as_str().unwrap();
    let rest = alice.client.get(&format!("/_matrix/client/v3/notifications?from={next}")).await.assert_ok().clone();
    assert_eq!(rest["notifications"].as_array().unwrap().len(), 1);

    // Reading resets the counts.
    let receipt = format!(
        "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
        crate::harness::enc(&room),
        crate::harness::enc(&mentioned)
    );
    alice.client.post(&receipt, json!({})).await.assert_ok();
    let body = sync(&alice, "").await;
    assert_eq!(counts(&body, &room), (1, 0), "only bob's later @room is unread");

    // A user's own rules decide: alice silences messages in this room.
    let rule = format!("/_matrix/client/v3/pushrules/global/room/{}", crate::harness::enc(&room));
    alice.client.put(&rule, json!({ "actions": [] })).await.assert_ok();
    bob.send_text(&room, "6", "quiet now").await;
    let body = sync(&alice, "").await;
    assert_eq!(counts(&body, &room), (1, 0), "the room rule silenced the new message");
}

#[tokio::test]
async fn direct_messages_and_invites_notify() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let dm = alice
        .create_room(json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id] }))
        .await;
    let invites = bob.client.get("/_matrix/client/v3/notifications").await.assert_ok().clone();
    assert_eq!(invites["notifications"][0]["event"]["content"]["membership"], "invite", "{invites}");
    bob.join(&dm).await.assert_ok();
    alice.send_text(&dm, "1", "just us").await;
    let body = sync(&bob, "").await;
    assert_eq!(counts(&body, &dm), (1, 0));
}

#[tokio::test]
async fn pushers_are_set_replaced_moved_and_deleted() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let pusher = |append: bool| {
        json!({
            "pushkey": "device-token-1",
            "kind": "http",
            "app_id": "fr.gouv.tchap",
            "app_display_name": "Tchap",
            "device_display_name": "Phone",
            "lang": "fr",
            "data": { "url": "https://push.example.org/_matrix/push/v1/notify", "format": "event_id_only" },
            "append": append,
        })
    };
    let set = "/_matrix/client/v3/pushers/set";
    alice.client.post(set, pusher(false)).await.assert_ok();
    let listed = alice.client.get("/_matrix/client/v3/pushers").await.assert_ok().clone();
    assert_eq!(listed["pushers"][0]["app_id"], "fr.gouv.tchap");
    assert_eq!(listed["pushers"][0]["data"]["format"], "event_id_only");
    assert!(listed["pushers"][0].get("append").is_none());

    // The same pushkey set by bob without `append` moves it to bob.
    bob.client.post(set, pusher(false)).await.assert_ok();
    assert_eq!(alice.client.get("/_matrix/client/v3/pushers").await.assert_ok()["pushers"], json!([]));
    alice.client.post(set, pusher(true)).await.assert_ok();
    assert_eq!(bob.client.get("/_matrix/client/v3/pushers").await.assert_ok()["pushers"].as_array().unwrap().len(), 1);

    // Bad input; deletion with `kind: null`.
    let mut bad = pusher(false);
    bad["data"]["url"] = json!("https://push.example.org/elsewhere");
    alice.client.post(set, bad).await.assert_error(400, "M_INVALID_PARAM");
    let mut missing = pusher(false);
    missing.as_object_mut().unwrap().remove("app_id");
    alice.client.post(set, missing).await.assert_error(400, "M_MISSING_PARAM");
    alice
        .client
        .post(set, json!({ "pushkey": "device-token-1", "app_id": "fr.gouv.tchap", "kind": null }))
        .await
        .assert_ok();
    assert_eq!(alice.client.get("/_matrix/client/v3/pushers").await.assert_ok()["pushers"], json!([]));
}

/// Push records are per event (see `rooms::notifications`): members on the
/// default rules share the event's record, and only the sender, the
/// mentioned and those with rules of their own get one of their own.
#[tokio::test]
async fn a_message_leaves_one_push_record_whatever_the_room_size_and_counts_stay_exact() {
    let server = TestServer::start().await;
    let names = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let (members, room) = server.client().public_room_with(names).await;
    let [alice, bob, carol, dave, erin, _frank] = &members;
    let rule = format!("/_matrix/client/v3/pushrules/global/room/{}", crate::harness::enc(&room));
    erin.client.put(&rule, json!({ "actions": [] })).await.assert_ok();
    let services = server.services();
    let tables = &services.storage.tables;
    let (records, exceptions) = (tables.event_push.len(), tables.push_exceptions.len());
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(alice.send_text(&room, &format!("m{i}"), "hello").await);
    }
    assert_eq!(tables.event_push.len(), records + 10, "one record per message for the five other members");
    assert_eq!(
        tables.push_exceptions.len(),
        exceptions + 20,
        "and one for the sender, one for erin whose own rule silences the room"
    );
    assert_eq!(counts(&sync(bob, "").await, &room), (10, 0));
    assert_eq!(counts(&sync(alice, "").await, &room), (0, 0), "one's own messages do not notify");
    assert_eq!(counts(&sync(erin, "").await, &room), (0, 0), "erin's rule decides for her");

    // A mention: one more record, for the mentioned member only.
    let mention = json!({ "msgtype": "m.text", "body": "carol?", "m.mentions": { "user_ids": [carol.user_id] } });
    alice.send_content(&room, "mention", mention).await;
    assert_eq!(counts(&sync(carol, "").await, &room), (11, 1));
    assert_eq!(counts(&sync(bob, "").await, &room), (11, 0));

    // A read receipt in the middle: the rest is unread.
    let receipt = format!(
        "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
        crate::harness::enc(&room),
        crate::harness::enc(&sent[3])
    );
    bob.client.post(&receipt, json!({})).await.assert_ok();
    assert_eq!(counts(&sync(bob, "").await, &room), (7, 0));

    // Threads: counted apart when the client asks, with their own receipts.
    let reply = json!({
        "msgtype": "m.text",
        "body": "in the thread",
        "m.relates_to": { "rel_type": "m.thread", "event_id": sent[0] }
    });
    let first_reply = alice.send_content(&room, "reply1", reply.clone()).await;
    alice.send_content(&room, "reply2", reply).await;
    let threaded = json!({ "room": { "timeline": { "unread_thread_notifications": true } } });
    let threaded = format!("filter={}", crate::harness::enc_json(&threaded));
    let filtered = |user| sync(user, &threaded);
    let body = filtered(dave).await;
    let section = &body["rooms"]["join"][&room];
    assert_eq!(section["unread_notifications"]["notification_count"], 11, "the main timeline");
    assert_eq!(section["unread_thread_notifications"][&sent[0]]["notification_count"], 2);
    assert_eq!(counts(&sync(dave, "").await, &room), (13, 0), "all of them without the filter");
    let thread_receipt = format!(
        "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
        crate::harness::enc(&room),
        crate::harness::enc(&first_reply)
    );
    dave.client.post(&thread_receipt, json!({ "thread_id": sent[0] })).await.assert_ok();
    let body = filtered(dave).await;
    let section = &body["rooms"]["join"][&room];
    assert_eq!(section["unread_thread_notifications"][&sent[0]]["notification_count"], 1, "after the thread receipt");
    assert_eq!(counts(&sync(dave, "").await, &room), (12, 0));

    // GET /notifications lists them from the shared records, newest first, paged.
    let listed = dave.client.get("/_matrix/client/v3/notifications?limit=5").await.assert_ok().clone();
    assert_eq!(listed["notifications"].as_array().unwrap().len(), 5);
    let mut seen = 5;
    let mut next = listed["next_token"].as_str().map(str::to_owned);
    while let Some(token) = next {
        let page = dave.client.get(&format!("/_matrix/client/v3/notifications?limit=5&from={token}")).await;
        let page = page.assert_ok().clone();
        seen += page["notifications"].as_array().unwrap().len();
        next = page["next_token"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, 13, "every notification once");
    let erin_listed = erin.client.get("/_matrix/client/v3/notifications").await.assert_ok().clone();
    assert_eq!(erin_listed["notifications"].as_array().unwrap().len(), 0);
}

/// Sytest's push rule path checks: every malformed path is a 400, never a 404 or 405.
#[tokio::test]
async fn malformed_push_rule_paths_are_400() {
    let server = crate::harness::TestServer::start().await;
    let alice = server.client().register("alice").await;
    let body = json!({ "actions": ["notify"], "pattern": "x" });
    for (path, errcode) in [
        ("/_matrix/client/v3/pushrules//content/rule", "M_INVALID_PARAM"),
        ("/_matrix/client/v3/pushrules/device/content/rule", "M_INVALID_PARAM"),
        ("/_matrix/client/v3/pushrules/global//rule", "M_INVALID_PARAM"),
        ("/_matrix/client/v3/pushrules/global/bogus/rule", "M_INVALID_PARAM"),
        ("/_matrix/client/v3/pushrules/global/content/", "M_INVALID_PARAM"),
    ] {
        alice.client.put(path, body.clone()).await.assert_error(400, errcode);
        alice.client.get(path).await.assert_error(400, errcode);
        alice.client.delete(path, json!({})).await.assert_error(400, errcode);
    }
    // No rule id at all: a kind is listed by GET, but PUT and DELETE need a rule.
    let kind_only = "/_matrix/client/v3/pushrules/global/content";
    alice.client.get(kind_only).await.assert_ok();
    alice.client.put(kind_only, body.clone()).await.assert_error(400, "M_INVALID_PARAM");
    alice.client.delete(kind_only, json!({})).await.assert_error(400, "M_INVALID_PARAM");
    let attribute = "/_matrix/client/v3/pushrules/global/override/.m.rule.master/bogus";
    alice.client.get(attribute).await.assert_error(400, "M_UNRECOGNIZED");
    alice.client.put(attribute, json!({})).await.assert_error(400, "M_UNRECOGNIZED");
    let no_rule = "/_matrix/client/v3/pushrules/global/override/.m.rule.nope/enabled";
    alice.client.get(no_rule).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_push_rule_and_tag_edits_all_count() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let rule = json!({ "actions": ["dont_notify"], "pattern": "bruit" });
    let paths: Vec<String> = (0..12).map(|n| format!("/_matrix/client/v3/pushrules/global/content/mine{n}")).collect();
    let puts = paths.iter().map(|path| alice.client.put(path, rule.clone()));
    for reply in futures_util::future::join_all(puts).await {
        reply.assert_ok();
    }
    let rules = alice.client.get("/_matrix/client/v3/pushrules/global/content").await;
    let mine = rules
        .assert_ok()
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| rule["rule_id"].as_str().unwrap().starts_with("mine"))
        .count();
    assert_eq!(mine, 12, "every concurrent rule was kept");

    let tags_path = format!("/_matrix/client/v3/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room));
    let paths: Vec<String> = (0..12).map(|n| format!("{tags_path}/u.tag{n}")).collect();
    let puts = paths.iter().map(|path| alice.client.put(path, json!({})));
    for reply in futures_util::future::join_all(puts).await {
        reply.assert_ok();
    }
    let tags = alice.client.get(&tags_path).await;
    assert_eq!(tags.assert_ok()["tags"].as_object().unwrap().len(), 12, "every concurrent tag was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_set_while_its_device_signs_out_goes_with_the_device() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = client.register("alice").await;
    for round in 0..10 {
        let phone = crate::harness::Session::from_reply(
            &client,
            client.login("alice", crate::harness::PASSWORD).await.assert_ok(),
        );
        let pusher = json!({
            "kind": "http", "app_id": "fr.gouv.tchap", "pushkey": format!("phone-{round}"),
            "app_display_name": "Tchap", "device_display_name": "Phone", "lang": "fr",
            "data": { "url": "https://push.example.org/_matrix/push/v1/notify" },
        });
        let set = phone.client.post("/_matrix/client/v3/pushers/set", pusher);
        let logout = phone.client.post("/_matrix/client/v3/logout", json!({}));
        let (set, logout) = tokio::join!(set, logout);
        logout.assert_ok();
        assert!(set.status == 200 || set.status == 401, "{}", set.body);
        let pushers = alice.client.get("/_matrix/client/v3/pushers").await;
        assert_eq!(pushers.assert_ok()["pushers"], json!([]), "no pusher outlives its device");
    }
}
