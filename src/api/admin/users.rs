//! Users in the admin API, in Synapse's shapes (its "User Admin API"):
//! `GET /_synapse/admin/v2/users` (`from`, `limit`, `name`, `guests`,
//! `deactivated`, `order_by` name|displayname|creation_ts|admin, `dir`),
//! `GET`/`PUT /v2/users/{userId}`, `POST /v1/deactivate/{userId}`,
//! `POST /v1/reset_password/{userId}`, `GET /v1/whois/{userId}` (and the
//! client-server `GET /admin/whois/{userId}`), `GET /v2/users/{userId}/devices`,
//! `DELETE /v2/users/{userId}/devices/{deviceId}`, `POST
//! /v1/users/{userId}/login`, `GET /v1/users/{userId}/joined_rooms`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::local_user;
use crate::{
    error::{Error, ErrorKind, Result},
    http::{Request, Response},
    services::Services,
    users::{Identity, ProfileField, UserRecord},
};

/// A user as the list shows it.
fn summary(s: &Services, localpart: &str, user: &UserRecord) -> Result<Value> {
    let user_id = s.users.user_id(localpart)?;
    Ok(json!({
        "name": user_id,
        "is_guest": user.is_guest,
        "admin": user.is_admin,
        "user_type": null,
        "deactivated": user.deactivated,
        "erased": s.users.is_erased(&user_id),
        "shadow_banned": false,
        "locked": false,
        "approved": true,
        "displayname": user.displayname,
        "avatar_url": user.avatar_url,
        "creation_ts": user.created_ts,
    }))
}

/// A user in full (`GET /v2/users/{userId}`).
fn details(s: &Services, localpart: &str, user: &UserRecord) -> Result<Value> {
    let mut body = summary(s, localpart, user)?;
    let threepids: Vec<Value> = s
        .users
        .emails_of(localpart)?
        .into_iter()
        .map(|(address, added)| json!({ "medium": "email", "address": address, "added_at": added, "validated_at": added }))
        .collect();
    body["threepids"] = json!(threepids);
    body["external_ids"] = json!([]);
    body["appservice_id"] = Value::Null;
    body["expiration_ts"] = json!(s.users.validity.expires_ts(localpart)?);
    Ok(body)
}

fn query_flag(request: &Request, name: &str, default: bool) -> Result<bool> {
    match request.query(name) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(Error::invalid_param(format!("{name} must be true or false, not {other:?}"))),
    }
}

/// `GET /_synapse/admin/v2/users`.
pub fn list(s: &Services, request: &Request) -> Result<Response> {
    let paging = super::Paging::of(request)?;
    let guests = query_flag(request, "guests", true)?;
    let deactivated = query_flag(request, "deactivated", false)?;
    let name = request.query("name").or(request.query("user_id")).map(str::to_lowercase);
    let mut users = s.users.all_accounts()?;
    users.retain(|(localpart, user)| {
        let named = name.as_ref().is_none_or(|name| {
            localpart.contains(name.as_str())
                || user.displayname.as_ref().is_some_and(|shown| shown.to_lowercase().contains(name.as_str()))
        });
        named && (guests || !user.is_guest) && (deactivated || !user.deactivated)
    });
    match request.query("order_by").unwrap_or("name") {
        "name" => users.sort_by(|a, b| a.0.cmp(&b.0)),
        "displayname" => users.sort_by(|a, b| a.1.displayname.cmp(&b.1.displayname).then(a.0.cmp(&b.0))),
        "creation_ts" => users.sort_by(|a, b| a.1.created_ts.cmp(&b.1.created_ts).then(a.0.cmp(&b.0))),
        "admin" => users.sort_by(|a, b| a.1.is_admin.cmp(&b.1.is_admin).then(a.0.cmp(&b.0))),
        other => return Err(Error::invalid_param(format!("Unknown order_by {other:?}"))),
    }
    if request.query("dir") == Some("b") {
        users.reverse();
    }
    let total = users.len();
    let page: Vec<Value> =
        paging.page(&users).map(|(localpart, user)| summary(s, localpart, user)).collect::<Result<_>>()?;
    let mut body = json!({ "users": page, "total": total });
    if let Some(next) = paging.next(total) {
        body["next_token"] = json!(next.to_string()); // a string, as Synapse's
    }
    Ok(Response::json(&body))
}

