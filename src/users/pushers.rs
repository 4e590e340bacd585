//! Pushers: where a user's devices want push notifications sent.
//!
//! Spec: client-server API "Push Notifications" → "Pushers"
//! (`GET /pushers`, `POST /pushers/set`). A pusher is identified by its app
//! id and pushkey; setting one replaces the same pair of the same user and,
//! unless `append`, removes that pair from other users (a device changed
//! hands); `kind: null` deletes it. HTTP pushers need a `data.url` ending in
//! `/_matrix/push/v1/notify`. Each pusher remembers the device that set it:
//! logging that device out (or deleting it) removes the pusher, as Synapse
//! does, so a phone that left a user's hands stops receiving their messages.
//! Sending to the gateways is [`crate::push`]'s. Owns the `pushers` table.

use std::{collections::HashMap, sync::RwLock};

use serde_json::{Map, Value};

use super::Users;
use crate::{
    error::{Error, Result},
    storage::{keys::PusherId, records::PusherRecord, Batch, Storage},
};

/// The http pushers of every user, in memory: each stored event consults it
/// for every member it notifies, which must not cost a storage scan each.
/// Rebuilt per user from storage after each change of their pushers.
#[derive(Default)]
pub struct PusherIndex {
    /// localpart → each of their http pushers.
    http: RwLock<HashMap<String, Vec<PusherId>>>,
}

impl PusherIndex {
    /// The index of every stored pusher.
    pub fn load(storage: &Storage) -> Result<Self> {
        let mut http: HashMap<String, Vec<PusherId>> = HashMap::new();
        for (pusher, record) in storage.tables.pushers.all()? {
            if is_http(&record.pusher) {
                http.entry(pusher.localpart.clone()).or_default().push(pusher);
            }
        }
        Ok(Self { http: RwLock::new(http) })
    }

    /// A user's http pushers (email pushers are not sent by this server).
    pub fn http_pushers_of(&self, localpart: &str) -> Vec<PusherId> {
        let http = self.http.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        http.get(localpart).cloned().unwrap_or_default()
    }

    /// Re-reads a user's pushers after they changed (under the write lock,
    /// so that concurrent refreshes end with the latest stored state).
    pub(super) fn refresh(&self, storage: &Storage, localpart: &str) -> Result<()> {
        let mut http = self.http.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let stored = storage.tables.pushers.scan_prefix(&PusherId::user_prefix(localpart))?;
        let pushers: Vec<PusherId> =
            stored.into_iter().filter(|(_, record)| is_http(&record.pusher)).map(|(pusher, _)| pusher).collect();
        if pushers.is_empty() {
            http.remove(localpart);
        } else {
            http.insert(localpart.to_owned(), pushers);
        }
        Ok(())
    }
}

fn is_http(json: &str) -> bool {
    serde_json::from_str::<Value>(json).is_ok_and(|pusher| pusher["kind"].as_str() == Some("http"))
}

impl Users {
    /// A user's pushers, as set.
    pub fn pushers(&self, localpart: &str) -> Result<Vec<Value>> {
        let stored = self.storage.tables.pushers.scan_prefix(&PusherId::user_prefix(localpart))?;
        Ok(stored.into_iter().filter_map(|(_, record)| serde_json::from_str(&record.pusher).ok()).collect())
    }

    /// One pusher of a user, as set.
    pub fn pusher(&self, localpart: &str, app_id: &str, pushkey: &str) -> Result<Option<Value>> {
        let key = PusherId::new(localpart, app_id, pushkey);
        Ok(self.storage.tables.pushers.get(&key)?.and_then(|record| serde_json::from_str(&record.pusher).ok()))
    }

    /// Removes a pusher (its gateway rejected the pushkey).
    pub async fn remove_pusher(&self, localpart: &str, app_id: &str, pushkey: &str) -> Result<()> {
        let mut batch = Batch::new();
        batch.remove(&self.storage.tables.pushers, &PusherId::new(localpart, app_id, pushkey));
        self.commit_pusher_changes(batch, &[localpart.to_owned()]).await
    }

