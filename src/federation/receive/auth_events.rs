//! Receipt step 4: "Passes authorization rules based on the event's auth
//! events, otherwise it is rejected." Auth events this server does not hold
//! are fetched from the sending server (`/event_auth`, bounded), each
//! checked in turn (steps 1–4, oldest first) and stored as an outlier; an
//! event whose auth events are missing or rejected is rejected.

use std::collections::HashMap;

use ruma::state_res::Event as _;
use ruma::{room_version_rules::RoomVersionRules, OwnedEventId};
use serde_json::Value;

use super::Receipt;
use crate::{
    error::Result,
    events::{kinds, Pdu},
    http::request::percent_encode,
    rooms::{
        pipeline::{authorise::auth_rules_refusal, authorise::Refusal, EventView, StateView, Verdict},
        Rooms,
    },
    storage::records::EventStatus,
};

/// Most events of an auth chain fetched for one event.
pub const MAX_AUTH_CHAIN: usize = 10_000;

/// The auth events of an event, as the state its rules are checked against.
pub struct AuthEventsState(HashMap<(String, String), Pdu>);

impl StateView for AuthEventsState {
    fn state_event(&self, kind: &str, state_key: &str) -> Result<Option<Pdu>> {
        Ok(self.0.get(&(kind.to_owned(), state_key.to_owned())).cloned())
    }

    fn member_events(&self) -> Result<Vec<Pdu>> {
        Ok(self.0.iter().filter(|((kind, _), _)| kind == kinds::MEMBER).map(|(_, pdu)| pdu.clone()).collect())
    }
}

/// `Some(rejection)` when the event's auth events refuse it.
pub async fn check(receipt: &Receipt<'_>, pdu: &Pdu, rules: &RoomVersionRules) -> Result<Option<Verdict>> {
    let missing = missing_auth_events(receipt.rooms, pdu)?;
    if !missing.is_empty() {
        fetch_auth_chain(receipt, pdu).await?;
    }
    Ok(refusal(receipt.rooms, pdu, rules)?.map(|reason| Verdict::Reject(Refusal::AuthRules(reason))))
}

/// Why the rules refuse `pdu` against its own auth events (all of which
/// must be stored and accepted), if they do.
pub fn refusal(rooms: &Rooms, pdu: &Pdu, rules: &RoomVersionRules) -> Result<Option<String>> {
    for auth_id in pdu.auth_events() {
        if rooms.get_pdu(auth_id)?.is_some_and(|(_, stored)| stored.status == EventStatus::Rejected) {
            return Ok(Some(format!("auth event {auth_id} was rejected")));
        }
    }
    refusal_among(pdu, rules, rooms)
}

/// An auth event that could not be had: the event can be neither accepted
/// nor rejected, and is not stored (it may be received again later).
pub fn unknown_auth_event(auth_id: &ruma::EventId) -> crate::error::Error {
    crate::error::Error::new(crate::error::ErrorKind::BadState, format!("auth event {auth_id} is unknown"))
}

/// Whether an error is [`unknown_auth_event`]'s.
pub fn is_unknown_auth_event(error: &crate::error::Error) -> bool {
    error.kind == crate::error::ErrorKind::BadState && error.message.starts_with("auth event ")
}

/// Why the rules refuse `pdu` against its own auth events, taken from
/// `events` (accepted events only), if they do; an error when one of them
/// is unknown ([`unknown_auth_event`]).
pub fn refusal_among(pdu: &Pdu, rules: &RoomVersionRules, events: &dyn EventView) -> Result<Option<String>> {
    let mut state = HashMap::new();
    for auth_id in pdu.auth_events() {
        let Some(auth) = events.event(auth_id)? else {
            return Err(unknown_auth_event(auth_id));
        };
        if let Some(state_key) = auth.state_key_str() {
            state.insert((auth.kind().to_string(), state_key.to_owned()), auth.clone());
        }
    }
    // From version 12 the create event is not an auth event: the room id names it.
    if !rules.event_format.allow_room_create_in_auth_events && pdu.kind().to_string() != kinds::CREATE {
        let room_id = pdu.room_id_or_derived();
        let create_id = OwnedEventId::try_from(format!("${}", &room_id.as_str()[1..]))
            .map_err(|_| crate::error::Error::bad_json("The room id names no create event"))?;
        match events.event(&create_id)? {
            Some(create) => {
                state.insert((kinds::CREATE.to_owned(), String::new()), create);
            }
            None => return Err(unknown_auth_event(&create_id)),
        }
    }
    auth_rules_refusal(pdu, rules, events, &AuthEventsState(state))
}

fn missing_auth_events(rooms: &Rooms, pdu: &Pdu) -> Result<Vec<OwnedEventId>> {
    let mut missing = Vec::new();
    for auth_id in pdu.auth_events() {
        if rooms.get_pdu(auth_id)?.is_none() {
            missing.push(auth_id.clone());
        }
    }
    Ok(missing)
}

/// Fetches `pdu`'s auth chain from the origin and stores, oldest first,
/// every event of it this server lacks, as an outlier accepted or rejected
/// by its own auth events. Events failing steps 1–2 are left out.
async fn fetch_auth_chain(receipt: &Receipt<'_>, pdu: &Pdu) -> Result<()> {
    let room_id = pdu.room_id_or_derived();
    let path = format!(
        "/_matrix/federation/v1/event_auth/{}/{}",
        percent_encode(room_id.as_str()),
        percent_encode(pdu.event_id().as_str())
    );
    let answer = match receipt.ask("GET", &path, None).await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::info!(event = %pdu.event_id(), origin = %receipt.origin, %error, "could not fetch an auth chain");
            return Ok(());
        }
    };
    let chain = answer.get("auth_chain").and_then(Value::as_array).cloned().unwrap_or_default();
    store_checked_outliers(receipt, &room_id, chain.iter().take(MAX_AUTH_CHAIN)).await
}

/// Checks each event (steps 1–3), then stores, oldest first, those not yet
/// stored as outliers accepted or rejected by their auth events.
pub async fn store_checked_outliers<'v>(
    receipt: &Receipt<'_>,
    room_id: &ruma::OwnedRoomId,
    events: impl Iterator<Item = &'v Value>,
) -> Result<()> {
    let mut checked = Vec::new();
    for json in events {
        if receipt.out_of_time() {
            tracing::info!(origin = %receipt.origin, "out of time checking fetched events; the rest is left out");
            break;
        }
        match receipt.checked(room_id, json).await {
            Ok(event) if event.room_id_or_derived() == *room_id => checked.push(event),
            Ok(event) => tracing::info!(event = %event.event_id(), "an event of another room was left out"),
            Err(dropped) => tracing::info!(origin = %receipt.origin, %dropped, "a fetched event was dropped"),
        }
    }
    checked.sort_by_key(Pdu::depth);
    let Some(mut room) = receipt.rooms.room(room_id)? else { return Ok(()) };
    let (_, rules) = Rooms::rules_of(&room)?;
    for event in checked {
        if receipt.rooms.get_pdu(event.event_id())?.is_some() {
            continue;
        }
        let status = match refusal(receipt.rooms, &event, &rules) {
            Ok(None) => EventStatus::Accepted,
            Ok(Some(reason)) => {
                tracing::info!(event = %event.event_id(), %reason, "a fetched event is rejected");
                EventStatus::Rejected
            }
            Err(error) if is_unknown_auth_event(&error) => {
                tracing::info!(event = %event.event_id(), %error, "a fetched event left out");
                continue;
            }
            Err(error) => return Err(error),
        };
        receipt.rooms.store_outlier(&mut room, &event, status).await?;
    }
    Ok(())
}
