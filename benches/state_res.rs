//! State resolution and event creation.
//!
//! - `state_res/resolve/N`: a room version 12 room with 10,000 members forks
//!   into two branches of N events each, alternating power-level changes and
//!   membership changes (ban on one side, kick on the other) of the same
//!   users; the two branch states are resolved (state resolution v2.1, with
//!   our auth chains and conflicted state subgraph).
//! - `event_creation/build_and_sign`: one event hashed, signed, id computed.
//! - `event_creation/pipeline_append`: one message through the whole pipeline
//!   (build, sign, auth rules, atomic persist, fsync) in a room of 100 members.
//! - `event_creation/pipeline_member_update`: one member event (a display
//!   name change) through the same pipeline.
//! - `…_policy`: the same with the public-sector rules on (`[policy]`), in
//!   the same room, same sitting: the cost of the policy hook.
//!   `cargo bench --bench state_res -- pipeline` runs these four.
//! - `event_creation/policy_check_member`: the public-sector rules' check of
//!   one member event alone (what the hook adds to a state event, without
//!   the fsync that dominates the pipeline's figures).
//!
//! Run: `cargo bench --bench state_res`. Figures in BENCHMARKS.md.

use std::{collections::HashMap, sync::Arc};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ruma::{
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res::{self, StateMap},
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, ServerName,
};
use serde_json::{json, Value};

use conduit::{
    crypto::signing_key::ServerKey,
    events::{build_and_sign, room_version, NewEvent, Pdu},
    rooms::{resolution::resolve, EventRequest, Rooms},
    storage::Storage,
};

const MEMBERS: usize = 10_000;

/// An in-memory room that grows one linear branch.
#[derive(Clone, Default)]
struct Branch {
    state: StateMap<OwnedEventId>,
    head: Option<OwnedEventId>,
    depth: u64,
}

struct Graph {
    events: HashMap<OwnedEventId, Pdu>,
    rules: RoomVersionRules,
    key: Arc<ServerKey>,
    room_id: Option<OwnedRoomId>,
}

impl Graph {
    /// Appends a state event to `branch` (which starts empty for the create event).
    fn add(&mut self, branch: &mut Branch, kind: &str, state_key: &str, sender: &OwnedUserId, content: Value) {
        let raw = serde_json::value::to_raw_value(&content).unwrap();
        let auth_types = state_res::auth_types_for_event(
            &TimelineEventType::from(kind),
            sender,
            Some(state_key),
            &raw,
            &self.rules.authorization,
        )
        .unwrap();
        let auth_events = auth_types
            .into_iter()
            .filter(|(t, _)| {
                *t != StateEventType::RoomCreate || self.rules.event_format.allow_room_create_in_auth_events
            })
            .filter_map(|key| branch.state.get(&key).cloned())
            .collect();
        let new = NewEvent {
            kind: kind.into(),
            state_key: Some(state_key.into()),
            content,
            sender: sender.clone(),
            room_id: self.room_id.clone(),
            prev_events: branch.head.iter().cloned().collect(),
            auth_events,
            depth: branch.depth + 1,
            origin_server_ts: branch.depth + 1,
            redacts: None,
            v1: None,
        };
        let server: &ServerName = "bench.local".try_into().unwrap();
        let pdu = build_and_sign(new, &self.rules, &self.key, server).unwrap();
        if self.room_id.is_none() {
            self.room_id = Some(pdu.room_id_or_derived());
        }
        let id = pdu.event_id().clone();
        branch.state.insert((StateEventType::from(kind), state_key.to_owned()), id.clone());
        branch.head = Some(id.clone());
        branch.depth += 1;
        self.events.insert(id, pdu);
    }
}

fn user(i: usize) -> OwnedUserId {
    format!("@u{i}:bench.local").try_into().unwrap()
}

/// A 10,000-member room and its two forks of `conflicts` events each.
fn forked_room(conflicts: usize) -> (Graph, Branch, Branch) {
    let rules = room_version::rules(&RoomVersionId::V12).unwrap();
    let key = Arc::new(ServerKey::from_seed("bench", &[7u8; 32]).unwrap());
    let mut graph = Graph { events: HashMap::new(), rules, key, room_id: None };
    let admin: OwnedUserId = "@admin:bench.local".try_into().unwrap();
    let mut base = Branch::default();
    graph.add(&mut base, "m.room.create", "", &admin, json!({ "room_version": "12" }));
    graph.add(&mut base, "m.room.member", admin.as_str(), &admin, json!({ "membership": "join" }));
    graph.add(&mut base, "m.room.power_levels", "", &admin, json!({ "users": {} }));
    graph.add(&mut base, "m.room.join_rules", "", &admin, json!({ "join_rule": "public" }));
    for i in 0..MEMBERS {
        let member = user(i);
        graph.add(&mut base, "m.room.member", member.as_str(), &member, json!({ "membership": "join" }));
    }
    let mut left = base.clone();
    let mut right = base;
    for i in 0..conflicts {
        let target = user(i);
        if i % 2 == 0 {
            graph.add(&mut left, "m.room.power_levels", "", &admin, json!({ "users": { target.as_str(): 50 } }));
            graph.add(&mut right, "m.room.power_levels", "", &admin, json!({ "users": { target.as_str(): 25 } }));
        } else {
            graph.add(&mut left, "m.room.member", target.as_str(), &admin, json!({ "membership": "ban" }));
            graph.add(&mut right, "m.room.member", target.as_str(), &admin, json!({ "membership": "leave" }));
        }
    }
    (graph, left, right)
}

