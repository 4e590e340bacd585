//! The published room directory: `GET`/`POST /publicRooms`,
//! `GET`/`PUT /directory/list/room/{roomId}`.
//!
//! Spec: client-server API "Published room directory". Anyone may read the
//! directory (`GET /publicRooms` needs no token, as the spec allows);
//! publishing a room needs the power to change its canonical alias, or
//! being a server admin. `since`/`next_batch` are offsets into the list
//! (most joined members first). `server=` another server: its directory,
//! asked of it over federation; this server's is served to others at
//! `/_matrix/federation/v1/publicRooms`.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::events::kinds;
use crate::{
    error::{Error, ErrorKind, Result},
    http::{Request, Response},
    services::Services,
    users::Identity,
};

use super::room_events::room_id_param;

const DEFAULT_LIMIT: usize = 100;
/// Rooms per page at most, whatever the client asks.
const MAX_LIMIT: usize = 500;

#[derive(Debug, Default, Deserialize, serde::Serialize)]
struct Filter {
    generic_search_term: Option<String>,
    room_types: Option<Vec<Option<String>>>,
}

#[derive(Debug, Default, Deserialize)]
struct PublicRoomsBody {
    limit: Option<u64>,
    since: Option<String>,
    server: Option<String>,
    #[serde(default)]
    filter: Filter,
}

fn parse_offset(token: Option<&str>) -> Result<usize> {
    match token {
        None => Ok(0),
        Some(token) => token
            .strip_prefix('p')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::invalid_param("Invalid `since` token")),
    }
}

/// Another server's directory, asked of it (`/publicRooms` over federation).
async fn remote_list(s: &Services, server: &str, body: &PublicRoomsBody) -> Result<Response> {
    let server = ruma::ServerName::parse(server).map_err(|_| Error::invalid_param("Invalid server name"))?;
    let request = json!({ "limit": body.limit, "since": body.since, "filter": body.filter });
    let answer = s.federation.request(&server, "POST", "/_matrix/federation/v1/publicRooms", Some(&request)).await?;
    Ok(Response::json(&answer))
}

async fn list(s: &Services, body: PublicRoomsBody) -> Result<Response> {
    if let Some(server) = body.server.as_deref().filter(|server| *server != s.config.server_name.as_str()) {
        return remote_list(s, server, &body).await;
    }
    local_list(s, body)
}

/// This server's directory.
fn local_list(s: &Services, body: PublicRoomsBody) -> Result<Response> {
    let offset = parse_offset(body.since.as_deref())?;
    let limit = body.limit.map_or(DEFAULT_LIMIT, |l| usize::try_from(l).unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT));
    let term = body.filter.generic_search_term.as_deref().filter(|t| !t.trim().is_empty());
    let rooms: Vec<Value> = s
        .rooms
        .public_rooms()?
        .into_iter()
        .filter(|room| term.is_none_or(|term| room.matches(term)))
        .filter(|room| body.filter.room_types.as_deref().is_none_or(|types| room.has_type_in(types)))
        .filter(|room| listable(s, room))
        .map(|room| room.entry)
        .collect();
    let total = rooms.len();
    let chunk: Vec<Value> = rooms.into_iter().skip(offset).take(limit).collect();
    let mut response = json!({ "chunk": chunk, "total_room_count_estimate": total });
    // Offsets come from clients: no arithmetic on them may overflow.
    let next = offset.saturating_add(limit);
    if next < total {
        response["next_batch"] = json!(format!("p{next}"));
    }
    if offset > 0 {
        response["prev_batch"] = json!(format!("p{}", offset.saturating_sub(limit)));
    }
    Ok(Response::json(&response))
}

/// Under the public-sector rules, only `restricted` rooms are listed.
fn listable(s: &Services, room: &crate::rooms::directory::PublicRoom) -> bool {
    let Some(policy) = &s.policy else { return true };
    let Some(room_id) = room.entry["room_id"].as_str().and_then(|id| ruma::RoomId::parse(id).ok()) else {
        return false;
    };
    policy.listable(&s.rooms, &room_id).unwrap_or_else(|error| {
        tracing::warn!(room = %room_id, %error, "could not read a published room's access rule");
        false
    })
}

/// `GET /publicRooms?limit=&since=&server=`.
pub async fn get_public_rooms(s: &Services, request: &Request) -> Result<Response> {
    let limit = match request.query("limit") {
        Some(limit) => Some(limit.parse().map_err(|_| Error::invalid_param("Invalid `limit`"))?),
        None => None,
    };
    let body = PublicRoomsBody {
        limit,
        since: request.query("since").map(str::to_owned),
        server: request.query("server").map(str::to_owned),
        filter: Filter::default(),
    };
    if body.server.as_deref().is_some_and(|server| server != s.config.server_name.as_str()) {
        // Another server's directory costs a federation request: users only (as Synapse).
        let token = request
            .access_token
            .as_deref()
            .ok_or_else(|| Error::new(ErrorKind::MissingToken, "Other servers' directories need an access token"))?;
        s.users.authenticate(token).await?;
    }
    list(s, body).await
}

