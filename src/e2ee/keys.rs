//! Device keys, one-time keys and fallback keys: `/keys/upload`,
//! `/keys/query`, `/keys/claim`, `/keys/changes`.
//!
//! Spec: "End-to-End Encryption" → "Uploading keys", "Querying keys",
//! "Claiming one-time keys", "Tracking the device list for a user".

use std::collections::{BTreeMap, BTreeSet};

use ruma::{OwnedUserId, UserId};
use serde_json::{json, Map, Value};

use super::{signatures, E2ee};
use crate::{
    error::{Error, Result},
    storage::{
        keys::{FallbackKeyKey, OneTimeKeyKey},
        records::FallbackKeyRecord,
        Batch,
    },
    users::{sessions, Identity},
};

/// One-time keys a device may hold at most (more are refused).
const MAX_ONE_TIME_KEYS: usize = 10_000;

fn object(value: &Value, what: &str) -> Result<Map<String, Value>> {
    value.as_object().cloned().ok_or_else(|| Error::bad_json(format!("{what} must be an object")))
}

/// `algorithm:key id`, both parts non-empty.
fn check_key_id(key_id: &str) -> Result<&str> {
    match key_id.split_once(':') {
        Some((algorithm, id)) if !algorithm.is_empty() && !id.is_empty() => Ok(algorithm),
        _ => Err(Error::bad_json(format!("Key id {key_id:?} is not algorithm:id"))),
    }
}

/// A one-time or fallback key: a string, or an object with a `key`.
fn check_key(key_id: &str, key: &Value) -> Result<()> {
    let valid = key.is_string() || key.get("key").is_some_and(Value::is_string);
    if valid {
        Ok(())
    } else {
        Err(Error::bad_json(format!("Key {key_id:?} must be a string or an object with a `key`")))
    }
}

impl E2ee {
    /// Checks a device's keys: for the caller's own device, with the fields
    /// the spec's `DeviceKeys` requires. Their self-signature is the
    /// clients' to verify (spec: "Downloading keys"); the spec gives this
    /// endpoint no error for it and Synapse stores what comes, as test
    /// tools rely on. (It would prove nothing here: whoever uploads holds
    /// both the key and the signature.)
    pub(super) fn check_device_keys(&self, who: &Identity, keys: &Map<String, Value>) -> Result<()> {
        if keys.get("user_id").and_then(Value::as_str) != Some(who.user_id.as_str()) {
            return Err(Error::invalid_param("device_keys.user_id must be your user id"));
        }
        if keys.get("device_id").and_then(Value::as_str) != Some(who.device_id.as_str()) {
            return Err(Error::invalid_param("device_keys.device_id must be the device of your access token"));
        }
        if !keys.get("algorithms").is_some_and(Value::is_array) {
            return Err(Error::bad_json("device_keys.algorithms must be an array"));
        }
        if !keys.get("keys").is_some_and(|k| k.as_object().is_some_and(|k| k.values().all(Value::is_string))) {
            return Err(Error::bad_json("device_keys.keys must be an object of key strings"));
        }
        if !keys.get("signatures").is_some_and(Value::is_object) {
            return Err(Error::bad_json("device_keys.signatures must be an object"));
        }
        Ok(())
    }

    /// Checks an upload without storing anything (signatures, ids, shapes).
    pub(super) fn check_upload(
        &self,
        who: &Identity,
        device_keys: Option<&Value>,
        one_time_keys: Option<&Value>,
        fallback_keys: Option<&Value>,
    ) -> Result<()> {
        if let Some(device_keys) = device_keys {
            self.check_device_keys(who, &object(device_keys, "device_keys")?)?;
        }
        for (keys, what) in [(one_time_keys, "one_time_keys"), (fallback_keys, "fallback_keys")] {
            let Some(keys) = keys else { continue };
            for (key_id, key) in object(keys, what)? {
                check_key_id(&key_id)?;
                check_key(&key_id, &key)?;
            }
        }
        Ok(())
    }

