//! Devices and their tokens: login sessions, authentication of requests,
//! refresh, logout, device management.
//!
//! Spec: client-server API "Relationship between access tokens and devices",
//! "Refreshing access tokens", "Soft logout", "Device management".
//!
//! Owns the `devices`, `access_tokens` and `refresh_tokens` tables: other
//! modules (end-to-end encryption: to-device messages, key queries,
//! dehydrated devices) read and write devices through the free functions at
//! the end of this file.
//!
//! Invariants:
//! - every live token is listed in its device's `token_hashes`, so removing a
//!   device (or reusing its id at login) revokes every token it had;
//! - tokens are stored only as SHA-256 digests;
//! - a refresh token stays valid until the tokens it produced are first used.

use crate::{
    crypto::tokens::{new_access_token, new_refresh_token, random_uppercase, token_hash},
    error::{Error, ErrorKind, Result},
    storage::{
        prefix_of,
        records::{DeviceRecord, TokenHash, TokenRecord},
        Batch, Storage, StorageError,
    },
    util::now_ms,
};

use super::{Identity, Users};

/// How stale the stored last-seen time may get before it is written again.
const LAST_SEEN_WRITE_INTERVAL_MS: u64 = 5 * 60 * 1000;

/// Tokens handed to a client at login, registration or refresh.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub device_id: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

/// A device as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<u64>,
    pub last_seen_ip: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct LastSeen {
    ts: u64,
    ip: String,
    stored_ts: u64,
}

impl Users {
    /// Logs a user in on a device: a new device unless `device_id` names one of
    /// theirs, in which case its previous tokens are revoked.
    pub async fn open_session(
        &self,
        localpart: &str,
        device_id: Option<String>,
        display_name: Option<String>,
        refreshable: bool,
        client_ip: &str,
    ) -> Result<NewSession> {
        let tables = &self.storage.tables;
        let device_id = match device_id {
            Some(id) => validate_device_id(id)?,
            None => random_uppercase(10),
        };
        let _devices = self.device_changes.lock(localpart).await;
        let key = (localpart.to_owned(), device_id.clone());
        let mut batch = Batch::new();
        let now = now_ms();
        let existing = tables.devices.get(&key)?;
        let new_device = existing.is_none();
        let mut device = match existing {
            Some(existing) => {
                revoke_tokens(&mut batch, &self.storage, &existing.token_hashes);
                DeviceRecord {
                    token_hashes: Vec::new(),
                    display_name: display_name.or(existing.display_name),
                    ..existing
                }
            }
            None => DeviceRecord {
                display_name,
                created_ts: now,
                last_seen_ts: Some(now),
                last_seen_ip: Some(client_ip.to_owned()),
                token_hashes: Vec::new(),
            },
        };
        let session = self.issue_tokens(&mut batch, &mut device, localpart, &device_id, refreshable, None)?;
        batch.insert(&tables.devices, &key, &device)?;
        // A new device is a device-list change for the user and their room
        // mates (as Synapse announces it, keys or not).
        let reservation = match new_device {
            true => Some(crate::e2ee::log_key_change(&self.storage, &mut batch, self.user_id(localpart)?.as_str())?),
            false => None,
        };
        self.storage.commit(batch).await?;
        if let Some(reservation) = reservation {
            reservation.announce();
        }
        Ok(session)
    }

    /// Adds a fresh access token (and refresh token if asked) to `device`.
    fn issue_tokens(
        &self,
        batch: &mut Batch,
        device: &mut DeviceRecord,
        localpart: &str,
        device_id: &str,
        refreshable: bool,
        replaces_refresh_token: Option<TokenHash>,
    ) -> Result<NewSession> {
        let tables = &self.storage.tables;
        let access_token = new_access_token();
        let access_hash = token_hash(&access_token);
        let refresh_token = refreshable.then(new_refresh_token);
        let refresh_hash = refresh_token.as_deref().map(token_hash);
        let expires_in_ms = refreshable.then_some(self.refreshable_lifetime.as_millis() as u64);
        let owner = |expires_ts, paired| TokenRecord {
            localpart: localpart.to_owned(),
            device_id: device_id.to_owned(),
            expires_ts,
            replaces_refresh_token,
            paired_token: paired,
        };
        batch.insert(
            &tables.access_tokens,
            &access_hash,
            &owner(expires_in_ms.map(|ms| now_ms() + ms), refresh_hash),
        )?;
        device.token_hashes.push(access_hash);
        if let Some(refresh_hash) = refresh_hash {
            batch.insert(&tables.refresh_tokens, &refresh_hash, &owner(None, Some(access_hash)))?;
            device.token_hashes.push(refresh_hash);
        }
        Ok(NewSession { device_id: device_id.to_owned(), access_token, refresh_token, expires_in_ms })
    }

