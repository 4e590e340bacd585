//! Joining, inviting, leaving.
//!
//! Spec: client-server API "Room membership" (`POST /rooms/{roomId}/join`,
//! `POST /join/{roomIdOrAlias}`, `POST /rooms/{roomId}/invite`,
//! `POST /rooms/{roomId}/leave`). Each is a member event through the
//! pipeline, so the room version's rules decide (join rules, bans, power to
//! invite). A room this server is not in is joined through another server
//! (`federation::membership`): those named by `server_name`/`via`, the
//! alias's servers, the room id's server.

use ruma::{RoomId, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::events::kinds;
use crate::rooms::{Membership, RemoteInvite};
use crate::{
    error::{Error, ErrorKind, Result},
    http::{Request, Response},
    rooms::EventRequest,
    services::Services,
    users::Identity,
};

#[derive(Debug, Default, Deserialize)]
struct ReasonBody {
    reason: Option<String>,
}

fn member_content(membership: &str, reason: Option<String>) -> Value {
    let mut content = json!({ "membership": membership });
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    content
}

/// A room id, or a local alias resolved to one; the room must be known here.
pub fn known_room(s: &Services, target: &str) -> Result<ruma::OwnedRoomId> {
    let room_id = if target.starts_with('#') {
        let alias = ruma::RoomAliasId::parse(target).map_err(|_| Error::invalid_param("Invalid room alias"))?;
        s.rooms.resolve_alias(&alias)?.ok_or_else(|| Error::not_found(format!("Room alias {alias} not found")))?
    } else {
        RoomId::parse(target).map_err(|_| Error::invalid_param("Invalid room id"))?
    };
    if s.rooms.room(&room_id)?.is_none() {
        return Err(Error::not_found("Unknown room (rooms of other servers are not reachable yet)"));
    }
    Ok(room_id)
}

/// A room to join: its id, and servers that may know it (a remote alias's).
async fn join_target(s: &Services, target: &str) -> Result<(ruma::OwnedRoomId, Vec<String>)> {
    if let Some(alias) = target.strip_prefix('#').map(|_| ruma::RoomAliasId::parse(target)) {
        let alias = alias.map_err(|_| Error::invalid_param("Invalid room alias"))?;
        if alias.server_name() != s.config.server_name {
            return s.federation.resolve_remote_alias(&alias).await;
        }
    }
    if let Ok(room_id) = RoomId::parse(target) {
        return Ok((room_id, Vec::new()));
    }
    Ok((known_room(s, target)?, Vec::new()))
}

/// The server of whoever invited the user to a room of another server, if
/// an invite is pending: the server to join or decline through.
fn inviter_server(invite: &RemoteInvite) -> Option<String> {
    let event: Value = serde_json::from_str(&invite.event).unwrap_or_default();
    event["sender"].as_str().and_then(|sender| UserId::parse(sender).ok()).map(|user| user.server_name().to_string())
}

pub async fn join(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let (room_id, alias_servers) = join_target(s, request.param("room_id_or_alias")?).await?;
    if s.rooms.is_blocked(&room_id)? && !who.is_admin {
        return Err(Error::forbidden("This room has been blocked on this server"));
    }
    let mut content = super::profile::join_content(s, who)?;
    // The body's keys (`reason`, and any other a client adds) go into the
    // member event, as Synapse does; `third_party_signed` is for the invite,
    // the membership and the restricted-join authoriser are the server's.
    const SERVER_KEYS: [&str; 3] = ["third_party_signed", "membership", "join_authorised_via_users_server"];
    if let Value::Object(body) = request.json_object()? {
        for (key, value) in body {
            if !SERVER_KEYS.contains(&key.as_str()) {
                content[key] = value;
            }
        }
    }
    let mut named: Vec<&str> = request.query_all("server_name");
    named.extend(request.query_all("via"));
    named.extend(alias_servers.iter().map(String::as_str));
    let invite = s.rooms.remote_invite(&who.localpart, &room_id)?;
    let inviter = invite.as_ref().and_then(inviter_server);
    named.extend(inviter.as_deref());
    let mut via = crate::federation::membership::candidate_servers(&room_id, &named);
    via.retain(|server| *server != s.config.server_name);
    // A room of ours everyone here left is joined here again, unless a server is named.
    let remote = match s.rooms.room(&room_id)? {
        Some(room) => !s.rooms.server_in_room(&room, &s.config.server_name)? && !via.is_empty(),
        None => true,
    };
    if remote {
        if let Some(policy) = &s.policy {
            let pending = invite.filter(|invite| invite.rejection.is_none() && !invite.knock);
            let invite_state: Option<Vec<Value>> =
                pending.map(|invite| serde_json::from_str(&invite.stripped_state).unwrap_or_default());
            policy.check_remote_join(&who.user_id, &room_id, invite_state.as_deref())?;
        }
        s.federation.join_remote(&s.rooms, &room_id, &who.user_id, &via, content).await?;
        return Ok(Response::json(&json!({ "room_id": room_id })));
    }
    if let Some(authoriser) = s.rooms.restricted_join_authoriser(&room_id, &who.user_id)? {
        content["join_authorised_via_users_server"] = json!(authoriser);
    }
    // Joining again with the same member content changes nothing.
    let unchanged =
        s.rooms.identical_current_state(&room_id, &who.user_id, kinds::MEMBER, who.user_id.as_str(), &content)?;
    if unchanged.is_none() {
        let event = EventRequest::state(kinds::MEMBER, who.user_id.as_str(), content);
        s.rooms.append(&room_id, &who.user_id, event, None).await?;
    }
    Ok(Response::json(&json!({ "room_id": room_id })))
}

/// `POST /knock/{roomIdOrAlias}` (room versions 7 and later, `knock` join rules).
pub async fn knock(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let (room_id, alias_servers) = join_target(s, request.param("room_id_or_alias")?).await?;
    if s.rooms.is_blocked(&room_id)? && !who.is_admin {
        return Err(Error::forbidden("This room has been blocked on this server"));
    }
    let body: ReasonBody = request.json()?;
    let mut named: Vec<&str> = request.query_all("server_name");
    named.extend(request.query_all("via"));
    named.extend(alias_servers.iter().map(String::as_str));
    let mut via = crate::federation::membership::candidate_servers(&room_id, &named);
    via.retain(|server| *server != s.config.server_name);
    let here = match s.rooms.room(&room_id)? {
        Some(room) => s.rooms.server_in_room(&room, &s.config.server_name)? || via.is_empty(),
        None => false,
    };
    if !here {
        let content = member_content("knock", body.reason);
        s.federation.knock_remote(&s.rooms, &room_id, &who.user_id, &via, content).await?;
        return Ok(Response::json(&json!({ "room_id": room_id })));
    }
    let event = EventRequest::state(kinds::MEMBER, who.user_id.as_str(), member_content("knock", body.reason));
    s.rooms.append(&room_id, &who.user_id, event, None).await?;
    Ok(Response::json(&json!({ "room_id": room_id })))
}

/// `POST /rooms/{roomId}/forget`: only once the user has left (or was banned).
pub async fn forget(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = super::room_events::room_id_param(request)?;
    match s.rooms.membership(&room_id, &who.user_id)? {
        Some(Membership::Leave | Membership::Ban) => {}
        Some(_) => return Err(Error::new(ErrorKind::BadState, "Leave the room before forgetting it")),
        None => return Err(Error::not_found("You were never in this room")),
    }
    s.rooms.forget(&who.localpart, &room_id).await?;
    Ok(Response::empty_object())
}

#[derive(Debug, Deserialize)]
struct InviteBody {
    user_id: String,
    reason: Option<String>,
}

pub async fn invite(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = super::room_events::room_id_param(request)?;
    let body = request.json_object()?;
    if body.get("user_id").is_none() && body.get("medium").is_some() {
        // An invite by third-party identifier (spec: "Third-party invites").
        let body = crate::http::request::from_json_value(body)?;
        super::third_party_invites::invite_by_email(s, &room_id, who, body).await?;
        return Ok(Response::empty_object());
    }
    let body: InviteBody = crate::http::request::from_json_value(body)?;
    let invitee = UserId::parse(&body.user_id).map_err(|_| Error::invalid_param("Invalid user id"))?;
    if invitee.server_name() != s.config.server_name {
        invite_remote(s, &room_id, &who.user_id, &invitee, member_content("invite", body.reason)).await?;
        return Ok(Response::empty_object());
    }
    if s.users.get_active(invitee.localpart())?.is_none() {
        return Err(Error::not_found("No such user"));
    }
    let event = EventRequest::state(kinds::MEMBER, invitee.as_str(), member_content("invite", body.reason));
    s.rooms.append(&room_id, &who.user_id, event, None).await?;
    Ok(Response::empty_object())
}

/// Invites another server's user: the invite event (`content`) is signed
/// by the invitee's server before it is stored and sent to the room.
pub async fn invite_remote(
    s: &Services,
    room_id: &RoomId,
    inviter: &UserId,
    invitee: &UserId,
    content: Value,
) -> Result<()> {
    let event = EventRequest::state(kinds::MEMBER, invitee.as_str(), content);
    let federation = &s.federation;
    s.rooms
        .append_countersigned(room_id, inviter, event, |pdu, version, stripped| async move {
            federation.send_invite(&pdu, &version, stripped).await
        })
        .await?;
    Ok(())
}

pub async fn leave(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = super::room_events::room_id_param(request)?;
    let body: ReasonBody = request.json()?;
    if let Some(invite) = s.rooms.remote_invite(&who.localpart, &room_id)? {
        // An invite to a room this server is not in: declined through the inviter's server.
        if invite.rejection.is_some() {
            return Ok(Response::empty_object());
        }
        let inviter = inviter_server(&invite);
        let named: Vec<&str> = inviter.iter().map(String::as_str).collect();
        let via = crate::federation::membership::candidate_servers(&room_id, &named);
        s.federation.reject_remote_invite(&s.rooms, &room_id, &who.user_id, &via, body.reason).await?;
        return Ok(Response::empty_object());
    }
    let event = EventRequest::state(kinds::MEMBER, who.user_id.as_str(), member_content("leave", body.reason));
    s.rooms.append(&room_id, &who.user_id, event, None).await?;
    Ok(Response::empty_object())
}

#[derive(Debug, Deserialize)]
struct TargetBody {
    user_id: String,
    reason: Option<String>,
}

/// Kick, ban and unban: a member event about another user.
async fn moderate(s: &Services, request: &Request, who: &Identity, membership: &str) -> Result<Response> {
    let room_id = super::room_events::room_id_param(request)?;
    let body: TargetBody = request.json()?;
    let target = UserId::parse(&body.user_id).map_err(|_| Error::invalid_param("Invalid user id"))?;
    let current = s.rooms.membership(&room_id, &target)?;
    match (membership, current) {
        ("unban", Some(Membership::Ban)) => {}
        ("unban", _) => return Err(Error::new(ErrorKind::BadState, "The user is not banned")),
        ("kick", Some(Membership::Join | Membership::Invite | Membership::Knock)) => {}
        ("kick", _) => return Err(Error::forbidden("The user is not in the room")),
        _ => {}
    }
    let new_membership = if membership == "ban" { "ban" } else { "leave" };
    let event = EventRequest::state(kinds::MEMBER, target.as_str(), member_content(new_membership, body.reason));
    s.rooms.append(&room_id, &who.user_id, event, None).await?;
    Ok(Response::empty_object())
}

pub async fn kick(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    moderate(s, request, who, "kick").await
}

pub async fn ban(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    moderate(s, request, who, "ban").await
}

pub async fn unban(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    moderate(s, request, who, "unban").await
}
