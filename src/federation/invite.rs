//! Invites across servers (server-server API "Inviting to a room",
//! `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`).
//!
//! Receiving: the invite of one of our users, signed by the inviting server
//! (the sender's), is countersigned by this server and handed back; when
//! this server is not in the room, it is kept with the stripped state it
//! came with (`rooms::invites`) so the user sees it in `/sync`. Sending: a
//! local user's invite of another server's user goes to that server first;
//! the event is stored only with its signature. Declining an invite to a
//! room this server is not in goes through `/make_leave` and `/send_leave`
//! on the inviting server.

use ruma::state_res::Event as _;
use ruma::{
    room_version_rules::RoomVersionRules, serde::Base64, signatures::PublicKeyMap, OwnedServerName, RoomId,
    RoomVersionId, ServerName, UserId,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    receive::{checked_with, format},
    Federation,
};
use crate::{
    error::{Error, ErrorKind, Result},
    events::{countersign, kinds, room_version, Pdu},
    http::request::percent_encode,
    rooms::{Membership, Rooms},
};

/// The body of `PUT /v2/invite`.
#[derive(Debug, Deserialize)]
pub struct InviteRequest {
    pub event: Value,
    pub room_version: String,
    #[serde(default)]
    pub invite_room_state: Vec<Value>,
}

impl Federation {
    /// Receives `origin`'s invite of a local user: checked, countersigned,
    /// kept when this server is not in the room; the countersigned event.
    pub async fn receive_invite(
        &self,
        rooms: &Rooms,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &str,
        request: InviteRequest,
    ) -> Result<Value> {
        let version = RoomVersionId::try_from(request.room_version.as_str())
            .map_err(|_| Error::bad_json("Invalid room version"))?;
        if !room_version::can_join(&version) {
            return Err(Error::new(
                ErrorKind::IncompatibleRoomVersion { room_version: version.to_string() },
                format!("This server does not support room version {version}"),
            ));
        }
        rooms.check_server_acl(room_id, origin)?;
        let rules = room_version::rules(&version)?;
        let pdu = format::parse_with(&request.event, &rules).map_err(|d| Error::bad_json(d.0))?;
        if pdu.event_id().as_str() != event_id || pdu.room_id_or_derived() != room_id {
            return Err(Error::bad_json("The event does not match the request's room and event ids"));
        }
        if pdu.kind().to_string() != kinds::MEMBER || crate::rooms::membership_of(&pdu) != Some(Membership::Invite) {
            return Err(Error::bad_json("Not an invite"));
        }
        if pdu.sender().server_name() != origin {
            return Err(Error::forbidden("A server may only send its own users' invites"));
        }
        let invitee = pdu.state_key_str().and_then(|key| UserId::parse(key).ok());
        if invitee.as_ref().is_none_or(|user| user.server_name() != self.server_name) {
            return Err(Error::bad_json("The invitee is not a user of this server"));
        }
        let checked = checked_with(self, &request.event, &rules).await.map_err(|d| Error::forbidden(d.0))?;
        let signed = countersign(&checked, &rules, &self.key, &self.server_name)?;
        let here = match rooms.room(room_id)? {
            Some(room) => rooms.server_in_room(&room, &self.server_name)?,
            None => false,
        };
        if !here {
            rooms.store_remote_invite(&signed, &request.invite_room_state).await?;
        }
        tracing::info!(room = %room_id, %origin, invitee = ?invitee, "invite received from another server");
        Ok(json!({ "event": serde_json::from_str::<Value>(&signed.to_canonical_json()).unwrap_or(Value::Null) }))
    }

    /// Sends a local user's invite to the invitee's server; the event with
    /// that server's signature (checked) added.
    pub async fn send_invite(&self, invite: &Pdu, version: &RoomVersionId, stripped_state: Vec<Value>) -> Result<Pdu> {
        let invitee = invite
            .state_key_str()
            .and_then(|key| UserId::parse(key).ok())
            .ok_or_else(|| Error::invalid_param("Invalid invitee"))?;
        let room_id = invite.room_id_or_derived();
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            percent_encode(room_id.as_str()),
            percent_encode(invite.event_id().as_str())
        );
        let body = json!({
            "event": serde_json::from_str::<Value>(&invite.to_canonical_json()).unwrap_or(Value::Null),
            "room_version": version,
            "invite_room_state": stripped_state,
        });
        let answer = self.request(invitee.server_name(), "PUT", &path, Some(&body)).await?;
        let rules = room_version::rules(version)?;
        let signed = format::parse_with(&answer["event"], &rules).map_err(|d| Error::forbidden(d.0))?;
        if signed.event_id() != invite.event_id() {
            return Err(Error::forbidden("The invitee's server answered another event"));
        }
        self.verify_signed_by(&signed, &rules, invitee.server_name()).await?;
        Ok(signed)
    }

    /// Checks that `server` signed the event (over its redacted form).
    async fn verify_signed_by(&self, pdu: &Pdu, rules: &RoomVersionRules, server: &ServerName) -> Result<()> {
        let object = pdu.as_object();
        let redacted = ruma::canonical_json::redact(object.clone(), &rules.redaction, None)
            .map_err(|e| Error::forbidden(format!("The event cannot be redacted: {e}")))?;
        let mut keys = PublicKeyMap::new();
        let Some(ruma::CanonicalJsonValue::Object(signatures)) = object.get("signatures") else {
            return Err(Error::forbidden("The event is not signed"));
        };
        for (signer, by_key) in signatures {
            let ruma::CanonicalJsonValue::Object(by_key) = by_key else { continue };
            let mut set = std::collections::BTreeMap::new();
            for key_id in by_key.keys().filter(|id| id.starts_with("ed25519:")) {
                if let Ok(key) = self.server_key(signer, key_id, pdu.origin_server_ts_millis()).await {
                    if let Ok(key) = Base64::parse(key) {
                        set.insert(key_id.clone(), key);
                    }
                }
            }
            keys.insert(signer.clone(), set);
        }
        if !signatures.contains_key(server.as_str()) {
            return Err(Error::forbidden(format!("{server} did not sign the event")));
        }
        ruma::signatures::verify_json(&keys, &redacted)
            .map_err(|e| Error::forbidden(format!("A signature of the event does not verify: {e}")))
    }

    /// Declines an invite to a room this server is not in, through the
    /// servers that may know the room (the inviter's first).
    pub async fn reject_remote_invite(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
        user_id: &UserId,
        via: &[OwnedServerName],
        reason: Option<String>,
    ) -> Result<()> {
        let leave = self
            .through_each_server(via, room_id, "decline the invite", |server| {
                self.leave_through(server, room_id, user_id, reason.clone())
            })
            .await?;
        rooms.store_invite_rejection(user_id, room_id, &leave).await
    }

    async fn leave_through(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        reason: Option<String>,
    ) -> Result<Pdu> {
        let mut content = json!({ "membership": "leave" });
        if let Some(reason) = reason {
            content["reason"] = json!(reason);
        }
        let (leave, _) = self.membership_handshake(server, room_id, user_id, Membership::Leave, content).await?;
        Ok(leave)
    }
}
