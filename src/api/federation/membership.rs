//! `/make_join`, `/send_join` (v1 and v2), `/make_leave`, `/send_leave`
//! (v1 and v2), `/make_knock`, `/send_knock`, `/invite` (v2): another
//! server's user joining, leaving, knocking on or invited to a room (the work
//! is in `federation::membership` and `federation::invite`).
//!
//! Spec: server-server API "Joining Rooms", "Leaving Rooms (Rejecting
//! Invites)", "Knocking upon a room", "Inviting to a room".

use ruma::{ServerName, UserId};
use serde_json::{json, Value};

use crate::{
    api::client::room_events::room_id_param,
    error::{Error, Result},
    http::{Request, Response},
    rooms::Membership,
    services::Services,
};

fn user_param(request: &Request) -> Result<ruma::OwnedUserId> {
    UserId::parse(request.param("user_id")?).map_err(|_| Error::invalid_param("Invalid user id"))
}

/// `GET /make_join/{roomId}/{userId}?ver=…`, `/make_leave/…`, `/make_knock/…?ver=…`.
pub fn make(s: &Services, request: &Request, origin: &ServerName, membership: Membership) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let user_id = user_param(request)?;
    let mut versions = request.query_all("ver");
    if versions.is_empty() {
        versions.push("1");
    }
    let answer = s.federation.make_membership(&s.rooms, origin, &room_id, &user_id, membership, &versions)?;
    Ok(Response::json(&answer))
}

/// `PUT /send_join/{roomId}/{eventId}`, `/send_leave/…`, `/send_knock/…`;
/// version 1 of join and leave answers `[200, body]`.
pub async fn send(
    s: &Services,
    request: &Request,
    origin: &ServerName,
    membership: Membership,
    v1: bool,
) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let event: Value = request.json_object()?;
    let omit_members = match request.query("omit_members") {
        None | Some("false") => false,
        Some("true") => membership == Membership::Join && !v1,
        Some(_) => return Err(Error::invalid_param("omit_members is true or false")),
    };
    let event_id = request.param("event_id")?;
    let answer =
        s.federation.send_membership(&s.rooms, origin, &room_id, event_id, event, membership, omit_members).await?;
    Ok(Response::json(&if v1 { json!([200, answer]) } else { answer }))
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`: another server's
/// user invites one of ours.
pub async fn invite(s: &Services, request: &Request, origin: &ServerName) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let body: crate::federation::invite::InviteRequest = request.json()?;
    let invitee = body.event["state_key"].as_str().and_then(|key| UserId::parse(key).ok());
    let local = invitee.clone().filter(|user| user.server_name() == s.config.server_name);
    match local {
        Some(user) if s.users.get_active(user.localpart())?.is_some() => {}
        _ => return Err(Error::not_found("The invitee is not a user of this server")),
    }
    if let (Some(policy), Some(invitee)) = (&s.policy, &invitee) {
        policy.check_incoming_invite(invitee, &room_id, &body.invite_room_state)?;
    }
    let answer = s.federation.receive_invite(&s.rooms, origin, &room_id, request.param("event_id")?, body).await?;
    Ok(Response::json(&answer))
}