/// `GET /_synapse/admin/v2/users/{userId}`.
pub fn get(s: &Services, request: &Request) -> Result<Response> {
    let localpart = local_user(s, request)?;
    let user = s.users.get(&localpart)?.ok_or_else(|| Error::not_found("User not found"))?;
    Ok(Response::json(&details(s, &localpart, &user)?))
}

#[derive(Debug, Deserialize)]
struct PutUser {
    password: Option<String>,
    #[serde(default = "crate::util::yes")]
    logout_devices: bool,
    displayname: Option<String>,
    avatar_url: Option<String>,
    admin: Option<bool>,
    deactivated: Option<bool>,
}

/// `PUT /_synapse/admin/v2/users/{userId}`: creates the user (201) or changes it (200).
pub async fn put(s: &Services, request: &Request, admin: &Identity) -> Result<Response> {
    let localpart = local_user(s, request)?;
    let body: PutUser = request.json()?;
    let created = s.users.get(&localpart)?.is_none();
    if created {
        let localpart = s.users.localpart_for_registration(&localpart)?;
        s.users.create_account(&localpart, body.password.as_deref(), false, body.admin.unwrap_or(false)).await?;
        tracing::info!(admin = %admin.user_id, user = %localpart, "user created through the admin API");
    } else if let Some(password) = &body.password {
        s.users.set_password(&localpart, password).await?;
        if body.logout_devices {
            s.users.logout_all(&localpart).await?;
        }
    }
    if let Some(is_admin) = body.admin.filter(|_| !created) {
        s.users.set_admin(&localpart, is_admin).await?;
    }
    for (field, value) in [(ProfileField::DisplayName, body.displayname), (ProfileField::AvatarUrl, body.avatar_url)] {
        if let Some(value) = value {
            s.users.set_profile_field(&localpart, field, Some(value)).await?;
            s.propagate_profile(&s.users.user_id(&localpart)?).await?;
        }
    }
    if body.deactivated == Some(true) && !created {
        deactivate_user(s, &localpart, admin, false).await?;
    } else if body.deactivated == Some(false) && s.users.get(&localpart)?.is_some_and(|user| user.deactivated) {
        return Err(Error::new(ErrorKind::BadRequest, "A deactivated account cannot be reactivated here"));
    }
    let user = s.users.get(&localpart)?.ok_or_else(|| Error::not_found("User not found"))?;
    Ok(Response::json(&details(s, &localpart, &user)?).with_status(if created { 201 } else { 200 }))
}

async fn deactivate_user(s: &Services, localpart: &str, admin: &Identity, erase: bool) -> Result<()> {
    if s.users.get_active(localpart)?.is_none() {
        return Ok(());
    }
    s.users.deactivate(localpart, erase).await?;
    tracing::info!(admin = %admin.user_id, user = localpart, erase, "user deactivated through the admin API");
    Ok(())
}

#[derive(Debug, Deserialize)]
struct DeactivateBody {
    #[serde(default)]
    erase: bool,
}

/// `POST /_synapse/admin/v1/deactivate/{userId}`: with `erase`, the
/// account's events are served redacted to later joiners (`users::erased`);
/// the profile is cleared either way.
pub async fn deactivate(s: &Services, request: &Request, admin: &Identity) -> Result<Response> {
    let localpart = local_user(s, request)?;
    if s.users.get(&localpart)?.is_none() {
        return Err(Error::not_found("User not found"));
    }
    let body: DeactivateBody = request.json()?;
    deactivate_user(s, &localpart, admin, body.erase).await?;
    Ok(Response::json(&json!({ "id_server_unbind_result": "success" })))
}

