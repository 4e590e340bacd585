//! Account data and room tags.
//!
//! Spec: client-server API module "Client Config"
//! (`GET`/`PUT /user/{userId}/account_data/{type}`,
//! `GET`/`PUT /user/{userId}/rooms/{roomId}/account_data/{type}`) and "Room
//! Tagging" (`/user/{userId}/rooms/{roomId}/tags[/{tag}]`, stored as the room
//! account data `m.tag`). Only the owner reads or writes their account data.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    error::{Error, Result},
    http::{Request, Response},
    services::Services,
    users::Identity,
};

use super::room_events::room_id_param;

fn check_owner(request: &Request, who: &Identity) -> Result<()> {
    if request.param("user_id")? != who.user_id.as_str() {
        return Err(Error::forbidden("Cannot access account data of other users"));
    }
    Ok(())
}

pub async fn put_global(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    check_owner(request, who)?;
    s.users.set_account_data(&who.localpart, None, request.param("type")?, request.json_object()?).await?;
    Ok(Response::empty_object())
}

pub fn get_global(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    check_owner(request, who)?;
    let content = s.users.account_data(&who.localpart, None, request.param("type")?)?;
    Ok(Response::json(&content.ok_or_else(|| Error::not_found("No account data of that type"))?))
}

pub async fn put_room(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    check_owner(request, who)?;
    let room_id = room_id_param(request)?;
    s.users
        .set_account_data(&who.localpart, Some(room_id.as_str()), request.param("type")?, request.json_object()?)
        .await?;
    Ok(Response::empty_object())
}

pub fn get_room(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    check_owner(request, who)?;
    let room_id = room_id_param(request)?;
    let content = s.users.account_data(&who.localpart, Some(room_id.as_str()), request.param("type")?)?;
    Ok(Response::json(&content.ok_or_else(|| Error::not_found("No account data of that type"))?))
}

fn tags_of(s: &Services, who: &Identity, room_id: &str) -> Result<Map<String, Value>> {
    let content = s.users.account_data(&who.localpart, Some(room_id), "m.tag")?.unwrap_or_else(|| json!({}));
    Ok(content.get("tags").and_then(Value::as_object).cloned().unwrap_or_default())
}

async fn store_tags(s: &Services, who: &Identity, room_id: &str, tags: Map<String, Value>) -> Result<()> {
    s.users.store_account_data(&who.localpart, Some(room_id), "m.tag", &json!({ "tags": tags })).await
}

pub fn get_tags(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    check_owner(request, who)?;
    let room_id = room_id_param(request)?;
    Ok(Response::json(&json!({ "tags": tags_of(s, who, room_id.as_str())? })))
}

#[derive(Debug, Deserialize)]
struct TagBody {
    order: Option<f64>,
}

pub async fn put_tag(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    check_owner(request, who)?;
    let room_id = room_id_param(request)?;
    let tag = request.param("tag")?;
    if tag.len() > 255 {
        return Err(Error::invalid_param("Tags are at most 255 bytes"));
    }
    let body: TagBody = request.json()?;
    // Read, changed and stored under the user's lock: concurrent edits all count.
    let _edit = s.users.lock_account_data(&who.localpart).await;
    let mut tags = tags_of(s, who, room_id.as_str())?;
    let mut info = Map::new();
    if let Some(order) = body.order {
        info.insert("order".into(), json!(order));
    }
    tags.insert(tag.to_owned(), Value::Object(info));
    store_tags(s, who, room_id.as_str(), tags).await?;
    Ok(Response::empty_object())
}

pub async fn delete_tag(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    check_owner(request, who)?;
    let room_id = room_id_param(request)?;
    // Read, changed and stored under the user's lock: concurrent edits all count.
    let _edit = s.users.lock_account_data(&who.localpart).await;
    let mut tags = tags_of(s, who, room_id.as_str())?;
    if tags.remove(request.param("tag")?).is_some() {
        store_tags(s, who, room_id.as_str(), tags).await?;
    }
    Ok(Response::empty_object())
}
