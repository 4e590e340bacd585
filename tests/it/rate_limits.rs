//! `[rate_limits]`: a burst, then a rate, per user (messages here) and per
//! client address (registrations); 429 `M_LIMIT_EXCEEDED` with
//! `retry_after_ms` and `Retry-After`; server admins exempt.

use serde_json::json;

use crate::harness::TestServer;

#[tokio::test]
async fn a_flooding_user_is_slowed_down_and_others_are_not() {
    let limits =
        "[rate_limits]\nmessage = { per_second = 0.5, burst = 3 }\nregistration = { per_second = 0.05, burst = 3 }\n";
    let server = TestServer::start_with(limits).await;
    let client = server.client();
    let admin = client.register("admin").await;
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = admin.create_room(json!({ "preset": "public_chat" })).await;
    alice.join(&room).await.assert_ok();
    bob.join(&room).await.assert_ok();

    for n in 0..3 {
        alice.send_text(&room, &format!("a{n}"), "hello").await;
    }
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/a3", crate::harness::enc(&room));
    let body = bytes::Bytes::from(json!({ "msgtype": "m.text", "body": "one too many" }).to_string());
    let refused = alice.client.send("PUT", &path, &[], body).await;
    refused.assert_error(429, "M_LIMIT_EXCEEDED");
    let wait = refused.body["retry_after_ms"].as_u64().unwrap();
    assert!((1..=2_000).contains(&wait), "{wait}");
    assert!(refused.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);

    bob.send_text(&room, "b0", "mine are fine").await;
    for n in 0..10 {
        admin.send_text(&room, &format!("admin{n}"), "admins are exempt").await;
    }

    // Registrations from one address: three, then refused.
    let refused = client
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "dave", "password": "pw", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    refused.assert_error(429, "M_LIMIT_EXCEEDED");
}
