//! Media in the admin API, in Synapse's shapes: a user's uploads (`GET
//! /_synapse/admin/v1/users/{userId}/media`: `from`, `limit`, `dir`),
//! deleting one (`DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`,
//! local media only), quarantine (`POST /v1/media/quarantine/{serverName}/
//! {mediaId}`, `/v1/media/unquarantine/…`, `/v1/room/{roomId}/media/
//! quarantine`, `/v1/user/{userId}/media/quarantine`) and purging the cache
//! of other servers' media (`POST /v1/purge_media_cache?before_ts=`).

use serde_json::{json, Value};

use super::{local_user, Paging};
use crate::{
    error::{Error, ErrorKind, Result},
    http::{Request, Response},
    media::admin::MediaItem,
    services::Services,
    users::Identity,
};

/// `GET /_synapse/admin/v1/users/{userId}/media`.
pub fn list(s: &Services, request: &Request) -> Result<Response> {
    let localpart = local_user(s, request)?;
    let paging = Paging::of(request)?;
    let mut uploads = s.media.uploads_of(s.users.user_id(&localpart)?.as_str())?;
    if request.query("dir") != Some("f") {
        uploads.reverse(); // newest first, as Synapse
    }
    let total = uploads.len();
    let page: Vec<Value> = paging
        .page(&uploads)
        .map(|upload| {
            json!({
                "media_id": upload.media_id,
                "media_type": upload.content_type,
                "media_length": upload.size,
                "upload_name": upload.filename,
                "created_ts": upload.created_ts,
                "last_access_ts": null,
                "quarantined_by": upload.quarantined_by,
                "safe_from_quarantine": false,
            })
        })
        .collect();
    let mut body = json!({ "media": page, "total": total });
    if let Some(next) = paging.next(total) {
        body["next_token"] = json!(next);
    }
    Ok(Response::json(&body))
}

/// `DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`.
pub async fn delete(s: &Services, request: &Request, admin: &Identity) -> Result<Response> {
    if request.param("server_name")? != s.config.server_name.as_str() {
        return Err(Error::invalid_param("Only local media can be deleted here"));
    }
    let media_id = request.param("media_id")?;
    if !s.media.delete_upload(media_id).await? {
        return Err(Error::not_found("No such media"));
    }
    tracing::warn!(admin = %admin.user_id, media = media_id, "media deleted by an admin");
    Ok(Response::json(&json!({ "deleted_media": [media_id], "total": 1 })))
}

/// The item a path's `:server_name` and `:media_id` name.
fn media_item<'r>(s: &Services, request: &'r Request) -> Result<MediaItem<'r>> {
    let server = request.param("server_name")?;
    let server = <&ruma::ServerName>::try_from(server)
        .map_err(|_| Error::invalid_param(format!("{server:?} is not a server name")))?;
    Ok(MediaItem::of(&s.config.server_name, server, request.param("media_id")?))
}

/// `POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}` and
/// `/unquarantine/…`: `{}`.
pub async fn quarantine(s: &Services, request: &Request, admin: &Identity, quarantined: bool) -> Result<Response> {
    let item = media_item(s, request)?;
    let by = quarantined.then_some(admin.user_id.as_str());
    if s.media.set_quarantine(item, by).await? {
        tracing::warn!(admin = %admin.user_id, ?item, quarantined, "media quarantine changed by an admin");
    }
    Ok(Response::empty_object())
}

/// `POST /_synapse/admin/v1/room/{roomId}/media/quarantine` (and the older
/// `/v1/quarantine_media/{roomId}`): every item the room's events mention.
pub async fn quarantine_room(s: &Services, request: &Request, admin: &Identity) -> Result<Response> {
    let raw = request.param("room_id")?;
    let room_id = ruma::RoomId::parse(raw).map_err(|_| Error::invalid_param(format!("{raw:?} is not a room id")))?;
    let mut quarantined = 0;
    for uri in s.rooms.media_mentioned_in(&room_id)? {
        let Some((server, media_id)) = uri.trim_start_matches("mxc://").split_once('/') else { continue };
        let Ok(server) = <&ruma::ServerName>::try_from(server) else { continue };
        let item = MediaItem::of(&s.config.server_name, server, media_id);
        match s.media.set_quarantine(item, Some(admin.user_id.as_str())).await {
            Ok(true) => quarantined += 1,
            Ok(false) => {}
            Err(error) if error.status() == 404 => {} // mentioned, never uploaded here
            Err(error) => return Err(error),
        }
    }
    tracing::warn!(admin = %admin.user_id, room = %room_id, quarantined, "room media quarantined by an admin");
    Ok(Response::json(&json!({ "num_quarantined": quarantined })))
}

/// `POST /_synapse/admin/v1/user/{userId}/media/quarantine`: every upload of the user.
pub async fn quarantine_user(s: &Services, request: &Request, admin: &Identity) -> Result<Response> {
    let localpart = local_user(s, request)?;
    let user_id = s.users.user_id(&localpart)?;
    let quarantined = s.media.quarantine_uploads_of(user_id.as_str(), admin.user_id.as_str()).await?;
    tracing::warn!(admin = %admin.user_id, user = %user_id, quarantined, "user media quarantined by an admin");
    Ok(Response::json(&json!({ "num_quarantined": quarantined })))
}

/// `POST /_synapse/admin/v1/purge_media_cache?before_ts=`: `{"deleted"}`.
pub async fn purge_remote_cache(s: &Services, request: &Request, admin: &Identity) -> Result<Response> {
    let before_ts = request
        .query("before_ts")
        .ok_or_else(|| Error::new(ErrorKind::MissingParam, "before_ts is required"))?
        .parse::<u64>()
        .map_err(|_| Error::invalid_param("before_ts must be a timestamp in milliseconds"))?;
    let deleted = s.media.purge_remote_cache(before_ts).await?;
    tracing::warn!(admin = %admin.user_id, before_ts, deleted, "remote media cache purged by an admin");
    Ok(Response::json(&json!({ "deleted": deleted })))
}
