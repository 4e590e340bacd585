//! Relations and threads.
//!
//! Spec: client-server API "Relationships API"
//! (`GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`, with
//! `from`/`to`/`limit`/`dir`/`recurse`) and module "Threading"
//! (`GET /rooms/{roomId}/threads`). The parent must be visible to the caller;
//! so must each child returned. Tokens are timeline positions.

use std::collections::HashSet;

use ruma::EventId;
use serde_json::{json, Value};

use crate::rooms::Membership;
use crate::{
    error::{Error, Result},
    http::{Request, Response},
    services::Services,
    users::Identity,
};

use super::room_events::room_id_param;

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 1000;
/// How deep `recurse=true` follows relations of relations.
const MAX_DEPTH: usize = 3;

fn limit(request: &Request) -> Result<usize> {
    match request.query("limit") {
        Some(limit) => {
            Ok(limit.parse::<usize>().map_err(|_| Error::invalid_param("Invalid limit"))?.clamp(1, MAX_LIMIT))
        }
        None => Ok(DEFAULT_LIMIT),
    }
}

fn position(request: &Request, name: &str) -> Result<Option<u64>> {
    request.query(name).map(|t| t.parse().map_err(|_| Error::invalid_param("Invalid pagination token"))).transpose()
}

pub fn relations(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let not_found = || Error::not_found("Event not found");
    let parent_id = EventId::parse(request.param("event_id")?).map_err(|_| not_found())?;
    let rel_type = request.optional_param("rel_type");
    let event_type = request.optional_param("event_type");
    let (parent, stored) = s.rooms.get_pdu(&parent_id)?.ok_or_else(not_found)?;
    if stored.room_id != room_id.as_str() || !s.rooms.can_see_event(&who.user_id, &parent, &stored)? {
        return Err(not_found());
    }
    let backwards = match request.query("dir") {
        None | Some("b") => true,
        Some("f") => false,
        Some(_) => return Err(Error::invalid_param("`dir` must be `b` or `f`")),
    };
    let recurse = request.query("recurse") == Some("true");
    let limit = limit(request)?;
    let from = position(request, "from")?;
    let to = position(request, "to")?;

    // Gather children (and, when asked, their children) matching the filters.
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut frontier = vec![parent_id.to_string()];
    let mut depth = 0;
    while !frontier.is_empty() && depth < if recurse { MAX_DEPTH } else { 1 } {
        let mut next = Vec::new();
        for id in frontier {
            for (count, relation) in s.rooms.children(&id)? {
                if !seen.insert(relation.child.clone()) {
                    continue;
                }
                if rel_type.is_none_or(|r| r == relation.rel_type) && event_type.is_none_or(|t| t == relation.kind) {
                    found.push((count, relation.child.clone()));
                    next.push(relation.child);
                }
            }
        }
        frontier = next;
        depth += 1;
    }
    found.sort_by_key(|(count, _)| *count);
    if backwards {
        found.reverse();
    }
    let in_range = |count: u64| {
        let after_from = from.is_none_or(|f| if backwards { count < f } else { count >= f });
        let before_to = to.is_none_or(|t| if backwards { count >= t } else { count < t });
        after_from && before_to
    };
    let mut chunk = Vec::new();
    let mut next_batch = None;
    for (count, id) in found.into_iter().filter(|(count, _)| in_range(*count)) {
        if chunk.len() == limit {
            next_batch = Some(if backwards { count + 1 } else { count });
            break;
        }
        let Ok(event_id) = EventId::parse(&id) else { continue };
        let Some((child, child_stored)) = s.rooms.get_pdu(&event_id)? else { continue };
        if s.rooms.can_see_event(&who.user_id, &child, &child_stored)? {
            chunk.push(s.rooms.serve_client_event(&child, &child_stored, &who.user_id, &who.device_id)?);
        }
    }
    Ok(Response::json(&RelationsAnswer {
        chunk,
        next_batch: next_batch.map(|next| next.to_string()),
        recursion_depth: recurse.then_some(depth),
    }))
}

/// The answer of `/relations`: each event's content copied as stored text.
#[derive(serde::Serialize)]
struct RelationsAnswer {
    chunk: Vec<crate::rooms::client_event::ClientEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_batch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recursion_depth: Option<usize>,
}

/// `GET /rooms/{roomId}/threads`: thread roots, most recently active first.
pub fn threads(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let forbidden = || Error::forbidden("You are not a member of this room");
    if s.rooms.room(&room_id)?.is_none() || s.rooms.membership(&room_id, &who.user_id)? != Some(Membership::Join) {
        return Err(forbidden());
    }
    let participated_only = match request.query("include") {
        None | Some("all") => false,
        Some("participated") => true,
        Some(_) => return Err(Error::invalid_param("`include` must be `all` or `participated`")),
    };
    let limit = limit(request)?;
    let from = position(request, "from")?;
    let mut roots = s.rooms.thread_roots(&room_id)?;
    roots.sort_by_key(|(_, latest)| std::cmp::Reverse(*latest));
    let mut chunk: Vec<Value> = Vec::new();
    let mut next_batch = None;
    for (root, latest) in roots.into_iter().filter(|(_, latest)| from.is_none_or(|f| *latest < f)) {
        if chunk.len() == limit {
            next_batch = Some(latest + 1);
            break;
        }
        let Ok(root_id) = EventId::parse(&root) else { continue };
        let Some((pdu, stored)) = s.rooms.get_pdu(&root_id)? else { continue };
        if !s.rooms.can_see_event(&who.user_id, &pdu, &stored)? {
            continue;
        }
        let event = s.rooms.serve_event(&pdu, &stored, &who.user_id, &who.device_id)?;
        let participated = event["unsigned"]["m.relations"]["m.thread"]["current_user_participated"] == json!(true);
        if participated_only && !participated {
            continue;
        }
        chunk.push(event);
    }
    let mut body = json!({ "chunk": chunk });
    if let Some(next) = next_batch {
        body["next_batch"] = json!(next.to_string());
    }
    Ok(Response::json(&body))
}
