//! Server-side key backups: `/room_keys/version[/{version}]` and
//! `/room_keys/keys[/{roomId}[/{sessionId}]]`.
//!
//! Spec: "End-to-End Encryption" → "Server-side key backups"
//! (`key_backup.yaml`). The server stores what the client encrypted; it only
//! decides which of two keys for one session to keep: the verified one, else
//! the one with the lower `first_message_index`, else the lower
//! `forwarded_count`. Keys go only to the current (latest) version; a write
//! to another gets `M_WRONG_ROOM_KEYS_VERSION` naming the current one.

use serde_json::{json, Map, Value};

use super::E2ee;
use crate::{
    error::{Error, ErrorKind, Result},
    storage::{keys::BackupKeyKey, records::BackupVersionRecord, Batch},
};

/// The backup algorithms of the spec (`key_backup.yaml`'s enum).
const KNOWN_ALGORITHMS: &[&str] = &["m.megolm_backup.v1.curve25519-aes-sha2"];

/// Which keys of a version a request addresses.
pub enum Scope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

fn backup_key(localpart: &str, version: u64, room_id: &str, session_id: &str) -> BackupKeyKey {
    BackupKeyKey {
        localpart: localpart.to_owned(),
        version,
        room_id: room_id.to_owned(),
        session_id: session_id.to_owned(),
    }
}

fn parse_version(version: &str) -> Option<u64> {
    version.parse().ok()
}

fn unknown_version() -> Error {
    Error::not_found("Unknown backup version")
}

/// Whether `new` should replace `existing` (spec's rules, in order).
fn better(new: &Value, existing: &Value) -> bool {
    let verified = |v: &Value| v["is_verified"].as_bool().unwrap_or(false);
    let index = |v: &Value| v["first_message_index"].as_u64().unwrap_or(u64::MAX);
    let forwarded = |v: &Value| v["forwarded_count"].as_u64().unwrap_or(u64::MAX);
    if verified(new) != verified(existing) {
        return verified(new);
    }
    if index(new) != index(existing) {
        return index(new) < index(existing);
    }
    forwarded(new) < forwarded(existing)
}

fn check_key_data(data: &Value) -> Result<()> {
    let valid = data["first_message_index"].is_u64()
        && data["forwarded_count"].is_u64()
        && data["is_verified"].is_boolean()
        && data["session_data"].is_object();
    if valid {
        Ok(())
    } else {
        Err(Error::bad_json("Key backup data needs first_message_index, forwarded_count, is_verified and session_data"))
    }
}

impl E2ee {
    fn backup_versions(&self, localpart: &str) -> Result<Vec<(u64, BackupVersionRecord)>> {
        let prefix = crate::storage::prefix_of(localpart);
        Ok(self.storage.tables.backup_versions.scan_prefix(&prefix)?.into_iter().map(|((_, v), r)| (v, r)).collect())
    }

    /// The stored keys of a backup version that `scope` addresses, with their data (JSON).
    fn backup_keys_in(&self, localpart: &str, version: u64, scope: &Scope<'_>) -> Result<Vec<(BackupKeyKey, String)>> {
        let table = &self.storage.tables.backup_keys;
        Ok(match scope {
            Scope::All => table.scan_prefix(&BackupKeyKey::version_prefix(localpart, version))?,
            Scope::Room(room) => table.scan_prefix(&BackupKeyKey::room_prefix(localpart, version, room))?,
            Scope::Session(room, session) => {
                let key = backup_key(localpart, version, room, session);
                table.get(&key)?.map(|data| (key, data)).into_iter().collect()
            }
        })
    }

    /// The current backup: the latest version not deleted.
    fn current_backup(&self, localpart: &str) -> Result<Option<(u64, BackupVersionRecord)>> {
        Ok(self.backup_versions(localpart)?.into_iter().rev().find(|(_, record)| !record.deleted))
    }

