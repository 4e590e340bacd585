//! Account data: per-user JSON objects, global or per room, delivered by
//! `/sync` when they change. Room tags are the `m.tag` room account data.
//!
//! Spec: client-server API module "Client Config" (account data) and "Room
//! Tagging".
//!
//! Owns the `account_data` table: every read and write goes through
//! [`AccountDataStore`], of which [`Users`] holds one and the rooms another
//! (they evaluate push rules, stored as `m.push_rules` account data).

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, RwLock},
};

use serde_json::{Map, Value};

use super::Users;
use crate::{
    error::{Error, ErrorKind, Result},
    storage::{keys::AccountDataKey, records::AccountDataRecord, Batch, Storage},
};

/// Types only the server may set through account data endpoints.
const SERVER_CONTROLLED: &[&str] = &["m.fully_read", "m.push_rules"];

/// One piece of account data and its version: the position of its last
/// change (a cache of something derived from it is current while the
/// version is). The content stays JSON text until asked for, so a reader
/// whose cache is current (push rules, for every member of every event)
/// does not parse it.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedAccountData {
    json: String,
    pub version: u64,
}

impl VersionedAccountData {
    /// The content, parsed.
    pub fn content(&self) -> Result<Value> {
        serde_json::from_str(&self.json).map_err(|e| Error::internal("stored account data", e))
    }
}

/// The account data table, shared by the users and the rooms.
#[derive(Clone)]
pub struct AccountDataStore {
    storage: Arc<Storage>,
    /// Localparts with push rules of their own (stored `m.push_rules`),
    /// loaded on first use: an event's push evaluation asks it of every
    /// member of the room, which must not cost a read each.
    own_push_rules: Arc<RwLock<Option<HashSet<String>>>>,
}

/// The account data type holding a user's push rules.
const PUSH_RULES: &str = "m.push_rules";

impl AccountDataStore {
    pub fn new(storage: Arc<Storage>) -> Self {
        Self { storage, own_push_rules: Arc::default() }
    }

    /// Whether the user has stored push rules (else they use the server's defaults).
    pub fn has_own_push_rules(&self, localpart: &str) -> Result<bool> {
        if let Some(known) = self.own_push_rules.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Ok(known.contains(localpart));
        }
        let mut loaded = HashSet::new();
        self.storage.tables.account_data.for_each(|key, _| {
            if key.room_id.is_none() && key.kind == PUSH_RULES {
                loaded.insert(key.localpart);
            }
        })?;
        let answer = loaded.contains(localpart);
        let mut known = self.own_push_rules.write().unwrap_or_else(|e| e.into_inner());
        // A write meanwhile added its user to the set already there, or to none.
        known.get_or_insert(loaded);
        Ok(answer || known.as_ref().is_some_and(|known| known.contains(localpart)))
    }

    /// The account data of a type, global (`room_id` `None`) or of a room,
    /// with its version.
    pub fn get(&self, localpart: &str, room_id: Option<&str>, kind: &str) -> Result<Option<VersionedAccountData>> {
        let record = self.storage.tables.account_data.get(&AccountDataKey::new(localpart, room_id, kind))?;
        Ok(record.map(|record| VersionedAccountData { json: record.content, version: record.count }))
    }

    /// Stores account data and wakes syncs.
    async fn put(&self, localpart: &str, room_id: Option<&str>, kind: &str, content: &Value) -> Result<()> {
        // Held until the write is done: syncs stay below this position meanwhile.
        let reservation = self.storage.reserve_count()?;
        let record = AccountDataRecord { content: content.to_string(), count: reservation.count };
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.account_data, &AccountDataKey::new(localpart, room_id, kind), &record)?;
        if room_id.is_none() && kind == PUSH_RULES {
            // Known before the write: an event evaluated meanwhile uses the
            // user's own rules (at worst the same as the defaults). Loaded
            // first, so a load racing this write cannot miss it.
            self.has_own_push_rules(localpart)?;
            if let Some(known) = self.own_push_rules.write().unwrap_or_else(|e| e.into_inner()).as_mut() {
                known.insert(localpart.to_owned());
            }
        }
        self.storage.commit(batch).await?;
        reservation.announce();
        Ok(())
    }

    /// Account data changed after `since` (all of it without a token), as events.
    fn changes(&self, localpart: &str, since: Option<u64>, upto: u64) -> Result<AccountDataChanges> {
        let mut changes = AccountDataChanges::default();
        let stored = self.storage.tables.account_data.scan_prefix(&AccountDataKey::user_prefix(localpart))?;
        for (key, record) in stored {
            if since.is_some_and(|since| record.count <= since) || record.count > upto {
                continue;
            }
            let content: Value = serde_json::from_str(&record.content).unwrap_or_else(|_| Value::Object(Map::new()));
            let event = serde_json::json!({ "type": key.kind, "content": content });
            match key.room_id {
                None => changes.global.push(event),
                Some(room) => changes.rooms.entry(room).or_default().push(event),
            }
        }
        Ok(changes)
    }
}

/// Changes since a sync token: global ones, and per room.
#[derive(Debug, Default)]
pub struct AccountDataChanges {
    pub global: Vec<Value>,
    pub rooms: BTreeMap<String, Vec<Value>>,
}

/// Global account data by which a user leaves the user directory.
pub const HIDE_PROFILE: &str = "im.vector.hide_profile";

impl Users {
    /// Sets account data from a client; refuses server-controlled types.
    pub async fn set_account_data(
        &self,
        localpart: &str,
        room_id: Option<&str>,
        kind: &str,
        content: Value,
    ) -> Result<()> {
        if SERVER_CONTROLLED.contains(&kind) {
            return Err(Error::new(ErrorKind::ServerControlled, format!("Cannot set {kind} through this API")));
        }
        if !content.is_object() {
            return Err(Error::new(ErrorKind::NotJson, "Content must be a JSON object"));
        }
        self.store_account_data(localpart, room_id, kind, &content).await?;
        if room_id.is_none() && kind == HIDE_PROFILE {
            // Element's way to leave the user directory (the public-sector guide's "Directory").
            self.set_hidden_from_directory(localpart, content["hide_profile"] == true).await?;
        }
        Ok(())
    }

    /// Stores account data (also for server-controlled types) and wakes syncs.
    pub async fn store_account_data(
        &self,
        localpart: &str,
        room_id: Option<&str>,
        kind: &str,
        content: &Value,
    ) -> Result<()> {
        self.account_data_store.put(localpart, room_id, kind, content).await
    }

    pub fn account_data(&self, localpart: &str, room_id: Option<&str>, kind: &str) -> Result<Option<Value>> {
        self.account_data_store.get(localpart, room_id, kind)?.map(|data| data.content()).transpose()
    }

    /// The users `localpart` ignores (`m.ignored_user_list`, spec "Ignoring
    /// Users"): their events (other than state), invites and to-device
    /// messages are not shown to them.
    pub fn ignored_users(&self, localpart: &str) -> Result<std::collections::HashSet<String>> {
        let content = self.account_data(localpart, None, "m.ignored_user_list")?;
        Ok(content
            .as_ref()
            .and_then(|content| content.get("ignored_users"))
            .and_then(Value::as_object)
            .map(|users| users.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// Account data changed after `since` (all of it without a token), as events.
    pub fn account_data_since(&self, localpart: &str, since: Option<u64>, upto: u64) -> Result<AccountDataChanges> {
        self.account_data_store.changes(localpart, since, upto)
    }
}
