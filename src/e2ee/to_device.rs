//! Send-to-device messages: queued per device with a counter value,
//! delivered by `/sync` in `to_device`, deleted once a later sync presents a
//! token at or past them (the client's acknowledgement).
//!
//! Spec: client-server API "Send-to-Device messaging" (`to_device.yaml`).
//!
//! Owns `to_device` (the queues) and `to_device_txns` (the transactions
//! already handled, so that a retried `PUT /sendToDevice` is not queued
//! twice). Earlier versions recorded those transactions in the rooms'
//! `txnid_eventid`; they are not read any more, so a transaction sent before
//! the upgrade and retried after it is delivered twice (accepted rather than
//! a migration: only a retry spanning the upgrade is affected).

use std::collections::BTreeMap;

use ruma::OwnedUserId;
use serde_json::{json, Map, Value};

use super::E2ee;
use crate::{
    error::{Error, Result},
    storage::{keys::ToDeviceKey, records::ToDeviceRecord, Batch},
    users::{sessions, Identity},
    util::now_ms,
};

/// Messages delivered in one sync at most; the rest wait for the next.
pub const MAX_PER_SYNC: usize = 100;

/// A handled transaction: (sender's localpart or user id, device, event
/// type, transaction or message id).
pub type TxnKey = (String, String, String, String);

/// How long a handled transaction is remembered (a day, as the rooms' ones).
pub const TXN_KEPT_MS: u64 = 24 * 3600 * 1000;

/// Transactions forgotten per write.
const FORGET_PER_WRITE: usize = 1_000;

impl E2ee {
    /// Queues `content` for each addressed device (`*`: every device of the
    /// user). Unknown users and devices are skipped, as the spec allows.
    /// Idempotent per device of the sender, event type and `txn_id`.
    pub async fn send_to_device(
        &self,
        sender: &Identity,
        event_type: &str,
        txn_id: &str,
        messages: &BTreeMap<OwnedUserId, Map<String, Value>>,
    ) -> Result<()> {
        let txn = (sender.localpart.clone(), sender.device_id.clone(), event_type.to_owned(), txn_id.to_owned());
        self.deliver(sender.user_id.as_str(), event_type, txn, messages).await
    }

    /// To-device messages of another server's user (`m.direct_to_device`),
    /// for this server's users; idempotent per sender and `message_id`.
    pub async fn receive_remote_to_device(
        &self,
        sender: &ruma::UserId,
        event_type: &str,
        message_id: &str,
        messages: &BTreeMap<OwnedUserId, Map<String, Value>>,
    ) -> Result<()> {
        let txn = (sender.to_string(), String::new(), event_type.to_owned(), message_id.to_owned());
        self.deliver(sender.as_str(), event_type, txn, messages).await
    }

    /// Forgets the transactions handled before `now - TXN_KEPT_MS`
    /// (maintenance; blocking); how many.
    pub fn forget_old_transactions(&self, now: u64) -> Result<usize> {
        let cutoff = now.saturating_sub(TXN_KEPT_MS);
        let table = &self.storage.tables.to_device_txns;
        let mut old = Vec::new();
        table.for_each(|key, handled_ts| {
            if handled_ts < cutoff {
                old.push(key);
            }
        })?;
        for keys in old.chunks(FORGET_PER_WRITE) {
            let mut batch = Batch::new();
            for key in keys {
                batch.remove(table, key);
            }
            self.storage.apply(batch)?;
        }
        Ok(old.len())
    }

