//! Receipt step 1: "Is a valid event, otherwise it is dropped." The JSON is
//! parsed under the rules of the room's version (known here: the room must
//! be one this server is in), the format checks of that version pass, and
//! the event id is computed from the content, never taken from the peer.

use ruma::{canonical_json::CanonicalJsonObject, room_version_rules::RoomVersionRules, OwnedRoomId};
use serde_json::Value;

use super::Dropped;
use crate::{events::Pdu, rooms::Rooms};

/// The room id a PDU names (`room_id`), before anything else is checked.
pub fn room_id_of(json: &Value) -> Option<OwnedRoomId> {
    json.get("room_id").and_then(Value::as_str).and_then(|id| OwnedRoomId::try_from(id).ok())
}

/// The PDU, valid for the version of `room_id`, with that version's rules.
pub fn parse(rooms: &Rooms, room_id: &OwnedRoomId, json: &Value) -> Result<(Pdu, RoomVersionRules), Dropped> {
    let room = rooms
        .room(room_id)
        .map_err(|error| Dropped(format!("room unreadable: {error}")))?
        .ok_or_else(|| Dropped(format!("this server is not in {room_id}")))?;
    let (_, rules) = Rooms::rules_of(&room).map_err(|error| Dropped(error.to_string()))?;
    parse_with(json, &rules).map(|pdu| (pdu, rules))
}

/// The PDU, valid under `rules` (a room being joined has no record yet).
pub fn parse_with(json: &Value, rules: &RoomVersionRules) -> Result<Pdu, Dropped> {
    let object: CanonicalJsonObject =
        serde_json::from_value(json.clone()).map_err(|error| Dropped(format!("not canonical JSON: {error}")))?;
    Pdu::from_object(object, rules).map_err(|error| Dropped(error.to_string()))
}