    /// Resolves an access token to the identity making the request.
    pub async fn authenticate(&self, access_token: &str) -> Result<Identity> {
        let tables = &self.storage.tables;
        let hash = token_hash(access_token);
        let unknown = || Error::new(ErrorKind::UnknownToken { soft_logout: false }, "Unknown access token");
        let token = tables.access_tokens.get(&hash)?.ok_or_else(unknown)?;
        if token.expires_ts.is_some_and(|expires| expires <= now_ms()) {
            return Err(Error::new(ErrorKind::UnknownToken { soft_logout: true }, "Access token has expired"));
        }
        let user = self.get_active(&token.localpart)?.ok_or_else(unknown)?;
        if token.replaces_refresh_token.is_some() {
            let _devices = self.device_changes.lock(&token.localpart).await;
            // Read again under the lock: a logout may have come first, and a
            // concurrent first use (a client's burst of requests after a
            // refresh) may have retired the old tokens already.
            let token = tables.access_tokens.get(&hash)?.ok_or_else(unknown)?;
            if let Some(replaced) = token.replaces_refresh_token {
                self.retire_replaced_refresh_token(&hash, &token, replaced).await?;
            }
        }
        Ok(Identity {
            user_id: self.user_id(&token.localpart)?,
            localpart: token.localpart,
            device_id: token.device_id,
            is_admin: user.is_admin,
            is_guest: user.is_guest,
        })
    }

    /// `POST /refresh`: new tokens for the device of `refresh_token`.
    pub async fn refresh(&self, refresh_token: &str) -> Result<NewSession> {
        let tables = &self.storage.tables;
        let hash = token_hash(refresh_token);
        let unknown = || Error::new(ErrorKind::UnknownToken { soft_logout: false }, "Unknown refresh token");
        let owner = tables.refresh_tokens.get(&hash)?.ok_or_else(unknown)?.localpart;
        let _devices = self.device_changes.lock(&owner).await;
        // Read again under the lock: a concurrent refresh or logout may have
        // changed it.
        let token = tables.refresh_tokens.get(&hash)?.ok_or_else(unknown)?;
        if let Some(replaced) = token.replaces_refresh_token {
            self.retire_replaced_refresh_token(&hash, &token, replaced).await?;
        }
        let key = (token.localpart.clone(), token.device_id.clone());
        let mut device = tables
            .devices
            .get(&key)?
            .ok_or_else(|| Error::new(ErrorKind::UnknownToken { soft_logout: false }, "Device was removed"))?;
        let mut batch = Batch::new();
        self.revoke_successors(&mut batch, &mut device, &hash)?;
        let session =
            self.issue_tokens(&mut batch, &mut device, &token.localpart, &token.device_id, true, Some(hash))?;
        batch.insert(&tables.devices, &key, &device)?;
        self.storage.commit(batch).await?;
        Ok(session)
    }

    /// A refresh token has one successor at a time, as in Synapse: the tokens
    /// an earlier use of `used` made (a retry whose answer was lost, or a
    /// concurrent refresh) are revoked when it is used again.
    fn revoke_successors(&self, batch: &mut Batch, device: &mut DeviceRecord, used: &TokenHash) -> Result<()> {
        let tables = &self.storage.tables;
        let mut retired = Vec::new();
        for hash in &device.token_hashes {
            if let Some(record) = tables.refresh_tokens.get(hash)? {
                if record.replaces_refresh_token.as_ref() == Some(used) {
                    retired.push(*hash);
                    retired.extend(record.paired_token);
                }
            }
        }
        revoke_tokens(batch, &self.storage, &retired);
        device.token_hashes.retain(|hash| !retired.contains(hash));
        Ok(())
    }

    /// First use of a token made by `/refresh`: the refresh token it replaced,
    /// and the access token issued with that one, are revoked for good. The
    /// caller holds the user's device lock.
    async fn retire_replaced_refresh_token(
        &self,
        used: &TokenHash,
        token: &TokenRecord,
        replaced: TokenHash,
    ) -> Result<()> {
        let tables = &self.storage.tables;
        let mut batch = Batch::new();
        let mut retired = vec![replaced];
        if let Some(old) = tables.refresh_tokens.get(&replaced)? {
            retired.extend(old.paired_token);
        }
        revoke_tokens(&mut batch, &self.storage, &retired);
        let siblings = [Some(*used), token.paired_token];
        for sibling in siblings.into_iter().flatten() {
            for table in [&tables.access_tokens, &tables.refresh_tokens] {
                if let Some(record) = table.get(&sibling)? {
                    batch.insert(table, &sibling, &TokenRecord { replaces_refresh_token: None, ..record })?;
                }
            }
        }
        let key = (token.localpart.clone(), token.device_id.clone());
        if let Some(mut device) = tables.devices.get(&key)? {
            device.token_hashes.retain(|h| !retired.contains(h));
            batch.insert(&tables.devices, &key, &device)?;
        }
        Ok(self.storage.commit(batch).await?)
    }