    /// Commits pusher changes, then brings the index up to date for `owners`.
    pub(super) async fn commit_pusher_changes(&self, batch: Batch, owners: &[String]) -> Result<()> {
        self.storage.commit(batch).await?;
        for owner in owners {
            self.refresh_pushers(owner)?;
        }
        Ok(())
    }

    /// Adds to `batch` the removal of the pushers set by `device_ids` (all of
    /// the user's with `None`); the owners whose index must be refreshed
    /// after the commit are the caller's business ([`Users::commit_device_removal`]).
    pub(super) fn remove_pushers_of_devices(
        &self,
        batch: &mut Batch,
        localpart: &str,
        device_ids: Option<&[String]>,
    ) -> Result<()> {
        let tables = &self.storage.tables;
        for (key, record) in tables.pushers.scan_prefix(&PusherId::user_prefix(localpart))? {
            if device_ids.is_none_or(|ids| ids.contains(&record.device_id)) {
                batch.remove(&tables.pushers, &key);
            }
        }
        Ok(())
    }

    /// Brings the pusher index up to date for a user after a commit.
    pub(super) fn refresh_pushers(&self, localpart: &str) -> Result<()> {
        self.pushers.refresh(&self.storage, localpart)
    }

    /// `POST /pushers/set`, by the device `device_id`.
    pub async fn set_pusher(&self, localpart: &str, device_id: &str, body: Map<String, Value>) -> Result<()> {
        let text = |name: &str| -> Result<String> {
            body.get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| Error::new(crate::error::ErrorKind::MissingParam, format!("`{name}` is required")))
        };
        let (app_id, pushkey) = (text("app_id")?, text("pushkey")?);
        if app_id.len() > 64 || pushkey.len() > 512 {
            return Err(Error::invalid_param("app_id is at most 64 bytes and pushkey 512"));
        }
        if !PusherId::can_hold(&app_id, &pushkey) {
            return Err(Error::invalid_param("app_id and pushkey cannot contain NUL characters"));
        }
        let tables = &self.storage.tables;
        // Under the user's device lock: a pusher is never stored for a
        // device signed out meanwhile (its pushers went with it).
        let _devices = self.device_changes.lock(localpart).await;
        if !tables.devices.contains(&(localpart.to_owned(), device_id.to_owned()))? {
            return Err(Error::new(
                crate::error::ErrorKind::UnknownToken { soft_logout: false },
                "The device was signed out",
            ));
        }
        let key = PusherId::new(localpart, &app_id, &pushkey);
        let mut batch = Batch::new();
        match body.get("kind") {
            None | Some(Value::Null) => {
                batch.remove(&tables.pushers, &key);
                return self.commit_pusher_changes(batch, &[localpart.to_owned()]).await;
            }
            Some(Value::String(kind)) if kind == "http" => {
                let url = body.get("data").and_then(|d| d.get("url")).and_then(Value::as_str).unwrap_or_default();
                let valid = (url.starts_with("https://") || url.starts_with("http://"))
                    && url.ends_with("/_matrix/push/v1/notify");
                if !valid {
                    return Err(Error::invalid_param(
                        "An http pusher needs data.url ending in /_matrix/push/v1/notify",
                    ));
                }
            }
            Some(Value::String(kind)) if kind == "email" => {}
            Some(other) => return Err(Error::invalid_param(format!("Unknown pusher kind {other}"))),
        }
        for field in ["app_display_name", "device_display_name", "lang"] {
            text(field)?;
        }
        let append = body.get("append").and_then(Value::as_bool).unwrap_or(false);
        let mut owners = vec![localpart.to_owned()];
        if !append {
            for (other, _) in tables.pushers.all()? {
                if other.localpart != localpart && other.same_pusher(&key) {
                    owners.push(other.localpart.clone());
                    batch.remove(&tables.pushers, &other);
                }
            }
        }
        let mut pusher = body;
        pusher.remove("append");
        let record = PusherRecord { pusher: Value::Object(pusher).to_string(), device_id: device_id.to_owned() };
        batch.insert(&tables.pushers, &key, &record)?;
        self.commit_pusher_changes(batch, &owners).await
    }
}
