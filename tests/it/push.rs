//! Push rules: the spec's defaults, per-user changes, errors, and sync.

use serde_json::json;

use crate::{harness::TestServer, sync::sync};

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