    /// `POST /keys/upload`: returns the device's one-time key counts.
    pub async fn upload_keys(
        &self,
        who: &Identity,
        device_keys: Option<&Value>,
        one_time_keys: Option<&Value>,
        fallback_keys: Option<&Value>,
    ) -> Result<BTreeMap<String, u64>> {
        // Serialised with claims: a key being claimed is not stored again by
        // an upload that read it as absent (it would be handed out twice).
        let _one_at_a_time = self.serial.lock().await;
        let tables = &self.storage.tables;
        let mut batch = Batch::new();
        let mut changed = false;
        if let Some(device_keys) = device_keys {
            let mut keys = object(device_keys, "device_keys")?;
            self.check_device_keys(who, &keys)?;
            keys.remove("unsigned");
            let key = (who.localpart.clone(), who.device_id.clone());
            let stored = tables.device_keys.get(&key)?.and_then(|text| serde_json::from_str::<Value>(&text).ok());
            if let Some(Value::Object(stored)) = &stored {
                // Signatures added since (cross-signing) stay when the same keys come again.
                if stored.get("keys") == keys.get("keys") {
                    signatures::merge_signatures(&mut keys, stored);
                }
            }
            let new = Value::Object(keys);
            if stored.as_ref() != Some(&new) {
                batch.insert(&tables.device_keys, &key, &new.to_string())?;
                changed = true;
            }
        }
        if let Some(one_time_keys) = one_time_keys {
            let keys = object(one_time_keys, "one_time_keys")?;
            let own = OneTimeKeyKey::device_prefix(&who.localpart, &who.device_id);
            let held = tables.one_time_keys.scan_prefix(&own)?.len();
            if held + keys.len() > MAX_ONE_TIME_KEYS {
                return Err(Error::invalid_param(format!("A device holds at most {MAX_ONE_TIME_KEYS} one-time keys")));
            }
            for (key_id, key) in &keys {
                check_key_id(key_id)?;
                check_key(key_id, key)?;
                let stored_key = OneTimeKeyKey {
                    localpart: who.localpart.clone(),
                    device_id: who.device_id.clone(),
                    key_id: key_id.clone(),
                };
                match tables.one_time_keys.get(&stored_key)? {
                    Some(existing) if serde_json::from_str::<Value>(&existing).ok().as_ref() != Some(key) => {
                        return Err(Error::invalid_param(format!("One-time key {key_id} already exists")));
                    }
                    Some(_) => {}
                    None => {
                        batch.insert(&tables.one_time_keys, &stored_key, &key.to_string())?;
                    }
                }
            }
        }
        if let Some(fallback_keys) = fallback_keys {
            for (key_id, key) in object(fallback_keys, "fallback_keys")? {
                let algorithm = check_key_id(&key_id)?;
                check_key(&key_id, &key)?;
                let stored_key = FallbackKeyKey {
                    localpart: who.localpart.clone(),
                    device_id: who.device_id.clone(),
                    algorithm: algorithm.to_owned(),
                };
                let existing = tables.fallback_keys.get(&stored_key)?;
                let text = key.to_string();
                if existing.as_ref().is_some_and(|e| e.key_id == key_id && e.key == text) {
                    continue; // the same key again keeps its `used` flag
                }
                let record = FallbackKeyRecord { key_id: key_id.clone(), key: text, used: false };
                batch.insert(&tables.fallback_keys, &stored_key, &record)?;
            }
        }
        if changed {
            let reservation = self.log_key_change(&mut batch, &who.user_id)?;
            self.commit_with_change(batch, reservation).await?;
        } else if !batch.is_empty() {
            self.storage.commit(batch).await?;
        }
        self.one_time_key_counts(&who.localpart, &who.device_id)
    }

