//! Dehydrated devices (MSC3814, unstable prefix `org.matrix.msc3814.v1`): a
//! device without access tokens whose keys are on the server, so messages
//! can be encrypted to a user while all their devices are offline; a device
//! logging in later "rehydrates" it and reads its to-device messages.
//!
//! - `PUT /dehydrated_device`: replaces the user's dehydrated device (the old
//!   one is deleted with its keys and messages) and uploads its keys;
//! - `GET /dehydrated_device`: its id and opaque `device_data`;
//! - `DELETE /dehydrated_device`;
//! - `POST /dehydrated_device/{deviceId}/events`: its to-device messages, in
//!   pages; presenting `next_batch` acknowledges (deletes) the earlier ones.

use serde_json::{json, Value};

use super::E2ee;
use crate::{
    error::{Error, Result},
    storage::Batch,
    users::{sessions, Identity},
};

/// What a `PUT /dehydrated_device` carries.
pub struct NewDehydratedDevice {
    pub device_id: String,
    pub device_data: Value,
    pub display_name: Option<String>,
    pub device_keys: Option<Value>,
    pub one_time_keys: Option<Value>,
    pub fallback_keys: Option<Value>,
}

impl E2ee {
    /// The user's dehydrated device: `{"device_id", "device_data"}`.
    pub fn dehydrated_device(&self, localpart: &str) -> Result<Option<Value>> {
        let stored = self.storage.tables.dehydrated_devices.get(&localpart.to_owned())?;
        Ok(stored.and_then(|text| serde_json::from_str(&text).ok()))
    }

    fn dehydrated_device_id(&self, localpart: &str) -> Result<Option<String>> {
        Ok(self.dehydrated_device(localpart)?.and_then(|d| d["device_id"].as_str().map(str::to_owned)))
    }

    /// Adds to `batch` the removal of the current dehydrated device, if any.
    fn remove_dehydrated(&self, batch: &mut Batch, localpart: &str) -> Result<Option<String>> {
        let Some(device_id) = self.dehydrated_device_id(localpart)? else { return Ok(None) };
        let tables = &self.storage.tables;
        super::forget_device(tables, batch, localpart, &device_id)?;
        sessions::remove_device(&self.storage, batch, localpart, &device_id)?;
        batch.remove(&tables.dehydrated_devices, &localpart.to_owned());
        Ok(Some(device_id))
    }

    pub async fn put_dehydrated_device(&self, who: &Identity, new: NewDehydratedDevice) -> Result<String> {
        let device_id = crate::users::sessions::validate_device_id(new.device_id)?;
        let replaces_own = self.dehydrated_device_id(&who.localpart)?.as_deref() == Some(device_id.as_str());
        if sessions::device_exists(&self.storage, &who.localpart, &device_id)? && !replaces_own {
            return Err(Error::invalid_param("A device with this id exists already"));
        }
        // The keys are the dehydrated device's own, checked as any device's,
        // before anything changes.
        let as_device = Identity { device_id: device_id.clone(), ..who.clone() };
        let (device_keys, one_time_keys, fallback_keys) =
            (new.device_keys.as_ref(), new.one_time_keys.as_ref(), new.fallback_keys.as_ref());
        self.check_upload(&as_device, device_keys, one_time_keys, fallback_keys)?;
        let mut batch = Batch::new();
        self.remove_dehydrated(&mut batch, &who.localpart)?;
        sessions::add_device_without_tokens(&self.storage, &mut batch, &who.localpart, &device_id, new.display_name)?;
        let record = json!({ "device_id": device_id, "device_data": new.device_data });
        batch.insert(&self.storage.tables.dehydrated_devices, &who.localpart, &record.to_string())?;
        self.storage.commit(batch).await?;
        let uploaded = self.upload_keys(&as_device, device_keys, one_time_keys, fallback_keys).await;
        if let Err(error) = uploaded {
            let mut undo = Batch::new();
            self.remove_dehydrated(&mut undo, &who.localpart)?;
            self.storage.commit(undo).await?;
            return Err(error);
        }
        Ok(device_id)
    }

    pub async fn delete_dehydrated_device(&self, who: &Identity) -> Result<String> {
        let mut batch = Batch::new();
        let device_id = self
            .remove_dehydrated(&mut batch, &who.localpart)?
            .ok_or_else(|| Error::not_found("No dehydrated device"))?;
        let reservation = self.log_key_change(&mut batch, &who.user_id)?;
        self.commit_with_change(batch, reservation).await?;
        Ok(device_id)
    }

    /// A page of the dehydrated device's to-device messages after `next_batch`.
    pub fn dehydrated_device_events(&self, who: &Identity, device_id: &str, next_batch: Option<&str>) -> Result<Value> {
        if self.dehydrated_device_id(&who.localpart)?.as_deref() != Some(device_id) {
            return Err(Error::forbidden("This is not your dehydrated device"));
        }
        let since = match next_batch {
            Some(token) => token.parse::<u64>().map_err(|_| Error::invalid_param("Invalid next_batch"))?,
            None => 0,
        };
        self.acknowledge_to_device(&who.localpart, device_id, since)?;
        let (events, last) = self.to_device_messages(&who.localpart, device_id, u64::MAX)?;
        let next = if events.is_empty() { since } else { last };
        Ok(json!({ "events": events, "next_batch": next.to_string() }))
    }
}
