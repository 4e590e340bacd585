//! `POST /user_directory/search`.
//!
//! Spec: client-server API "User directory". The index is
//! [`crate::users::directory`]; this endpoint decides visibility: with
//! `user_directory.search_all_users` every active local user, otherwise the
//! users who share a joined room with the searcher and the users joined to a
//! public room (join rule `public`). Other servers' users appear when they
//! share a joined room with the searcher, with the profile their member
//! event carries, after the local users.

use std::collections::{HashMap, HashSet};

use ruma::{OwnedRoomId, UserId};
use serde::Deserialize;
use serde_json::json;

use crate::events::kinds;
use crate::{
    error::Result,
    http::{Request, Response},
    services::Services,
    users::Identity,
};

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
struct SearchBody {
    search_term: String,
    limit: Option<u64>,
}

/// Memoised visibility checks for one search.
struct Visibility<'a> {
    s: &'a Services,
    searcher_rooms: HashSet<OwnedRoomId>,
    public_rooms: HashMap<OwnedRoomId, bool>,
}

impl Visibility<'_> {
    fn is_public(&mut self, room_id: &OwnedRoomId) -> Result<bool> {
        if let Some(public) = self.public_rooms.get(room_id) {
            return Ok(*public);
        }
        let rooms = &self.s.rooms;
        let public = match rooms.room(room_id)? {
            // Public as Synapse's directory reads it: anyone may join, or
            // anyone may read (`world_readable`).
            Some(room) => {
                let state = rooms.current_state(&room)?;
                let rules = rooms.state_event_in(&state, kinds::JOIN_RULES, "")?;
                rules.and_then(|pdu| crate::rooms::content_string(&pdu, "join_rule")).as_deref() == Some("public")
                    || rooms.is_world_readable(&room)?
            }
            None => false,
        };
        self.public_rooms.insert(room_id.clone(), public);
        Ok(public)
    }

    fn may_see(&mut self, user: &UserId) -> Result<bool> {
        if self.s.config.user_directory.search_all_users {
            return Ok(true);
        }
        for room in self.s.rooms.joined_rooms(user.localpart())? {
            if self.searcher_rooms.contains(&room) || self.is_public(&room)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

pub fn search(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: SearchBody = request.json()?;
    let limit = body.limit.map_or(DEFAULT_LIMIT, |l| (l as usize).clamp(1, MAX_LIMIT));
    // The external partners' server: its users find nobody (public-sector rules).
    if s.policy.as_ref().is_some_and(|policy| policy.hides_user_directory_from(&who.user_id)) {
        return Ok(Response::json(&json!({ "results": [], "limited": false })));
    }
    let mut visibility = Visibility {
        s,
        searcher_rooms: s.rooms.joined_rooms(&who.localpart)?.into_iter().collect(),
        public_rooms: HashMap::new(),
    };
    let user_id_of = |localpart: &str| s.users.user_id(localpart);
    let (entries, limited) = s
        .users
        .directory
        .search_visible(&body.search_term, limit, |entry| visibility.may_see(&user_id_of(&entry.localpart)?))?;
    let mut results = Vec::new();
    let local_count = entries.len();
    for entry in entries {
        let mut result = json!({ "user_id": user_id_of(&entry.localpart)? });
        if let Some(name) = entry.display_name {
            result["display_name"] = json!(name);
        }
        if let Some(avatar) = entry.avatar_url {
            result["avatar_url"] = json!(avatar);
        }
        results.push(result);
    }
    let mut limited = limited;
    if local_count < limit {
        let (remote, more) =
            remote_members_matching(s, &visibility.searcher_rooms, &body.search_term, limit - local_count)?;
        results.extend(remote);
        limited |= more;
    }
    Ok(Response::json(&json!({ "results": results, "limited": limited })))
}

/// Most member events read looking for other servers' users in one search.
const MAX_REMOTE_MEMBERS_SCANNED: usize = 10_000;

/// Other servers' users joined to the searcher's rooms whose name or id
/// matches the search (their profile as their member event gives it), by
/// name; and whether more were left out.
fn remote_members_matching(
    s: &Services,
    searcher_rooms: &HashSet<OwnedRoomId>,
    term: &str,
    limit: usize,
) -> Result<(Vec<serde_json::Value>, bool)> {
    let wanted = crate::users::directory::words(term);
    let mut found: std::collections::BTreeMap<(String, String), serde_json::Value> = Default::default();
    let mut scanned = 0;
    for room_id in searcher_rooms {
        let Some(room) = s.rooms.room(room_id)? else { continue };
        let state = s.rooms.current_state(&room)?;
        for user in s.rooms.joined_members_in(&state)? {
            if user.server_name() == s.config.server_name {
                continue;
            }
            if scanned == MAX_REMOTE_MEMBERS_SCANNED {
                // Not every member was looked at: there may be more.
                let kept = found.into_values().take(limit).collect();
                return Ok((kept, true));
            }
            scanned += 1;
            let member = s.rooms.state_event_in(&state, kinds::MEMBER, user.as_str())?;
            let content: serde_json::Value =
                member.and_then(|pdu| serde_json::from_str(pdu.content_json()).ok()).unwrap_or_default();
            let name = content["displayname"].as_str();
            if !crate::users::directory::matches(&wanted, name, user.localpart()) {
                continue;
            }
            let mut result = json!({ "user_id": user });
            if let Some(name) = name {
                result["display_name"] = json!(name);
            }
            if let Some(avatar) = content["avatar_url"].as_str() {
                result["avatar_url"] = json!(avatar);
            }
            let sort_name = crate::users::directory::fold(name.unwrap_or(user.localpart()));
            found.entry((sort_name, user.to_string())).or_insert(result);
        }
    }
    let more = found.len() > limit;
    Ok((found.into_values().take(limit).collect(), more))
}