    /// `POST /logout`: the device of the token is removed with its tokens.
    pub async fn logout(&self, identity: &Identity) -> Result<()> {
        self.delete_devices(&identity.localpart, std::slice::from_ref(&identity.device_id)).await
    }

    /// `POST /logout/all`: every device of the user is removed.
    pub async fn logout_all(&self, localpart: &str) -> Result<()> {
        let _devices = self.device_changes.lock(localpart).await;
        let mut batch = Batch::new();
        self.remove_all_devices(&mut batch, localpart)?;
        self.commit_device_removal(batch, localpart).await
    }

    /// Commits a batch that removed devices, logging the device-list change
    /// (users sharing a room learn of it through `/sync`).
    pub(super) async fn commit_device_removal(&self, mut batch: Batch, localpart: &str) -> Result<()> {
        let reservation = crate::e2ee::log_key_change(&self.storage, &mut batch, self.user_id(localpart)?.as_str())?;
        self.storage.commit(batch).await?;
        reservation.announce();
        self.refresh_pushers(localpart)
    }

    /// Removes every device of `localpart` except `keep`, with their tokens.
    pub async fn logout_other_devices(&self, localpart: &str, keep: &str) -> Result<()> {
        let others: Vec<String> =
            self.devices(localpart)?.into_iter().map(|d| d.device_id).filter(|id| id != keep).collect();
        self.delete_devices(localpart, &others).await
    }

    pub(super) fn remove_all_devices(&self, batch: &mut Batch, localpart: &str) -> Result<()> {
        let tables = &self.storage.tables;
        for (key, device) in tables.devices.scan_prefix(&prefix_of(localpart))? {
            revoke_tokens(batch, &self.storage, &device.token_hashes);
            crate::e2ee::forget_device(tables, batch, localpart, &key.1)?;
            batch.remove(&tables.devices, &key);
        }
        self.remove_pushers_of_devices(batch, localpart, None)
    }

    /// Removes the named devices of a user (unknown ids are ignored, as the spec says).
    pub async fn delete_devices(&self, localpart: &str, device_ids: &[String]) -> Result<()> {
        let tables = &self.storage.tables;
        let _devices = self.device_changes.lock(localpart).await;
        let mut batch = Batch::new();
        for device_id in device_ids {
            let key = (localpart.to_owned(), device_id.clone());
            if let Some(device) = tables.devices.get(&key)? {
                revoke_tokens(&mut batch, &self.storage, &device.token_hashes);
                crate::e2ee::forget_device(tables, &mut batch, localpart, device_id)?;
                batch.remove(&tables.devices, &key);
            }
        }
        self.remove_pushers_of_devices(&mut batch, localpart, Some(device_ids))?;
        self.commit_device_removal(batch, localpart).await
    }

    pub fn devices(&self, localpart: &str) -> Result<Vec<Device>> {
        let records = self.storage.tables.devices.scan_prefix(&prefix_of(localpart))?;
        Ok(records.into_iter().map(|((_, device_id), record)| self.device_view(localpart, device_id, record)).collect())
    }

    pub fn device(&self, localpart: &str, device_id: &str) -> Result<Option<Device>> {
        let record = self.storage.tables.devices.get(&(localpart.to_owned(), device_id.to_owned()))?;
        Ok(record.map(|record| self.device_view(localpart, device_id.to_owned(), record)))
    }

    fn device_view(&self, localpart: &str, device_id: String, record: DeviceRecord) -> Device {
        let seen = self.last_seen_of(localpart, &device_id);
        Device {
            display_name: record.display_name,
            last_seen_ts: seen.as_ref().map(|s| s.ts).or(record.last_seen_ts),
            last_seen_ip: seen.map(|s| s.ip).or(record.last_seen_ip),
            device_id,
        }
    }

    /// Renames a device (a device-list change: the name is in the device's
    /// keys as others see them); `M_NOT_FOUND` if the user has no such device.
    pub async fn set_device_display_name(&self, localpart: &str, device_id: &str, name: Option<String>) -> Result<()> {
        let key = (localpart.to_owned(), device_id.to_owned());
        // In place (atomically): a token issued meanwhile stays listed on the device.
        let updated = self
            .storage
            .tables
            .devices
            .update_and_fetch(&key, |device| device.map(|d| DeviceRecord { display_name: name.clone(), ..d }))?;
        if updated.is_none() {
            return Err(Error::not_found("No such device"));
        }
        let mut batch = Batch::new();
        let reservation = crate::e2ee::log_key_change(&self.storage, &mut batch, self.user_id(localpart)?.as_str())?;
        self.storage.commit(batch).await?;
        reservation.announce();
        Ok(())
    }

