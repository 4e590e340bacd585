//! Inviting by email address, and the invite completed when the address is
//! bound.
//!
//! Spec: client-server API "Third-party invites" (`POST
//! /rooms/{roomId}/invite` with `medium` and `address`), server-server API
//! "Third-party invites" (`PUT /exchange_third_party_invite/{roomId}`),
//! identity service API "Invitation storage".
//!
//! The identity service asked is the one of the server the email map sends
//! the address to (not the client's `id_server`: in a closed federation each
//! server answers for its own addresses): this server itself, or a peer,
//! asked as the inviter through an OpenID token (`/account/register`,
//! `/lookup`, `/store-invite`). An address bound to an account gets an
//! ordinary invite of that account; otherwise the invite is stored by that
//! identity service, which mails the invitee, and the room gets an
//! `m.room.third_party_invite` event carrying its keys. When the address is
//! bound, the server holding the invite builds the `m.room.member` invite
//! (sender: the inviter, `third_party_invite.signed` signed with its key)
//! and sends it in the room — itself when the inviter is its user, else
//! through the inviter's server (`exchange_third_party_invite`).

use ruma::{OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    api::identity::store_and_mail,
    error::{Error, ErrorKind, Result},
    events::kinds,
    identity::invites::WaitingInvite,
    rooms::EventRequest,
    services::Services,
    users::{threepids::normalize_email, Identity},
};

/// The third-party form of the invite body.
#[derive(Debug, Deserialize)]
pub struct EmailInviteBody {
    pub medium: String,
    pub address: String,
}

/// `POST /rooms/{roomId}/invite` with an email address.
pub async fn invite_by_email(s: &Services, room_id: &RoomId, who: &Identity, body: EmailInviteBody) -> Result<()> {
    if body.medium != "email" {
        return Err(Error::new(ErrorKind::ThreepidMediumNotSupported, "Only email addresses can be invited here"));
    }
    let address = normalize_email(&body.address)?;
    if !s.rooms.may_invite(room_id, &who.user_id)? {
        // Checked first: a refused invite stores nothing and mails nobody.
        return Err(Error::forbidden("You may not invite users to this room"));
    }
    let home = s.email_map.server_for(&address).map(|server| server.to_owned());
    let own = &s.config.server_name;
    if let Some(policy) = &s.policy {
        policy.check_email_invite(&s.rooms, &who.user_id, room_id, home.as_deref().unwrap_or(own))?;
    }
    let answer = match home.filter(|home| home != own) {
        None => match s.users.email_owner(&address)? {
            Some(localpart) => return invite_account(s, room_id, who, &s.users.user_id(&localpart)?).await,
            None => {
                let language = s.mailer.language_for(None);
                let room_name = s.rooms.room_name(room_id)?;
                let inviter =
                    s.users.profile_of(&who.localpart)?.get("displayname").and_then(Value::as_str).map(str::to_owned);
                store_and_mail(s, &address, room_id, &who.user_id, &room_name, &inviter, language).await?
            }
        },
        Some(home) => match s.federation.invite_through_identity_service(&s.users, &home, who, &address, room_id).await
        {
            Ok(crate::federation::identity::Invited::Bound(user)) => {
                return invite_account(s, room_id, who, &user).await
            }
            Ok(crate::federation::identity::Invited::Stored(answer)) => answer,
            Err(error) => {
                tracing::info!(%home, %error, "the identity service of an invited address could not be asked");
                return Err(Error::new(ErrorKind::BadGateway, format!("{home} could not be asked about this address")));
            }
        },
    };
    emit_third_party_invite(s, room_id, who, &answer).await
}

/// An ordinary invite of the account an address belongs to.
async fn invite_account(s: &Services, room_id: &RoomId, who: &Identity, invitee: &UserId) -> Result<()> {
    let content = json!({ "membership": "invite" });
    if invitee.server_name() != s.config.server_name {
        return super::membership::invite_remote(s, room_id, &who.user_id, invitee, content).await;
    }
    let event = EventRequest::state(kinds::MEMBER, invitee.as_str(), content);
    s.rooms.append(room_id, &who.user_id, event, None).await.map(drop)
}

