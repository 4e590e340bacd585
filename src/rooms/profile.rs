//! Profiles in rooms: a user's display name and avatar are carried by their
//! member events (client-server API "Profiles": a change "SHOULD" be sent to
//! every room the user is in), so a profile change appends a new `join`
//! event with the new profile to each joined room whose member event differs.

use crate::events::kinds;
use serde_json::{Map, Value};

use super::{content_of_json, EventRequest, Rooms};
use crate::error::Result;

/// Profile fields member events carry.
const PROFILE_FIELDS: [&str; 2] = ["displayname", "avatar_url"];

impl Rooms {
    /// Brings the member events of `user_id` (local) in the rooms they joined
    /// in line with `profile`. A room that refuses (a power level rule, say)
    /// keeps the old profile and is logged; the others go on. Rooms already
    /// up to date get no event, so calling it again (a replay after a crash)
    /// adds nothing.
    pub async fn propagate_profile(&self, user_id: &ruma::UserId, profile: &Map<String, Value>) -> Result<()> {
        for room_id in self.joined_rooms(user_id.localpart())? {
            // The member event is read and replaced under the room's lock: a
            // leave or a kick landing meanwhile is not undone by a "join"
            // carrying the new profile.
            let guard = self.locks.lock(&room_id).await;
            let Some(room) = self.room(&room_id)? else { continue };
            let state = self.current_state(&room)?;
            let Some(member) = self.state_event_in(&state, kinds::MEMBER, user_id.as_str())? else { continue };
            if super::membership_of(&member) != Some(super::Membership::Join) {
                continue;
            }
            let mut content = content_of_json(member.content_json());
            let current = PROFILE_FIELDS.map(|field| content.get(field).cloned());
            let wanted = PROFILE_FIELDS.map(|field| profile.get(field).cloned());
            if current == wanted {
                continue;
            }
            for field in PROFILE_FIELDS {
                match profile.get(field) {
                    Some(value) => content.insert(field.to_owned(), value.clone()),
                    None => content.remove(field),
                };
            }
            content.insert("membership".into(), Value::String("join".into()));
            let event = EventRequest::state(kinds::MEMBER, user_id.as_str(), Value::Object(content));
            if let Err(error) = self.append_locked(guard, &room_id, user_id, event, None).await {
                tracing::warn!(room = %room_id, user = %user_id, %error, "profile change not propagated");
            }
        }
        Ok(())
    }
}
