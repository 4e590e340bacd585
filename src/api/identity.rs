//! The identity service API, answered by this server for its users (the
//! public-sector deployment has no separate identity server): the email →
//! server map, hashed lookups of bound addresses, and the identity
//! service's own accounts and terms.
//!
//! Spec: identity service API "Status check" (`GET /_matrix/identity/v2`),
//! "Authentication" (`/account/register`, `/account`, `/account/logout`),
//! "Terms of service" (none here), "Association lookup" (`/hash_details`,
//! `/lookup`, algorithms `sha256` and `none`), "Invitation storage"
//! (`/store-invite`), "Key management" (`/pubkey/…`: this server's signing
//! key signs the invites it stores). `GET /_matrix/identity/api/v1/info`
//! and `/internal-info` are the reference deployment's (see
//! `../shared/guides/public-sector.md`, "Email → homeserver mapping").
//!
//! Lookups answer for the addresses bound to this server's accounts only:
//! the peers of a closed federation answer for theirs, and the map says
//! which server to ask.

use ruma::{OwnedUserId, ServerName, UserId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    error::{Error, ErrorKind, Result},
    http::{Request, Response},
    services::Services,
    users::threepids::normalize_email,
};

/// `GET /_matrix/identity/v2`.
pub fn status() -> Response {
    Response::empty_object()
}

/// `GET /_matrix/identity/v2/terms`: no terms to accept.
pub fn terms() -> Response {
    Response::json(&json!({ "policies": {} }))
}

#[derive(Debug, Deserialize)]
struct OpenIdToken {
    access_token: String,
    matrix_server_name: String,
}

/// `POST /_matrix/identity/v2/account/register`: an OpenID token for an
/// identity service token.
pub async fn register_account(s: &Services, request: &Request) -> Result<Response> {
    let body: OpenIdToken = request.json()?;
    let server = ServerName::parse(&body.matrix_server_name)
        .map_err(|_| Error::invalid_param("matrix_server_name is not a server name"))?;
    let unknown = || Error::new(ErrorKind::UnknownToken { soft_logout: false }, "The OpenID token is not valid");
    let user_id: OwnedUserId = if server == s.config.server_name {
        let localpart = s.users.openid_token_owner(&body.access_token)?.ok_or_else(unknown)?;
        s.users.user_id(&localpart)?
    } else {
        s.federation.openid_userinfo(&server, &body.access_token).await.map_err(|error| {
            tracing::info!(%server, %error, "an OpenID token of another server could not be checked");
            unknown()
        })?
    };
    let token = s.identity_tokens.register(&user_id).await?;
    // `access_token` too, as Sydent answers (matrix-js-sdk reads either).
    Ok(Response::json(&json!({ "token": token, "access_token": token })))
}

/// `GET /_matrix/identity/v2/account`.
pub fn account(user: &UserId) -> Response {
    Response::json(&json!({ "user_id": user }))
}

/// `POST /_matrix/identity/v2/account/logout`: ends the identity token used
/// (a homeserver access token is left alone).
pub async fn logout(s: &Services, request: &Request) -> Result<Response> {
    if let Some(token) = &request.access_token {
        s.identity_tokens.logout(token).await?;
    }
    Ok(Response::empty_object())
}

/// `GET /_matrix/identity/v2/hash_details`.
pub fn hash_details(s: &Services) -> Result<Response> {
    Ok(Response::json(&json!({ "lookup_pepper": s.users.lookup_pepper()?, "algorithms": ["none", "sha256"] })))
}

/// Most addresses looked up in one request.
const MAX_LOOKUP_ADDRESSES: usize = 10_000;

#[derive(Debug, Deserialize)]
struct LookupBody {
    algorithm: String,
    pepper: String,
    addresses: Vec<String>,
}

/// `POST /_matrix/identity/v2/lookup`: the bound addresses among those asked.
pub fn lookup(s: &Services, request: &Request) -> Result<Response> {
    let body: LookupBody = request.json()?;
    if body.pepper != s.users.lookup_pepper()? {
        return Err(Error::new(ErrorKind::InvalidPepper, "The pepper is not this server's; ask /hash_details again"));
    }
    if !matches!(body.algorithm.as_str(), "sha256" | "none") {
        return Err(Error::invalid_param(format!("Unknown algorithm {:?}; see /hash_details", body.algorithm)));
    }
    if body.addresses.len() > MAX_LOOKUP_ADDRESSES {
        return Err(Error::invalid_param(format!("At most {MAX_LOOKUP_ADDRESSES} addresses per lookup")));
    }
    let mut mappings = Map::new();
    for asked in &body.addresses {
        let owner = match body.algorithm.as_str() {
            "sha256" => s.users.email_by_lookup_hash(asked)?.map(|(_, localpart)| localpart),
            // `address medium`, in the clear.
            "none" => match asked.rsplit_once(' ') {
                Some((address, "email")) => s.users.email_owner(address)?,
                _ => None,
            },
            _ => None,
        };
        if let Some(localpart) = owner {
            mappings.insert(asked.clone(), json!(s.users.user_id(&localpart)?));
        }
    }
    Ok(Response::json(&json!({ "mappings": mappings })))
}

/// `GET /_matrix/identity/api/v1/info?medium=email&address=…`: the server
/// an address belongs on (`hs`), and `new_hs` when the address is bound to
/// an account here but the map now sends it elsewhere. Never fails: an
/// address the map does not know, or no address, belongs here.
pub fn info(s: &Services, request: &Request) -> Response {
    Response::json(&info_value(s, request))
}

