//! End-to-end encryption support: the server carries keys and messages
//! between devices and never sees plaintext.
//!
//! Spec: client-server API module "End-to-End Encryption"
//! (`content/client-server-api/modules/end_to_end_encryption.md`),
//! "Send-to-Device messaging", `data/api/client-server/keys.yaml`,
//! `cross_signing.yaml`, `to_device.yaml`.
//!
//! - [`keys`]: device keys, one-time and fallback keys, queries, claims, the
//!   log of key changes that drives `device_lists`;
//! - [`cross_signing`]: master, self-signing and user-signing keys and
//!   uploaded signatures, each verified;
//! - [`backup`]: server-side key backups (versions, keys, the better key kept);
//! - [`to_device`]: messages queued per device, delivered by `/sync` and
//!   deleted once the next sync acknowledges them;
//! - [`signatures`]: ed25519 checks on signed JSON.
//!
//! Keys are stored as the JSON the client signed; every change of a user's
//! keys or devices is logged with a counter value so `/sync` and
//! `/keys/changes` can tell who changed since a token.
//!
//! Owns the key tables (`device_keys`, `one_time_keys`, `fallback_keys`,
//! `cross_signing_keys`, `key_changes`, `private_key_changes`, `backup_versions`, `backup_keys`,
//! `dehydrated_devices`) and the to-device tables (`to_device`,
//! `to_device_txns`). Devices themselves are [`crate::users::sessions`]'s:
//! they are read and written through its functions.

pub mod backup;
pub mod cross_signing;
pub mod dehydrated;
pub mod keys;
pub mod signatures;
pub mod to_device;

use std::sync::Arc;

use ruma::{OwnedServerName, UserId};

use crate::{
    error::Result,
    storage::{
        keys::{FallbackKeyKey, OneTimeKeyKey, ToDeviceKey},
        tables::Tables,
        Batch, Storage,
    },
};

pub struct E2ee {
    storage: Arc<Storage>,
    server_name: OwnedServerName,
    /// Serialises read-modify-write operations: one-time key claims (so a
    /// key is handed out once) and backup updates (counts and etags).
    serial: tokio::sync::Mutex<()>,
    /// One `sendToDevice` per transaction at a time: a retry waits for the
    /// first request's write, then finds its transaction handled.
    to_device_txns: crate::locks::KeyedLocks<to_device::TxnKey>,
}

impl E2ee {
    pub fn new(storage: Arc<Storage>, server_name: OwnedServerName) -> Self {
        Self { storage, server_name, serial: tokio::sync::Mutex::new(()), to_device_txns: Default::default() }
    }

    fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.server_name
    }

    /// Logs that `user_id`'s keys or devices changed, in `batch`; returns the
    /// reservation to hold until the batch is committed, then announce.
    pub fn log_key_change<'a>(
        &'a self,
        batch: &mut Batch,
        user_id: &UserId,
    ) -> Result<crate::storage::Reservation<'a>> {
        log_key_change(&self.storage, batch, user_id.as_str())
    }

    /// Logs that `user_id`'s keys changed in a way only the local user
    /// `viewer` sees (their user-signing key or their signature of
    /// `user_id`'s master key): only `viewer`'s `device_lists` say so.
    pub fn log_private_key_change<'a>(
        &'a self,
        batch: &mut Batch,
        viewer: &str,
        user_id: &UserId,
    ) -> Result<crate::storage::Reservation<'a>> {
        let reservation = self.storage.reserve_count()?;
        let key = (viewer.to_owned(), reservation.count);
        batch.insert(&self.storage.tables.private_key_changes, &key, &user_id.to_string())?;
        Ok(reservation)
    }

    /// Notes that another server's user's keys or devices changed (its
    /// server said so): clients sharing a room with the user ask again.
    pub async fn note_remote_key_change(&self, user_id: &UserId) -> Result<()> {
        let mut batch = Batch::new();
        let reservation = self.log_key_change(&mut batch, user_id)?;
        self.commit_with_change(batch, reservation).await
    }

    /// Commits a batch that logged a key change and wakes syncs.
    async fn commit_with_change(&self, batch: Batch, reservation: crate::storage::Reservation<'_>) -> Result<()> {
        self.storage.commit(batch).await?;
        reservation.announce();
        Ok(())
    }
}

/// Logs in `batch` that `user_id`'s keys or devices changed; hold the
/// reservation until the batch is committed, then announce its count.
pub fn log_key_change<'a>(
    storage: &'a Storage,
    batch: &mut Batch,
    user_id: &str,
) -> Result<crate::storage::Reservation<'a>> {
    let reservation = storage.reserve_count()?;
    batch.insert(&storage.tables.key_changes, &reservation.count, &user_id.to_owned())?;
    Ok(reservation)
}

/// Adds to `batch` the removal of everything a deleted device had: its keys,
/// one-time and fallback keys, waiting to-device messages and the to-device
/// transactions it sent (a device later given the same id starts afresh).
pub fn forget_device(tables: &Tables, batch: &mut Batch, localpart: &str, device_id: &str) -> Result<()> {
    batch.remove(&tables.device_keys, &(localpart.to_owned(), device_id.to_owned()));
    for (key, _) in tables.one_time_keys.scan_prefix(&OneTimeKeyKey::device_prefix(localpart, device_id))? {
        batch.remove(&tables.one_time_keys, &key);
    }
    for (key, _) in tables.fallback_keys.scan_prefix(&FallbackKeyKey::device_prefix(localpart, device_id))? {
        batch.remove(&tables.fallback_keys, &key);
    }
    for (key, _) in tables.to_device.scan_prefix(&ToDeviceKey::device_prefix(localpart, device_id))? {
        batch.remove(&tables.to_device, &key);
    }
    for (key, _) in tables.to_device_txns.scan_leading((localpart, device_id))? {
        batch.remove(&tables.to_device_txns, &key);
    }
    Ok(())
}
