//! `POST /search`: full-text search of room events.
//!
//! Spec: client-server API "Server Side Search" (`search.yaml`). Only rooms
//! the caller has joined are searched, and every hit is checked against
//! history visibility. `order_by` `rank` (share of query words matching a
//! whole word, then newest) or `recent`; `event_context` with profiles;
//! `include_state`; `groupings` by `room_id` or `sender`; `next_batch` is an
//! offset into the ordered results. The index is [`crate::rooms::search`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::events::kinds;
use crate::{
    error::{Error, Result},
    http::{Request, Response},
    rooms::{
        client_event, content_string,
        search::{order_hits, SearchOrder, SearchPage},
    },
    services::Services,
    sync::filter::RoomEventFilter,
    users::Identity,
};

use super::messages::visible_neighbours;

/// Results per page unless the filter's `limit` says otherwise.
const DEFAULT_PAGE: usize = 10;
/// Results per page at most.
const MAX_PAGE: usize = 100;
const DEFAULT_CONTEXT: usize = 5;

#[derive(Debug, Deserialize)]
struct SearchBody {
    search_categories: Categories,
}

#[derive(Debug, Deserialize)]
struct Categories {
    room_events: Option<RoomEventsCriteria>,
}

#[derive(Debug, Deserialize)]
struct RoomEventsCriteria {
    search_term: String,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    filter: RoomEventFilter,
    order_by: Option<String>,
    event_context: Option<EventContext>,
    #[serde(default)]
    include_state: bool,
    groupings: Option<Groupings>,
}

#[derive(Debug, Deserialize)]
struct EventContext {
    before_limit: Option<usize>,
    after_limit: Option<usize>,
    #[serde(default)]
    include_profile: bool,
}

#[derive(Debug, Deserialize)]
struct Groupings {
    #[serde(default)]
    group_by: Vec<Group>,
}

#[derive(Debug, Deserialize)]
struct Group {
    key: String,
}

/// `POST /search`: reads a word's whole posting list, so it runs off the
/// async workers.
pub fn search(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    crate::util::off_async_workers(|| search_now(s, request, who))
}

