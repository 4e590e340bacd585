//! State resolution v1: merging the states of diverging branches of a room
//! of version 1.
//!
//! Spec: room version 1, "State resolution" (`rooms/v1.md`). ruma implements
//! only the later algorithms; this one is written from the spec's text:
//!
//! - *R* starts as the union of the states, without the conflicted keys (a
//!   key is conflicted when the states give it different event ids);
//! - then the conflicts of `m.room.power_levels`, `m.room.join_rules` and
//!   `m.room.member`, in that order, one conflicted key at a time: its events
//!   sorted by ascending depth then descending `sha1(event_id)`, the first
//!   one added to *R*, each next one added while the authorisation rules
//!   allow it in the state *R*, stopping at the first refused;
//! - then every other conflicted key: the event with the highest depth and
//!   lowest `sha1(event_id)` that the authorisation rules allow in *R*.
//!
//! The spec is silent on a key none of whose events passes; it stays out of
//! *R*. Events the fetch function cannot find take no part. Pure: events
//! come from a fetch function, like [`super::resolution`].

use std::{borrow::Borrow, cmp::Ordering, collections::BTreeSet, hash::Hash};

use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY};
use ruma::{
    events::StateEventType,
    room_version_rules::AuthorizationRules,
    state_res::{check_state_dependent_auth_rules, Event, StateMap},
    EventId,
};

/// What resolution v1 needs of an event beyond ruma's [`Event`]: its depth.
pub trait Depth {
    fn depth(&self) -> u64;
}

impl Depth for crate::events::Pdu {
    fn depth(&self) -> u64 {
        crate::events::Pdu::depth(self)
    }
}

/// The state event types whose conflicts are resolved first, in this order,
/// by the iterative pass (they are the ones the authorisation rules read).
const AUTH_TYPES: [StateEventType; 3] =
    [StateEventType::RoomPowerLevels, StateEventType::RoomJoinRules, StateEventType::RoomMember];

/// Resolves `state_maps` with the algorithm of room version 1.
pub fn resolve<E, F>(rules: &AuthorizationRules, state_maps: &[StateMap<E::Id>], fetch: F) -> StateMap<E::Id>
where
    E: Event + Depth,
    E::Id: Hash + Eq + Clone + Ord,
    F: Fn(&EventId) -> Option<E>,
{
    let (mut resolved, conflicts) = split_conflicts::<E>(state_maps);
    for kind in &AUTH_TYPES {
        for (key, ids) in conflicts.iter().filter(|(key, _)| &key.0 == kind) {
            let events = ascending(fetch_all(ids, &fetch));
            resolve_iteratively(rules, &mut resolved, key, events, &fetch);
        }
    }
    for (key, ids) in conflicts.iter().filter(|(key, _)| !AUTH_TYPES.contains(&key.0)) {
        let mut events = ascending(fetch_all(ids, &fetch));
        // Highest depth, then lowest sha1: the ascending order reversed.
        events.reverse();
        if let Some(chosen) = events.into_iter().find(|event| allowed_in(rules, event, &resolved, &fetch)) {
            resolved.insert(key.clone(), chosen.event_id().clone());
        }
    }
    resolved
}

/// The unconflicted part of the states (*R*'s start), and each conflicted key
/// with its distinct event ids, keys in a fixed order.
#[allow(clippy::type_complexity)]
fn split_conflicts<E: Event>(
    state_maps: &[StateMap<E::Id>],
) -> (StateMap<E::Id>, Vec<((StateEventType, String), BTreeSet<E::Id>)>)
where
    E::Id: Hash + Eq + Clone + Ord,
{
    let mut ids_by_key: std::collections::BTreeMap<(String, String), ((StateEventType, String), BTreeSet<E::Id>)> =
        std::collections::BTreeMap::new();
    for state in state_maps {
        for (key, id) in state {
            ids_by_key
                .entry((key.0.to_string(), key.1.clone()))
                .or_insert_with(|| (key.clone(), BTreeSet::new()))
                .1
                .insert(id.clone());
        }
    }
    let mut unconflicted = StateMap::new();
    let mut conflicts = Vec::new();
    for (_, (key, ids)) in ids_by_key {
        if ids.len() == 1 {
            if let Some(id) = ids.into_iter().next() {
                unconflicted.insert(key, id);
            }
        } else {
            conflicts.push((key, ids));
        }
    }
    (unconflicted, conflicts)
}

/// The events of `ids` that can be found.
fn fetch_all<E: Event>(ids: &BTreeSet<E::Id>, fetch: &impl Fn(&EventId) -> Option<E>) -> Vec<E> {
    ids.iter()
        .filter_map(|id| {
            let event = fetch(id.borrow());
            if event.is_none() {
                tracing::warn!(event_id = %id, "state resolution v1: a conflicted event is missing");
            }
            event
        })
        .collect()
}

