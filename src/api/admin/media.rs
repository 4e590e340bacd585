//! Media in the admin API, in Synapse's shapes: a user's uploads (`GET
//! /_synapse/admin/v1/users/{userId}/media`: `from`, `limit`, `dir`) and
//! deleting one (`DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`,
//! local media only; its file goes at the next start).

use serde_json::{json, Value};

use super::{local_user, Paging};
use crate::{
    error::{Error, Result},
    http::{Request, Response},
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
                "quarantined_by": null,
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
