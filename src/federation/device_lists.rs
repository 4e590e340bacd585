//! Other servers' users' device lists, cached here (server-server API
//! "Device Management", `m.device_list_update`, `m.signing_key_update`;
//! client-server API "Tracking the device list for a user").
//!
//! A list is fetched whole from the user's server (`GET /user/devices`) the
//! first time a local user sharing a room with that user asks for its keys,
//! and kept in `remote_device_lists`. The server's `m.device_list_update`
//! EDUs then keep it current: an update whose `prev_id` are all already
//! reflected here (at or below the copy's stream id) is applied as it
//! comes; one after a gap (an update missed, or an empty `prev_id`, which
//! conduit sends) marks the copy stale, and the next query fetches the list
//! whole again. `m.signing_key_update` replaces the cross-signing keys.
//!
//! Updates are taken only for users sharing a room with a local user; the
//! copy of a user who no longer does is dropped at their next update.
//! While the user's server cannot be reached, a stale copy is served
//! rather than nothing.

use ruma::{OwnedUserId, UserId};
use serde_json::{json, Map, Value};

use super::{Federation, FederationError};
use crate::{
    error::Result,
    http::request::percent_encode,
    rooms::Rooms,
    storage::{records::RemoteDeviceListRecord, Batch},
    util::now_ms,
};

/// Most devices kept for one remote user (a peer cannot fill the disk).
const MAX_DEVICES: usize = 1_000;

impl Federation {
    fn device_list(&self, user: &UserId) -> Result<Option<RemoteDeviceListRecord>> {
        Ok(self.storage.tables.remote_device_lists.get(&user.to_string())?)
    }

    async fn store_device_list(&self, user: &UserId, record: &RemoteDeviceListRecord) -> Result<()> {
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.remote_device_lists, &user.to_string(), record)?;
        Ok(self.storage.commit(batch).await?)
    }

    async fn forget_device_list(&self, user: &UserId) -> Result<()> {
        let mut batch = Batch::new();
        batch.remove(&self.storage.tables.remote_device_lists, &user.to_string());
        Ok(self.storage.commit(batch).await?)
    }

    /// The cached copy of `user`'s list, unless stale.
    pub(super) fn fresh_device_list(&self, user: &UserId) -> Result<Option<RemoteDeviceListRecord>> {
        Ok(self.device_list(user)?.filter(|record| !record.stale))
    }

    /// The cached copy of `user`'s list, stale or not.
    pub(super) fn any_device_list(&self, user: &UserId) -> Result<Option<RemoteDeviceListRecord>> {
        self.device_list(user)
    }

    /// Fetches `user`'s whole list from its server and caches it.
    pub(super) async fn resync_device_list(&self, user: &UserId) -> Result<RemoteDeviceListRecord, FederationError> {
        let path = format!("/_matrix/federation/v1/user/devices/{}", percent_encode(user.as_str()));
        let answer = self.request(user.server_name(), "GET", &path, None).await?;
        let record = list_from_answer(user, &answer)?;
        let newer_here =
            self.device_list(user).ok().flatten().is_some_and(|held| !held.stale && held.stream_id > record.stream_id);
        if !newer_here {
            self.store_device_list(user, &record)
                .await
                .map_err(|error| FederationError::BadAnswer(error.to_string()))?;
        }
        tracing::debug!(%user, stream_id = record.stream_id, "device list fetched");
        Ok(record)
    }

    /// `m.device_list_update` from `user`'s server: applied to the copy when
    /// nothing was missed, else the copy is marked stale. Whether local
    /// clients should ask again (the user shares a room with a local user).
    pub(super) async fn apply_device_list_update(&self, rooms: &Rooms, user: &UserId, content: &Value) -> Result<bool> {
        if !rooms.shares_room_with_local(user)? {
            if self.device_list(user)?.is_some() {
                self.forget_device_list(user).await?;
            }
            return Ok(false);
        }
        let Some(mut record) = self.device_list(user)? else { return Ok(true) };
        let Some(stream_id) = content["stream_id"].as_u64() else { return Ok(false) };
        if stream_id <= record.stream_id && !record.stale {
            return Ok(false); // already reflected here
        }
        let prev_ids: Vec<u64> =
            content["prev_id"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
        let follows = !record.stale && !prev_ids.is_empty() && prev_ids.iter().all(|prev| *prev <= record.stream_id);
        let applied = follows && apply_device_change(user, &mut record, content);
        if applied {
            record.stream_id = stream_id;
        } else {
            record.stale = true;
        }
        self.store_device_list(user, &record).await?;
        Ok(true)
    }

    /// `m.signing_key_update` from `user`'s server: its new cross-signing
    /// keys replace the copy's. Whether local clients should ask again.
    pub(super) async fn apply_signing_key_update(&self, rooms: &Rooms, user: &UserId, content: &Value) -> Result<bool> {
        if !rooms.shares_room_with_local(user)? {
            return Ok(false);
        }
        let Some(mut record) = self.device_list(user)? else { return Ok(true) };
        for (field, slot) in
            [("master_key", &mut record.master_key), ("self_signing_key", &mut record.self_signing_key)]
        {
            if let Some(key) = content.get(field).filter(|key| key["user_id"] == user.as_str()) {
                *slot = Some(key.to_string());
            }
        }
        self.store_device_list(user, &record).await?;
        Ok(true)
    }
}

