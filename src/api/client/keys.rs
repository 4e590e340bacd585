//! End-to-end encryption endpoints: `/keys/upload`, `/keys/query`,
//! `/keys/claim`, `/keys/changes`, `/keys/device_signing/upload`,
//! `/keys/signatures/upload`, `/sendToDevice/{eventType}/{txnId}`.
//!
//! Spec: client-server API "End-to-End Encryption" and "Send-to-Device
//! messaging" (`keys.yaml`, `cross_signing.yaml`, `to_device.yaml`). The
//! logic lives in [`crate::e2ee`].

use std::collections::{BTreeMap, BTreeSet, HashSet};

use ruma::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::events::kinds;
use crate::rooms::Membership;
use crate::{
    e2ee::{cross_signing::SigningKeys, dehydrated::NewDehydratedDevice},
    error::{Error, ErrorKind, Result},
    http::{Request, Response},
    services::Services,
    sync::parse_since,
    users::Identity,
};

use super::account::require_password;

#[derive(Debug, Deserialize)]
struct UploadBody {
    device_keys: Option<Value>,
    one_time_keys: Option<Value>,
    fallback_keys: Option<Value>,
    #[serde(rename = "org.matrix.msc2732.fallback_keys")]
    unstable_fallback_keys: Option<Value>,
}

pub async fn upload(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: UploadBody = request.json()?;
    let fallback = body.fallback_keys.as_ref().or(body.unstable_fallback_keys.as_ref());
    let counts = s.e2ee.upload_keys(who, body.device_keys.as_ref(), body.one_time_keys.as_ref(), fallback).await?;
    Ok(Response::json(&json!({ "one_time_key_counts": counts })))
}

#[derive(Debug, Deserialize)]
struct QueryBody {
    device_keys: BTreeMap<OwnedUserId, Vec<String>>,
}

pub async fn query(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: QueryBody = request.json()?;
    let mut answer = s.e2ee.query(who, &body.device_keys)?;
    s.federation.query_remote_keys(&s.rooms, &who.user_id, &body.device_keys, &mut answer).await?;
    Ok(Response::json(&answer))
}

#[derive(Debug, Deserialize)]
struct ClaimBody {
    one_time_keys: BTreeMap<OwnedUserId, BTreeMap<String, String>>,
}

pub async fn claim(s: &Services, request: &Request) -> Result<Response> {
    let body: ClaimBody = request.json()?;
    let mut answer = s.e2ee.claim(&body.one_time_keys).await?;
    s.federation.claim_remote_keys(&body.one_time_keys, &mut answer).await;
    Ok(Response::json(&answer))
}

/// `GET /keys/changes?from=&to=`: users sharing a room with the caller whose
/// keys changed between two sync tokens (`changed`), and users who stopped
/// sharing any room with the caller in that span (`left`).
pub fn changes(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let token = |name: &str| -> Result<u64> {
        let value =
            request.query(name).ok_or_else(|| Error::new(ErrorKind::MissingParam, format!("`{name}` is required")))?;
        parse_since(value)
    };
    let (from, to) = (token("from")?, token("to")?);
    let upto = to.min(s.rooms.current_position()?);
    let mine: HashSet<OwnedRoomId> = s.rooms.joined_rooms(&who.localpart)?.into_iter().collect();
    let shares_a_room =
        |user: &ruma::UserId| -> Result<bool> { Ok(user == who.user_id || s.rooms.joined_to_any(user, &mine)?) };
    let mut changed = BTreeSet::new();
    for user in s.e2ee.users_with_key_changes(from, upto)? {
        if shares_a_room(&user)? {
            changed.insert(user.to_string());
        }
    }
    changed.extend(s.e2ee.private_key_changes(&who.localpart, from, upto)?.iter().map(ToString::to_string));
    // Rooms the caller joined in the span: their members' devices are news.
    changed.extend(newly_shared(s, who, &mine, from, upto)?);
    let mut left = BTreeSet::new();
    for user in departures(s, who, from, upto)? {
        if !shares_a_room(&user)? && !changed.contains(&user.to_string()) {
            left.insert(user.to_string());
        }
    }
    Ok(Response::json(&json!({ "changed": changed, "left": left })))
}

/// The members of the rooms the caller joined in `(from, upto]`.
fn newly_shared(
    s: &Services,
    who: &Identity,
    mine: &HashSet<OwnedRoomId>,
    from: u64,
    upto: u64,
) -> Result<Vec<String>> {
    let mut users = BTreeSet::new();
    for room_id in mine {
        let Some(room) = s.rooms.room(room_id)? else { continue };
        let state = s.rooms.current_state(&room)?;
        let joined_at =
            s.rooms.state_record_in(&state, kinds::MEMBER, who.user_id.as_str())?.map(|(_, stored)| stored.count);
        if joined_at.is_some_and(|count| count > from && count <= upto) {
            users.extend(s.rooms.joined_members_in(&state)?.into_iter().map(|user| user.to_string()));
        }
    }
    users.remove(who.user_id.as_str());
    Ok(users.into_iter().collect())
}

