//! Profiles: display names and avatars.
//!
//! Spec: client-server API "Profiles" (`GET /profile/{userId}`,
//! `GET`/`PUT /profile/{userId}/displayname`, `…/avatar_url`). A change is
//! propagated as a new member event in every room the user has joined; only
//! the user changes their own profile. Users of other servers are not
//! reachable yet (404).

use ruma::UserId;
use serde_json::{json, Map, Value};

use crate::{
    error::{Error, Result},
    http::{Request, Response},
    services::Services,
    storage::records::UserRecord,
    users::{Identity, ProfileField},
};

/// Longest display name or avatar URL accepted.
const MAX_FIELD_BYTES: usize = 1024;

fn local_user(s: &Services, request: &Request) -> Result<(String, UserRecord)> {
    let user_id = UserId::parse(request.param("user_id")?).map_err(|_| Error::invalid_param("Invalid user id"))?;
    let not_found = || Error::not_found("Profile not found");
    if user_id.server_name() != s.config.server_name {
        return Err(not_found());
    }
    let localpart = user_id.localpart().to_owned();
    let user = s.users.get_active(&localpart)?.ok_or_else(not_found)?;
    Ok((localpart, user))
}

fn profile_json(user: &UserRecord) -> Map<String, Value> {
    let mut profile = Map::new();
    if let Some(name) = &user.displayname {
        profile.insert("displayname".into(), json!(name));
    }
    if let Some(url) = &user.avatar_url {
        profile.insert("avatar_url".into(), json!(url));
    }
    profile
}

pub fn get_profile(s: &Services, request: &Request) -> Result<Response> {
    let (_, user) = local_user(s, request)?;
    Ok(Response::json(&Value::Object(profile_json(&user))))
}

fn field_of(request: &Request) -> Result<(ProfileField, &'static str)> {
    match request.param("field")? {
        "displayname" => Ok((ProfileField::DisplayName, "displayname")),
        "avatar_url" => Ok((ProfileField::AvatarUrl, "avatar_url")),
        _ => Err(Error::not_found("Unknown profile field")),
    }
}

pub fn get_field(s: &Services, request: &Request) -> Result<Response> {
    let (_, key) = field_of(request)?;
    let (_, user) = local_user(s, request)?;
    let profile = profile_json(&user);
    let value = profile.get(key).cloned().ok_or_else(|| Error::not_found("The field is not set"))?;
    Ok(Response::json(&json!({ key: value })))
}

pub async fn set_field(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let (field, key) = field_of(request)?;
    if request.param("user_id")? != who.user_id.as_str() {
        return Err(Error::forbidden("You can only change your own profile"));
    }
    let body = request.json_object()?;
    let value = match body.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.len() <= MAX_FIELD_BYTES => Some(text.clone()),
        Some(Value::String(_)) => {
            return Err(Error::invalid_param(format!("{key} is longer than {MAX_FIELD_BYTES} bytes")))
        }
        Some(_) => return Err(Error::bad_json(format!("Invalid field `{key}`: expected a string"))),
    };
    if field == ProfileField::AvatarUrl && value.as_ref().is_some_and(|url| !url.starts_with("mxc://")) {
        return Err(Error::invalid_param("avatar_url must be an mxc:// URI"));
    }
    s.users.set_profile_field(&who.localpart, field, value).await?;
    s.propagate_profile(&who.user_id).await?;
    Ok(Response::empty_object())
}

/// The member content of a join, with the user's profile.
pub fn join_content(s: &Services, who: &Identity) -> Result<Value> {
    let mut content = s.users.get(&who.localpart)?.map(|user| profile_json(&user)).unwrap_or_default();
    content.insert("membership".into(), json!("join"));
    Ok(Value::Object(content))
}
