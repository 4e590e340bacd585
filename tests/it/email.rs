//! Identity by work email, against a real SMTP server (`smtp.rs`): mail
//! that goes out (plain, STARTTLS, TLS, authenticated, retried, kept over a
//! restart), registration, login and password reset by email, the account's
//! addresses, and the password policy.

use serde_json::{json, Value};

use crate::{
    harness::{Client, Session, TestServer, PASSWORD},
    smtp::{link_in, token_in, Options, Security, SmtpServer},
};

pub const REQUEST_REGISTRATION: &str = "/_matrix/client/v3/register/email/requestToken";
const REQUEST_ADD: &str = "/_matrix/client/v3/account/3pid/email/requestToken";
const REQUEST_RESET: &str = "/_matrix/client/v3/account/password/email/requestToken";
const SUBMIT: &str = "/_matrix/identity/v2/validate/email/submitToken";

/// A server sending mail through `smtp`, with `identity` as its `[email_identity]` keys.
pub async fn server_mailing_through(smtp: &SmtpServer, identity: &str) -> TestServer {
    TestServer::start_with(&format!("{}\n[email_identity]\n{identity}", smtp.email_config())).await
}

pub fn token_request(secret: &str, address: &str, attempt: u64) -> Value {
    json!({ "client_secret": secret, "email": address, "send_attempt": attempt })
}

/// `m.login.email.identity` with the validation `sid` of `secret`.
pub fn email_auth(sid: &str, secret: &str, session: Option<&str>) -> Value {
    let mut auth =
        json!({ "type": "m.login.email.identity", "threepid_creds": { "sid": sid, "client_secret": secret } });
    if let Some(session) = session {
        auth["session"] = json!(session);
    }
    auth
}

/// Follows a mail's link as a browser would (the path and query, on the test server).
pub async fn follow(client: &Client, mail: &Value) -> u16 {
    let link = link_in(mail);
    let path = link.strip_prefix("http://localhost").unwrap_or_else(|| panic!("a link to this server: {link}"));
    open_page(client, path, "en").await.0
}

