//! State resolution: merging the states of diverging branches of a room.
//!
//! Spec: room versions 2–11 "State resolution" (v2.0) and room version 12
//! (v2.1, with the *conflicted state subgraph*); room version 1's algorithm
//! (v1) is [`super::resolution_v1`]'s, chosen here by the room version. The
//! v2 algorithm itself is ruma-state-res's; this module supplies what it
//! needs from the event graph:
//! the auth chain of each state set, and — for v2.1 — the conflicted state
//! subgraph (every event on an `auth_events` path between two conflicted
//! events). Pure: events come from a fetch function.

use std::{
    borrow::Borrow,
    collections::{HashMap, HashSet},
    hash::Hash,
};

use ruma::{
    room_version_rules::{RoomVersionRules, StateResolutionVersion},
    state_res::{self, Event, StateMap},
    EventId,
};

use super::resolution_v1;
pub use super::resolution_v1::Depth;
use crate::error::{Error, Result};

/// Every event reachable from `start` through `auth_events` (not `start` itself
/// unless reachable).
pub fn auth_chain<E: Event>(
    start: impl IntoIterator<Item = E::Id>,
    fetch: &impl Fn(&EventId) -> Option<E>,
) -> HashSet<E::Id>
where
    E::Id: Hash + Eq + Clone,
{
    let mut chain = HashSet::new();
    let mut todo: Vec<E::Id> = start.into_iter().collect();
    while let Some(id) = todo.pop() {
        let Some(event) = fetch(id.borrow()) else { continue };
        for auth in event.auth_events() {
            if chain.insert(auth.clone()) {
                todo.push(auth.clone());
            }
        }
    }
    chain
}

/// The conflicted state subgraph of room version 12: the conflicted events and
/// every event on an `auth_events` path from one conflicted event to another.
pub fn conflicted_state_subgraph<E: Event>(
    conflicted: &HashSet<E::Id>,
    fetch: &impl Fn(&EventId) -> Option<E>,
) -> HashSet<E::Id>
where
    E::Id: Hash + Eq + Clone,
{
    // Walk down from the conflicted events, remembering each edge backwards.
    let mut parents: HashMap<E::Id, Vec<E::Id>> = HashMap::new();
    let mut seen: HashSet<E::Id> = conflicted.iter().cloned().collect();
    let mut todo: Vec<E::Id> = conflicted.iter().cloned().collect();
    while let Some(id) = todo.pop() {
        let Some(event) = fetch(id.borrow()) else { continue };
        for auth in event.auth_events() {
            parents.entry(auth.clone()).or_default().push(id.clone());
            if seen.insert(auth.clone()) {
                todo.push(auth.clone());
            }
        }
    }
    // Then walk back up from the conflicted events that were reached: every
    // event met on the way lies on a path between two conflicted events.
    let mut subgraph: HashSet<E::Id> = conflicted.clone();
    let mut todo: Vec<E::Id> = conflicted.iter().filter(|id| parents.contains_key::<E::Id>(id)).cloned().collect();
    while let Some(id) = todo.pop() {
        for parent in parents.get::<E::Id>(&id).into_iter().flatten() {
            if subgraph.insert(parent.clone()) {
                todo.push(parent.clone());
            }
        }
    }
    subgraph
}

/// Resolves the states of several branches under the room version's rules.
pub fn resolve<E: Event + Depth + Clone>(
    rules: &RoomVersionRules,
    state_maps: &[StateMap<E::Id>],
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<StateMap<E::Id>>
where
    E::Id: Hash + Eq + Clone + Ord,
{
    let state_res_rules = match &rules.state_res {
        StateResolutionVersion::V2(state_res_rules) => state_res_rules,
        StateResolutionVersion::V1 => return Ok(resolution_v1::resolve(&rules.authorization, state_maps, fetch)),
        _ => return Err(Error::bad_json("Unknown state resolution algorithm")),
    };
    let auth_chains =
        state_maps.iter().map(|state| auth_chain(state.values().cloned(), &fetch).into_iter().collect()).collect();
    let subgraph = |conflicted: &StateMap<Vec<E::Id>>| {
        let ids: HashSet<E::Id> = conflicted.values().flatten().cloned().collect();
        Some(conflicted_state_subgraph(&ids, &fetch).into_iter().collect())
    };
    state_res::resolve(&rules.authorization, state_res_rules, state_maps.iter(), auth_chains, &fetch, subgraph)
        .map_err(|e| Error::bad_json(format!("State resolution failed: {e}")))
}