    /// Unclaimed one-time keys of a device, per algorithm (`signed_curve25519` always present).
    pub fn one_time_key_counts(&self, localpart: &str, device_id: &str) -> Result<BTreeMap<String, u64>> {
        let prefix = OneTimeKeyKey::device_prefix(localpart, device_id);
        let mut counts = BTreeMap::from([("signed_curve25519".to_owned(), 0)]);
        for (key, _) in self.storage.tables.one_time_keys.scan_prefix(&prefix)? {
            *counts.entry(key.algorithm().to_owned()).or_default() += 1;
        }
        Ok(counts)
    }

    /// Algorithms whose fallback key has not been handed out.
    pub fn unused_fallback_key_types(&self, localpart: &str, device_id: &str) -> Result<Vec<String>> {
        let prefix = FallbackKeyKey::device_prefix(localpart, device_id);
        Ok(self
            .storage
            .tables
            .fallback_keys
            .scan_prefix(&prefix)?
            .into_iter()
            .filter(|(_, record)| !record.used)
            .map(|(key, _)| key.algorithm)
            .collect())
    }

    /// `POST /keys/query`.
    pub fn query(&self, who: &Identity, wanted: &BTreeMap<OwnedUserId, Vec<String>>) -> Result<Value> {
        self.query_as(Some(&who.user_id), wanted)
    }

    /// [`E2ee::query`] for `viewer` (`None`: another server, which sees no
    /// user-signing key and only the owners' signatures). Other servers'
    /// users are left out: the caller asks their servers.
    pub fn query_as(&self, viewer: Option<&UserId>, wanted: &BTreeMap<OwnedUserId, Vec<String>>) -> Result<Value> {
        let tables = &self.storage.tables;
        let mut device_keys = Map::new();
        let failures = Map::new();
        let mut cross_signing: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
        for (user_id, device_ids) in wanted {
            if !self.is_local(user_id) {
                continue;
            }
            let localpart = user_id.localpart();
            let wanted: BTreeSet<&str> = device_ids.iter().map(String::as_str).collect();
            let mut devices = Map::new();
            for ((_, device_id), text) in tables.device_keys.scan_prefix(&crate::storage::prefix_of(localpart))? {
                if !wanted.is_empty() && !wanted.contains(device_id.as_str()) {
                    continue;
                }
                let Some(device) = sessions::stored_device(&self.storage, localpart, &device_id)? else { continue };
                let Ok(Value::Object(mut keys)) = serde_json::from_str::<Value>(&text) else { continue };
                keys.insert("unsigned".into(), json!({ "device_display_name": device.display_name }));
                devices.insert(device_id, Value::Object(keys));
            }
            device_keys.insert(user_id.to_string(), Value::Object(devices));
            for usage in ["master", "self_signing", "user_signing"] {
                if usage == "user_signing" && Some(user_id.as_ref()) != viewer {
                    continue; // a user-signing key is shown only to its owner
                }
                if let Some(mut key) = self.cross_signing_key(localpart, usage)? {
                    if usage == "master" {
                        let viewer = viewer.map_or(user_id.as_str(), UserId::as_str);
                        keep_signatures_visible_to(&mut key, user_id.as_str(), viewer);
                    }
                    cross_signing.entry(usage).or_default().insert(user_id.to_string(), key);
                }
            }
        }
        let section = |usage: &str| Value::Object(cross_signing.get(usage).cloned().unwrap_or_default());
        Ok(json!({
            "device_keys": device_keys,
            "failures": failures,
            "master_keys": section("master"),
            "self_signing_keys": section("self_signing"),
            "user_signing_keys": section("user_signing"),
        }))
    }