fn info_value(s: &Services, request: &Request) -> Value {
    let own = s.config.server_name.as_str();
    let address = request.query("address").and_then(|address| normalize_email(address).ok());
    let Some(address) = address.filter(|_| request.query("medium").is_none_or(|medium| medium == "email")) else {
        return json!({ "hs": own });
    };
    let mapped = s.email_map.server_for(&address).map_or(own, |server| server.as_str());
    let bound_here = s.users.email_owner(&address).ok().flatten().is_some();
    if bound_here && mapped != own {
        json!({ "hs": own, "new_hs": mapped })
    } else {
        json!({ "hs": mapped })
    }
}

#[derive(Debug, Deserialize)]
struct StoreInvite {
    medium: String,
    address: String,
    room_id: String,
    sender: String,
    room_name: Option<String>,
    sender_display_name: Option<String>,
}

/// `POST /_matrix/identity/v2/store-invite`: keeps an invite of an address
/// nobody holds yet, mails the invitee, and answers what the room's
/// `m.room.third_party_invite` event needs (the token, the keys that will
/// verify the invite, the address as the room shows it).
pub async fn store_invite(s: &Services, request: &Request, user: &UserId) -> Result<Response> {
    let body: StoreInvite = request.json()?;
    if body.medium != "email" {
        return Err(Error::new(ErrorKind::ThreepidMediumNotSupported, "Only email addresses can be invited here"));
    }
    if body.sender != user.as_str() {
        return Err(Error::forbidden("An invite is stored for its sender only"));
    }
    let address = normalize_email(&body.address)?;
    if let Some(home) = s.email_map.server_for(&address).filter(|home| *home != s.config.server_name) {
        return Err(Error::invalid_param(format!("This address belongs on {home}: its invites are stored there")));
    }
    let room_id = ruma::RoomId::parse(&body.room_id).map_err(|_| Error::invalid_param("room_id is not a room id"))?;
    let language = s.mailer.language_for(request.accept_language.as_deref());
    let stored =
        store_and_mail(s, &address, &room_id, user, &body.room_name, &body.sender_display_name, language).await?;
    Ok(Response::json(&stored))
}

/// Stores an invite by email here and mails the invitee; the answer of
/// `store-invite` (also what this server's own rooms put in their
/// `m.room.third_party_invite` event).
pub async fn store_and_mail(
    s: &Services,
    address: &str,
    room_id: &ruma::RoomId,
    sender: &UserId,
    room_name: &Option<String>,
    sender_display_name: &Option<String>,
    language: crate::config::MailLanguage,
) -> Result<Value> {
    if s.users.email_owner(address)?.is_some() {
        return Err(Error::new(ErrorKind::ThreepidInUse, "This address belongs to an account: invite the account"));
    }
    if !s.mailer.is_configured() {
        return Err(Error::new(ErrorKind::ThreepidMediumNotSupported, "This server does not send mail"));
    }
    let (token, display_name) = s.email_invites.store(address, room_id, sender.as_str()).await?;
    let inviter = sender_display_name.clone().unwrap_or_else(|| sender.to_string());
    let room = room_name.clone().unwrap_or_else(|| room_id.to_string());
    let written =
        crate::email::templates::invitation(language, s.mailer.server_name(), &inviter, &room, &s.mailer.link("/"));
    s.mailer.queue(address, written).await?;
    let key =
        json!({ "public_key": s.server_key.public_key_base64(), "key_validity_url": s.mailer.link(KEY_VALIDITY_PATH) });
    Ok(json!({ "token": token, "display_name": display_name, "public_keys": [key] }))
}

/// Where the validity of this server's key is checked.
pub const KEY_VALIDITY_PATH: &str = "/_matrix/identity/v2/pubkey/isvalid";

/// `GET /_matrix/identity/v2/pubkey/isvalid?public_key=`.
pub fn key_is_valid(s: &Services, request: &Request) -> Response {
    let valid = request.query("public_key") == Some(s.server_key.public_key_base64().as_str());
    Response::json(&json!({ "valid": valid }))
}

/// `GET /_matrix/identity/v2/pubkey/{keyId}`.
pub fn public_key(s: &Services, request: &Request) -> Result<Response> {
    if request.param("key_id")? != s.server_key.key_id() {
        return Err(Error::not_found("No such key"));
    }
    Ok(Response::json(&json!({ "public_key": s.server_key.public_key_base64() })))
}

/// `GET /_matrix/identity/api/v1/internal-info?medium=email&address=…`:
/// [`info`], and whether the server the address belongs on takes only
/// invited users (`requires_invite`: the external partners' server) and
/// whether an invite waits for the address here (`invited`).
pub fn internal_info(s: &Services, request: &Request) -> Result<Response> {
    let mut answer = info_value(s, request);
    let address = request.query("address").and_then(|address| normalize_email(address).ok());
    let hs = answer["hs"].as_str().unwrap_or_default().to_owned();
    answer["requires_invite"] = json!(requires_invite(s, &hs));
    let invited = match &address {
        Some(address) => s.email_invites.is_invited(address)?,
        None => false,
    };
    answer["invited"] = json!(invited);
    Ok(Response::json(&answer))
}

/// Whether `server` takes only invited users (the external partners').
pub fn requires_invite(s: &Services, server: &str) -> bool {
    let policy = &s.config.policy;
    policy.external_servers.iter().any(|external| external == server)
        || (server == s.config.server_name.as_str() && policy.externals_mode)
}