/// `POST /publicRooms` (with a filter).
pub async fn search_public_rooms(s: &Services, request: &Request) -> Result<Response> {
    let body: PublicRoomsBody = request.json()?;
    let server = request.query("server").map(str::to_owned);
    list(s, PublicRoomsBody { server: server.or(body.server), ..body }).await
}

/// `GET`/`POST /_matrix/federation/v1/publicRooms`: this server's directory
/// for another server's users (its own rooms only).
pub fn federation_public_rooms(s: &Services, request: &Request) -> Result<Response> {
    let mut body: PublicRoomsBody = if request.method == crate::http::request::Method::Post {
        request.json()?
    } else {
        let limit = request.query("limit").and_then(|limit| limit.parse().ok());
        PublicRoomsBody { limit, since: request.query("since").map(str::to_owned), ..Default::default() }
    };
    body.server = None;
    local_list(s, body)
}

/// `GET /directory/list/room/{roomId}`.
pub fn get_visibility(s: &Services, request: &Request) -> Result<Response> {
    let room_id = room_id_param(request)?;
    if s.rooms.room(&room_id)?.is_none() {
        return Err(Error::not_found("Unknown room"));
    }
    let visibility = if s.rooms.is_published(&room_id)? { "public" } else { "private" };
    Ok(Response::json(&json!({ "visibility": visibility })))
}

#[derive(Debug, Deserialize)]
struct VisibilityBody {
    visibility: String,
}

/// `PUT /directory/list/room/{roomId}`.
pub async fn set_visibility(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let body: VisibilityBody = request.json()?;
    let published = match body.visibility.as_str() {
        "public" => true,
        "private" => false,
        other => return Err(Error::invalid_param(format!("Unknown visibility {other:?}"))),
    };
    let room = s.rooms.room(&room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    if !who.is_admin && !s.rooms.may_send_state(&room, &who.user_id, kinds::CANONICAL_ALIAS)? {
        return Err(Error::forbidden("Publishing this room needs the power to change its canonical alias"));
    }
    if let (true, Some(policy)) = (published, &s.policy) {
        policy.check_publication(&s.rooms, &who.user_id, &room_id)?;
    }
    s.rooms.set_published(&room_id, published).await?;
    Ok(Response::empty_object())
}

const DEFAULT_HIERARCHY_LIMIT: usize = 50;

/// `GET /rooms/{roomId}/hierarchy?limit=&max_depth=&suggested_only=&from=`.
/// `from` tokens carry the offset and the walk's parameters, which may not
/// change between pages.
pub async fn hierarchy(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let number = |name: &str| -> Result<Option<u64>> {
        request
            .query(name)
            .map(|v| v.parse().map_err(|_| Error::invalid_param(format!("`{name}` must be a non-negative integer"))))
            .transpose()
    };
    let limit = number("limit")?.map_or(DEFAULT_HIERARCHY_LIMIT, |l| (l as usize).clamp(1, 1000));
    let max_depth = number("max_depth")?;
    let suggested_only = request.query("suggested_only") == Some("true");
    let walk = format!("{}_{}", max_depth.map_or("-".to_owned(), |d| d.to_string()), suggested_only);
    let offset = match request.query("from") {
        None => 0,
        Some(token) => {
            let (offset, token_walk) = token
                .split_once('_')
                .and_then(|(offset, walk)| Some((offset.parse::<usize>().ok()?, walk)))
                .ok_or_else(|| Error::invalid_param("Unknown `from` token"))?;
            if token_walk != walk {
                return Err(Error::invalid_param("suggested_only and max_depth cannot change on paginated requests"));
            }
            offset
        }
    };
    if !s.rooms.may_preview(&room_id, &who.user_id)? {
        return Err(Error::forbidden("You cannot see this room"));
    }
    let rooms =
        crate::federation::hierarchy::walk(&s.federation, &s.rooms, &room_id, &who.user_id, max_depth, suggested_only)
            .await?;
    let total = rooms.len();
    let page: Vec<Value> = rooms.into_iter().skip(offset).take(limit).collect();
    let mut response = json!({ "rooms": page });
    let next = offset.saturating_add(limit);
    if next < total {
        response["next_batch"] = json!(format!("{next}_{walk}"));
    }
    Ok(Response::json(&response))
}

/// `GET /room_summary/{roomIdOrAlias}`: a preview for someone allowed to see it.
pub fn room_summary(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let not_found = || Error::not_found("Unknown room, or not one you may see");
    let room_id = super::membership::known_room(s, request.param("room_id_or_alias")?).map_err(|_| not_found())?;
    if !s.rooms.may_preview(&room_id, &who.user_id)? {
        return Err(not_found());
    }
    let mut summary = s.rooms.room_summary(&room_id)?.ok_or_else(not_found)?;
    if let Some(membership) = s.rooms.membership(&room_id, &who.user_id)? {
        summary["membership"] = json!(membership.as_str());
    }
    Ok(Response::json(&summary))
}