    fn backup(&self, localpart: &str, version: &str) -> Result<(u64, BackupVersionRecord)> {
        let number = parse_version(version).ok_or_else(unknown_version)?;
        let record = self.storage.tables.backup_versions.get(&(localpart.to_owned(), number))?;
        record.filter(|r| !r.deleted).map(|r| (number, r)).ok_or_else(unknown_version)
    }

    /// `POST /room_keys/version`: a new current backup; returns its version.
    /// Only the spec's algorithms are taken (a backup no client can read
    /// would only hide the keys).
    pub async fn create_backup(&self, localpart: &str, algorithm: &str, auth_data: &Value) -> Result<String> {
        if !KNOWN_ALGORITHMS.contains(&algorithm) {
            return Err(Error::invalid_param(format!(
                "Unknown backup algorithm {algorithm:?}; supported: {}",
                KNOWN_ALGORITHMS.join(", ")
            )));
        }
        if !auth_data.is_object() {
            return Err(Error::bad_json("auth_data must be an object"));
        }
        let _one_at_a_time = self.serial.lock().await;
        let next = self.backup_versions(localpart)?.last().map_or(1, |(v, _)| v + 1);
        let record = BackupVersionRecord {
            algorithm: algorithm.to_owned(),
            auth_data: auth_data.to_string(),
            count: 0,
            etag: 0,
            deleted: false,
        };
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.backup_versions, &(localpart.to_owned(), next), &record)?;
        self.storage.commit(batch).await?;
        Ok(next.to_string())
    }

    /// `GET /room_keys/version[/{version}]`.
    pub fn backup_info(&self, localpart: &str, version: Option<&str>) -> Result<Value> {
        let (number, record) = match version {
            Some(version) => self.backup(localpart, version)?,
            None => self.current_backup(localpart)?.ok_or_else(|| Error::not_found("No current backup version"))?,
        };
        let auth_data: Value = serde_json::from_str(&record.auth_data).unwrap_or_else(|_| json!({}));
        Ok(json!({
            "algorithm": record.algorithm,
            "auth_data": auth_data,
            "count": record.count,
            "etag": record.etag.to_string(),
            "version": number.to_string(),
        }))
    }

    /// `PUT /room_keys/version/{version}`: only `auth_data` may change.
    pub async fn update_backup(&self, localpart: &str, version: &str, body: &Map<String, Value>) -> Result<()> {
        let _one_at_a_time = self.serial.lock().await;
        let (number, mut record) = self.backup(localpart, version)?;
        if body.get("version").is_some_and(|v| v.as_str() != Some(version)) {
            return Err(Error::invalid_param("The version in the body does not match the path"));
        }
        if body.get("algorithm").and_then(Value::as_str) != Some(record.algorithm.as_str()) {
            return Err(Error::invalid_param("Algorithm does not match"));
        }
        let auth_data = body
            .get("auth_data")
            .filter(|a| a.is_object())
            .ok_or_else(|| Error::bad_json("auth_data must be an object"))?;
        record.auth_data = auth_data.to_string();
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.backup_versions, &(localpart.to_owned(), number), &record)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// `DELETE /room_keys/version/{version}`: the version and its keys.
    pub async fn delete_backup(&self, localpart: &str, version: &str) -> Result<()> {
        let _one_at_a_time = self.serial.lock().await;
        let (number, mut record) = self.backup(localpart, version)?;
        let tables = &self.storage.tables;
        let mut batch = Batch::new();
        for (key, _) in self.backup_keys_in(localpart, number, &Scope::All)? {
            batch.remove(&tables.backup_keys, &key);
        }
        record.deleted = true;
        record.count = 0;
        batch.insert(&tables.backup_versions, &(localpart.to_owned(), number), &record)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// `PUT /room_keys/keys…`: stores `(room, session, data)` entries in the
    /// current version, keeping the better key per session. Returns etag and count.
    pub async fn put_backup_keys(
        &self,
        localpart: &str,
        version: &str,
        keys: Vec<(String, String, Value)>,
    ) -> Result<Value> {
        let _one_at_a_time = self.serial.lock().await;
        let current = self.current_backup(localpart)?;
        let (number, mut record) = match current {
            Some((number, record)) if Some(number) == parse_version(version) => (number, record),
            Some((number, _)) => {
                let kind = ErrorKind::WrongRoomKeysVersion { current_version: Some(number.to_string()) };
                return Err(Error::new(kind, "Wrong backup version"));
            }
            None => return Err(unknown_version()),
        };
        let tables = &self.storage.tables;
        let mut batch = Batch::new();
        let mut changed = false;
        for (room, session, data) in keys {
            check_key_data(&data)?;
            let key = backup_key(localpart, number, &room, &session);
            let existing = tables.backup_keys.get(&key)?.and_then(|t| serde_json::from_str::<Value>(&t).ok());
            match &existing {
                Some(existing) if !better(&data, existing) => continue,
                Some(_) => {}
                None => record.count += 1,
            }
            batch.insert(&tables.backup_keys, &key, &data.to_string())?;
            changed = true;
        }
        if changed {
            record.etag += 1;
            batch.insert(&tables.backup_versions, &(localpart.to_owned(), number), &record)?;
            self.storage.commit(batch).await?;
        }
        Ok(json!({ "etag": record.etag.to_string(), "count": record.count }))
    }

    /// `GET /room_keys/keys…`: `{rooms: {room: {sessions: {session: data}}}}`
    /// for all, `{sessions: …}` for a room, the data itself for a session.
    pub fn get_backup_keys(&self, localpart: &str, version: &str, scope: &Scope<'_>) -> Result<Value> {
        let (number, _) = self.backup(localpart, version)?;
        let mut rooms: Map<String, Value> = Map::new();
        for (key, data) in self.backup_keys_in(localpart, number, scope)? {
            let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            let room = rooms.entry(key.room_id).or_insert_with(|| json!({ "sessions": {} }));
            room["sessions"][key.session_id] = data;
        }
        Ok(match scope {
            Scope::All => json!({ "rooms": rooms }),
            Scope::Room(room) => rooms.remove(*room).unwrap_or_else(|| json!({ "sessions": {} })),
            Scope::Session(room, session) => rooms
                .get(*room)
                .and_then(|r| r["sessions"].get(*session))
                .cloned()
                .ok_or_else(|| Error::not_found("No key for this session"))?,
        })
    }

    /// `DELETE /room_keys/keys…`: returns the new etag and count.
    pub async fn delete_backup_keys(&self, localpart: &str, version: &str, scope: &Scope<'_>) -> Result<Value> {
        let _one_at_a_time = self.serial.lock().await;
        let (number, mut record) = self.backup(localpart, version)?;
        let tables = &self.storage.tables;
        let mut batch = Batch::new();
        for (key, _) in self.backup_keys_in(localpart, number, scope)? {
            batch.remove(&tables.backup_keys, &key);
            record.count = record.count.saturating_sub(1);
        }
        if !batch.is_empty() {
            record.etag += 1;
            batch.insert(&tables.backup_versions, &(localpart.to_owned(), number), &record)?;
            self.storage.commit(batch).await?;
        }
        Ok(json!({ "etag": record.etag.to_string(), "count": record.count }))
    }
}

#[cfg(test)]
mod tests {
    use super::better;
    use serde_json::json;

    fn key(verified: bool, index: u64, forwarded: u64) -> serde_json::Value {
        json!({ "is_verified": verified, "first_message_index": index, "forwarded_count": forwarded, "session_data": {} })
    }

    #[test]
    fn the_better_key_wins_by_verification_then_index_then_forwards() {
        assert!(better(&key(true, 9, 9), &key(false, 0, 0)), "verified beats everything");
        assert!(!better(&key(false, 0, 0), &key(true, 9, 9)));
        assert!(better(&key(false, 1, 9), &key(false, 2, 0)), "then the lower first message index");
        assert!(better(&key(false, 1, 0), &key(false, 1, 1)), "then fewer forwards");
        assert!(!better(&key(false, 1, 1), &key(false, 1, 1)), "an equal key keeps the stored one");
    }
}
