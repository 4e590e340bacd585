//! Receipt step 5: "Passes authorization rules based on the state before
//! the event, otherwise it is rejected." The state before an event is the
//! state after its prev events, resolved when there are several. Prev events
//! this server lacks are first asked for with `/get_missing_events`
//! (bounded: [`MISSING_EVENTS_LIMIT`] events between the room's forward
//! extremities and this event, each received in turn); for a prev event
//! still missing after that, the state at it is fetched (`/state_ids`, the
//! events this server lacks with `/event`) and stored as outliers — the gap
//! itself is not filled. The deployment's `EventPolicy` is applied here too.
//! In a room joined with partial state, a member entry the state lacks is
//! taken from the event's own auth events (`rooms::partial_state`).

use std::collections::HashMap;

use ruma::state_res::Event as _;
use ruma::{room_version_rules::RoomVersionRules, OwnedEventId};
use serde_json::{json, Value};

use super::{auth_events, GapFill, Receipt};
use crate::{
    error::Result,
    events::Pdu,
    http::request::percent_encode,
    rooms::{
        partial_state::WithOwnAuthEvents,
        pipeline::{remote::StateBefore, StateView, StoredState, Verdict},
        state::StateMap,
    },
};

/// Most events asked for with one `/get_missing_events`.
pub const MISSING_EVENTS_LIMIT: usize = 20;

/// Most state events fetched one by one for the state at a gap.
pub const MAX_STATE_EVENTS_FETCHED: usize = 5_000;

pub async fn check(
    receipt: &Receipt<'_>,
    pdu: &Pdu,
    rules: &RoomVersionRules,
    gap: GapFill,
) -> Result<(StateBefore, Verdict)> {
    if gap == GapFill::MissingEvents && !prev_events_missing(receipt, pdu)?.is_empty() {
        fetch_missing_events(receipt, pdu).await?;
    }
    let mut fetched = HashMap::new();
    for prev in prev_events_missing(receipt, pdu)? {
        let state = state_after_fetched(receipt, pdu, &prev).await?;
        fetched.insert(prev, state);
    }
    let state_before = receipt.rooms.state_before_with(pdu, rules, fetched)?;
    let view = StoredState::new(receipt.rooms, std::sync::Arc::clone(&state_before.map));
    let lenient = WithOwnAuthEvents::new(&view, receipt.rooms, pdu);
    let partial = receipt.rooms.has_partial_state(&pdu.room_id_or_derived())?;
    let state: &dyn StateView = if partial { &lenient } else { &view };
    let verdict = receipt.rooms.authorise(pdu, rules, receipt.rooms, state, None)?;
    Ok((state_before, verdict))
}

/// Prev events not stored with a state.
fn prev_events_missing(receipt: &Receipt<'_>, pdu: &Pdu) -> Result<Vec<OwnedEventId>> {
    let mut missing = Vec::new();
    for prev in pdu.prev_events() {
        if !receipt.rooms.has_state_after(prev)? {
            missing.push(prev.clone());
        }
    }
    Ok(missing)
}

/// `/get_missing_events` from the origin, and each event it returns (oldest
/// first) received without filling further gaps.
async fn fetch_missing_events(receipt: &Receipt<'_>, pdu: &Pdu) -> Result<()> {
    let room_id = pdu.room_id_or_derived();
    let Some(room) = receipt.rooms.room(&room_id)? else { return Ok(()) };
    let path = format!("/_matrix/federation/v1/get_missing_events/{}", percent_encode(room_id.as_str()));
    let body = json!({
        "earliest_events": room.forward_extremities,
        "latest_events": [pdu.event_id()],
        "limit": MISSING_EVENTS_LIMIT,
        "min_depth": 0,
    });
    let answer = match receipt.ask("POST", &path, Some(&body)).await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::info!(room = %room_id, origin = %receipt.origin, %error, "could not fetch missing events");
            return Ok(());
        }
    };
    let mut events = Vec::new();
    for json in answer.get("events").and_then(Value::as_array).into_iter().flatten().take(MISSING_EVENTS_LIMIT) {
        match receipt.checked(&room_id, json).await {
            Ok(event) if event.room_id_or_derived() == room_id => events.push(event),
            Ok(_) => {}
            Err(dropped) => tracing::info!(origin = %receipt.origin, %dropped, "a missing event was dropped"),
        }
    }
    events.sort_by_key(Pdu::depth);
    for event in events {
        // The create event has nothing before it to place it after (it is
        // held since the join, with the room's state).
        if event.prev_events().next().is_none() {
            continue;
        }
        // One that cannot be placed leaves a gap the PDU's own state fills.
        if let Err(error) = Box::pin(receipt.receive_with(&event, GapFill::StateOnly)).await {
            if error.kind == crate::error::ErrorKind::Internal {
                return Err(error);
            }
            tracing::info!(room = %room_id, event = %event.event_id(), %error, "a missing event was not placed");
        }
    }
    Ok(())
}

/// The state after `prev` as the origin tells it (`/state_ids` gives the
/// state before it), its events fetched and stored as outliers.
async fn state_after_fetched(receipt: &Receipt<'_>, pdu: &Pdu, prev: &OwnedEventId) -> Result<StateMap> {
    let room_id = pdu.room_id_or_derived();
    let path = format!(
        "/_matrix/federation/v1/state_ids/{}?event_id={}",
        percent_encode(room_id.as_str()),
        percent_encode(prev.as_str())
    );
    let answer = receipt.ask("GET", &path, None).await?;
    let ids = |field: &str| -> Vec<OwnedEventId> {
        answer
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str().and_then(|id| OwnedEventId::try_from(id).ok()))
            .collect()
    };
    let (auth_chain, mut state) = (ids("auth_chain_ids"), ids("pdu_ids"));
    let mut wanted: Vec<OwnedEventId> = Vec::new();
    for event_id in auth_chain.iter().chain(&state).chain(std::iter::once(prev)) {
        if receipt.rooms.get_pdu(event_id)?.is_none() && !wanted.contains(event_id) {
            wanted.push(event_id.clone());
        }
    }
    let mut fetched = Vec::new();
    for event_id in wanted.iter().take(MAX_STATE_EVENTS_FETCHED) {
        match receipt.fetch_event(event_id).await {
            Ok(json) => fetched.push(json),
            Err(error) => tracing::info!(event = %event_id, %error, "could not fetch a state event"),
        }
    }
    auth_events::store_checked_outliers(receipt, &room_id, fetched.iter()).await?;
    // The prev event itself belongs to the state after it when it is a state event.
    state.push(prev.clone());
    state.retain(|id| receipt.rooms.get_pdu(id).ok().flatten().is_some());
    receipt.rooms.state_of_events(&room_id, &state)
}
