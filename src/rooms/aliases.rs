//! Local room aliases and the validation of `m.room.canonical_alias`.
//!
//! Spec: client-server API "Room aliases" (`/directory/room/{roomAlias}`,
//! `/rooms/{roomId}/aliases`) and `m.room.canonical_alias` (`M_BAD_ALIAS`).

use ruma::{OwnedRoomId, RoomAliasId, RoomId, UserId};
use serde_json::Value;

use super::Rooms;
use crate::{
    error::{Error, ErrorKind, Result},
    storage::{prefix_of, records::AliasRecord, Batch},
};

impl Rooms {
    /// The room a local alias points to.
    pub fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        let Some(record) = self.storage.tables.alias_room.get(&alias.to_string())? else { return Ok(None) };
        Ok(OwnedRoomId::try_from(record.room_id).ok())
    }

    /// Who created a local alias.
    pub fn alias_creator(&self, alias: &RoomAliasId) -> Result<Option<String>> {
        Ok(self.storage.tables.alias_room.get(&alias.to_string())?.map(|record| record.creator))
    }

    /// Points a new local alias at a room; 409 if it exists.
    pub async fn create_alias(&self, alias: &RoomAliasId, room_id: &RoomId, creator: &UserId) -> Result<()> {
        let tables = &self.storage.tables;
        let record = AliasRecord { room_id: room_id.to_string(), creator: creator.to_string() };
        if !tables.alias_room.insert_if_absent(&alias.to_string(), &record)? {
            return Err(Error::new(ErrorKind::Conflict, format!("Room alias {alias} already exists")));
        }
        let mut batch = Batch::new();
        batch.insert(&tables.roomid_alias, &(room_id.to_string(), alias.to_string()), &creator.to_string())?;
        Ok(self.storage.commit(batch).await?)
    }

    pub async fn delete_alias(&self, alias: &RoomAliasId) -> Result<()> {
        let tables = &self.storage.tables;
        let record =
            tables.alias_room.get(&alias.to_string())?.ok_or_else(|| Error::not_found("Unknown room alias"))?;
        let mut batch = Batch::new();
        batch.remove(&tables.alias_room, &alias.to_string());
        batch.remove(&tables.roomid_alias, &(record.room_id, alias.to_string()));
        Ok(self.storage.commit(batch).await?)
    }

    /// The local aliases of a room.
    pub fn local_aliases(&self, room_id: &RoomId) -> Result<Vec<String>> {
        let entries = self.storage.tables.roomid_alias.scan_prefix(&prefix_of(room_id.as_str()))?;
        Ok(entries.into_iter().map(|((_, alias), _)| alias).collect())
    }

    /// Every local alias named by a canonical alias event must point to the room.
    pub(super) fn check_canonical_alias(&self, room_id: &RoomId, content: &Value) -> Result<()> {
        let mut named = Vec::new();
        named.extend(content.get("alias").and_then(Value::as_str));
        if let Some(alternatives) = content.get("alt_aliases").and_then(Value::as_array) {
            named.extend(alternatives.iter().filter_map(Value::as_str));
        }
        for alias in named {
            let alias =
                RoomAliasId::parse(alias).map_err(|_| Error::invalid_param(format!("{alias} is not a room alias")))?;
            if alias.server_name() != self.server_name {
                continue; // other servers' aliases cannot be checked here
            }
            if self.resolve_alias(&alias)?.as_deref() != Some(room_id) {
                return Err(Error::new(ErrorKind::BadAlias, format!("The alias {alias} does not point to this room")));
            }
        }
        Ok(())
    }
}
