//! The published room directory ("public forums").
//!
//! Spec: client-server API "Published room directory"
//! (`GET`/`POST /publicRooms`, `GET`/`PUT /directory/list/room/{roomId}`).
//! Publication is a durable flag per room; entries are described from the
//! room's current state. Searching `generic_search_term` folds case and
//! accents (as the user directory does) over name, topic and aliases.

use serde_json::{json, Value};

use super::Rooms;
use crate::events::kinds;
use crate::{
    error::Result,
    storage::Batch,
    users::directory::{fold, words},
    util::now_ms,
};

/// A published room as the directory lists it.
pub struct PublicRoom {
    pub entry: Value,
    pub joined: u64,
    /// Folded name, topic and aliases, for searching.
    searchable: String,
    room_type: Option<String>,
}

impl PublicRoom {
    /// Every word of `term` starts a word of the name, topic or alias.
    pub fn matches(&self, term: &str) -> bool {
        let have: Vec<&str> = self.searchable.split(|c: char| !c.is_alphanumeric()).collect();
        words(term).iter().all(|wanted| have.iter().any(|word| word.starts_with(wanted.as_str())))
    }

    /// `room_types` filter: `null` in the list stands for rooms without a type.
    pub fn has_type_in(&self, types: &[Option<String>]) -> bool {
        types.contains(&self.room_type)
    }
}

impl Rooms {
    pub async fn set_published(&self, room_id: &ruma::RoomId, published: bool) -> Result<()> {
        let mut batch = Batch::new();
        let table = &self.storage.tables.published_rooms;
        if published {
            if table.get(&room_id.to_string())?.is_some() {
                return Ok(());
            }
            batch.insert(table, &room_id.to_string(), &now_ms())?;
        } else {
            batch.remove(table, &room_id.to_string());
        }
        Ok(self.storage.commit(batch).await?)
    }

    pub fn is_published(&self, room_id: &ruma::RoomId) -> Result<bool> {
        Ok(self.storage.tables.published_rooms.get(&room_id.to_string())?.is_some())
    }

    /// Every published room, most members first (then by room id).
    pub fn public_rooms(&self) -> Result<Vec<PublicRoom>> {
        let mut rooms = Vec::new();
        for (room_id, _) in self.storage.tables.published_rooms.all()? {
            let Ok(room_id) = ruma::OwnedRoomId::try_from(room_id) else { continue };
            if let Some(room) = self.describe_public_room(&room_id)? {
                rooms.push(room);
            }
        }
        rooms.sort_by(|a, b| {
            b.joined.cmp(&a.joined).then_with(|| a.entry["room_id"].as_str().cmp(&b.entry["room_id"].as_str()))
        });
        Ok(rooms)
    }

    /// The summary of a room as directories and space hierarchies show it
    /// (spec: `RoomSummary` / `PublicRoomsChunk`), from its current state.
    pub fn room_summary(&self, room_id: &ruma::RoomId) -> Result<Option<Value>> {
        Ok(self.describe_public_room(room_id)?.map(|room| room.entry))
    }

    fn describe_public_room(&self, room_id: &ruma::RoomId) -> Result<Option<PublicRoom>> {
        let Some(room) = self.room(room_id)? else { return Ok(None) };
        let state = self.current_state(&room)?;
        let content = |kind: &str| -> Result<Value> {
            Ok(self
                .state_event_in(&state, kind, "")?
                .and_then(|pdu| serde_json::from_str(pdu.content_json()).ok())
                .unwrap_or(Value::Null))
        };
        let name = content(kinds::NAME)?["name"].as_str().map(str::to_owned);
        let topic = content(kinds::TOPIC)?["topic"].as_str().map(str::to_owned);
        let alias = content(kinds::CANONICAL_ALIAS)?["alias"].as_str().map(str::to_owned);
        let avatar = content(kinds::AVATAR)?["url"].as_str().map(str::to_owned);
        let join_rule = content(kinds::JOIN_RULES)?["join_rule"].as_str().unwrap_or("invite").to_owned();
        let world_readable = content(kinds::HISTORY_VISIBILITY)?["history_visibility"] == "world_readable";
        let guest_can_join = content(kinds::GUEST_ACCESS)?["guest_access"] == "can_join";
        let room_type = content(kinds::CREATE)?["type"].as_str().map(str::to_owned);
        let encryption = content(kinds::ENCRYPTION)?["algorithm"].as_str().map(str::to_owned);
        let joined = self.member_summary(&room)?.joined;
        let mut entry = json!({
            "room_id": room_id,
            "num_joined_members": joined,
            "world_readable": world_readable,
            "guest_can_join": guest_can_join,
            "join_rule": join_rule,
            "room_version": room.version,
        });
        for (key, value) in [
            ("name", &name),
            ("topic", &topic),
            ("canonical_alias", &alias),
            ("avatar_url", &avatar),
            ("room_type", &room_type),
            ("encryption", &encryption),
        ] {
            if let Some(value) = value {
                entry[key] = json!(value);
            }
        }
        let searchable = fold(&[name, topic, alias].into_iter().flatten().collect::<Vec<_>>().join(" "));
        Ok(Some(PublicRoom { entry, joined, searchable, room_type }))
    }
}
