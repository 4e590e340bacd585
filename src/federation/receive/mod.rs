//! Receiving events from other servers: server-server API "Checks performed
//! on receipt of a PDU", one file per check, in the spec's order:
//!
//! 1. [`format`] — is a valid event of its room version, else dropped;
//! 2. [`signatures`] — passes signature checks, else dropped;
//! 3. [`content_hash`] — passes hash checks, else redacted before going on;
//! 4. [`auth_events`] — passes the authorization rules against its own auth
//!    events (fetched from the sender when unknown), else rejected;
//! 5. [`state_before`] — passes them against the state before it (from its
//!    prev events: fetched with `/get_missing_events`, or the state at a gap
//!    with `/state_ids`), else rejected; the deployment's `EventPolicy` here;
//! 6. [`current_state`] — passes them against the room's current state, else
//!    soft-failed.
//!
//! Steps 4–6 are the event pipeline's authorise step (the same rules and
//! policy as a local event); the event is then stored by its persist step
//! (`rooms::pipeline::remote`), so it is indexed, notified and synced as a
//! local one. [`transaction`] is `PUT /send/{txnId}`: idempotent per
//! (origin, transaction id), rooms processed concurrently, one room in order.

pub mod auth_events;
pub mod content_hash;
pub mod current_state;
pub mod format;
pub mod signatures;
pub mod state_before;
pub mod transaction;

use ruma::{OwnedRoomId, ServerName};
use serde_json::Value;

use super::{Federation, FederationError};
use crate::{
    error::Result,
    events::Pdu,
    http::request::percent_encode,
    rooms::{pipeline::Verdict, Rooms},
};

/// Whether a gap before an event may be filled with `/get_missing_events`
/// (not for events that arrived that way: their own gaps are bridged by
/// the state at them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapFill {
    MissingEvents,
    StateOnly,
}

/// Why an event was not stored at all (steps 1 and 2).
#[derive(Debug)]
pub struct Dropped(pub String);

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Steps 1–3 under given rules (a room being joined has no record yet).
pub async fn checked_with(
    federation: &Federation,
    json: &Value,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> std::result::Result<Pdu, Dropped> {
    let pdu = format::parse_with(json, rules)?;
    let verified = signatures::verify(federation, &pdu, rules).await?;
    content_hash::redact_on_mismatch(pdu, verified, rules)
}

/// Most requests one receipt (a transaction, a join, a backfill) makes to
/// fetch what its events lack.
pub const FETCH_BUDGET: usize = 1_000;
/// How long one receipt may spend fetching: a slow or hostile peer cannot
/// hold a room (its lock) for longer.
pub const FETCH_TIME: std::time::Duration = std::time::Duration::from_secs(120);

/// The receipt of events from one server: where missing events are asked
/// for, within a budget of requests and of time.
pub struct Receipt<'a> {
    pub rooms: &'a Rooms,
    pub federation: &'a Federation,
    pub origin: &'a ServerName,
    /// Where EDUs go (a transaction's receipt only).
    pub edu_sinks: Option<crate::federation::edu::EduSinks<'a>>,
    fetches_left: std::sync::atomic::AtomicUsize,
    deadline: std::time::Instant,
}

impl<'a> Receipt<'a> {
    pub fn new(rooms: &'a Rooms, federation: &'a Federation, origin: &'a ServerName) -> Self {
        Self {
            rooms,
            federation,
            origin,
            edu_sinks: None,
            fetches_left: std::sync::atomic::AtomicUsize::new(FETCH_BUDGET),
            deadline: std::time::Instant::now() + FETCH_TIME,
        }
    }
}

