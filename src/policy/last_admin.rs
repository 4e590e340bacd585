//! When the last admin leaves a room.
//!
//! Guide: "When the last admin leaves a room" — moderators are promoted, or
//! failing them every remaining member who is not an external partner;
//! external partners never are.
//!
//! When a local user of level 100 or more (a creator, in room versions 12
//! and later) leaves and no other joined or invited member has 100 or more,
//! the server sends, just before the leave, one `m.room.power_levels` event
//! giving 100 to the remaining members of level [`MODERATOR`] or more, or
//! if there is none to every remaining member; external partners are left
//! out. The event is signed by this server's key like every local event and
//! its sender is the leaving admin — still joined, with the power to grant
//! 100 — so it passes the auth rules as any power-levels change by them
//! would, on every server. A leave of a user of another server is that
//! server's to handle (it signs for its users).

use ruma::{room_version_rules::RoomVersionRules, UserId};
use serde_json::{json, Value};

use super::{power::MODERATOR, PublicSectorPolicy};
use crate::{
    error::Result,
    events::kinds,
    rooms::{membership_of, pipeline::StateView, power_levels::PowerLevels, EventRequest, Membership},
};

/// The level of a room admin.
pub const ADMIN: i64 = 100;

/// The power-levels event to send before `leaver` leaves, if they are the
/// last admin and someone can be promoted.
pub fn promotion(
    policy: &PublicSectorPolicy,
    leaver: &UserId,
    rules: &RoomVersionRules,
    state: &dyn StateView,
) -> Result<Option<EventRequest>> {
    let create = state.state_event(kinds::CREATE, "")?;
    let power_event = state.state_event(kinds::POWER_LEVELS, "")?;
    let levels = PowerLevels::new(create.as_ref(), power_event.as_ref(), rules);
    if levels.user(leaver) < ADMIN {
        return Ok(None);
    }
    let remaining = remaining_members(state, leaver)?;
    if remaining.iter().any(|member| levels.user(member) >= ADMIN) {
        return Ok(None);
    }
    let candidates: Vec<&ruma::OwnedUserId> = remaining.iter().filter(|member| !policy.is_external(member)).collect();
    let moderators: Vec<&ruma::OwnedUserId> =
        candidates.iter().copied().filter(|member| levels.user(member) >= MODERATOR).collect();
    let promoted = if moderators.is_empty() { candidates } else { moderators };
    if promoted.is_empty() {
        return Ok(None);
    }
    let mut content: Value =
        power_event.and_then(|event| serde_json::from_str(event.content_json()).ok()).unwrap_or_else(|| json!({}));
    if !content["users"].is_object() {
        content["users"] = json!({});
    }
    for user in &promoted {
        content["users"][user.as_str()] = json!(ADMIN);
    }
    tracing::info!(
        target: "conduit::policy",
        rule = "last_admin",
        leaver = %leaver,
        promoted = ?promoted.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        "the last admin leaves: promoting"
    );
    Ok(Some(EventRequest::state(kinds::POWER_LEVELS, "", content)))
}

/// Joined and invited members other than `leaver`.
fn remaining_members(state: &dyn StateView, leaver: &UserId) -> Result<Vec<ruma::OwnedUserId>> {
    let mut members: Vec<ruma::OwnedUserId> = state
        .member_events()?
        .into_iter()
        .filter(|event| matches!(membership_of(event), Some(Membership::Join | Membership::Invite)))
        .filter_map(|event| event.state_key_str().and_then(|key| UserId::parse(key).ok()))
        .filter(|member| member != leaver)
        .collect();
    members.sort();
    members.dedup();
    Ok(members)
}
