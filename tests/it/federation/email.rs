//! Invites by email across servers: an agents' server (a.test, whose map
//! sends `partners.example` addresses to b.test) invites an address of the
//! external partners' server (b.test, `externals_mode`); b.test's identity
//! service stores the invite and mails the partner, lets only that invited
//! address register, and hands the completed invite back to a.test
//! (`exchange_third_party_invite`).

use serde_json::{json, Value};

use super::{rooms::wait_for_message, two_servers};
use crate::{
    email::{register_by_email, token_request, REQUEST_REGISTRATION},
    harness::{enc, state_path},
    smtp::{Options, SmtpServer},
};

#[tokio::test]
async fn a_partner_invited_by_email_registers_on_the_externals_server_and_joins() {
    let smtp = SmtpServer::start(Options::default()).await;
    let agents = format!(
        "[policy]\naccess_rules = true\nexternal_servers = [\"b.test\"]\n{}\n[email_identity]\n\
         info_map = [{{ pattern = '.*@partners\\.example', server = \"b.test\" }}, {{ pattern = '.*', server = \"a.test\" }}]\n",
        smtp.email_config()
    );
    let externals = format!(
        "[policy]\naccess_rules = true\nexternals_mode = true\n{}\n[email_identity]\n\
         info_map = [{{ pattern = '.*@partners\\.example', server = \"b.test\" }}]\n",
        smtp.email_config()
    );
    let (_ca, a, b) = two_servers(&agents, &externals).await;
    let (_admin_a, _admin_b) = (a.client().register("admin").await, b.client().register("admin").await);
    let alice = a.client().register("alice").await;
    let rule =
        json!([{ "type": "im.vector.room.access_rules", "state_key": "", "content": { "rule": "unrestricted" } }]);
    let room = alice.create_room(json!({ "initial_state": rule, "name": "Partners" })).await;

    let invite =
        json!({ "id_server": "a.test", "id_access_token": "x", "medium": "email", "address": "paul@partners.example" });
    // Not into a restricted room: refused before b.test is asked or anyone mailed.
    let restricted = alice.create_room(json!({})).await;
    let refused =
        alice.client.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&restricted)), invite.clone()).await;
    refused.assert_error(403, "M_FORBIDDEN");
    assert!(refused.body["error"].as_str().unwrap_or_default().contains("access_rules.restricted"), "{}", refused.body);
    alice.client.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), invite).await.assert_ok();
    let state = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room))).await;
    let stored =
        state.assert_ok().as_array().unwrap().iter().find(|e| e["type"] == "m.room.third_party_invite").cloned();
    let stored = stored.unwrap_or_else(|| panic!("no third-party invite in {}", state.body));
    assert_eq!(stored["content"]["display_name"], "pau...@partners.example");
    let mails = smtp.wait_for_mails(1).await;
    assert_eq!(mails[0]["rcpt_tos"], json!(["paul@partners.example"]));
    assert!(mails[0]["text"].as_str().unwrap_or_default().contains("b.test"), "the mail names the partner's server");

    // a.test keeps no invite for an address its map sends to b.test.
    let elsewhere =
        json!({ "medium": "email", "address": "eve@partners.example", "room_id": room, "sender": alice.user_id });
    alice.client.post("/_matrix/identity/v2/store-invite", elsewhere).await.assert_error(400, "M_INVALID_PARAM");

    // b.test lets only the invited address register.
    let uninvited = b.client().post(REQUEST_REGISTRATION, token_request("u", "other@partners.example", 1)).await;
    uninvited.assert_error(403, "M_THREEPID_DENIED");
    let info =
        b.client().get("/_matrix/identity/api/v1/internal-info?medium=email&address=paul%40partners.example").await;
    assert_eq!(info.assert_ok(), &json!({ "hs": "b.test", "requires_invite": true, "invited": true }));
    let paul = register_by_email(&b, &smtp, "paul@partners.example", 1).await;
    assert_eq!(paul.user_id, "@paul-partners.example:b.test");

    // The invite reached paul through a.test; he joins and they talk.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let sync = paul.client.get("/_matrix/client/v3/sync?timeout=1000").await;
        if sync.assert_ok()["rooms"]["invite"].get(&room).is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no invite for paul: {}", sync.body);
    }
    let member = alice.client.get(&state_path(&room, "m.room.member", &paul.user_id)).await;
    assert_eq!(member.assert_ok()["membership"], "invite");
    let signed: &Value = &member.body["third_party_invite"]["signed"];
    assert!(signed["signatures"]["b.test"].is_object(), "signed by the partner's server: {signed}");
    paul.client
        .post(&format!("/_matrix/client/v3/join/{}?server_name=a.test", enc(&room)), json!({}))
        .await
        .assert_ok();
    paul.send_text(&room, "t1", "bonjour").await;
    wait_for_message(&alice, &room, "bonjour").await;
}

#[tokio::test]
async fn a_forged_exchange_of_an_invite_is_refused() {
    let (ca, a, b) = two_servers("", "").await;
    let _admin = a.client().register("admin").await;
    let alice = a.client().register("alice").await;
    let room = alice.create_room(json!({})).await;
    let event = |state_key: &str, content: Value| json!({ "type": "m.room.member", "room_id": room, "sender": alice.user_id, "state_key": state_key, "content": content });
    let unsigned = json!({ "membership": "invite", "third_party_invite": { "display_name": "x", "signed": { "mxid": "@eve:b.test", "token": "nope", "signatures": {} } } });
    let path = format!("/_matrix/federation/v1/exchange_third_party_invite/{}", enc(&room));
    // b.test may not speak for a.test's users.
    let (status, _) = super::signed_request(
        &ca,
        (&b, "b.test"),
        (&a, "a.test"),
        "PUT",
        &path,
        event("@eve:a.test", unsigned.clone()),
    )
    .await;
    assert_eq!(status, 403);
    // No third-party invite in the room matches the token: the auth rules refuse it.
    let (status, body) =
        super::signed_request(&ca, (&b, "b.test"), (&a, "a.test"), "PUT", &path, event("@eve:b.test", unsigned)).await;
    assert_eq!(status, 403, "{body}");
    let member = alice.client.get(&state_path(&room, "m.room.member", "@eve:b.test")).await;
    assert_eq!(member.status, 404, "nothing stored");
}