/// `events` sorted by ascending depth, then descending `sha1(event_id)`.
fn ascending<E: Event + Depth>(mut events: Vec<E>) -> Vec<E> {
    events.sort_by(spec_order);
    events
}

/// The spec's order of the iterative pass: ascending depth, then descending
/// `sha1(event_id)`.
fn spec_order<E: Event + Depth>(a: &E, b: &E) -> Ordering {
    a.depth().cmp(&b.depth()).then_with(|| sha1_of(b.event_id().borrow()).cmp(&sha1_of(a.event_id().borrow())))
}

/// `sha1(event_id)` over the id's UTF-8 bytes.
pub fn sha1_of(event_id: &EventId) -> [u8; 20] {
    let mut out = [0; 20];
    out.copy_from_slice(digest(&SHA1_FOR_LEGACY_USE_ONLY, event_id.as_str().as_bytes()).as_ref());
    out
}

/// The iterative pass over one conflicted key: the first event goes into
/// `resolved`, each next one replaces it while the rules allow it in
/// `resolved`; the first refusal ends the pass.
fn resolve_iteratively<E: Event>(
    rules: &AuthorizationRules,
    resolved: &mut StateMap<E::Id>,
    key: &(StateEventType, String),
    events: Vec<E>,
    fetch: &impl Fn(&EventId) -> Option<E>,
) where
    E::Id: Clone,
{
    let mut events = events.into_iter();
    let Some(first) = events.next() else { return };
    resolved.insert(key.clone(), first.event_id().clone());
    for event in events {
        if !allowed_in(rules, &event, resolved, fetch) {
            break;
        }
        resolved.insert(key.clone(), event.event_id().clone());
    }
}

