//! What the administration API reads and changes of rooms: each room
//! described as Synapse's room admin API lists it, and the rooms an operator
//! blocked (owns the `blocked_rooms` table: no local user joins them again).

use ruma::{OwnedRoomId, RoomId};
use serde_json::{json, Value};

use super::{content_string, Rooms};
use crate::{error::Result, events::kinds, storage::Batch, util::now_ms};

/// A room as the admin API describes it.
#[derive(Debug, Clone)]
pub struct RoomOverview {
    pub room_id: OwnedRoomId,
    pub name: Option<String>,
    pub canonical_alias: Option<String>,
    pub joined_members: usize,
    pub joined_local_members: usize,
    pub version: String,
    pub creator: Option<String>,
    pub encryption: Option<String>,
    pub public: bool,
    pub join_rules: Option<String>,
    pub guest_access: Option<String>,
    pub history_visibility: Option<String>,
    pub state_events: usize,
    pub room_type: Option<String>,
}

impl RoomOverview {
    pub fn to_json(&self) -> Value {
        json!({
            "room_id": self.room_id,
            "name": self.name,
            "canonical_alias": self.canonical_alias,
            "joined_members": self.joined_members,
            "joined_local_members": self.joined_local_members,
            "version": self.version,
            "creator": self.creator,
            "encryption": self.encryption,
            "federatable": true,
            "public": self.public,
            "join_rules": self.join_rules,
            "guest_access": self.guest_access,
            "history_visibility": self.history_visibility,
            "state_events": self.state_events,
            "room_type": self.room_type,
        })
    }
}

impl Rooms {
    /// Every room this server holds.
    pub fn all_room_ids(&self) -> Result<Vec<OwnedRoomId>> {
        let mut rooms = Vec::new();
        self.storage.tables.roomid_room.for_each(|room_id, _| {
            if let Ok(room_id) = RoomId::parse(&room_id) {
                rooms.push(room_id);
            }
        })?;
        Ok(rooms)
    }

    /// A room as the admin API describes it.
    pub fn overview(&self, room_id: &RoomId) -> Result<Option<RoomOverview>> {
        let Some(room) = self.room(room_id)? else { return Ok(None) };
        let state = self.current_state(&room)?;
        let field = |kind: &str, name: &str| -> Result<Option<String>> {
            Ok(self.state_event_in(&state, kind, "")?.and_then(|pdu| content_string(&pdu, name)))
        };
        let joined = self.joined_members_in(&state)?;
        let create = self.state_event_in(&state, kinds::CREATE, "")?;
        Ok(Some(RoomOverview {
            room_id: room_id.to_owned(),
            name: field(kinds::NAME, "name")?,
            canonical_alias: field(kinds::CANONICAL_ALIAS, "alias")?,
            joined_local_members: joined.iter().filter(|user| user.server_name() == self.server_name).count(),
            joined_members: joined.len(),
            version: room.version.clone(),
            creator: create.as_ref().map(|pdu| pdu.sender_str().to_owned()),
            encryption: field(kinds::ENCRYPTION, "algorithm")?,
            public: self.is_published(room_id)?,
            join_rules: field(kinds::JOIN_RULES, "join_rule")?,
            guest_access: field(kinds::GUEST_ACCESS, "guest_access")?,
            history_visibility: field(kinds::HISTORY_VISIBILITY, "history_visibility")?,
            state_events: state.len(),
            room_type: create.as_ref().and_then(|pdu| content_string(pdu, "type")),
        }))
    }

    /// Blocks a room: no local user joins it again.
    pub async fn block(&self, room_id: &RoomId) -> Result<()> {
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.blocked_rooms, &room_id.to_string(), &now_ms())?;
        Ok(self.storage.commit(batch).await?)
    }

    pub fn is_blocked(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.storage.tables.blocked_rooms.contains(&room_id.to_string())?)
    }
}

impl Rooms {
    /// Every `mxc://` URI the room's events mention (`url`, `thumbnail_url`,
    /// avatars… anywhere in their content), for quarantining a room's media.
    /// Encrypted events show none: their media is out of the server's sight.
    pub fn media_mentioned_in(&self, room_id: &RoomId) -> Result<std::collections::BTreeSet<String>> {
        let mut found = std::collections::BTreeSet::new();
        let Some(room) = self.room(room_id)? else { return Ok(found) };
        let mut from = u64::MAX;
        loop {
            let page = self.timeline_page(&room, from, true, 500)?;
            let Some((oldest, _)) = page.last() else { break };
            from = *oldest;
            for (_, event_id) in &page {
                if let Some((pdu, _)) = self.get_pdu(event_id)? {
                    let content: Value = serde_json::from_str(pdu.content_json()).unwrap_or(Value::Null);
                    collect_mxc(&content, &mut found);
                }
            }
        }
        Ok(found)
    }
}

/// Adds every string of `value` that is an `mxc://` URI.
fn collect_mxc(value: &Value, found: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::String(text) if text.starts_with("mxc://") => {
            found.insert(text.clone());
        }
        Value::Array(items) => items.iter().for_each(|item| collect_mxc(item, found)),
        Value::Object(fields) => fields.values().for_each(|item| collect_mxc(item, found)),
        _ => {}
    }
}
