//! Bodies of the fuzz targets in `fuzz/`, kept in the library so that the
//! saved corpora also run as ordinary tests (`tests/it/fuzz_corpus.rs`) and the
//! targets never rot. Each function takes arbitrary bytes and must not panic.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::{
    api,
    config::Config,
    crypto::signing_key::canonical_json,
    http::{
        request::{parse_query, percent_decode, BodyStream, Method},
        router, Request,
    },
    services::Services,
    storage::{codec, records},
};

/// Path routing and query parsing: `METHOD path?query`.
pub fn routing(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (method, target) = text.split_once(' ').unwrap_or(("GET", &text));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let _ = router::find(api::routes(), Method::parse(method), path);
    for (key, _value) in parse_query(query) {
        assert!(!key.contains('&') || query.contains("%26"), "a raw & always separates pairs");
    }
    let _ = percent_decode(path, false);
}

/// Configuration text, without environment.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_toml_with_env(text, Vec::new());
    }
}

/// Stored bytes of every record and key type (a damaged database must give
/// errors, not panics).
pub fn stored_records(data: &[u8]) {
    use codec::KeyCodec;
    let _ = codec::decode_record::<records::UserRecord>(data);
    let _ = codec::decode_record::<records::DeviceRecord>(data);
    let _ = codec::decode_record::<records::TokenRecord>(data);
    let _ = codec::decode_record::<records::UiaaSessionRecord>(data);
    let _ = codec::decode_record::<records::RegistrationTokenUsage>(data);
    let _ = codec::decode_record::<records::SigningKeyRecord>(data);
    let _ = codec::decode_record::<records::PusherRecord>(data);
    let _ = codec::decode_record::<records::PushJobRecord>(data);
    let _ = codec::decode_record::<records::MediaRecord>(data);
    let _ = <(String, String)>::decode(data);
    if let Ok(key) = <(u64, String)>::decode(data) {
        assert_eq!(<(u64, String)>::decode(&key.encode()).ok(), Some(key));
    }
    let _ = u64::decode(data);
    let _ = String::decode(data);
    if let Ok(pair) = <(String, String)>::decode(data) {
        if !pair.0.as_bytes().contains(&codec::SEPARATOR) {
            assert_eq!(<(String, String)>::decode(&pair.encode()).ok(), Some(pair));
        }
    }
}

/// Canonical JSON: whatever parses must serialise to text that parses back to
/// the same canonical form.
pub fn canonical(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(text) = canonical_json(&value) {
        let reparsed: serde_json::Value = serde_json::from_str(&text).expect("canonical JSON parses");
        assert_eq!(canonical_json(&reparsed).ok(), Some(text));
    }
}

/// A small room (create, creator's join, power levels, public join rules) in
/// every creatable room version, for the auth-check target.
struct AuthRoom {
    rules: ruma::room_version_rules::RoomVersionRules,
    events: std::collections::HashMap<ruma::OwnedEventId, crate::events::Pdu>,
    state: std::collections::HashMap<(String, String), ruma::OwnedEventId>,
}