fn search_now(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: SearchBody = request.json()?;
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(Response::json(&json!({ "search_categories": {} })));
    };
    for key in &criteria.keys {
        if !matches!(key.as_str(), "content.body" | "content.name" | "content.topic") {
            return Err(Error::invalid_param(format!("Unknown search key {key:?}")));
        }
    }
    let recent = match criteria.order_by.as_deref() {
        None | Some("rank") => false,
        Some("recent") => true,
        Some(other) => return Err(Error::invalid_param(format!("Unknown order_by {other:?}"))),
    };
    let offset = match request.query("next_batch") {
        Some(token) => token.parse::<usize>().map_err(|_| Error::invalid_param("Invalid `next_batch`"))?,
        None => 0,
    };
    let rooms: BTreeSet<String> = s
        .rooms
        .joined_rooms(&who.localpart)?
        .into_iter()
        .map(|room| room.to_string())
        .filter(|room| criteria.filter.accepts_room(room))
        .collect();
    let mut hits = s.rooms.search_index(&criteria.search_term, &criteria.keys, &rooms)?;
    order_hits(&mut hits, if recent { SearchOrder::Recent } else { SearchOrder::Rank });
    let page =
        criteria.filter.limit.map_or(DEFAULT_PAGE, |l| usize::try_from(l).unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE));
    let SearchPage { visible, total } = s.rooms.search_page(&who.user_id, hits, &criteria.filter, offset, page)?;
    let mut results = Vec::new();
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let group_keys: Vec<String> =
        criteria.groupings.map(|g| g.group_by.into_iter().map(|group| group.key).collect()).unwrap_or_default();
    for (hit, pdu, stored) in &visible {
        let mut result =
            json!({ "rank": hit.rank, "result": s.rooms.serve_event(pdu, stored, &who.user_id, &who.device_id)? });
        if let Some(context) = &criteria.event_context {
            result["context"] = event_context(s, who, &hit.room_id, stored.count, context)?;
        }
        for key in &group_keys {
            let value = match key.as_str() {
                "room_id" => hit.room_id.clone(),
                "sender" => pdu.sender_str().to_owned(),
                _ => continue,
            };
            groups.entry(key.clone()).or_default().entry(value).or_default().push(pdu.event_id().to_string());
        }
        results.push(result);
    }
    let words: Vec<String> = crate::users::directory::words(&criteria.search_term);
    let mut room_events = json!({ "count": total, "highlights": words, "results": results });
    let next = offset.saturating_add(visible.len());
    if next < total {
        room_events["next_batch"] = json!(next.to_string());
    }
    if !groups.is_empty() {
        let grouped: Map<String, Value> = groups
            .into_iter()
            .map(|(key, values)| {
                let by_value: Map<String, Value> = values
                    .into_iter()
                    .enumerate()
                    .map(|(order, (value, ids))| (value, json!({ "results": ids, "order": order })))
                    .collect();
                (key, Value::Object(by_value))
            })
            .collect();
        room_events["groups"] = Value::Object(grouped);
    }
    if criteria.include_state {
        let mut state = Map::new();
        for room_id in visible.iter().map(|(hit, _, _)| hit.room_id.clone()).collect::<BTreeSet<_>>() {
            let Ok(id) = ruma::OwnedRoomId::try_from(room_id.clone()) else { continue };
            let Some(room) = s.rooms.room(&id)? else { continue };
            let events = s.rooms.state_events_in(s.rooms.current_state(&room)?.as_ref())?;
            state.insert(room_id, Value::Array(events.iter().map(|e| client_event(e, &id)).collect()));
        }
        room_events["state"] = Value::Object(state);
    }
    Ok(Response::json(&json!({ "search_categories": { "room_events": room_events } })))
}

/// Events around a result, with the senders' profiles when asked.
fn event_context(s: &Services, who: &Identity, room_id: &str, count: u64, wanted: &EventContext) -> Result<Value> {
    let id = ruma::OwnedRoomId::try_from(room_id.to_owned()).map_err(|e| Error::internal("search room id", e))?;
    let room = s.rooms.room(&id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    let filter = RoomEventFilter::default();
    let before_limit = wanted.before_limit.unwrap_or(DEFAULT_CONTEXT).min(100);
    let after_limit = wanted.after_limit.unwrap_or(DEFAULT_CONTEXT).min(100);
    let (before, start) = visible_neighbours(s, &room, who, &filter, count, true, before_limit)?;
    let (after, end) = visible_neighbours(s, &room, who, &filter, count + 1, false, after_limit)?;
    let to_json = |events: &[crate::rooms::StoredEvent]| -> Result<Vec<Value>> {
        events.iter().map(|(pdu, stored)| s.rooms.serve_event(pdu, stored, &who.user_id, &who.device_id)).collect()
    };
    let mut context = json!({
        "events_before": to_json(&before)?,
        "events_after": to_json(&after)?,
        "start": start.to_string(),
        "end": end.to_string(),
    });
    if wanted.include_profile {
        let state = s.rooms.current_state(&room)?;
        let mut profiles = Map::new();
        let senders: BTreeSet<&str> = before.iter().chain(after.iter()).map(|(pdu, _)| pdu.sender_str()).collect();
        for sender in senders {
            let Some(member) = s.rooms.state_event_in(&state, kinds::MEMBER, sender)? else { continue };
            let mut profile = Map::new();
            if let Some(name) = content_string(&member, "displayname") {
                profile.insert("displayname".into(), json!(name));
            }
            if let Some(avatar) = content_string(&member, "avatar_url") {
                profile.insert("avatar_url".into(), json!(avatar));
            }
            profiles.insert(sender.to_owned(), Value::Object(profile));
        }
        context["profile_info"] = Value::Object(profiles);
    }
    Ok(context)
}