/// Applies one device's change to the copy; false when it cannot be
/// applied (no device id, or keys that are not the user's device's).
fn apply_device_change(user: &UserId, record: &mut RemoteDeviceListRecord, content: &Value) -> bool {
    let Some(device_id) = content["device_id"].as_str() else { return false };
    let mut devices = devices_of(record);
    if content["deleted"].as_bool() == Some(true) {
        devices.remove(device_id);
    } else if let Some(keys) = content.get("keys").filter(|keys| keys.is_object()) {
        let Some(keys) = device_keys(user, device_id, keys, &content["device_display_name"]) else { return false };
        if !devices.contains_key(device_id) && devices.len() >= MAX_DEVICES {
            return false;
        }
        devices.insert(device_id.to_owned(), keys);
    } else if let Some(held) = devices.get_mut(device_id) {
        // A new display name alone.
        if let Some(renamed) = device_keys(user, device_id, held, &content["device_display_name"]) {
            *held = renamed;
        }
    }
    record.devices = Value::Object(devices).to_string();
    true
}

/// The copy's devices (device id → keys).
pub(super) fn devices_of(record: &RemoteDeviceListRecord) -> Map<String, Value> {
    match serde_json::from_str(&record.devices) {
        Ok(Value::Object(devices)) => devices,
        _ => Map::new(),
    }
}

/// A device's keys as shown to clients, if they are `user`'s `device_id`'s.
fn device_keys(user: &UserId, device_id: &str, keys: &Value, display_name: &Value) -> Option<Value> {
    if keys["user_id"] != user.as_str() || keys["device_id"] != device_id {
        return None;
    }
    let mut keys = keys.clone();
    let object = keys.as_object_mut()?;
    object.remove("unsigned");
    if !display_name.is_null() {
        object.insert("unsigned".into(), json!({ "device_display_name": display_name }));
    }
    Some(keys)
}

/// A `/user/devices` answer as a fresh copy, if it is `user`'s.
fn list_from_answer(user: &UserId, answer: &Value) -> Result<RemoteDeviceListRecord, FederationError> {
    if answer["user_id"] != user.as_str() {
        return Err(FederationError::BadAnswer(format!("the device list answered is not {user}'s")));
    }
    let stream_id = answer["stream_id"]
        .as_u64()
        .ok_or_else(|| FederationError::BadAnswer("the device list has no stream_id".into()))?;
    let mut devices = Map::new();
    for device in answer["devices"].as_array().into_iter().flatten().take(MAX_DEVICES) {
        let Some(device_id) = device["device_id"].as_str() else { continue };
        if let Some(keys) = device_keys(user, device_id, &device["keys"], &device["device_display_name"]) {
            devices.insert(device_id.to_owned(), keys);
        }
    }
    let cross_signing =
        |field: &str| answer.get(field).filter(|key| key["user_id"] == user.as_str()).map(Value::to_string);
    Ok(RemoteDeviceListRecord {
        stream_id,
        stale: false,
        devices: Value::Object(devices).to_string(),
        master_key: cross_signing("master_key"),
        self_signing_key: cross_signing("self_signing_key"),
        fetched_ts: now_ms(),
    })
}