impl Receipt<'_> {
    /// Steps 1–3: a PDU JSON of `room_id` as a checked event (redacted if its
    /// content hash does not match).
    pub async fn checked(&self, room_id: &OwnedRoomId, json: &Value) -> std::result::Result<Pdu, Dropped> {
        let (_, rules) = format::parse(self.rooms, room_id, json)?;
        checked_with(self.federation, json, &rules).await
    }

    /// Whether the receipt's time for fetching is spent (checking fetched
    /// events, whose signers' keys may have to be fetched too, stops then).
    pub fn out_of_time(&self) -> bool {
        std::time::Instant::now() >= self.deadline
    }

    /// A signed request to the origin, its answer; refused once the
    /// receipt's budget of requests or time is spent.
    async fn ask(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, FederationError> {
        use std::sync::atomic::Ordering;
        let spent = self.fetches_left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1));
        let left = self.deadline.saturating_duration_since(std::time::Instant::now());
        if spent.is_err() || left.is_zero() {
            return Err(FederationError::BadAnswer("this receipt's budget of fetches is spent".into()));
        }
        match tokio::time::timeout(left, self.federation.request(self.origin, method, path, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(FederationError::Unreachable("this receipt's time for fetching is spent".into())),
        }
    }

    /// `GET /event/{eventId}` from the origin: the PDU's JSON.
    async fn fetch_event(&self, event_id: &ruma::EventId) -> Result<Value, FederationError> {
        let path = format!("/_matrix/federation/v1/event/{}", percent_encode(event_id.as_str()));
        let mut answer = self.ask("GET", &path, None).await?;
        let Some(pdu) = answer.get_mut("pdus").and_then(Value::as_array_mut).and_then(|pdus| pdus.pop()) else {
            return Err(FederationError::BadAnswer(format!("no event in the answer for {event_id}")));
        };
        // The event asked for, not another one: its id is computed from it.
        let room_id = format::room_id_of(&pdu).ok_or_else(|| FederationError::BadAnswer("no room id".into()))?;
        match format::parse(self.rooms, &room_id, &pdu) {
            Ok((parsed, _)) if parsed.event_id() == event_id => Ok(pdu),
            _ => Err(FederationError::BadAnswer(format!("the answer is not the event {event_id}"))),
        }
    }

    /// Steps 4–6 and storage of a checked timeline event (the room's lock
    /// held by the caller). Events already stored with their state are not
    /// processed again.
    pub async fn receive(&self, pdu: &Pdu) -> Result<Verdict> {
        self.receive_with(pdu, GapFill::MissingEvents).await
    }

    async fn receive_with(&self, pdu: &Pdu, gap: GapFill) -> Result<Verdict> {
        if let Some(verdict) = self.earlier_verdict(pdu)? {
            return Ok(verdict);
        }
        let room_id = pdu.room_id_or_derived();
        let mut room = self
            .rooms
            .room(&room_id)?
            .ok_or_else(|| crate::error::Error::not_found("This server is not in the room"))?;
        let (_, rules) = Rooms::rules_of(&room)?;
        if let Some(refusal) = auth_events::check(self, pdu, &rules).await? {
            return self.store(&mut room, pdu, refusal).await;
        }
        let (state_before, verdict) = state_before::check(self, pdu, &rules, gap).await?;
        // Filling a gap stored events and moved the room on: its record now.
        let mut room = self.rooms.room(&room_id)?.ok_or_else(|| crate::error::Error::not_found("The room is gone"))?;
        let verdict = match verdict {
            Verdict::Accept => current_state::check(self.rooms, pdu, &rules, &room)?,
            refused => refused,
        };
        let room_update = &mut room;
        let staged = self.rooms.store_remote(room_update, pdu, state_before, &verdict).await?;
        staged.durable().await?;
        tracing::debug!(room = %room_id, event = %pdu.event_id(), origin = %self.origin, ?verdict, "event received");
        Ok(verdict)
    }

    /// The verdict an event already received with its state got then.
    fn earlier_verdict(&self, pdu: &Pdu) -> Result<Option<Verdict>> {
        use crate::{rooms::pipeline::authorise::Refusal, storage::records::EventStatus};
        let Some((_, stored)) = self.rooms.get_pdu(pdu.event_id())? else { return Ok(None) };
        if stored.state_before.is_none() {
            return Ok(None);
        }
        Ok(Some(match stored.status {
            EventStatus::Accepted => Verdict::Accept,
            EventStatus::SoftFailed => Verdict::SoftFail("soft-failed when first received".into()),
            EventStatus::Rejected => Verdict::Reject(Refusal::AuthRules("rejected when first received".into())),
        }))
    }

    /// Stores a rejected event without a state (its auth events refused it).
    async fn store(&self, room: &mut crate::rooms::RoomRecord, pdu: &Pdu, verdict: Verdict) -> Result<Verdict> {
        self.rooms.store_outlier(room, pdu, crate::storage::records::EventStatus::Rejected).await?;
        tracing::info!(event = %pdu.event_id(), origin = %self.origin, ?verdict, "event rejected by its auth events");
        Ok(verdict)
    }
}