    /// `POST /keys/claim`: one one-time key per requested device, else its
    /// fallback key. Claims are serialised and committed before the next, so a
    /// one-time key is never handed out twice.
    pub async fn claim(&self, wanted: &BTreeMap<OwnedUserId, BTreeMap<String, String>>) -> Result<Value> {
        let tables = &self.storage.tables;
        let _one_at_a_time = self.serial.lock().await;
        let mut batch = Batch::new();
        let mut claimed = Map::new();
        let failures = Map::new();
        for (user_id, devices) in wanted {
            if !self.is_local(user_id) {
                continue; // the caller asks the user's server
            }
            let localpart = user_id.localpart().to_owned();
            let mut user_keys = Map::new();
            for (device_id, algorithm) in devices {
                let prefix = OneTimeKeyKey::algorithm_prefix(&localpart, device_id, algorithm);
                let one_time = tables.one_time_keys.scan_prefix(&prefix)?.into_iter().next();
                let (key_id, key) = if let Some((stored_key, key)) = one_time {
                    batch.remove(&tables.one_time_keys, &stored_key);
                    (stored_key.key_id, key)
                } else {
                    let fallback_key = FallbackKeyKey {
                        localpart: localpart.clone(),
                        device_id: device_id.clone(),
                        algorithm: algorithm.clone(),
                    };
                    let Some(mut fallback) = tables.fallback_keys.get(&fallback_key)? else { continue };
                    if !fallback.used {
                        fallback.used = true;
                        batch.insert(&tables.fallback_keys, &fallback_key, &fallback)?;
                    }
                    (fallback.key_id, fallback.key)
                };
                let key: Value = serde_json::from_str(&key).unwrap_or(Value::Null);
                user_keys.insert(device_id.clone(), json!({ key_id: key }));
            }
            if !user_keys.is_empty() {
                claimed.insert(user_id.to_string(), Value::Object(user_keys));
            }
        }
        if !batch.is_empty() {
            self.storage.commit(batch).await?;
        }
        Ok(json!({ "one_time_keys": claimed, "failures": failures }))
    }

    /// Users whose keys or devices changed in `(since, upto]`.
    pub fn users_with_key_changes(&self, since: u64, upto: u64) -> Result<BTreeSet<OwnedUserId>> {
        let changes =
            self.storage.tables.key_changes.range(&(since + 1), &upto.saturating_add(1), false, usize::MAX)?;
        Ok(changes.into_iter().filter_map(|(_, user)| UserId::parse(user).ok()).collect())
    }

    /// Users whose keys changed in `(since, upto]` in a way only the local
    /// user `localpart` sees ([`E2ee::log_private_key_change`]).
    pub fn private_key_changes(&self, localpart: &str, since: u64, upto: u64) -> Result<BTreeSet<OwnedUserId>> {
        let table = &self.storage.tables.private_key_changes;
        let from = (localpart.to_owned(), since + 1);
        let to = (localpart.to_owned(), upto.saturating_add(1));
        let changes = table.range(&from, &to, false, usize::MAX)?;
        Ok(changes.into_iter().filter_map(|(_, user)| UserId::parse(user).ok()).collect())
    }
}

/// Signatures on `owner`'s master key that `viewer` may see: the owner's own
/// (their devices') and the viewer's (made with the viewer's user-signing
/// key). Other users' user-signing signatures show whom they verified and are
/// "only visible to the user who created them" (spec, "Cross-signing").
fn keep_signatures_visible_to(key: &mut Value, owner: &str, viewer: &str) {
    if let Some(signatures) = key.get_mut("signatures").and_then(Value::as_object_mut) {
        signatures.retain(|signer, _| signer == owner || signer == viewer);
    }
}

#[cfg(test)]
mod visibility_tests {
    use super::*;

    #[test]
    fn third_party_signatures_on_a_master_key_are_hidden() {
        let mut key = json!({
            "user_id": "@bob:x", "usage": ["master"], "keys": {"ed25519:B": "B"},
            "signatures": {"@bob:x": {"ed25519:DEV": "s1"}, "@alice:x": {"ed25519:A": "s2"}, "@carol:x": {"ed25519:C": "s3"}}
        });
        keep_signatures_visible_to(&mut key, "@bob:x", "@alice:x");
        assert_eq!(key["signatures"], json!({"@bob:x": {"ed25519:DEV": "s1"}, "@alice:x": {"ed25519:A": "s2"}}));
    }
}