fn auth_rooms() -> &'static Vec<AuthRoom> {
    static ROOMS: OnceLock<Vec<AuthRoom>> = OnceLock::new();
    ROOMS.get_or_init(|| {
        use crate::events::{build_and_sign, room_version, NewEvent};
        let key = crate::crypto::signing_key::ServerKey::from_seed("fuzz", &[3u8; 32]).expect("seed");
        let server: &ruma::ServerName = "fuzz.local".try_into().expect("server name");
        let creator: ruma::OwnedUserId = "@creator:fuzz.local".try_into().expect("user id");
        room_version::KNOWN
            .iter()
            .filter(|version| room_version::can_create(version))
            .map(|version| {
                let rules = room_version::rules(version).expect("rules");
                let mut room = AuthRoom { rules, events: Default::default(), state: Default::default() };
                let mut room_id: Option<ruma::OwnedRoomId> = room
                    .rules
                    .event_format
                    .require_room_create_room_id
                    .then(|| "!fuzz:fuzz.local".try_into().expect("room id"));
                let mut prev: Vec<ruma::OwnedEventId> = Vec::new();
                let initial = [
                    ("m.room.create", "", serde_json::json!({ "room_version": version.as_str(), "creator": creator })),
                    ("m.room.member", creator.as_str(), serde_json::json!({ "membership": "join" })),
                    ("m.room.power_levels", "", serde_json::json!({ "users": {} })),
                    ("m.room.join_rules", "", serde_json::json!({ "join_rule": "public" })),
                ];
                for (depth, (kind, state_key, content)) in initial.into_iter().enumerate() {
                    let auth_events = room
                        .state
                        .iter()
                        .filter(|((k, _), _)| {
                            *k != "m.room.create" || room.rules.event_format.allow_room_create_in_auth_events
                        })
                        .map(|(_, id)| id.clone())
                        .collect();
                    let new = NewEvent {
                        kind: kind.into(),
                        state_key: Some(state_key.into()),
                        content,
                        sender: creator.clone(),
                        room_id: room_id.clone(),
                        prev_events: prev.clone(),
                        auth_events,
                        depth: depth as u64 + 1,
                        origin_server_ts: depth as u64,
                        redacts: None,
                        v1: None,
                    };
                    let pdu = build_and_sign(new, &room.rules, &key, server).expect("fixture event");
                    room_id.get_or_insert_with(|| pdu.room_id_or_derived());
                    prev = vec![pdu.event_id().clone()];
                    room.state.insert((kind.to_owned(), state_key.to_owned()), pdu.event_id().clone());
                    room.events.insert(pdu.event_id().clone(), pdu);
                }
                room
            })
            .collect()
    })
}

/// The authorisation rules of every creatable room version applied to
/// arbitrary events against a small room: refusals are fine, panics are not.
pub fn auth_check(data: &[u8]) {
    use ruma::state_res;
    let Ok(json) = std::str::from_utf8(data) else { return };
    for room in auth_rooms() {
        let Ok(pdu) = crate::events::Pdu::from_json(json, &room.rules) else { continue };
        let fetch_event = |id: &ruma::EventId| room.events.get(id).cloned();
        let _ = state_res::check_state_independent_auth_rules(&room.rules.authorization, &pdu, fetch_event);
        let fetch_state = |kind: &ruma::events::StateEventType, state_key: &str| {
            room.state.get(&(kind.to_string(), state_key.to_owned())).and_then(|id| room.events.get(id)).cloned()
        };
        let _ = state_res::check_state_dependent_auth_rules(&room.rules.authorization, &pdu, fetch_state);
    }
}

/// One server for the whole fuzzing process (statics are never dropped, so its
/// temporary database stays until the machine cleans its temporary folder).
/// PDU parsing and event ids under every known room version: whatever
/// parses has a stable id across a JSON round trip and survives redaction
/// with the same id.
pub fn pdu(data: &[u8]) {
    let Ok(json) = std::str::from_utf8(data) else { return };
    for version in crate::events::room_version::KNOWN {
        let Ok(rules) = crate::events::room_version::rules(&version) else { continue };
        let Ok(pdu) = crate::events::Pdu::from_json(json, &rules) else { continue };
        let again = crate::events::Pdu::from_json(&pdu.to_canonical_json(), &rules).expect("re-parses");
        assert_eq!(again.event_id(), pdu.event_id());
        if let Ok(redacted) = pdu.redacted(&rules) {
            if rules.event_id_format != ruma::room_version_rules::EventIdFormatVersion::V1 {
                assert_eq!(redacted.event_id(), pdu.event_id(), "redaction keeps the event id");
            }
        }
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    services: Arc<Services>,
    /// A public room of a local user, for events from "other servers".
    room: String,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // A fresh database each process: a process id alone is reused, and a
        // leftover database of an earlier run already has the fuzzing user.
        let unique = format!("conduit-fuzz-{}-{}", std::process::id(), crate::crypto::tokens::random_alphanumeric(8));
        let dir = std::env::temp_dir().join(unique);
        // Federation off: what the receiver would fetch from a peer fails at once.
        let text = format!(
            "server_name = \"fuzz.local\"\ndatabase_path = {:?}\ndatabase_cache_mb = 8\nregistration = \"open\"\n\
             allow_guest_registration = true\n[federation]\nenabled = false\n",
            dir.display().to_string()
        );
        let config = Config::from_toml_with_env(&text, Vec::new()).expect("fuzz configuration");
        let services = Services::open(config).expect("fuzz storage");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let room = runtime.block_on(fuzz_room(&services)).expect("fuzz room");
        Harness { runtime, services, room }
    })
}

