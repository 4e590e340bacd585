//! Server notices, as Synapse sends them (`POST
//! /_synapse/admin/v1/send_server_notice`): a message from the server's
//! notices account (`@server-notices:<server>`, made on first use, without
//! a password) in a room of its own with the user, which the user's
//! clients show apart (the room's `m.server_notice` tag). The user is
//! invited to that room and joins it when they want; a user who left it
//! gets a new one with the next notice.

use ruma::{OwnedRoomId, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::{Error, ErrorKind, Result},
    events::{kinds, room_version},
    http::{Request, Response},
    rooms::{
        creation::{self, NewRoom, Preset},
        EventRequest, Membership,
    },
    services::Services,
    users::Identity,
};

use crate::users::SERVER_NOTICES_LOCALPART as NOTICES_LOCALPART;
/// The room tag clients show server notices under.
const SERVER_NOTICE_TAG: &str = "m.server_notice";

#[derive(Debug, Deserialize)]
struct Notice {
    user_id: String,
    content: Value,
    #[serde(rename = "type")]
    kind: Option<String>,
    state_key: Option<String>,
}

/// `POST /_synapse/admin/v1/send_server_notice`: `{"event_id"}`.
pub async fn send(s: &Services, request: &Request, admin: &Identity) -> Result<Response> {
    let notice: Notice = request.json()?;
    let user = UserId::parse(&notice.user_id).map_err(|_| Error::invalid_param("user_id is not a user id"))?;
    if user.server_name() != s.config.server_name || s.users.get_active(user.localpart())?.is_none() {
        return Err(Error::invalid_param("Server notices go to active local users only"));
    }
    if !notice.content.is_object() {
        return Err(Error::bad_json("content must be an object"));
    }
    let sender = notices_account(s).await?;
    let room = notices_room(s, &sender, &user).await?;
    let kind = notice.kind.unwrap_or_else(|| kinds::MESSAGE.to_owned());
    let event = match notice.state_key {
        Some(state_key) => EventRequest::state(&kind, &state_key, notice.content),
        None => EventRequest::message(&kind, notice.content),
    };
    let event_id = s.rooms.append(&room, &sender, event, None).await?;
    tracing::info!(admin = %admin.user_id, user = %user, room = %room, "server notice sent");
    Ok(Response::json(&json!({ "event_id": event_id })))
}

/// The notices account, made on first use (no password: nobody logs in as it).
async fn notices_account(s: &Services) -> Result<ruma::OwnedUserId> {
    if s.users.get(NOTICES_LOCALPART)?.is_none() {
        match s.users.create_account(NOTICES_LOCALPART, None, false, false).await {
            Ok(_) => s.users.set_initial_display_name(NOTICES_LOCALPART, "Server Notices").await?,
            // Two notices at once: the other made it.
            Err(error) if error.kind == ErrorKind::UserInUse => {}
            Err(error) => return Err(error),
        }
        s.users.set_hidden_from_directory(NOTICES_LOCALPART, true).await?;
    }
    s.users.user_id(NOTICES_LOCALPART)
}

/// The user's notices room (tagged `m.server_notice`, the user invited or
/// joined), or a new one.
async fn notices_room(s: &Services, sender: &UserId, user: &UserId) -> Result<OwnedRoomId> {
    for (room_id, membership) in s.rooms.memberships_of(user.localpart())? {
        if !matches!(membership, Membership::Join | Membership::Invite) {
            continue;
        }
        let tags = s.users.account_data(user.localpart(), Some(room_id.as_str()), "m.tag")?;
        let tagged = tags.is_some_and(|tags| tags["tags"].get(SERVER_NOTICE_TAG).is_some());
        if tagged && s.rooms.membership(&room_id, sender)? == Some(Membership::Join) {
            return Ok(room_id);
        }
    }
    let version = room_version::parse_creatable(&s.config.default_room_version)?;
    let rules = room_version::rules(&version)?;
    let new_room = NewRoom {
        creator: sender.to_owned(),
        creator_member_content: json!({ "membership": "join", "displayname": "Server Notices" }),
        preset: Preset::Private,
        invitees: vec![user.to_owned()],
        remote_invitees: Vec::new(),
        is_direct: false,
        alias: None,
        name: Some("Server Notices".to_owned()),
        topic: None,
        initial_state: Vec::new(),
        creation_content: Default::default(),
        // Only the server speaks there.
        power_level_override: json!({ "events_default": 100, "invite": 100 }).as_object().cloned(),
    };
    let plan = creation::plan(new_room, &rules)?;
    let room_id = s.rooms.create_room(sender, &version, plan.create_content, None, plan.events).await?;
    let tags = json!({ "tags": { SERVER_NOTICE_TAG: { "order": 0.5 } } });
    s.users.store_account_data(user.localpart(), Some(room_id.as_str()), "m.tag", &tags).await?;
    Ok(room_id)
}