/// Whether the authorisation rules allow `event` in a room whose state is
/// `state`.
fn allowed_in<E: Event>(
    rules: &AuthorizationRules,
    event: &E,
    state: &StateMap<E::Id>,
    fetch: &impl Fn(&EventId) -> Option<E>,
) -> bool {
    let fetch_state = |kind: &StateEventType, state_key: &str| {
        state.get(&(kind.clone(), state_key.to_owned())).and_then(|id| fetch(id.borrow()))
    };
    match check_state_dependent_auth_rules(rules, event, fetch_state) {
        Ok(()) => true,
        Err(reason) => {
            tracing::debug!(event_id = %event.event_id(), %reason, "state resolution v1: refused in the resolved state");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ruma::{
        events::TimelineEventType, room_version_rules::RoomVersionRules, MilliSecondsSinceUnixEpoch, OwnedEventId,
        OwnedRoomId, OwnedUserId, RoomId, UserId,
    };
    use serde_json::{json, value::RawValue};

    use super::*;

    /// A state event with only what resolution and the auth rules read.
    #[derive(Clone, Debug)]
    struct TestEvent {
        id: OwnedEventId,
        room_id: OwnedRoomId,
        sender: OwnedUserId,
        kind: TimelineEventType,
        state_key: String,
        content: Box<RawValue>,
        depth: u64,
    }

    impl Event for TestEvent {
        type Id = OwnedEventId;
        fn event_id(&self) -> &Self::Id {
            &self.id
        }
        fn room_id(&self) -> Option<&RoomId> {
            Some(&self.room_id)
        }
        fn sender(&self) -> &UserId {
            &self.sender
        }
        fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
            MilliSecondsSinceUnixEpoch(self.depth.try_into().unwrap())
        }
        fn event_type(&self) -> &TimelineEventType {
            &self.kind
        }
        fn content(&self) -> &RawValue {
            &self.content
        }
        fn state_key(&self) -> Option<&str> {
            Some(&self.state_key)
        }
        fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
            Box::new(std::iter::empty())
        }
        fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
            Box::new(std::iter::empty())
        }
        fn redacts(&self) -> Option<&Self::Id> {
            None
        }
        fn rejected(&self) -> bool {
            false
        }
    }

    impl Depth for TestEvent {
        fn depth(&self) -> u64 {
            self.depth
        }
    }

    /// A room of version 1 whose events are built in the test: alice created
    /// it (power 100), bob (50) and carol (0) joined; joining is public and
    /// state needs 50.
    struct Room {
        events: HashMap<OwnedEventId, TestEvent>,
        base: StateMap<OwnedEventId>,
    }

    impl Room {
        fn new() -> Self {
            let mut room = Room { events: HashMap::new(), base: StateMap::new() };
            let base = [
                room.event("create", "alice", "m.room.create", "", json!({ "creator": "@alice:a.test" }), 1),
                room.member("alice-join", "alice", "alice", "join", 2),
                room.event("pl", "alice", "m.room.power_levels", "", levels(50), 3),
                room.event("jr", "alice", "m.room.join_rules", "", json!({ "join_rule": "public" }), 4),
                room.member("bob-join", "bob", "bob", "join", 5),
                room.member("carol-join", "carol", "carol", "join", 5),
            ];
            for id in base {
                let event = &room.events[&id];
                room.base.insert((event.kind.to_string().into(), event.state_key.clone()), id);
            }
            room
        }

        fn event(
            &mut self,
            name: &str,
            sender: &str,
            kind: &str,
            state_key: &str,
            content: serde_json::Value,
            depth: u64,
        ) -> OwnedEventId {
            let id = OwnedEventId::try_from(format!("${name}:a.test")).unwrap();
            let event = TestEvent {
                id: id.clone(),
                room_id: "!room:a.test".try_into().unwrap(),
                sender: format!("@{sender}:a.test").try_into().unwrap(),
                kind: kind.into(),
                state_key: state_key.into(),
                content: serde_json::value::to_raw_value(&content).unwrap(),
                depth,
            };
            self.events.insert(id.clone(), event);
            id
        }

        fn member(&mut self, name: &str, sender: &str, target: &str, membership: &str, depth: u64) -> OwnedEventId {
            let state_key = format!("@{target}:a.test");
            self.event(name, sender, "m.room.member", &state_key, json!({ "membership": membership }), depth)
        }

        /// The base state with `ids` on top, as a branch's state.
        fn branch(&self, ids: &[&OwnedEventId]) -> StateMap<OwnedEventId> {
            let mut state = self.base.clone();
            for id in ids {
                let event = &self.events[*id];
                state.insert((event.kind.to_string().into(), event.state_key.clone()), (*id).clone());
            }
            state
        }

        fn resolve(&self, branches: &[StateMap<OwnedEventId>]) -> StateMap<OwnedEventId> {
            resolve(&RoomVersionRules::V1.authorization, branches, |id| self.events.get(id).cloned())
        }
    }

    /// Power levels giving alice 100, bob `bob` and everyone else 0.
    fn levels(bob: u64) -> serde_json::Value {
        json!({
            "users": { "@alice:a.test": 100, "@bob:a.test": bob },
            "users_default": 0, "state_default": 50, "events_default": 0,
            "ban": 50, "kick": 50, "redact": 50,
        })
    }

    fn key(kind: &str, state_key: &str) -> (StateEventType, String) {
        (kind.into(), state_key.into())
    }

    fn id(name: &str) -> OwnedEventId {
        OwnedEventId::try_from(format!("${name}:a.test")).unwrap()
    }

    #[test]
    fn unconflicted_state_is_kept() {
        let room = Room::new();
        let resolved = room.resolve(&[room.base.clone(), room.base.clone()]);
        assert_eq!(resolved, room.base);
    }

    #[test]
    fn a_power_level_change_refused_after_the_earlier_one_stops_the_pass() {
        let mut room = Room::new();
        // alice demotes bob (depth 6); on another branch bob, still at 50,
        // changes a default (depth 7). Ascending depth: alice's first, then
        // bob's, refused once bob has 0: alice's stays.
        let demote = room.event("demote", "alice", "m.room.power_levels", "", levels(0), 6);
        let mut bob_change = levels(50);
        bob_change["events_default"] = json!(10);
        let bobs = room.event("bobs", "bob", "m.room.power_levels", "", bob_change, 7);
        let resolved = room.resolve(&[room.branch(&[&demote]), room.branch(&[&bobs])]);
        assert_eq!(resolved[&key("m.room.power_levels", "")], demote);

        // The other way round (bob's earlier), both pass: the later one wins.
        let mut room = Room::new();
        let mut bob_change = levels(50);
        bob_change["events_default"] = json!(10);
        let bobs = room.event("bobs", "bob", "m.room.power_levels", "", bob_change, 6);
        let demote = room.event("demote", "alice", "m.room.power_levels", "", levels(0), 7);
        let resolved = room.resolve(&[room.branch(&[&demote]), room.branch(&[&bobs])]);
        assert_eq!(resolved[&key("m.room.power_levels", "")], demote);
    }

    #[test]
    fn a_topic_fork_takes_the_deepest_event_the_resolved_state_allows() {
        let mut room = Room::new();
        let alices = room.event("t-alice", "alice", "m.room.topic", "", json!({ "topic": "a" }), 6);
        let bobs = room.event("t-bob", "bob", "m.room.topic", "", json!({ "topic": "b" }), 7);
        // carol (power 0) may not set the topic: the deepest, yet refused.
        let carols = room.event("t-carol", "carol", "m.room.topic", "", json!({ "topic": "c" }), 8);
        let branches = [room.branch(&[&alices]), room.branch(&[&bobs]), room.branch(&[&carols])];
        let resolved = room.resolve(&branches);
        assert_eq!(resolved[&key("m.room.topic", "")], bobs);
        // Everything else is the unconflicted base.
        assert_eq!(resolved.len(), room.base.len() + 1);

        // When none passes, the key stays out of the result.
        let carols_again = room.event("t-carol2", "carol", "m.room.topic", "", json!({ "topic": "d" }), 9);
        let resolved = room.resolve(&[room.branch(&[&carols]), room.branch(&[&carols_again])]);
        assert!(!resolved.contains_key(&key("m.room.topic", "")));
    }

    #[test]
    fn a_ban_beats_a_join_on_either_side_of_it() {
        for (ban_depth, join_depth) in [(6, 7), (7, 6)] {
            let mut room = Room::new();
            let ban = room.member("ban", "alice", "dave", "ban", ban_depth);
            let join = room.member("join", "dave", "dave", "join", join_depth);
            let resolved = room.resolve(&[room.branch(&[&ban]), room.branch(&[&join])]);
            assert_eq!(resolved[&key("m.room.member", "@dave:a.test")], ban, "ban at {ban_depth}");
        }
    }

    #[test]
    fn member_conflicts_are_resolved_after_power_levels() {
        // bob bans dave on one branch; on the other alice demotes bob. Power
        // levels go first, so bob's ban is checked with bob at 0 and refused.
        let mut room = Room::new();
        let demote = room.event("demote", "alice", "m.room.power_levels", "", levels(0), 6);
        let join = room.member("join", "dave", "dave", "join", 6);
        let ban = room.member("ban", "bob", "dave", "ban", 7);
        let resolved = room.resolve(&[room.branch(&[&demote, &join]), room.branch(&[&ban])]);
        assert_eq!(resolved[&key("m.room.power_levels", "")], demote);
        assert_eq!(resolved[&key("m.room.member", "@dave:a.test")], join);
    }

    #[test]
    fn ties_in_depth_are_broken_by_sha1_of_the_event_id() {
        let mut room = Room::new();
        let names = ["x1", "x2", "x3", "x4"];
        let ids: Vec<_> = names
            .iter()
            .map(|name| room.event(name, "alice", "m.room.topic", "", json!({ "topic": name }), 6))
            .collect();
        let lowest = ids.iter().min_by_key(|id| sha1_of(id)).unwrap().clone();
        let branches: Vec<_> = ids.iter().map(|id| room.branch(&[id])).collect();
        assert_eq!(room.resolve(&branches)[&key("m.room.topic", "")], lowest);

        // The iterative pass's order: ascending depth, then descending sha1.
        let mut events: Vec<TestEvent> = ids.iter().map(|id| room.events[id].clone()).collect();
        events.push(room.events[&id("create")].clone());
        let sorted = ascending(events);
        assert_eq!(sorted[0].id, id("create"), "the shallowest first");
        let hashes: Vec<_> = sorted[1..].iter().map(|event| sha1_of(&event.id)).collect();
        assert!(hashes.windows(2).all(|pair| pair[0] > pair[1]), "then by descending sha1");
        // Power levels at the same depth all pass: the last in that order wins.
        let mut room = Room::new();
        let pls: Vec<_> =
            names.iter().map(|name| room.event(name, "alice", "m.room.power_levels", "", levels(50), 6)).collect();
        let branches: Vec<_> = pls.iter().map(|id| room.branch(&[id])).collect();
        let lowest = pls.iter().min_by_key(|id| sha1_of(id)).unwrap().clone();
        assert_eq!(room.resolve(&branches)[&key("m.room.power_levels", "")], lowest);
    }

    #[test]
    fn sha1_is_over_the_event_id_text() {
        // Computed independently: printf '$x:a.test' | sha1sum
        let hex: String = sha1_of(&id("x")).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "23957b234104c08e8648b423b9e09e701f119050");
    }

    #[test]
    fn missing_conflicted_events_take_no_part() {
        let mut room = Room::new();
        let topic = room.event("t", "alice", "m.room.topic", "", json!({ "topic": "t" }), 6);
        let mut other = room.branch(&[]);
        other.insert(key("m.room.topic", ""), id("nowhere"));
        let resolved = room.resolve(&[room.branch(&[&topic]), other]);
        assert_eq!(resolved[&key("m.room.topic", "")], topic);
    }
}