fn state_resolution(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_res/resolve");
    group.sample_size(10);
    for conflicts in [10usize, 100, 1000] {
        let (graph, left, right) = forked_room(conflicts);
        let maps = [left.state.clone(), right.state.clone()];
        let resolved = resolve(&graph.rules, &maps, |id| graph.events.get(id).cloned()).unwrap();
        assert_eq!(resolved.len(), MEMBERS + 4, "every state key survives resolution");
        group.bench_with_input(BenchmarkId::from_parameter(conflicts), &conflicts, |b, _| {
            b.iter(|| resolve(&graph.rules, &maps, |id| graph.events.get(id).cloned()).unwrap())
        });
    }
    group.finish();
}

fn event_creation(c: &mut Criterion) {
    let rules = room_version::rules(&RoomVersionId::V12).unwrap();
    let key = ServerKey::from_seed("bench", &[7u8; 32]).unwrap();
    let server: &ServerName = "bench.local".try_into().unwrap();
    let sender: OwnedUserId = "@admin:bench.local".try_into().unwrap();
    let room_id: OwnedRoomId = "!room:bench.local".try_into().unwrap();
    let mut group = c.benchmark_group("event_creation");
    group.bench_function("build_and_sign", |b| {
        b.iter(|| {
            let new = NewEvent {
                kind: "m.room.message".into(),
                state_key: None,
                content: json!({ "msgtype": "m.text", "body": "hello" }),
                sender: sender.clone(),
                room_id: Some(room_id.clone()),
                prev_events: vec!["$prev".try_into().unwrap()],
                auth_events: vec!["$a".try_into().unwrap(), "$b".try_into().unwrap()],
                depth: 10,
                origin_server_ts: 1,
                redacts: None,
                v1: None,
            };
            build_and_sign(new, &rules, &key, server).unwrap()
        })
    });

    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Storage::open(dir.path(), 64 << 20).unwrap());
    let rooms = Rooms::new(Arc::clone(&storage), "bench.local".try_into().unwrap(), Arc::new(key));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let room = runtime.block_on(async {
        let join_rules = EventRequest::state("m.room.join_rules", "", json!({ "join_rule": "public" }));
        let member = EventRequest::state("m.room.member", sender.as_str(), json!({ "membership": "join" }));
        let power = EventRequest::state("m.room.power_levels", "", json!({ "users": {} }));
        let room = rooms
            .create_room(&sender, &RoomVersionId::V12, json!({}), None, vec![member, power, join_rules])
            .await
            .unwrap();
        for i in 0..100 {
            let member = user(i);
            let join = EventRequest::state("m.room.member", member.as_str(), json!({ "membership": "join" }));
            rooms.append(&room, &member, join, None).await.unwrap();
        }
        room
    });
    group.sample_size(30);
    let member = user(7);
    let mut renames = 0u64;
    let policy = public_sector_policy(&storage);
    // The policy first: the room grows as the benches run, which favours the earlier.
    for (suffix, policy) in [("_policy", Some(policy)), ("", None)] {
        match policy {
            Some(policy) => rooms.set_policy(policy),
            None => rooms.set_policy(Arc::new(conduit::rooms::NoPolicy)),
        }
        group.bench_function(format!("pipeline_append{suffix}"), |b| {
            b.iter(|| {
                let message = EventRequest::message("m.room.message", json!({ "msgtype": "m.text", "body": "hello" }));
                runtime.block_on(rooms.append(&room, &sender, message, None)).unwrap()
            })
        });
        group.bench_function(format!("pipeline_member_update{suffix}"), |b| {
            b.iter(|| {
                renames += 1;
                let content = json!({ "membership": "join", "displayname": format!("Member {renames}") });
                let rename = EventRequest::state("m.room.member", member.as_str(), content);
                runtime.block_on(rooms.append(&room, &member, rename, None)).unwrap()
            })
        });
    }
    let policy = public_sector_policy(&storage);
    let record = rooms.room(&room).unwrap().unwrap();
    let rename =
        EventRequest::state("m.room.member", member.as_str(), json!({ "membership": "join", "displayname": "X" }));
    let event_id = runtime.block_on(rooms.append(&room, &member, rename, None)).unwrap();
    let (pdu, _) = rooms.get_pdu(&event_id).unwrap().unwrap();
    group.bench_function("policy_check_member", |b| {
        b.iter(|| {
            let state = conduit::rooms::pipeline::StoredState::new(&rooms, rooms.current_state(&record).unwrap());
            policy.check(&rooms, &pdu, &state).unwrap()
        })
    });
    group.finish();
}

/// The public-sector rules as a deployment turns them on.
fn public_sector_policy(storage: &Arc<Storage>) -> Arc<dyn conduit::rooms::EventPolicy> {
    let text =
        "server_name = \"bench.local\"\n[policy]\naccess_rules = true\nexternal_servers = [\"externes.example\"]\n";
    let config = conduit::config::Config::from_toml_with_env(text, Vec::new()).unwrap();
    let users = conduit::users::Users::new(Arc::clone(storage), &config);
    let policy = conduit::policy::PublicSectorPolicy::from_config(
        &config.policy,
        config.server_name.clone(),
        users.admin_lookup(),
    );
    Arc::new(policy.unwrap())
}

criterion_group!(benches, state_resolution, event_creation);
criterion_main!(benches);