/// Users whose membership in one of the caller's rooms (joined, or left
/// since `from`) became `leave` or `ban` in `(from, upto]`, and everyone in
/// the rooms the caller left then.
fn departures(s: &Services, who: &Identity, from: u64, upto: u64) -> Result<BTreeSet<OwnedUserId>> {
    let mut users = BTreeSet::new();
    for (room_id, _) in s.rooms.memberships_of(&who.localpart)? {
        let Some(room) = s.rooms.room(&room_id)? else { continue };
        let mut position = from + 1;
        'pages: loop {
            let page = s.rooms.timeline_page(&room, position, false, 200)?;
            let last_page = page.len() < 200;
            for (count, event_id) in page {
                if count > upto {
                    break 'pages;
                }
                position = count + 1;
                let Some((pdu, _)) = s.rooms.get_pdu(&event_id)? else { continue };
                if pdu.kind().to_string() != kinds::MEMBER {
                    continue;
                }
                let Some(user) = pdu.state_key_str().and_then(|u| ruma::UserId::parse(u).ok()) else { continue };
                if !crate::rooms::membership_of(&pdu).is_some_and(Membership::is_out) {
                    continue;
                }
                if user == who.user_id {
                    // The caller left: the room's members may no longer share a room with them.
                    let state = s.rooms.current_state(&room)?;
                    users.extend(s.rooms.joined_members_in(&state)?);
                } else {
                    users.insert(user);
                }
            }
            if last_page {
                break;
            }
        }
    }
    users.remove(&who.user_id);
    Ok(users)
}

#[derive(Debug, Deserialize)]
struct SigningKeysBody {
    master_key: Option<Value>,
    self_signing_key: Option<Value>,
    user_signing_key: Option<Value>,
    auth: Option<Value>,
}

/// `POST /keys/device_signing/upload`: replacing an existing master key needs
/// user-interactive authentication.
pub async fn upload_signing_keys(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: SigningKeysBody = request.json()?;
    let keys = SigningKeys {
        master: body.master_key,
        self_signing: body.self_signing_key,
        user_signing: body.user_signing_key,
    };
    if s.e2ee.replaces_master_key(who, &keys)? {
        require_password(s, request, who, "POST /keys/device_signing/upload", body.auth.as_ref()).await?;
    }
    s.e2ee.upload_signing_keys(who, keys).await?;
    Ok(Response::empty_object())
}

pub async fn upload_signatures(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: Map<String, Value> = request.json()?;
    Ok(Response::json(&s.e2ee.upload_signatures(who, &body).await?))
}

#[derive(Debug, Deserialize)]
struct ToDeviceBody {
    messages: BTreeMap<OwnedUserId, Map<String, Value>>,
}

/// `PUT /sendToDevice/{eventType}/{txnId}`, idempotent per device and transaction.
pub async fn send_to_device(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: ToDeviceBody = request.json()?;
    let (event_type, txn_id) = (request.param("event_type")?, request.param("txn_id")?);
    s.e2ee.send_to_device(who, event_type, txn_id, &body.messages).await?;
    s.federation.send_remote_to_device(&s.rooms, &who.user_id, &who.device_id, event_type, txn_id, &body.messages);
    Ok(Response::empty_object())
}

#[derive(Debug, Deserialize)]
struct DehydratedDeviceBody {
    device_id: String,
    device_data: Value,
    initial_device_display_name: Option<String>,
    device_keys: Option<Value>,
    one_time_keys: Option<Value>,
    fallback_keys: Option<Value>,
}

/// `PUT /unstable/org.matrix.msc3814.v1/dehydrated_device`.
pub async fn put_dehydrated_device(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: DehydratedDeviceBody = request.json()?;
    if !body.device_data.is_object() {
        return Err(Error::bad_json("device_data must be an object"));
    }
    let new = NewDehydratedDevice {
        device_id: body.device_id,
        device_data: body.device_data,
        display_name: body.initial_device_display_name,
        device_keys: body.device_keys,
        one_time_keys: body.one_time_keys,
        fallback_keys: body.fallback_keys,
    };
    let device_id = s.e2ee.put_dehydrated_device(who, new).await?;
    Ok(Response::json(&json!({ "device_id": device_id })))
}

pub fn get_dehydrated_device(s: &Services, who: &Identity) -> Result<Response> {
    let device = s.e2ee.dehydrated_device(&who.localpart)?.ok_or_else(|| Error::not_found("No dehydrated device"))?;
    Ok(Response::json(&device))
}

pub async fn delete_dehydrated_device(s: &Services, who: &Identity) -> Result<Response> {
    let device_id = s.e2ee.delete_dehydrated_device(who).await?;
    Ok(Response::json(&json!({ "device_id": device_id })))
}

#[derive(Debug, Default, Deserialize)]
struct DehydratedEventsBody {
    next_batch: Option<String>,
}

pub fn dehydrated_device_events(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: DehydratedEventsBody = request.json()?;
    let events = s.e2ee.dehydrated_device_events(who, request.param("device_id")?, body.next_batch.as_deref())?;
    Ok(Response::json(&events))
}
