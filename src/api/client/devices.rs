//! Device management.
//!
//! Spec: client-server API "Device management": `GET /devices`,
//! `GET/PUT/DELETE /devices/{deviceId}`, `POST /delete_devices`. Deleting
//! devices needs user-interactive authentication and revokes their tokens.
//! A user only ever sees and changes their own devices.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::{Error, Result},
    http::{Request, Response},
    services::Services,
    users::{sessions::Device, Identity},
};

use super::account::require_password;

/// A device as the spec's schema has it: optional fields absent, never `null`.
fn device_json(device: &Device) -> Value {
    let mut json = json!({ "device_id": device.device_id });
    if let Some(name) = &device.display_name {
        json["display_name"] = json!(name);
    }
    if let Some(ts) = device.last_seen_ts {
        json["last_seen_ts"] = json!(ts);
    }
    if let Some(ip) = &device.last_seen_ip {
        json["last_seen_ip"] = json!(ip);
    }
    json
}

pub fn list(s: &Services, who: &Identity) -> Result<Response> {
    let devices: Vec<Value> = s.users.devices(&who.localpart)?.iter().map(device_json).collect();
    Ok(Response::json(&json!({ "devices": devices })))
}

pub fn get(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let device = s
        .users
        .device(&who.localpart, request.param("device_id")?)?
        .ok_or_else(|| Error::not_found("No such device"))?;
    Ok(Response::json(&device_json(&device)))
}

#[derive(Debug, Deserialize)]
struct UpdateBody {
    display_name: Option<String>,
}

pub async fn update(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: UpdateBody = request.json()?;
    if body.display_name.as_ref().is_some_and(|name| name.len() > 1024) {
        return Err(Error::invalid_param("display_name is longer than 1024 bytes"));
    }
    s.users.set_device_display_name(&who.localpart, request.param("device_id")?, body.display_name).await?;
    Ok(Response::empty_object())
}

#[derive(Debug, Deserialize)]
struct DeleteBody {
    auth: Option<Value>,
}

pub async fn delete(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: DeleteBody = request.json()?;
    let device_id = request.param("device_id")?.to_owned();
    require_password(s, request, who, &format!("DELETE /devices/{device_id}"), body.auth.as_ref()).await?;
    s.users.delete_devices(&who.localpart, &[device_id]).await?;
    Ok(Response::empty_object())
}

#[derive(Debug, Deserialize)]
struct DeleteManyBody {
    devices: Vec<String>,
    auth: Option<Value>,
}

pub async fn delete_many(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: DeleteManyBody = request.json()?;
    require_password(s, request, who, "POST /delete_devices", body.auth.as_ref()).await?;
    s.users.delete_devices(&who.localpart, &body.devices).await?;
    Ok(Response::empty_object())
}
