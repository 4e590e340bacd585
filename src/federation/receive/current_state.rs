//! Receipt step 6: "Passes authorization rules based on the current state
//! of the room, otherwise it is 'soft failed'." A soft-failed event is
//! stored, but clients are not sent it and new events do not build on it.
//! In a room joined with partial state, a member entry the current state
//! lacks is taken from the event's own auth events (`rooms::partial_state`).

use std::sync::Arc;

use ruma::room_version_rules::RoomVersionRules;

use crate::{
    error::Result,
    events::Pdu,
    rooms::{
        partial_state::WithOwnAuthEvents,
        pipeline::{authorise::auth_rules_refusal, StateView, StoredState, Verdict},
        RoomRecord, Rooms,
    },
};

pub fn check(rooms: &Rooms, pdu: &Pdu, rules: &RoomVersionRules, room: &RoomRecord) -> Result<Verdict> {
    let current = StoredState::new(rooms, Arc::clone(&rooms.current_state(room)?));
    let lenient = WithOwnAuthEvents::new(&current, rooms, pdu);
    let partial = rooms.has_partial_state(&pdu.room_id_or_derived())?;
    let state: &dyn StateView = if partial { &lenient } else { &current };
    Ok(match auth_rules_refusal(pdu, rules, rooms, state)? {
        Some(reason) => {
            tracing::info!(event = %pdu.event_id(), %reason, "soft-failed against the current state");
            Verdict::SoftFail(reason)
        }
        None => Verdict::Accept,
    })
}
