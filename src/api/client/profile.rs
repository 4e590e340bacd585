//! Profiles: display names and avatars.
//!
//! Spec: client-server API "Profiles" (`GET /profile/{userId}`,
//! `GET`/`PUT /profile/{userId}/displayname`, `…/avatar_url`). A change is
//! propagated as a new member event in every room the user has joined; only
//! the user changes their own profile. Other servers' users' profiles are
//! asked of their server and kept a while ([`crate::federation::profile`]).

use ruma::UserId;
use serde_json::{json, Map, Value};

use crate::{
    error::{Error, Result},
    http::{Request, Response},
    services::Services,
    users::{Identity, ProfileField},
};

/// Longest display name or avatar URL accepted.
const MAX_FIELD_BYTES: usize = 1024;

/// The profile of the user the path names: a local account's (404 for
/// unknown or deactivated ones), or asked of the user's server over
/// federation (`/_matrix/federation/v1/query/profile`, kept a while).
async fn profile(s: &Services, request: &Request) -> Result<Map<String, Value>> {
    let user_id = UserId::parse(request.param("user_id")?).map_err(|_| Error::invalid_param("Invalid user id"))?;
    let not_found = || Error::not_found("Profile not found");
    if user_id.server_name() == s.config.server_name {
        return s.users.active_profile(user_id.localpart())?.ok_or_else(not_found);
    }
    Ok(s.federation.remote_profile(&user_id).await?)
}

pub async fn get_profile(s: &Services, request: &Request) -> Result<Response> {
    Ok(Response::json(&Value::Object(profile(s, request).await?)))
}

fn field_of(request: &Request) -> Result<(ProfileField, &'static str)> {
    match request.param("field")? {
        "displayname" => Ok((ProfileField::DisplayName, "displayname")),
        "avatar_url" => Ok((ProfileField::AvatarUrl, "avatar_url")),
        _ => Err(Error::not_found("Unknown profile field")),
    }
}

pub async fn get_field(s: &Services, request: &Request) -> Result<Response> {
    let (_, key) = field_of(request)?;
    let profile = profile(s, request).await?;
    let value = profile.get(key).cloned().ok_or_else(|| Error::not_found("The field is not set"))?;
    Ok(Response::json(&json!({ key: value })))
}

pub async fn set_field(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let (field, key) = field_of(request)?;
    if request.param("user_id")? != who.user_id.as_str() {
        return Err(Error::forbidden("You can only change your own profile"));
    }
    if who.is_guest && field != ProfileField::DisplayName {
        return Err(Error::new(
            crate::error::ErrorKind::GuestAccessForbidden,
            "Guests may set their display name only",
        ));
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
    let mut content = s.users.profile_of(&who.localpart)?;
    content.insert("membership".into(), json!("join"));
    Ok(Value::Object(content))
}
