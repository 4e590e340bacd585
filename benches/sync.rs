//! `/sync` hot paths, without HTTP:
//! - `sync/initial`: a user in 100 rooms of 50 messages each;
//! - `sync/incremental_one_new_event`: the same user, one new event since the token;
//! - `sync/incremental_nothing_new`: nothing new since the token (timeout 0).
//!
//! Run: `cargo bench --bench sync`. Figures in BENCHMARKS.md.

use std::{sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

use conduit::{
    config::Config,
    rooms::EventRequest,
    services::Services,
    sync::{self, filter::Filter, Sources, SyncRequest},
};

const ROOMS: usize = 100;
const MESSAGES: usize = 50;

fn request(since: Option<u64>) -> SyncRequest {
    SyncRequest {
        since,
        full_state: false,
        timeout: Duration::ZERO,
        filter: Filter::default(),
        ignored: Default::default(),
        to_device: true,
    }
}

fn bench_sync(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "server_name = \"bench.local\"\ndatabase_path = {:?}\nregistration = \"open\"\npresence = false\n",
        dir.path().join("db").display().to_string()
    );
    let config = Config::from_toml_with_env(&text, Vec::new()).unwrap();
    let services: Arc<Services> = runtime.block_on(async { Services::open(config).unwrap() });
    let who = runtime.block_on(async {
        services.users.create_account("reader", Some("pw"), false, false).await.unwrap();
        services.users.create_account("writer", Some("pw"), false, false).await.unwrap();
        let session = services.users.open_session("reader", None, None, false, "127.0.0.1").await.unwrap();
        services.users.authenticate(&session.access_token).await.unwrap()
    });
    let writer: ruma::OwnedUserId = "@writer:bench.local".try_into().unwrap();
    let rooms = runtime.block_on(async {
        let mut rooms = Vec::new();
        for r in 0..ROOMS {
            let public = json!({ "join_rule": "public" });
            let initial = vec![
                EventRequest::state("m.room.member", writer.as_str(), json!({ "membership": "join" })),
                EventRequest::state("m.room.power_levels", "", json!({ "users": {} })),
                EventRequest::state("m.room.join_rules", "", public),
                EventRequest::state("m.room.name", "", json!({ "name": format!("Room {r}") })),
            ];
            let room =
                services.rooms.create_room(&writer, &ruma::RoomVersionId::V12, json!({}), None, initial).await.unwrap();
            let join = EventRequest::state("m.room.member", who.user_id.as_str(), json!({ "membership": "join" }));
            services.rooms.append(&room, &who.user_id, join, None).await.unwrap();
            for m in 0..MESSAGES {
                let message = EventRequest::message(
                    "m.room.message",
                    json!({ "msgtype": "m.text", "body": format!("message {m}") }),
                );
                services.rooms.append(&room, &writer, message, None).await.unwrap();
            }
            rooms.push(room);
        }
        rooms
    });
    let sources = Sources {
        rooms: &services.rooms,
        users: &services.users,
        typing: &services.typing,
        presence: &services.presence,
        e2ee: &services.e2ee,
        sent_members: &services.sent_members,
    };
    // What the server does: compute the answer and write it out.
    let run = |since: Option<u64>| {
        let body = runtime.block_on(sync::sync(&sources, &who, &request(since))).unwrap();
        serde_json::to_vec(&body).unwrap()
    };
    let parsed = |bytes: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();

    let initial = parsed(run(None));
    assert_eq!(initial["rooms"]["join"].as_object().unwrap().len(), ROOMS);
    let mut group = c.benchmark_group("sync");
    group.sample_size(20);
    group.bench_function("initial", |b| b.iter(|| run(None)));

    let token = |body: &serde_json::Value| sync::parse_since(body["next_batch"].as_str().unwrap()).unwrap();
    let quiet = token(&parsed(run(None)));
    group.bench_function("incremental_nothing_new", |b| b.iter(|| run(Some(quiet))));

    let before = token(&parsed(run(None)));
    runtime.block_on(async {
        let message = EventRequest::message("m.room.message", json!({ "msgtype": "m.text", "body": "new" }));
        services.rooms.append(&rooms[ROOMS / 2], &writer, message, None).await.unwrap();
    });
    let one_new = parsed(run(Some(before)));
    assert_eq!(one_new["rooms"]["join"].as_object().unwrap().len(), 1);
    group.bench_function("incremental_one_new_event", |b| b.iter(|| run(Some(before))));
    group.finish();
}

criterion_group!(benches, bench_sync);
criterion_main!(benches);