    /// Notes that a device made a request; written to disk at most every few minutes.
    pub fn note_seen(&self, identity: &Identity, client_ip: &str) {
        let now = now_ms();
        let key = (identity.localpart.clone(), identity.device_id.clone());
        let write = {
            let mut seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
            let entry = seen.entry(key.clone()).or_insert(LastSeen { ts: now, ip: String::new(), stored_ts: 0 });
            entry.ts = now;
            if entry.ip != client_ip {
                entry.ip = client_ip.to_owned();
            }
            let stale = now.saturating_sub(entry.stored_ts) >= LAST_SEEN_WRITE_INTERVAL_MS;
            if stale {
                entry.stored_ts = now;
            }
            stale
        };
        if write {
            let ip = client_ip.to_owned();
            let result = self.storage.tables.devices.update_and_fetch(&key, |device| {
                device.map(|d| DeviceRecord { last_seen_ts: Some(now), last_seen_ip: Some(ip.clone()), ..d })
            });
            if let Err(error) = result {
                tracing::warn!(%error, "could not store a device's last-seen time");
            }
        }
    }

    fn last_seen_of(&self, localpart: &str, device_id: &str) -> Option<LastSeen> {
        let seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&(localpart.to_owned(), device_id.to_owned())).cloned()
    }
}

/// Removes tokens from both token tables (a digest is in one of them).
fn revoke_tokens(batch: &mut Batch, storage: &Storage, hashes: &[TokenHash]) {
    for hash in hashes {
        batch.remove(&storage.tables.access_tokens, hash);
        batch.remove(&storage.tables.refresh_tokens, hash);
    }
}

/// The ids of a user's devices.
pub fn device_ids(storage: &Storage, localpart: &str) -> Result<Vec<String>, StorageError> {
    let devices = storage.tables.devices.scan_prefix(&prefix_of(localpart))?;
    Ok(devices.into_iter().map(|((_, device_id), _)| device_id).collect())
}

/// Whether the user has a device with this id.
pub fn device_exists(storage: &Storage, localpart: &str, device_id: &str) -> Result<bool, StorageError> {
    storage.tables.devices.contains(&(localpart.to_owned(), device_id.to_owned()))
}

/// A device as stored (the last-seen time written at most every few minutes).
pub fn stored_device(storage: &Storage, localpart: &str, device_id: &str) -> Result<Option<Device>, StorageError> {
    let record = storage.tables.devices.get(&(localpart.to_owned(), device_id.to_owned()))?;
    Ok(record.map(|record| Device {
        device_id: device_id.to_owned(),
        display_name: record.display_name,
        last_seen_ts: record.last_seen_ts,
        last_seen_ip: record.last_seen_ip,
    }))
}

/// Adds to `batch` a device that has no tokens (a dehydrated device: it
/// never makes requests).
pub fn add_device_without_tokens(
    storage: &Storage,
    batch: &mut Batch,
    localpart: &str,
    device_id: &str,
    display_name: Option<String>,
) -> Result<(), StorageError> {
    let device = DeviceRecord {
        display_name,
        created_ts: now_ms(),
        last_seen_ts: None,
        last_seen_ip: None,
        token_hashes: Vec::new(),
    };
    batch.insert(&storage.tables.devices, &(localpart.to_owned(), device_id.to_owned()), &device)?;
    Ok(())
}

/// Adds to `batch` the removal of a device record and its tokens, if any;
/// what other modules keep for the device is theirs to remove.
pub fn remove_device(
    storage: &Storage,
    batch: &mut Batch,
    localpart: &str,
    device_id: &str,
) -> Result<(), StorageError> {
    let key = (localpart.to_owned(), device_id.to_owned());
    if let Some(device) = storage.tables.devices.get(&key)? {
        revoke_tokens(batch, storage, &device.token_hashes);
        batch.remove(&storage.tables.devices, &key);
    }
    Ok(())
}

/// Client-chosen device ids: non-empty, printable, bounded.
pub fn validate_device_id(device_id: String) -> Result<String> {
    if device_id.is_empty() || device_id.len() > 255 || device_id.chars().any(char::is_control) {
        return Err(Error::invalid_param("device_id must be 1 to 255 printable characters"));
    }
    Ok(device_id)
}
