//! `PUT /_matrix/federation/v1/send/{txnId}`: a transaction of PDUs and EDUs
//! from another server (server-server API "Transactions").
//!
//! At most [`MAX_PDUS`] PDUs and [`MAX_EDUS`] EDUs (more is refused whole).
//! The answer is stored per (origin, transaction id) in the transaction's
//! own durable write, so a transaction sent again (within a day: older
//! answers are removed by the maintenance task) is answered the same without
//! being processed twice. Each PDU gets its own result; the rooms of
//! a transaction are processed concurrently, the PDUs of one room in order
//! under the room's lock; PDUs of a room whose server ACL denies the origin
//! are ignored. EDUs are handed to `federation::edu`.

use std::collections::BTreeMap;

use ruma::{OwnedRoomId, ServerName};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{format, Receipt};
use crate::{
    error::{Error, ErrorKind, Result},
    rooms::pipeline::{authorise::Refusal, Verdict},
    storage::{records::TxnAnswerRecord, Batch, Storage},
};

/// Most PDUs in one transaction (spec: "Transactions").
pub const MAX_PDUS: usize = 50;
/// Most EDUs in one transaction.
pub const MAX_EDUS: usize = 100;

#[derive(Debug, Deserialize)]
pub struct Transaction {
    pub pdus: Vec<Value>,
    #[serde(default)]
    pub edus: Vec<Value>,
}

/// The answer stored for a transaction already received, if any.
pub fn answered(storage: &Storage, origin: &ServerName, txn_id: &str) -> Result<Option<Value>> {
    let key = (origin.to_string(), txn_id.to_owned());
    Ok(storage.tables.federation_txns.get(&key)?.and_then(|record| serde_json::from_str(&record.answer).ok()))
}

/// How long a transaction's answer is kept for a repeat.
pub const ANSWER_KEPT_MS: u64 = 24 * 3600 * 1000;

/// Removes the answers of transactions received before `now - ANSWER_KEPT_MS`
/// (the maintenance task); how many.
pub fn forget_old_answers(storage: &Storage, now: u64) -> Result<usize> {
    let cutoff = now.saturating_sub(ANSWER_KEPT_MS);
    let mut old = Vec::new();
    storage.tables.federation_txns.for_each(|key, record| {
        if record.received_ts < cutoff {
            old.push(key);
        }
    })?;
    let mut batch = Batch::new();
    for key in &old {
        batch.remove(&storage.tables.federation_txns, key);
    }
    storage.apply(batch)?;
    Ok(old.len())
}

/// Receives the transaction's PDUs and returns the answer (`pdus`: the
/// result of each, by event id), stored for a repeat.
pub async fn receive(
    receipt: &Receipt<'_>,
    storage: &Storage,
    txn_id: &str,
    transaction: Transaction,
) -> Result<Value> {
    if let Some(answer) = answered(storage, receipt.origin, txn_id)? {
        return Ok(answer);
    }
    if transaction.pdus.len() > MAX_PDUS || transaction.edus.len() > MAX_EDUS {
        return Err(Error::bad_json(format!("A transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs")));
    }
    if let Some(sinks) = receipt.edu_sinks {
        crate::federation::edu::receive(receipt.federation, receipt.rooms, sinks, receipt.origin, &transaction.edus)
            .await;
    }
    let mut by_room: BTreeMap<OwnedRoomId, Vec<Value>> = BTreeMap::new();
    for pdu in transaction.pdus {
        match format::room_id_of(&pdu) {
            Some(room_id) => by_room.entry(room_id).or_default().push(pdu),
            None => tracing::info!(origin = %receipt.origin, "a PDU without a valid room id was dropped"),
        }
    }
    let rooms = by_room.into_iter().map(|(room_id, pdus)| receive_room(receipt, room_id, pdus));
    let mut results = Map::new();
    for room_results in futures_util::future::join_all(rooms).await {
        results.extend(room_results?);
    }
    let answer = json!({ "pdus": results });
    let mut batch = Batch::new();
    let record = TxnAnswerRecord { answer: answer.to_string(), received_ts: crate::util::now_ms() };
    batch.insert(&storage.tables.federation_txns, &(receipt.origin.to_string(), txn_id.to_owned()), &record)?;
    storage.commit(batch).await?;
    Ok(answer)
}