/// A public room of `@fuzzer:fuzz.local` (made once per fuzzing process).
async fn fuzz_room(services: &Services) -> crate::error::Result<String> {
    use crate::rooms::creation::{plan, NewRoom, Preset};
    let localpart = format!("fuzzer{}", std::process::id());
    services.users.create_account(&localpart, None, false, false).await?;
    let creator = services.users.user_id(&localpart)?;
    let version = crate::events::room_version::DEFAULT_ROOM_VERSION;
    let new_room = NewRoom {
        creator: creator.clone(),
        creator_member_content: serde_json::json!({ "membership": "join" }),
        preset: Preset::Public,
        invitees: Vec::new(),
        remote_invitees: Vec::new(),
        is_direct: false,
        alias: None,
        name: None,
        topic: None,
        initial_state: Vec::new(),
        creation_content: Default::default(),
        power_level_override: None,
    };
    let plan = plan(new_room, &crate::events::room_version::rules(&version)?)?;
    let room = services.rooms.create_room(&creator, &version, plan.create_content, None, plan.events).await?;
    Ok(room.to_string())
}

/// A transaction from another server (`PUT /send/{txnId}` after its
/// signature was checked): PDUs naming the room `"!room"` are aimed at a
/// room this server is in. Nothing may panic, and no PDU may make the
/// server fail the whole transaction (an internal error).
pub fn federation_receive(data: &[u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static TXN: AtomicU64 = AtomicU64::new(0);
    let harness = harness();
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Some(pdus) = value.get_mut("pdus").and_then(serde_json::Value::as_array_mut) {
        for pdu in pdus.iter_mut().filter_map(serde_json::Value::as_object_mut) {
            if pdu.get("room_id").and_then(serde_json::Value::as_str) == Some("!room") {
                pdu.insert("room_id".into(), harness.room.clone().into());
            }
        }
    }
    let Ok(transaction) = serde_json::from_value(value) else { return };
    let origin = <&ruma::ServerName>::try_from("peer.fuzz").expect("a server name");
    let txn = format!("fuzz-{}", TXN.fetch_add(1, Ordering::Relaxed));
    let services = &harness.services;
    let received = harness.runtime.block_on(services.federation.receive_transaction(
        &services.rooms,
        crate::federation::edu::EduSinks {
            typing: &services.typing,
            e2ee: &services.e2ee,
            presence: &services.presence,
        },
        origin,
        &txn,
        transaction,
    ));
    if let Err(error) = received {
        assert!(error.status() != 500, "a peer's transaction caused an internal error: {error}");
    }
}

/// A PDU from another server past its signature check (which fuzzed input
/// cannot pass): the format for the room's version, then the auth events,
/// the state before it and the current state (what the server would fetch
/// from the peer fails: federation is off), then storage. `"!room"` names a
/// room this server is in. Nothing may panic or fail internally.
pub fn federation_pdu(data: &[u8]) {
    let harness = harness();
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Some(pdu) = value.as_object_mut() {
        if pdu.get("room_id").and_then(serde_json::Value::as_str) == Some("!room") {
            pdu.insert("room_id".into(), harness.room.clone().into());
        }
    }
    let services = &harness.services;
    let Ok(room_id) = ruma::OwnedRoomId::try_from(harness.room.as_str()) else { return };
    let Ok((pdu, _)) = crate::federation::receive::format::parse(&services.rooms, &room_id, &value) else { return };
    if pdu.room_id_or_derived() != room_id {
        return;
    }
    let origin = <&ruma::ServerName>::try_from("peer.fuzz").expect("a server name");
    let receipt = crate::federation::receive::Receipt::new(&services.rooms, &services.federation, origin);
    let received = harness.runtime.block_on(async {
        let _guard = services.rooms.locks.lock(&room_id).await;
        receipt.receive(&pdu).await
    });
    if let Err(error) = received {
        assert!(error.status() != 500, "a peer's event caused an internal error: {error}");
    }
}

/// A whole client request through routing, authentication and the handler:
/// first line `METHOD path?query [token]`, the rest is the body.
pub fn api_request(data: &[u8]) {
    let harness = harness();
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let head = String::from_utf8_lossy(&data[..split]).into_owned();
    let body = Bytes::copy_from_slice(data.get(split + 1..).unwrap_or_default());
    let mut words = head.split(' ');
    let method = Method::parse(words.next().unwrap_or("GET"));
    let target = words.next().unwrap_or("/");
    let access_token = words.next().map(str::to_owned);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let router::Match::Found { endpoint, params } = router::find(api::routes(), method, path) else { return };
    let body_stream = endpoint.streams_body().then(|| BodyStream::from_bytes(body.clone()));
    let request = Request {
        method,
        path: path.to_owned(),
        params,
        query: parse_query(query),
        raw_query: (!query.is_empty()).then(|| query.to_owned()),
        authorization: None,
        body,
        body_stream,
        content_type: None,
        range: None,
        accept_language: None,
        client_ip: "127.0.0.1".to_owned(),
        access_token,
        operator: false,
    };
    let services = Arc::clone(&harness.services);
    let result = harness.runtime.block_on(api::dispatch(services, endpoint, request));
    if let Err(error) = result {
        assert!(error.status() != 500, "client input caused an internal error: {error}");
    }
}

/// Image decoding and thumbnailing of uploaded bytes: the first byte picks
/// the declared type and the method, the rest is the file.
pub fn thumbnail(data: &[u8]) {
    use crate::media::thumbnail::{make, Method};
    let Some((selector, content)) = data.split_first() else { return };
    let content_type = ["image/png", "image/jpeg", "image/gif", "image/webp"][usize::from(selector & 3)];
    let method = if selector & 4 == 0 { Method::Scale } else { Method::Crop };
    let _ = make(content, content_type, 32, 32, method);
}

/// A web page a user links to, as URL previews read it: OpenGraph tags and
/// the image reference resolved against the page's URL, plus the `Range`
/// header of media downloads. Nothing may panic; a resolved reference is
/// always an http(s) URL.
pub fn url_preview(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let tags = crate::media::preview::open_graph(&text);
    for value in tags.values().filter_map(serde_json::Value::as_str) {
        for base in ["https://example.gouv.fr/a/b.html?x=1", "http://example.org"] {
            if let Some(url) = crate::media::preview::resolve(base, value) {
                assert!(url.starts_with("http://") || url.starts_with("https://"), "{value:?} → {url}");
            }
        }
    }
    let _ = crate::media::byte_range(&text, data.len() as u64);
}

/// `Authorization: X-Matrix …` headers from other servers: parsing never
/// panics, and whatever parses verifies only with the right key.
pub fn x_matrix(data: &[u8]) {
    use crate::federation::x_matrix;
    let text = String::from_utf8_lossy(data);
    let Ok(header) = x_matrix::parse(&text) else { return };
    assert!(header.key_id.starts_with("ed25519:") && !header.origin.is_empty() && !header.signature.is_empty());
    let key = "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ";
    assert!(x_matrix::verify(&header, "b.example", "GET", "/", None, key).is_err(), "{text}");
}

/// A federation media answer read as it arrives: the first byte sets the
/// chunk size; whatever the chunks, the reader finds the same parts.
pub fn media_multipart(data: &[u8]) {
    use crate::media::multipart::{Event, MultipartReader};
    let Some((&size, body)) = data.split_first() else { return };
    let read = |chunk_size: usize| {
        let mut reader = MultipartReader::new("b0undary");
        let mut events: Vec<Event> = Vec::new();
        for chunk in body.chunks(chunk_size.max(1)) {
            reader.feed(chunk);
            loop {
                match reader.next_event() {
                    Ok(Some(Event::Data(more))) => match events.last_mut() {
                        Some(Event::Data(data)) => data.extend(more),
                        _ => events.push(Event::Data(more)),
                    },
                    Ok(Some(event)) => events.push(event),
                    Ok(None) => break,
                    Err(error) => return Err(error),
                }
            }
        }
        reader.finish().map(|()| events)
    };
    let whole = read(body.len());
    let chunked = read(usize::from(size));
    if let (Ok(whole), Ok(chunked)) = (&whole, &chunked) {
        assert_eq!(whole, chunked, "the parts do not depend on the chunks");
        let data: usize = whole.iter().map(|e| if let Event::Data(d) = e { d.len() } else { 0 }).sum();
        assert!(data <= body.len());
    }
}