/// A page as a browser preferring `language` gets it: its status and text.
pub async fn open_page(client: &Client, path: &str, language: &str) -> (u16, String) {
    let headers = [("accept-language", language)];
    let (status, headers, body) = client.send_raw("GET", path, &headers, Default::default()).await.expect("page");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Registers `address` (domain allowed) through the email stage; the new session.
pub async fn register_by_email(server: &TestServer, smtp: &SmtpServer, address: &str, mails_before: usize) -> Session {
    let client = server.client();
    let secret = format!("secret-{mails_before}");
    let sid = client.post(REQUEST_REGISTRATION, token_request(&secret, address, 1)).await;
    let sid = sid.assert_ok()["sid"].as_str().expect("sid").to_owned();
    let mails = smtp.wait_for_mails(mails_before + 1).await;
    assert_eq!(follow(&client, &mails[mails_before]).await, 200);
    let body = json!({ "password": PASSWORD, "auth": email_auth(&sid, &secret, None) });
    let reply = client.post("/_matrix/client/v3/register", body).await;
    Session::from_reply(&client, reply.assert_ok())
}

#[tokio::test]
async fn mail_goes_out_plain_through_starttls_and_over_tls_with_credentials() {
    for (security, auth) in [
        (Security::Plain, None),
        (Security::StartTls, Some(("mailer", "s3cret"))),
        (Security::ImplicitTls, Some(("mailer", "s3cret"))),
    ] {
        let smtp = SmtpServer::start(Options { security, auth, ..Options::default() }).await;
        let server = server_mailing_through(&smtp, "").await;
        let reply =
            server.client().post(REQUEST_REGISTRATION, token_request("abc", "Jean.Dupont@Example.org", 1)).await;
        assert!(reply.assert_ok()["sid"].is_string());
        assert_eq!(reply.body["submit_url"], format!("http://localhost{SUBMIT}"));
        let mails = smtp.wait_for_mails(1).await;
        let mail = &mails[0];
        assert_eq!(mail["rcpt_tos"], json!(["jean.dupont@example.org"]), "to the normalised address");
        assert_eq!(mail["from"], "Conduit <noreply@example.org>");
        assert!(mail["subject"].as_str().unwrap_or_default().contains("test.local"), "{mail}");
        assert!(mail["html"].as_str().unwrap_or_default().contains("<a href="), "an HTML part too");
        assert_eq!(mail["tls"], security != Security::Plain, "{mail}");
        assert_eq!(mail["authenticated"].as_bool().unwrap_or(false), auth.is_some(), "{mail}");
    }
}

#[tokio::test]
async fn registration_needs_an_allowed_validated_address_which_names_the_account() {
    let smtp = SmtpServer::start(Options::default()).await;
    let identity = "require_email = true\nregistration_domains = [\"gouv.fr\"]\n";
    let server = server_mailing_through(&smtp, identity).await;
    let client = server.client();

    let challenge = client.post("/_matrix/client/v3/register", json!({ "password": PASSWORD })).await;
    assert_eq!(challenge.status, 401);
    assert_eq!(challenge.body["flows"], json!([{ "stages": ["m.login.email.identity"] }]));
    let dummy = json!({ "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
    assert_eq!(client.post("/_matrix/client/v3/register", dummy).await.status, 401, "an address is required");

    let denied = client.post(REQUEST_REGISTRATION, token_request("s", "someone@gmail.com", 1)).await;
    denied.assert_error(403, "M_THREEPID_DENIED");
    let malformed = client.post(REQUEST_REGISTRATION, token_request("s", "not an address", 1)).await;
    malformed.assert_error(400, "M_INVALID_PARAM");
    let bad_secret = client.post(REQUEST_REGISTRATION, token_request("a secret", "a@gouv.fr", 1)).await;
    bad_secret.assert_error(400, "M_INVALID_PARAM");

    let address = "jean.dupont@interieur.gouv.fr";
    let first = client.post(REQUEST_REGISTRATION, token_request("s3", address, 1)).await;
    let sid = first.assert_ok()["sid"].as_str().unwrap().to_owned();
    let again = client.post(REQUEST_REGISTRATION, token_request("s3", address, 1)).await;
    assert_eq!(again.assert_ok()["sid"], sid.as_str(), "the same attempt finds the same session");
    let mails = smtp.wait_for_mails(1).await;

    // Not validated yet: the client keeps asking.
    let body = |session: Option<&str>| json!({ "password": PASSWORD, "auth": email_auth(&sid, "s3", session) });
    let early = client.post("/_matrix/client/v3/register", body(None)).await;
    assert_eq!(early.status, 401);
    assert_eq!(early.body["errcode"], "M_THREEPID_AUTH_FAILED", "{}", early.body);
    let session = early.body["session"].as_str().unwrap().to_owned();

    let (status, page) = open_page(&client, &format!("{SUBMIT}?sid={sid}&client_secret=s3&token=wrong"), "fr").await;
    assert_eq!(status, 400, "a wrong token validates nothing");
    assert!(page.contains("Ce lien est inconnu"), "in the browser's language: {page}");
    assert_eq!(follow(&client, &mails[0]).await, 200);
    let registered = client.post("/_matrix/client/v3/register", body(Some(&session))).await;
    let user_id = registered.assert_ok()["user_id"].as_str().unwrap().to_owned();
    assert_eq!(user_id, "@jean.dupont-interieur.gouv.fr:test.local", "the localpart comes from the address");
    let alice = Session::from_reply(&client, &registered.body);
    let profile = client.get(&format!("/_matrix/client/v3/profile/{}", crate::harness::enc(&user_id))).await;
    assert_eq!(profile.assert_ok()["displayname"], "Jean Dupont [Interieur]");
    let listed = alice.client.get("/_matrix/client/v3/account/3pid").await;
    assert_eq!(listed.assert_ok()["threepids"][0]["address"], address);
    assert_eq!(smtp.mails().len(), 1, "asking again with the same send_attempt sent no second mail");

    // The address is taken now; it logs in like the user id.
    let taken = client.post(REQUEST_REGISTRATION, token_request("s4", address, 1)).await;
    taken.assert_error(400, "M_THREEPID_IN_USE");
    let by_email = |address: &str, password: &str| {
        json!({ "type": "m.login.password", "password": password,
                "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": address } })
    };
    let login = client.post("/_matrix/client/v3/login", by_email("Jean.Dupont@interieur.gouv.fr", PASSWORD)).await;
    assert_eq!(login.assert_ok()["user_id"], user_id.as_str());
    let legacy = json!({ "type": "m.login.password", "medium": "email", "address": address, "password": PASSWORD });
    assert_eq!(client.post("/_matrix/client/v3/login", legacy).await.assert_ok()["user_id"], user_id.as_str());
    let wrong = client.post("/_matrix/client/v3/login", by_email(address, "wrong")).await;
    wrong.assert_error(403, "M_FORBIDDEN");
    let unknown = client.post("/_matrix/client/v3/login", by_email("nobody@interieur.gouv.fr", PASSWORD)).await;
    unknown.assert_error(403, "M_FORBIDDEN");
    assert_eq!(unknown.body["error"], wrong.body["error"], "an unknown address reads as a wrong password");

    // Given up and registered again, the address names a new account: the
    // user id it gives is taken, so a number is added.
    let remove = json!({ "medium": "email", "address": address });
    alice.client.post("/_matrix/client/v3/account/3pid/delete", remove).await.assert_ok();
    let again = register_by_email(&server, &smtp, address, 1).await;
    assert_eq!(again.user_id, "@jean.dupont-interieur.gouv.fr-2:test.local");
}

#[tokio::test]
async fn a_password_is_reset_by_mail_once_and_signs_every_device_out() {
    let smtp = SmtpServer::start(Options::default()).await;
    let server = server_mailing_through(&smtp, "").await;
    let client = server.client();
    let address = "marie@example.org";
    let marie = register_by_email(&server, &smtp, address, 0).await;

    let unknown = client.post(REQUEST_RESET, token_request("r", "nobody@example.org", 1)).await;
    unknown.assert_error(400, "M_THREEPID_NOT_FOUND");
    let requested = client.post(REQUEST_RESET, token_request("r", address, 1)).await;
    let sid = requested.assert_ok()["sid"].as_str().unwrap().to_owned();
    let mails = smtp.wait_for_mails(2).await;
    assert!(mails[1]["subject"].as_str().unwrap_or_default().contains("password"), "{}", mails[1]);

    // The code typed into the client, at the submit_url.
    let code = token_in(&mails[1]);
    let submit = json!({ "sid": sid, "client_secret": "r", "token": code });
    assert_eq!(client.post(SUBMIT, submit).await.assert_ok()["success"], true);
    // A validation for a reset does not register anyone.
    let register = json!({ "password": PASSWORD, "auth": email_auth(&sid, "r", None) });
    assert_eq!(client.post("/_matrix/client/v3/register", register).await.status, 401);

    // The older spelling of the credentials alone, as older clients send them.
    let legacy = json!({ "type": "m.login.email.identity", "threepidCreds": { "sid": sid, "client_secret": "r" } });
    let reset = |password: &str| json!({ "new_password": password, "auth": legacy });
    client.post("/_matrix/client/v3/account/password", reset("n3w-password")).await.assert_ok();
    assert_eq!(marie.client.get("/_matrix/client/v3/account/whoami").await.status, 401, "signed out everywhere");
    client.login(&marie.user_id, PASSWORD).await.assert_error(403, "M_FORBIDDEN");
    client.login(&marie.user_id, "n3w-password").await.assert_ok();
    let replayed = client.post("/_matrix/client/v3/account/password", reset("other-password")).await;
    assert_eq!(replayed.status, 401, "one reset per mail");
    client.login(&marie.user_id, "n3w-password").await.assert_ok();
}

#[tokio::test]
async fn an_account_adds_and_removes_addresses_it_validated() {
    let smtp = SmtpServer::start(Options::default()).await;
    let server = server_mailing_through(&smtp, "").await;
    let client = server.client();
    let _admin = client.register("admin").await;
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let flows = client.post("/_matrix/client/v3/register", json!({})).await;
    assert_eq!(flows.body["flows"], json!([{ "stages": ["m.login.dummy"] }, { "stages": ["m.login.email.identity"] }]));
    let capabilities = alice.client.get("/_matrix/client/v3/capabilities").await;
    assert_eq!(capabilities.assert_ok()["capabilities"]["m.3pid_changes"]["enabled"], true);

    let requested = client.post(REQUEST_ADD, token_request("add", "alice@example.org", 1)).await;
    let sid = requested.assert_ok()["sid"].as_str().unwrap().to_owned();
    let mails = smtp.wait_for_mails(1).await;
    let add = |session: Option<&str>| {
        let mut body = json!({ "sid": sid, "client_secret": "add" });
        if let Some(session) = session {
            body["auth"] = alice.password_auth(session);
        }
        body
    };
    let challenge = alice.client.post("/_matrix/client/v3/account/3pid/add", add(None)).await;
    assert_eq!(challenge.status, 401, "the password first");
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    let early = alice.client.post("/_matrix/client/v3/account/3pid/add", add(Some(&session))).await;
    early.assert_error(400, "M_THREEPID_AUTH_FAILED");
    assert_eq!(follow(&client, &mails[0]).await, 200);
    let challenge = alice.client.post("/_matrix/client/v3/account/3pid/add", add(None)).await;
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    alice.client.post("/_matrix/client/v3/account/3pid/add", add(Some(&session))).await.assert_ok();
    let listed = alice.client.get("/_matrix/client/v3/account/3pid").await;
    assert_eq!(
        listed.assert_ok()["threepids"],
        json!([{ "medium": "email", "address": "alice@example.org",
        "validated_at": listed.body["threepids"][0]["added_at"], "added_at": listed.body["threepids"][0]["added_at"] }])
    );

    // Not bob's to take, nor to remove.
    client.post(REQUEST_ADD, token_request("bob", "alice@example.org", 1)).await.assert_error(400, "M_THREEPID_IN_USE");
    let remove = json!({ "medium": "email", "address": "alice@example.org" });
    bob.client
        .post("/_matrix/client/v3/account/3pid/delete", remove.clone())
        .await
        .assert_error(400, "M_THREEPID_NOT_FOUND");
    let login = json!({ "type": "m.login.password", "password": PASSWORD,
                        "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "alice@example.org" } });
    client.post("/_matrix/client/v3/login", login.clone()).await.assert_ok();
    alice.client.post("/_matrix/client/v3/account/3pid/delete", remove).await.assert_ok();
    assert_eq!(alice.client.get("/_matrix/client/v3/account/3pid").await.body["threepids"], json!([]));
    client.post("/_matrix/client/v3/login", login).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn without_mail_the_email_flows_are_refused_and_registration_is_unchanged() {
    let server = TestServer::start().await;
    let client = server.client();
    let refused = client.post(REQUEST_REGISTRATION, token_request("s", "a@example.org", 1)).await;
    refused.assert_error(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
    let flows = client.post("/_matrix/client/v3/register", json!({})).await;
    assert_eq!(flows.body["flows"], json!([{ "stages": ["m.login.dummy"] }]));
    let anonymous = client.post("/_matrix/client/v3/account/password", json!({ "new_password": "x" })).await;
    anonymous.assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn the_password_policy_is_served_and_enforced() {
    let policy = "[email_identity.password_policy]\nminimum_length = 10\nrequire_digit = true\nrequire_symbol = true\n\
                  require_uppercase = true\nrequire_lowercase = true\n";
    let server = TestServer::start_with(policy).await;
    let client = server.client();
    let served = client.get("/_matrix/client/v3/password_policy").await;
    assert_eq!(
        served.assert_ok(),
        &json!({ "m.minimum_length": 10, "m.require_digit": true, "m.require_symbol": true,
                 "m.require_lowercase": true, "m.require_uppercase": true })
    );
    let register =
        |password: &str| json!({ "username": "carol", "password": password, "auth": { "type": "m.login.dummy" } });
    for (password, code) in [
        ("Sh0rt!", "M_PASSWORD_TOO_SHORT"),
        ("NoDigitsHere!", "M_PASSWORD_NO_DIGIT"),
        ("NoSymbols123", "M_PASSWORD_NO_SYMBOL"),
        ("no-upper-123", "M_PASSWORD_NO_UPPERCASE"),
        ("NO-LOWER-123", "M_PASSWORD_NO_LOWERCASE"),
    ] {
        client.post("/_matrix/client/v3/register", register(password)).await.assert_error(400, code);
    }
    let reply = client.post("/_matrix/client/v3/register", register("Go0d-Password")).await;
    let carol = Session::from_reply(&client, reply.assert_ok());
    let capabilities = carol.client.get("/_matrix/client/v3/capabilities").await;
    assert_eq!(capabilities.assert_ok()["capabilities"]["m.password_policy"]["m.minimum_length"], 10);
    let change = json!({ "new_password": "weak", "auth": { "type": "m.login.password", "password": "Go0d-Password",
                         "identifier": { "type": "m.id.user", "user": carol.user_id } } });
    let weak = carol.client.post("/_matrix/client/v3/account/password", change).await;
    weak.assert_error(400, "M_PASSWORD_TOO_SHORT");
}

#[tokio::test]
async fn a_mail_refused_for_now_is_retried_and_a_queued_one_survives_a_restart() {
    let smtp = SmtpServer::start(Options { fail_first: 1, ..Options::default() }).await;
    let server = server_mailing_through(&smtp, "").await;
    server.client().post(REQUEST_REGISTRATION, token_request("t", "a@example.org", 1)).await.assert_ok();
    let mails = smtp.wait_for_mails(1).await;
    assert_eq!(mails[0]["attempt"], 2, "accepted at the second attempt");
    let port = smtp.port;
    drop(smtp);
    drop(server);

    // The SMTP server is down while a mail is queued; the server stops.
    let config = crate::smtp::email_config(Security::Plain, None, port, None);
    let dir = tempfile::tempdir().unwrap();
    let text = crate::harness::base_config(dir.path(), &format!("{config}\n"));
    let server = TestServer::start_in(dir, &text).await;
    server.client().post(REQUEST_REGISTRATION, token_request("u", "b@example.org", 1)).await.assert_ok();
    assert_eq!(server.services().mailer.queued(), 1);
    let dir = server.stop().await;

    let smtp = SmtpServer::start(Options { port, ..Options::default() }).await;
    let _server = TestServer::start_in(dir, &text).await;
    let mails = smtp.wait_for_mails(1).await;
    assert_eq!(mails[0]["rcpt_tos"], json!(["b@example.org"]), "sent after the restart");
}

/// Adds `address` to `user`'s account through the mail (the `mails_before`-th mail).
pub async fn add_address(server: &TestServer, smtp: &SmtpServer, user: &Session, address: &str, mails_before: usize) {
    let client = server.client();
    let secret = format!("add-{mails_before}");
    let requested = client.post(REQUEST_ADD, token_request(&secret, address, 1)).await;
    let sid = requested.assert_ok()["sid"].as_str().unwrap().to_owned();
    let mails = smtp.wait_for_mails(mails_before + 1).await;
    assert_eq!(follow(&client, &mails[mails_before]).await, 200);
    let body = |auth: Option<Value>| {
        let mut body = json!({ "sid": sid, "client_secret": secret });
        if let Some(auth) = auth {
            body["auth"] = auth;
        }
        body
    };
    let challenge = user.client.post("/_matrix/client/v3/account/3pid/add", body(None)).await;
    let session = challenge.body["session"].as_str().expect("a UIA session").to_owned();
    user.client.post("/_matrix/client/v3/account/3pid/add", body(Some(user.password_auth(&session)))).await.assert_ok();
}

#[tokio::test]
async fn the_email_map_says_which_server_an_address_belongs_on() {
    let smtp = SmtpServer::start(Options::default()).await;
    let identity = "info_map = [\n\
        { pattern = '.*@interieur\\.gouv\\.fr', server = \"test.local\" },\n\
        { pattern = '.*@(.*\\.)?gouv\\.fr', server = \"agents.example\" },\n\
        { pattern = '.*', server = \"externes.example\" },\n]\n";
    let server = server_mailing_through(&smtp, identity).await;
    let client = server.client();
    let info =
        |address: &str| format!("/_matrix/identity/api/v1/info?medium=email&address={}", crate::harness::enc(address));
    assert_eq!(client.get(&info("Jean@Interieur.gouv.fr")).await.assert_ok(), &json!({ "hs": "test.local" }));
    assert_eq!(client.get(&info("marie@culture.gouv.fr")).await.assert_ok(), &json!({ "hs": "agents.example" }));
    assert_eq!(client.get(&info("partner@company.com")).await.assert_ok(), &json!({ "hs": "externes.example" }));
    let broken = client.get("/_matrix/identity/api/v1/info?medium=email&address=nonsense").await;
    assert_eq!(broken.assert_ok(), &json!({ "hs": "test.local" }), "never fails");

    // An account here holds an address the map now sends elsewhere.
    let _admin = client.register("admin").await;
    let alice = client.register("alice").await;
    add_address(&server, &smtp, &alice, "alice@culture.gouv.fr", 0).await;
    let moved = client.get(&info("alice@culture.gouv.fr")).await;
    assert_eq!(moved.assert_ok(), &json!({ "hs": "test.local", "new_hs": "agents.example" }));
    // Only addresses the map sends here register here.
    let elsewhere = client.post(REQUEST_REGISTRATION, token_request("x", "bob@culture.gouv.fr", 1)).await;
    elsewhere.assert_error(403, "M_THREEPID_DENIED");
}

#[tokio::test]
async fn bound_addresses_are_found_by_hashed_lookup_with_an_identity_token() {
    let smtp = SmtpServer::start(Options::default()).await;
    let server = server_mailing_through(&smtp, "").await;
    let client = server.client();
    let _admin = client.register("admin").await;
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    add_address(&server, &smtp, &alice, "alice@example.org", 0).await;

    // bob gets an identity service token through an OpenID token.
    let others = format!("/_matrix/client/v3/user/{}/openid/request_token", crate::harness::enc(&alice.user_id));
    bob.client.post(&others, json!({})).await.assert_error(403, "M_FORBIDDEN");
    let own = format!("/_matrix/client/v3/user/{}/openid/request_token", crate::harness::enc(&bob.user_id));
    let openid = bob.client.post(&own, json!({})).await;
    assert_eq!(openid.assert_ok()["matrix_server_name"], "test.local");
    let userinfo = format!(
        "/_matrix/federation/v1/openid/userinfo?access_token={}",
        openid.body["access_token"].as_str().unwrap()
    );
    assert_eq!(client.get(&userinfo).await.assert_ok()["sub"], bob.user_id.as_str());
    client.get("/_matrix/federation/v1/openid/userinfo?access_token=forged").await.assert_error(401, "M_UNKNOWN_TOKEN");
    let forged = json!({ "access_token": "forged", "token_type": "Bearer", "matrix_server_name": "test.local", "expires_in": 3600 });
    client.post("/_matrix/identity/v2/account/register", forged).await.assert_error(401, "M_UNKNOWN_TOKEN");
    let registered = client.post("/_matrix/identity/v2/account/register", openid.body.clone()).await;
    let is_token = registered.assert_ok()["token"].as_str().unwrap().to_owned();
    let identity = client.with_token(&is_token);
    assert_eq!(identity.get("/_matrix/identity/v2/account").await.assert_ok()["user_id"], bob.user_id.as_str());
    assert_eq!(identity.get("/_matrix/identity/v2/terms").await.assert_ok(), &json!({ "policies": {} }));

    let details = identity.get("/_matrix/identity/v2/hash_details").await;
    let pepper = details.assert_ok()["lookup_pepper"].as_str().unwrap().to_owned();
    assert!(details.body["algorithms"].as_array().unwrap().contains(&json!("sha256")));
    let hash = |address: &str| {
        use base64::Engine;
        let digest = ring::digest::digest(&ring::digest::SHA256, format!("{address} email {pepper}").as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
    };
    let (known, unknown) = (hash("alice@example.org"), hash("nobody@example.org"));
    let lookup = json!({ "algorithm": "sha256", "pepper": pepper, "addresses": [known, unknown] });
    let found = identity.post("/_matrix/identity/v2/lookup", lookup.clone()).await;
    assert_eq!(found.assert_ok()["mappings"], json!({ known.clone(): alice.user_id }));
    let plain = json!({ "algorithm": "none", "pepper": pepper, "addresses": ["alice@example.org email"] });
    let found = bob.client.post("/_matrix/identity/v2/lookup", plain).await;
    assert_eq!(
        found.assert_ok()["mappings"]["alice@example.org email"],
        alice.user_id.as_str(),
        "a homeserver token too"
    );

    let stale = json!({ "algorithm": "sha256", "pepper": "old", "addresses": [known] });
    identity.post("/_matrix/identity/v2/lookup", stale).await.assert_error(400, "M_INVALID_PEPPER");
    let odd = json!({ "algorithm": "md5", "pepper": pepper, "addresses": [] });
    identity.post("/_matrix/identity/v2/lookup", odd).await.assert_error(400, "M_INVALID_PARAM");
    client.post("/_matrix/identity/v2/lookup", lookup.clone()).await.assert_error(401, "M_UNAUTHORIZED");
    identity.post("/_matrix/identity/v2/account/logout", json!({})).await.assert_ok();
    identity.post("/_matrix/identity/v2/lookup", lookup.clone()).await.assert_error(401, "M_UNAUTHORIZED");

    // An address removed is found no more.
    let remove = json!({ "medium": "email", "address": "alice@example.org" });
    alice.client.post("/_matrix/client/v3/account/3pid/delete", remove).await.assert_ok();
    let gone = bob.client.post("/_matrix/identity/v2/lookup", lookup).await;
    assert_eq!(gone.assert_ok()["mappings"], json!({}));
}

/// The user ids `searcher` finds in the user directory with `term`.
async fn directory_search(searcher: &Session, term: &str) -> Vec<String> {
    let reply = searcher.client.post("/_matrix/client/v3/user_directory/search", json!({ "search_term": term })).await;
    let results = reply.assert_ok()["results"].as_array().cloned().unwrap_or_default();
    results.iter().filter_map(|r| r["user_id"].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn colleagues_are_found_by_email_unless_hidden_or_deactivated() {
    let smtp = SmtpServer::start(Options::default()).await;
    let extra = format!("[user_directory]\nsearch_all_users = true\n{}\n[email_identity]\n", smtp.email_config());
    let server = TestServer::start_with(&extra).await;
    let client = server.client();
    let _admin = client.register("admin").await;
    let searcher = client.register("searcher").await;
    let agent = client.register("agent7").await;
    add_address(&server, &smtp, &agent, "helene.muller@interieur.gouv.fr", 0).await;
    let search = |term: &'static str| directory_search(&searcher, term);
    assert_eq!(search("hélène.mul").await, vec![agent.user_id.clone()], "by a part of the address");
    assert_eq!(search("muller@interieur").await, vec![agent.user_id.clone()]);
    assert!(search("helene.muller@culture").await.is_empty(), "every word must match");

    let hide = |hidden: bool| json!({ "hide_profile": hidden });
    let path =
        format!("/_matrix/client/v3/user/{}/account_data/im.vector.hide_profile", crate::harness::enc(&agent.user_id));
    agent.client.put(&path, hide(true)).await.assert_ok();
    assert!(search("helene").await.is_empty(), "hidden");
    agent.client.put(&path, hide(false)).await.assert_ok();
    assert_eq!(search("helene").await, vec![agent.user_id.clone()]);

    // Both survive a restart: the index is rebuilt with the addresses and the flag.
    agent.client.put(&path, hide(true)).await.assert_ok();
    let other = client.register("other").await;
    add_address(&server, &smtp, &other, "helene.dubois@interieur.gouv.fr", 1).await;
    let text = crate::harness::base_config(server.dir.path(), &extra);
    let server = server.restart_with(&text).await;
    let searcher = Session { client: server.client().with_token(&searcher.token), ..searcher };
    let search = |term: &'static str| directory_search(&searcher, term);
    assert_eq!(search("helene@interieur").await, vec![other.user_id.clone()], "the hidden one stays hidden");

    // Deactivated: gone.
    let other = Session { client: server.client().with_token(&other.token), ..other };
    let challenge = other.client.post("/_matrix/client/v3/account/deactivate", json!({})).await;
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    other
        .client
        .post("/_matrix/client/v3/account/deactivate", json!({ "auth": other.password_auth(&session) }))
        .await
        .assert_ok();
    assert!(search("dubois").await.is_empty());
}

#[tokio::test]
async fn accounts_expire_unless_renewed_by_the_link_in_their_mail() {
    use std::time::Duration;
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let smtp = SmtpServer::start(Options::default()).await;
    let extra = format!(
        "[user_directory]\nsearch_all_users = true\n{}\n[account_validity]\nperiod_days = 30\n\
         renew_before_days = [7, 1]\ndeactivate_after_days = 10\n",
        smtp.email_config()
    );
    let server = TestServer::start_with(&extra).await;
    let client = server.client();
    let admin = client.register("admin").await;
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    add_address(&server, &smtp, &alice, "alice@example.org", 0).await;
    let services = server.services();
    let clock = &services.users.validity.clock;
    let pass = || async { services.run_account_validity_pass().await.expect("validity pass") };

    pass().await;
    clock.advance(DAY * 23 + Duration::from_secs(60));
    pass().await;
    let mails = smtp.wait_for_mails(2).await;
    assert!(
        mails[1]["subject"].as_str().unwrap_or_default().starts_with("Renew your account on test.local"),
        "{}",
        mails[1]
    );
    pass().await;
    clock.advance(DAY * 6);
    pass().await;
    let mails = smtp.wait_for_mails(3).await;
    assert_eq!(mails.len(), 3, "one mail 7 days before, one 1 day before, no more");

    // The end: every request refused but logging out; out of the directory.
    clock.advance(DAY);
    pass().await;
    let refused = alice.client.get("/_matrix/client/v3/account/whoami").await;
    refused.assert_error(403, "ORG_MATRIX_EXPIRED_ACCOUNT");
    alice
        .client
        .post("/_matrix/client/v3/rooms/!x:test.local/leave", json!({}))
        .await
        .assert_error(403, "ORG_MATRIX_EXPIRED_ACCOUNT");
    admin.client.get("/_matrix/client/v3/account/whoami").await.assert_ok();
    let search = json!({ "search_term": "alice" });
    let found = admin.client.post("/_matrix/client/v3/user_directory/search", search.clone()).await;
    assert_eq!(found.assert_ok()["results"], json!([]), "an expired account leaves the directory");
    // A renewal mail on request, then the link renews.
    alice.client.post("/_matrix/client/unstable/account_validity/send_mail", json!({})).await.assert_ok();
    let mails = smtp.wait_for_mails(4).await;
    let link = link_in(&mails[3]);
    let path = link.strip_prefix("http://localhost").expect("a link here");
    let (status, page) = open_page(&client, "/_matrix/client/unstable/account_validity/renew?token=forged", "en").await;
    assert_eq!(status, 404, "{page}");
    let (status, page) = open_page(&client, path, "fr").await;
    assert_eq!(status, 200);
    assert!(page.contains("Votre compte est renouvelé"), "{page}");
    alice.client.get("/_matrix/client/v3/account/whoami").await.assert_ok();
    let found = admin.client.post("/_matrix/client/v3/user_directory/search", search).await;
    assert_eq!(found.assert_ok()["results"][0]["user_id"], alice.user_id.as_str());

    // bob (no address, no mail) expired too; an admin renews him, then ends
    // his validity; he is deactivated 10 days later.
    let renew = json!({ "user_id": bob.user_id });
    admin.client.post("/_synapse/admin/v1/account_validity/validity", renew).await.assert_ok();
    let set = |user: &str, ts: u64| json!({ "user_id": user, "expiration_ts": ts });
    let now = clock.now_ms();
    let forbidden = bob.client.post("/_synapse/admin/v1/account_validity/validity", set(&alice.user_id, now)).await;
    forbidden.assert_error(403, "M_FORBIDDEN");
    let ended = admin.client.post("/_synapse/admin/v1/account_validity/validity", set(&bob.user_id, now)).await;
    assert_eq!(ended.assert_ok()["expiration_ts"], now);
    bob.client.get("/_matrix/client/v3/account/whoami").await.assert_error(403, "ORG_MATRIX_EXPIRED_ACCOUNT");
    bob.client.post("/_matrix/client/v3/logout", json!({})).await.assert_ok();
    clock.advance(DAY * 10);
    pass().await;
    client.login(&bob.user_id, PASSWORD).await.assert_error(403, "M_USER_DEACTIVATED");
    client.login(&alice.user_id, PASSWORD).await.assert_ok();
}

#[tokio::test]
async fn an_invite_by_email_waits_for_the_address_then_becomes_a_member_invite() {
    let smtp = SmtpServer::start(Options::default()).await;
    let server = server_mailing_through(&smtp, "").await;
    let client = server.client();
    let _admin = client.register("admin").await;
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let carol = client.register("carol").await;
    add_address(&server, &smtp, &bob, "bob@example.org", 0).await;
    let room = alice.create_room(json!({ "name": "Projet X" })).await;
    let invite = |address: &str| json!({ "id_server": "test.local", "id_access_token": "unused", "medium": "email", "address": address });
    let invite_path = format!("/_matrix/client/v3/rooms/{}/invite", crate::harness::enc(&room));

    // An address nobody holds: the room shows it partly, the invitee gets a mail.
    alice.client.post(&invite_path, invite("Newcomer@Example.org")).await.assert_ok();
    let state = alice.client.get(&format!("/_matrix/client/v3/rooms/{}/state", crate::harness::enc(&room))).await;
    let third_party: Vec<&Value> =
        state.assert_ok().as_array().unwrap().iter().filter(|e| e["type"] == "m.room.third_party_invite").collect();
    assert_eq!(third_party.len(), 1, "{}", state.body);
    assert_eq!(third_party[0]["content"]["display_name"], "new...@example.org");
    assert!(third_party[0]["content"]["public_keys"][0]["public_key"].is_string());
    let mails = smtp.wait_for_mails(2).await;
    assert_eq!(mails[1]["rcpt_tos"], json!(["newcomer@example.org"]));
    assert_eq!(mails[1]["subject"], "alice invites you to join Projet X");
    let key = third_party[0]["content"]["public_key"].as_str().unwrap();
    let valid =
        client.get(&format!("/_matrix/identity/v2/pubkey/isvalid?public_key={}", crate::harness::enc(key))).await;
    assert_eq!(valid.assert_ok()["valid"], true);
    let info = client.get("/_matrix/identity/api/v1/internal-info?medium=email&address=newcomer%40example.org").await;
    assert_eq!(info.assert_ok(), &json!({ "hs": "test.local", "requires_invite": false, "invited": true }));

    // An address an account holds: that account is invited.
    alice.client.post(&invite_path, invite("bob@example.org")).await.assert_ok();
    let bob_member = alice.client.get(&crate::harness::state_path(&room, "m.room.member", &bob.user_id)).await;
    assert_eq!(bob_member.assert_ok()["membership"], "invite");
    // Refused: not a member, or another medium; no mail goes out.
    carol.client.post(&invite_path, invite("someone@example.org")).await.assert_error(403, "M_FORBIDDEN");
    let phone = json!({ "id_server": "test.local", "medium": "msisdn", "address": "33612345678" });
    alice.client.post(&invite_path, phone).await.assert_error(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
    assert_eq!(smtp.mails().len(), 2);

    // The invitee registers with the address: the invite is theirs, they join.
    let newcomer = register_by_email(&server, &smtp, "newcomer@example.org", 2).await;
    let member = alice.client.get(&crate::harness::state_path(&room, "m.room.member", &newcomer.user_id)).await;
    assert_eq!(member.assert_ok()["membership"], "invite", "{}", member.body);
    assert_eq!(member.body["third_party_invite"]["display_name"], "new...@example.org");
    assert_eq!(member.body["third_party_invite"]["signed"]["mxid"], newcomer.user_id.as_str());
    newcomer.join(&room).await.assert_ok();
    let info = client.get("/_matrix/identity/api/v1/internal-info?medium=email&address=newcomer%40example.org").await;
    assert_eq!(info.assert_ok()["invited"], false, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_request_sent_twice_at_once_sends_one_mail_whose_link_works() {
    let smtp = SmtpServer::start(Options::default()).await;
    let server = server_mailing_through(&smtp, "").await;
    let client = server.client();
    let address = "marie.curie@example.org";
    let requests = (0..4).map(|_| client.post(REQUEST_REGISTRATION, token_request("twice", address, 1)));
    let sids: std::collections::BTreeSet<String> = futures_util::future::join_all(requests)
        .await
        .iter()
        .map(|reply| reply.assert_ok()["sid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sids.len(), 1);
    // A later mail, so that a duplicate would have gone out first.
    client.post(REQUEST_REGISTRATION, token_request("other", "pierre.curie@example.org", 1)).await.assert_ok();
    let mails = smtp.wait_for_mails(2).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let to_marie: Vec<Value> = smtp.mails().into_iter().filter(|mail| mail.to_string().contains(address)).collect();
    assert_eq!(to_marie.len(), 1, "one mail for one attempt: {mails:?}");
    assert_eq!(follow(&client, &to_marie[0]).await, 200, "the token mailed is the one kept");
    let sid = sids.into_iter().next().unwrap();
    let body = json!({ "password": PASSWORD, "auth": email_auth(&sid, "twice", None) });
    client.post("/_matrix/client/v3/register", body).await.assert_ok();
}
