//! Account data: per-user JSON objects, global or per room, delivered by
//! `/sync` when they change. Room tags are the `m.tag` room account data.
//!
//! Spec: client-server API module "Client Config" (account data) and "Room
//! Tagging".

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Users;
use crate::{
    error::{Error, ErrorKind, Result},
    storage::{prefix_of, records::AccountDataRecord, Batch},
};

/// Types only the server may set through account data endpoints.
const SERVER_CONTROLLED: &[&str] = &["m.fully_read", "m.push_rules"];

fn scope(room_id: Option<&str>, kind: &str) -> String {
    format!("{}\n{kind}", room_id.unwrap_or_default())
}

/// Changes since a sync token: global ones, and per room.
#[derive(Debug, Default)]
pub struct AccountDataChanges {
    pub global: Vec<Value>,
    pub rooms: BTreeMap<String, Vec<Value>>,
}

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
        self.store_account_data(localpart, room_id, kind, &content).await
    }

    /// Stores account data (also for server-controlled types) and wakes syncs.
    pub async fn store_account_data(
        &self,
        localpart: &str,
        room_id: Option<&str>,
        kind: &str,
        content: &Value,
    ) -> Result<()> {
        // Held until the write is done: syncs stay below this position meanwhile.
        let reservation = self.storage.reserve_count()?;
        let count = reservation.count;
        let record = AccountDataRecord { content: content.to_string(), count };
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.account_data, &(localpart.to_owned(), scope(room_id, kind)), &record)?;
        self.storage.commit(batch).await?;
        reservation.announce();
        Ok(())
    }

    pub fn account_data(&self, localpart: &str, room_id: Option<&str>, kind: &str) -> Result<Option<Value>> {
        let record = self.storage.tables.account_data.get(&(localpart.to_owned(), scope(room_id, kind)))?;
        record
            .map(|r| serde_json::from_str(&r.content).map_err(|e| Error::internal("stored account data", e)))
            .transpose()
    }

    /// Account data changed after `since` (all of it without a token), as events.
    pub fn account_data_since(&self, localpart: &str, since: Option<u64>, upto: u64) -> Result<AccountDataChanges> {
        let mut changes = AccountDataChanges::default();
        for ((_, scope), record) in self.storage.tables.account_data.scan_prefix(&prefix_of(localpart))? {
            if since.is_some_and(|since| record.count <= since) || record.count > upto {
                continue;
            }
            let Some((room, kind)) = scope.split_once('\n') else { continue };
            let content: Value = serde_json::from_str(&record.content).unwrap_or_else(|_| Value::Object(Map::new()));
            let event = serde_json::json!({ "type": kind, "content": content });
            if room.is_empty() {
                changes.global.push(event);
            } else {
                changes.rooms.entry(room.to_owned()).or_default().push(event);
            }
        }
        Ok(changes)
    }
}
