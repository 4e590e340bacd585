//! Receipt step 6: "Passes authorization rules based on the current state
//! of the room, otherwise it is 'soft failed'." A soft-failed event is
//! stored, but clients are not sent it and new events do not build on it.

use std::sync::Arc;

use ruma::room_version_rules::RoomVersionRules;

use crate::{
    error::Result,
    events::Pdu,
    rooms::{
        pipeline::{authorise::auth_rules_refusal, StoredState, Verdict},
        RoomRecord, Rooms,
    },
};

pub fn check(rooms: &Rooms, pdu: &Pdu, rules: &RoomVersionRules, room: &RoomRecord) -> Result<Verdict> {
    let current = StoredState::new(rooms, Arc::clone(&rooms.current_state(room)?));
    Ok(match auth_rules_refusal(pdu, rules, rooms, &current)? {
        Some(reason) => {
            tracing::info!(event = %pdu.event_id(), %reason, "soft-failed against the current state");
            Verdict::SoftFail(reason)
        }
        None => Verdict::Accept,
    })
}