/// The room's `m.room.third_party_invite` event for a stored invite.
async fn emit_third_party_invite(s: &Services, room_id: &RoomId, who: &Identity, stored: &Value) -> Result<()> {
    let token = stored["token"].as_str().ok_or_else(|| Error::new(ErrorKind::BadGateway, "No invite token"))?;
    let keys = stored["public_keys"].as_array().cloned().unwrap_or_default();
    let first = keys.first().cloned().unwrap_or_default();
    let content = json!({
        "display_name": stored["display_name"],
        "key_validity_url": first["key_validity_url"],
        "public_key": first["public_key"],
        "public_keys": keys,
    });
    let event = EventRequest::state(kinds::THIRD_PARTY_INVITE, token, content);
    s.rooms.append(room_id, &who.user_id, event, None).await.map(drop)
}

/// Turns the invites waiting for `address`, just bound to `localpart`, into
/// member invites (each forgotten once tried: a room that refuses it, or
/// an inviter's server that cannot be reached, is logged).
pub async fn complete_email_invites(s: &Services, localpart: &str, address: &str) -> Result<()> {
    let invitee = s.users.user_id(localpart)?;
    for waiting in s.email_invites.waiting_for(address)? {
        match complete_one(s, &invitee, &waiting).await {
            Ok(()) => tracing::info!(user = %invitee, room = %waiting.room_id, "invite by email completed"),
            Err(error) => {
                tracing::warn!(user = %invitee, room = %waiting.room_id, %error, "invite by email not completed")
            }
        }
        s.email_invites.remove(address, &waiting.token).await?;
    }
    Ok(())
}

async fn complete_one(s: &Services, invitee: &UserId, waiting: &WaitingInvite) -> Result<()> {
    let (token, record) = (&waiting.token, waiting);
    let room_id = RoomId::parse(&record.room_id).map_err(|_| Error::invalid_param("A stored room id is invalid"))?;
    let sender: OwnedUserId =
        UserId::parse(&record.sender).map_err(|_| Error::invalid_param("A stored sender is invalid"))?;
    let mut signed = json!({ "mxid": invitee, "token": token });
    s.server_key
        .sign_json(s.config.server_name.as_str(), &mut signed)
        .map_err(|e| Error::internal("signing a third-party invite", e))?;
    let content = json!({
        "membership": "invite",
        "third_party_invite": { "display_name": record.display_name, "signed": signed },
    });
    if sender.server_name() == s.config.server_name {
        let event = EventRequest::state(kinds::MEMBER, invitee.as_str(), content);
        return s.rooms.append(&room_id, &sender, event, None).await.map(drop);
    }
    s.federation
        .exchange_third_party_invite(&room_id, &sender, invitee, content)
        .await
        .map_err(|error| Error::new(ErrorKind::BadGateway, error.to_string()))
}

/// `PUT /_matrix/federation/v1/exchange_third_party_invite/{roomId}` from
/// the invitee's server: the invite of one of its users, sent as our user
/// who invited the address. The room's auth rules check the signature
/// against the keys of the `m.room.third_party_invite` event.
pub async fn exchange(s: &Services, room_id: &RoomId, origin: &ruma::ServerName, event: &Value) -> Result<()> {
    let sender = event["sender"].as_str().and_then(|id| UserId::parse(id).ok());
    let invitee = event["state_key"].as_str().and_then(|id| UserId::parse(id).ok());
    let (Some(sender), Some(invitee)) = (sender, invitee) else {
        return Err(Error::bad_json("The event needs a sender and a state_key that are user ids"));
    };
    if sender.server_name() != s.config.server_name || invitee.server_name() != origin {
        return Err(Error::forbidden("The inviter must be ours and the invitee the asking server's"));
    }
    let content = &event["content"];
    if event["type"] != kinds::MEMBER || content["membership"] != "invite" || !content["third_party_invite"].is_object()
    {
        return Err(Error::bad_json("Only a member invite with third_party_invite is exchanged"));
    }
    let content = json!({ "membership": "invite", "third_party_invite": content["third_party_invite"] });
    super::membership::invite_remote(s, room_id, &sender, &invitee, content).await
}