#[derive(Debug, Deserialize)]
struct ResetPassword {
    new_password: String,
    #[serde(default = "crate::util::yes")]
    logout_devices: bool,
}

/// `POST /_synapse/admin/v1/reset_password/{userId}`.
pub async fn reset_password(s: &Services, request: &Request, admin: &Identity) -> Result<Response> {
    let localpart = local_user(s, request)?;
    let body: ResetPassword = request.json()?;
    if s.users.get_active(&localpart)?.is_none() {
        return Err(Error::not_found("User not found"));
    }
    s.users.set_password(&localpart, &body.new_password).await?;
    if body.logout_devices {
        s.users.logout_all(&localpart).await?;
    }
    tracing::info!(admin = %admin.user_id, user = %localpart, "password reset through the admin API");
    Ok(Response::empty_object())
}

/// `GET /_synapse/admin/v1/whois/{userId}` and `GET /_matrix/client/v3/admin/whois/{userId}`
/// (spec: "Server administration"): each device's last connection.
pub fn whois(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let localpart = local_user(s, request)?;
    let user_id = s.users.user_id(&localpart)?;
    // Users may ask about themselves (spec); anyone else needs an admin.
    if !who.is_admin && who.user_id != user_id {
        return Err(Error::forbidden("Only server admins can ask about other users"));
    }
    let mut devices = serde_json::Map::new();
    for device in s.users.devices(&localpart)? {
        let connections: Vec<Value> = device
            .last_seen_ip
            .iter()
            .map(|ip| json!({ "ip": ip, "last_seen": device.last_seen_ts, "user_agent": null }))
            .collect();
        devices.insert(device.device_id, json!({ "sessions": [{ "connections": connections }] }));
    }
    Ok(Response::json(&json!({ "user_id": user_id, "devices": devices })))
}

/// `GET /_synapse/admin/v2/users/{userId}/devices`.
pub fn devices(s: &Services, request: &Request) -> Result<Response> {
    let localpart = local_user(s, request)?;
    let user_id = s.users.user_id(&localpart)?;
    let devices: Vec<Value> = s
        .users
        .devices(&localpart)?
        .into_iter()
        .map(|device| {
            json!({ "device_id": device.device_id, "display_name": device.display_name,
                    "last_seen_ip": device.last_seen_ip, "last_seen_ts": device.last_seen_ts, "user_id": user_id })
        })
        .collect();
    Ok(Response::json(&json!({ "total": devices.len(), "devices": devices })))
}

/// `DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}`.
pub async fn delete_device(s: &Services, request: &Request) -> Result<Response> {
    let localpart = local_user(s, request)?;
    s.users.delete_devices(&localpart, &[request.param("device_id")?.to_owned()]).await?;
    Ok(Response::empty_object())
}

/// `POST /_synapse/admin/v1/users/{userId}/login`: a new device and token
/// of the user, for support (logged; refused for another admin).
pub async fn login_as(s: &Services, request: &Request, admin: &Identity) -> Result<Response> {
    let localpart = local_user(s, request)?;
    let user = s.users.get_active(&localpart)?.ok_or_else(|| Error::not_found("User not found"))?;
    if user.is_admin && localpart != admin.localpart {
        return Err(Error::forbidden("Logging in as another server admin is not allowed"));
    }
    let session =
        s.users.open_session(&localpart, None, Some("Admin login".to_owned()), false, &request.client_ip).await?;
    tracing::warn!(admin = %admin.user_id, user = %localpart, device = %session.device_id, "admin logged in as a user");
    Ok(Response::json(&json!({ "access_token": session.access_token })))
}

/// `GET /_synapse/admin/v1/users/{userId}/joined_rooms`.
pub fn joined_rooms(s: &Services, request: &Request) -> Result<Response> {
    let localpart = local_user(s, request)?;
    let rooms = s.rooms.joined_rooms(&localpart)?;
    Ok(Response::json(&json!({ "total": rooms.len(), "joined_rooms": rooms })))
}