/// Longest a transaction waits for a join of its room in progress here.
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Waits (bounded) while this server is joining `room_id` and has not
/// stored it yet: the room's events then find it.
async fn wait_for_join_in_flight(receipt: &Receipt<'_>, room_id: &OwnedRoomId) -> Result<()> {
    let deadline = tokio::time::Instant::now() + JOIN_WAIT;
    while receipt.federation.joins_in_flight.is_joining(room_id)
        && receipt.rooms.room(room_id)?.is_none()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// One room's PDUs, in order, under its lock: each one's result.
async fn receive_room(receipt: &Receipt<'_>, room_id: OwnedRoomId, pdus: Vec<Value>) -> Result<Map<String, Value>> {
    wait_for_join_in_flight(receipt, &room_id).await?;
    let mut results = Map::new();
    if let Err(denied) = receipt.rooms.check_server_acl(&room_id, receipt.origin) {
        for json in &pdus {
            if let Ok((pdu, _)) = format::parse(receipt.rooms, &room_id, json) {
                results.insert(pdu.event_id().to_string(), json!({ "error": denied.message }));
            }
        }
        return Ok(results);
    }
    // Steps 1–3 (signatures may mean fetching keys) before the room is locked.
    let mut checked = Vec::with_capacity(pdus.len());
    for json in pdus {
        match receipt.checked(&room_id, &json).await {
            Ok(pdu) => checked.push(pdu),
            Err(dropped) => {
                tracing::info!(room = %room_id, origin = %receipt.origin, %dropped, "PDU dropped");
                if let Some(event_id) = json.get("event_id").and_then(Value::as_str) {
                    results.insert(event_id.to_owned(), json!({ "error": dropped.to_string() }));
                }
            }
        }
    }
    let _guard = receipt.rooms.locks.lock(&room_id).await;
    for pdu in checked {
        forget_changed_profile(receipt, &pdu);
        let result = match receipt.receive(&pdu).await {
            Ok(Verdict::Accept | Verdict::SoftFail(_)) => json!({}),
            Ok(Verdict::Reject(Refusal::AuthRules(reason) | Refusal::Policy(reason))) => json!({ "error": reason }),
            // Our own fault (storage): the whole transaction fails, the peer retries it.
            Err(error) if error.kind == ErrorKind::Internal => return Err(error),
            // The event could not be placed (a gap no peer filled): not stored, said so.
            Err(error) => {
                tracing::info!(event = %pdu.event_id(), origin = %receipt.origin, %error, "PDU not processed");
                json!({ "error": error.message })
            }
        };
        results.insert(pdu.event_id().to_string(), result);
    }
    Ok(results)
}

/// A member event of a user about themselves may carry a new profile: the
/// copy kept of it is dropped (the next read asks their server).
fn forget_changed_profile(receipt: &Receipt<'_>, pdu: &crate::events::Pdu) {
    if pdu.kind().to_string() == crate::events::kinds::MEMBER && pdu.state_key_str() == Some(pdu.sender_str()) {
        if let Ok(user_id) = ruma::UserId::parse(pdu.sender_str()) {
            receipt.federation.profiles.forget(&user_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_forgotten_after_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), 8 << 20).unwrap();
        let now = 10 * ANSWER_KEPT_MS;
        let mut batch = Batch::new();
        for (txn, age) in [("old", ANSWER_KEPT_MS + 1), ("recent", ANSWER_KEPT_MS - 1)] {
            let record = TxnAnswerRecord { answer: "{}".into(), received_ts: now - age };
            batch.insert(&storage.tables.federation_txns, &("a.test".to_owned(), txn.to_owned()), &record).unwrap();
        }
        storage.apply(batch).unwrap();
        assert_eq!(forget_old_answers(&storage, now).unwrap(), 1);
        let origin = <&ServerName>::try_from("a.test").unwrap();
        assert!(answered(&storage, origin, "old").unwrap().is_none());
        assert!(answered(&storage, origin, "recent").unwrap().is_some());
    }
}
