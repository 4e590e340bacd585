//! State resolution against fixtures with known answers (MSC4297's problems A
//! and B), for both state resolution v2.0 (room version 11) and v2.1 (room
//! version 12, which needs our conflicted state subgraph).

use std::{collections::HashMap, path::PathBuf};

use conduit::rooms::resolution::{resolve, Depth};
use ruma::{
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res::{Event, StateMap},
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A fixture PDU: only the fields state resolution reads.
#[derive(Clone, Debug, Deserialize)]
struct FixtureEvent {
    event_id: OwnedEventId,
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
}

impl Event for FixtureEvent {
    type Id = OwnedEventId;
    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        None
    }
    fn rejected(&self) -> bool {
        false
    }
}

/// The fixtures are resolved with v2, which does not read depths.
impl Depth for FixtureEvent {
    fn depth(&self) -> u64 {
        0
    }
}

fn fixture(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state_res").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Resolves the two branch states of a problem and returns the event ids of the result.
fn resolve_problem(problem: &str, branches: [&str; 2], pdus: &str, version: &str) -> Vec<String> {
    let events: Vec<FixtureEvent> = serde_json::from_str(&fixture(&format!("{problem}/{pdus}"))).unwrap();
    let by_id: HashMap<OwnedEventId, FixtureEvent> = events.into_iter().map(|e| (e.event_id.clone(), e)).collect();
    let state_maps: Vec<StateMap<OwnedEventId>> = branches
        .iter()
        .map(|branch| {
            let ids: Vec<OwnedEventId> = serde_json::from_str(&fixture(&format!("{problem}/{branch}"))).unwrap();
            ids.into_iter()
                .map(|id| {
                    let event = &by_id[&id];
                    ((StateEventType::from(event.kind.to_string()), event.state_key.clone().unwrap()), id)
                })
                .collect()
        })
        .collect();
    let rules: RoomVersionRules = ruma::RoomVersionId::try_from(version).unwrap().rules().unwrap();
    let resolved = resolve(&rules, &state_maps, |id| by_id.get(id).cloned()).expect("resolves");
    let mut ids: Vec<String> = resolved.into_values().map(|id| id.to_string()).collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    ids.sort();
    ids
}

#[test]
fn problem_a_v2_0_starts_from_the_unconflicted_state() {
    let got = resolve_problem("MSC4297-problem-A", ["state-bob.json", "state-charlie.json"], "pdus-v11.json", "11");
    assert_eq!(
        got,
        sorted(&[
            "$00-m-room-create",
            "$01-m-room-member-leave-alice",
            "$01-m-room-member-change-display-name-bob",
            "$01-m-room-member-change-display-name-charlie",
            "$00-m-room-power_levels",
        ])
    );
}

#[test]
fn problem_a_v2_1_starts_from_the_empty_state() {
    let got = resolve_problem("MSC4297-problem-A", ["state-bob.json", "state-charlie.json"], "pdus-v12.json", "12");
    assert_eq!(
        got,
        sorted(&[
            "$00-m-room-create",
            "$01-m-room-join_rules",
            "$01-m-room-member-leave-alice",
            "$01-m-room-member-change-display-name-bob",
            "$01-m-room-member-change-display-name-charlie",
            "$00-m-room-power_levels",
        ])
    );
}

#[test]
fn problem_b_v2_0_ignores_the_conflicted_subgraph() {
    let got = resolve_problem("MSC4297-problem-B", ["state-eve.json", "state-zara.json"], "pdus-v11.json", "11");
    assert!(got.contains(&"$00-m-room-power_levels".to_owned()), "{got:?}");
}

#[test]
fn problem_b_v2_1_uses_the_conflicted_subgraph() {
    let got = resolve_problem("MSC4297-problem-B", ["state-eve.json", "state-zara.json"], "pdus-v12.json", "12");
    assert_eq!(
        got,
        sorted(&[
            "$00-m-room-create",
            "$00-m-room-join_rules",
            "$00-m-room-member-join-alice",
            "$00-m-room-member-join-bob",
            "$00-m-room-member-join-charlie",
            "$01-m-room-member-change-display-name-eve",
            "$00-m-room-member-join-zara",
            "$02-m-room-power_levels",
        ])
    );
}
