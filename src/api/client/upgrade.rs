//! `POST /rooms/{roomId}/upgrade`.
//!
//! Spec: client-server API module "Room Upgrades"; the upgrade itself is
//! [`crate::rooms::upgrade`].

use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::json;

use crate::{
    error::{Error, Result},
    events::room_version,
    http::{Request, Response},
    services::Services,
    users::Identity,
};

use super::room_events::room_id_param;

#[derive(Debug, Deserialize)]
struct UpgradeBody {
    new_version: String,
    #[serde(default)]
    additional_creators: Vec<String>,
}

pub async fn upgrade(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let old_room = room_id_param(request)?;
    let body: UpgradeBody = request.json()?;
    let version = room_version::parse_creatable(&body.new_version)?;
    let additional: Vec<OwnedUserId> = body
        .additional_creators
        .iter()
        .map(|user| UserId::parse(user).map_err(|_| Error::invalid_param(format!("{user:?} is not a user id"))))
        .collect::<Result<_>>()?;
    let new_room = s.rooms.upgrade(&old_room, &who.user_id, &version, &additional).await?;
    tracing::info!(old = %old_room, new = %new_room, version = %version, "room upgraded");
    Ok(Response::json(&json!({ "replacement_room": new_room })))
}