/// Adds a copy's keys to a `/keys/query` answer (only `wanted_devices`
/// when some are named).
pub(super) fn add_to_answer(
    user: &OwnedUserId,
    record: &RemoteDeviceListRecord,
    wanted_devices: &[String],
    answer: &mut Value,
) {
    let mut devices = devices_of(record);
    if !wanted_devices.is_empty() {
        devices.retain(|device_id, _| wanted_devices.contains(device_id));
    }
    set_entry(answer, "device_keys", user, Value::Object(devices));
    let keys = [("master_keys", &record.master_key), ("self_signing_keys", &record.self_signing_key)];
    for (section, key) in keys {
        if let Some(key) = key.as_deref().and_then(|key| serde_json::from_str::<Value>(key).ok()) {
            set_entry(answer, section, user, key);
        }
    }
}

fn set_entry(answer: &mut Value, section: &str, user: &UserId, value: Value) {
    if !answer[section].is_object() {
        answer[section] = json!({});
    }
    answer[section][user.as_str()] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> OwnedUserId {
        UserId::parse("@bob:b.example").expect("a user id")
    }

    fn keys(device: &str) -> Value {
        json!({ "user_id": "@bob:b.example", "device_id": device, "algorithms": [], "keys": {}, "signatures": {} })
    }

    fn copy() -> RemoteDeviceListRecord {
        let answer = json!({ "user_id": "@bob:b.example", "stream_id": 5, "devices": [
            { "device_id": "D1", "keys": keys("D1"), "device_display_name": "phone" },
            { "device_id": "D2", "keys": keys("OTHER") },
        ]});
        list_from_answer(&user(), &answer).expect("a device list")
    }

    #[test]
    fn an_answer_keeps_only_the_users_own_device_keys() {
        let devices = devices_of(&copy());
        assert_eq!(devices.keys().collect::<Vec<_>>(), ["D1"], "keys naming another device are left out");
        assert_eq!(devices["D1"]["unsigned"]["device_display_name"], "phone");
        let other = json!({ "user_id": "@eve:b.example", "stream_id": 1, "devices": [] });
        assert!(list_from_answer(&user(), &other).is_err());
    }

    #[test]
    fn device_changes_add_rename_and_delete() {
        let mut record = copy();
        let added = json!({ "device_id": "D3", "keys": keys("D3"), "device_display_name": "laptop" });
        assert!(apply_device_change(&user(), &mut record, &added));
        let renamed = json!({ "device_id": "D1", "device_display_name": "old phone" });
        assert!(apply_device_change(&user(), &mut record, &renamed));
        let deleted = json!({ "device_id": "D3", "deleted": true });
        assert!(apply_device_change(&user(), &mut record, &deleted));
        let devices = devices_of(&record);
        assert_eq!(devices.keys().collect::<Vec<_>>(), ["D1"]);
        assert_eq!(devices["D1"]["unsigned"]["device_display_name"], "old phone");
        let forged = json!({ "device_id": "D4", "keys": keys("D5") });
        assert!(!apply_device_change(&user(), &mut record, &forged), "keys of another device are refused");
    }

    #[test]
    fn the_answer_names_only_the_wanted_devices() {
        let mut record = copy();
        let added = json!({ "device_id": "D3", "keys": keys("D3") });
        apply_device_change(&user(), &mut record, &added);
        record.master_key = Some(json!({ "user_id": "@bob:b.example", "usage": ["master"] }).to_string());
        let mut answer = json!({ "device_keys": {} });
        add_to_answer(&user(), &record, &["D3".to_owned()], &mut answer);
        assert_eq!(answer["device_keys"]["@bob:b.example"].as_object().map(|d| d.len()), Some(1));
        assert_eq!(answer["master_keys"]["@bob:b.example"]["usage"][0], "master");
    }
}