    /// Queues the messages for this server's addressed devices, once per `txn`.
    async fn deliver(
        &self,
        sender: &str,
        event_type: &str,
        txn: TxnKey,
        messages: &BTreeMap<OwnedUserId, Map<String, Value>>,
    ) -> Result<()> {
        let tables = &self.storage.tables;
        let _one_at_a_time = self.to_device_txns.lock(&txn).await;
        if tables.to_device_txns.contains(&txn)? {
            return Ok(()); // a retried transaction
        }
        let mut batch = Batch::new();
        let mut reservations = Vec::new();
        for (user_id, devices) in messages {
            if !self.is_local(user_id) {
                continue; // sent to the user's server by the caller
            }
            let localpart = user_id.localpart();
            for (device, content) in devices {
                if !content.is_object() {
                    return Err(Error::bad_json("Each to-device message must be an object"));
                }
                let targets: Vec<String> = if device == "*" {
                    sessions::device_ids(&self.storage, localpart)?
                } else if sessions::device_exists(&self.storage, localpart, device)? {
                    vec![device.clone()]
                } else {
                    Vec::new()
                };
                for target in targets {
                    let reservation = self.storage.reserve_count()?;
                    let record = ToDeviceRecord {
                        sender: sender.to_owned(),
                        event_type: event_type.to_owned(),
                        content: content.to_string(),
                    };
                    batch.insert(
                        &tables.to_device,
                        &ToDeviceKey::new(localpart, &target, reservation.count),
                        &record,
                    )?;
                    reservations.push(reservation);
                }
            }
        }
        batch.insert(&tables.to_device_txns, &txn, &now_ms())?;
        self.storage.commit(batch).await?;
        // All reservations end before the wake-up (the last one announces).
        reservations.sort_by_key(|r| r.count);
        if let Some(last) = reservations.pop() {
            drop(reservations);
            last.announce();
        }
        Ok(())
    }

    /// Messages for a device up to `upto`, oldest first (at most
    /// [`MAX_PER_SYNC`]), with the position of the last one returned.
    pub fn to_device_messages(&self, localpart: &str, device_id: &str, upto: u64) -> Result<(Vec<Value>, u64)> {
        let waiting = self.storage.tables.to_device.range(
            &ToDeviceKey::new(localpart, device_id, 0),
            &ToDeviceKey::new(localpart, device_id, upto.saturating_add(1)),
            false,
            MAX_PER_SYNC,
        )?;
        let last = waiting.last().map_or(0, |(key, _)| key.count);
        let events = waiting
            .into_iter()
            .map(|(_, record)| {
                let content: Value = serde_json::from_str(&record.content).unwrap_or_else(|_| json!({}));
                json!({ "sender": record.sender, "type": record.event_type, "content": content })
            })
            .collect();
        Ok((events, last))
    }

    /// Deletes a device's messages up to `position`: the client has them.
    pub fn acknowledge_to_device(&self, localpart: &str, device_id: &str, position: u64) -> Result<()> {
        let tables = &self.storage.tables;
        let delivered = tables.to_device.range(
            &ToDeviceKey::new(localpart, device_id, 0),
            &ToDeviceKey::new(localpart, device_id, position.saturating_add(1)),
            false,
            usize::MAX,
        )?;
        if delivered.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new();
        for (key, _) in delivered {
            batch.remove(&tables.to_device, &key);
        }
        Ok(self.storage.apply(batch)?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::Storage;

    #[test]
    fn transactions_handled_a_day_ago_are_forgotten_and_newer_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::open(dir.path(), 1 << 20).unwrap());
        let e2ee = E2ee::new(Arc::clone(&storage), ruma::server_name!("x").to_owned());
        let now = 10 * TXN_KEPT_MS;
        let txn = |id: usize| ("alice".to_owned(), "DEV".to_owned(), "m.x".to_owned(), format!("t{id}"));
        let mut batch = Batch::new();
        for id in 0..(FORGET_PER_WRITE + 5) {
            batch.insert(&storage.tables.to_device_txns, &txn(id), &(now - TXN_KEPT_MS - 1)).unwrap();
        }
        batch.insert(&storage.tables.to_device_txns, &txn(99_999), &(now - TXN_KEPT_MS)).unwrap();
        storage.apply(batch).unwrap();

        assert_eq!(e2ee.forget_old_transactions(now).unwrap(), FORGET_PER_WRITE + 5);
        assert_eq!(storage.tables.to_device_txns.all().unwrap().len(), 1);
        assert!(storage.tables.to_device_txns.contains(&txn(99_999)).unwrap(), "a day old exactly is kept");
        assert_eq!(e2ee.forget_old_transactions(now).unwrap(), 0);
    }
}
