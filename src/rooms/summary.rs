//! Member counts and heroes of a room, as `/sync` room summaries carry them.
//!
//! Spec: client-server API "Syncing", `RoomSummary` (`m.heroes`,
//! `m.joined_member_count`, `m.invited_member_count`) and "Calculating the
//! display name for a room". Summaries are computed from a state snapshot
//! and cached by snapshot id: a snapshot never changes.

use super::Membership;
use std::sync::Arc;

use ruma::UserId;

use super::{membership_of, Rooms};
use crate::events::kinds;
use crate::{error::Result, storage::records::RoomRecord};

/// Members named as heroes at most.
pub const HEROES: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSummary {
    pub joined: u64,
    pub invited: u64,
    /// The first joined or invited members by user id, one more than
    /// [`HEROES`] so the viewer can be left out.
    candidates: Vec<String>,
}

impl MemberSummary {
    /// Heroes as `viewer` sees them (never themselves).
    pub fn heroes_for(&self, viewer: &UserId) -> Vec<String> {
        self.candidates.iter().filter(|user| *user != viewer.as_str()).take(HEROES).cloned().collect()
    }
}

impl Rooms {
    /// The member summary of a room's current state.
    pub fn member_summary(&self, room: &RoomRecord) -> Result<Arc<MemberSummary>> {
        if let Some(summary) = self.summaries.get(&room.current_state) {
            return Ok(summary);
        }
        let state = self.current_state(room)?;
        let (mut joined, mut invited) = (0, 0);
        let mut candidates = Vec::new();
        for pdu in self.state_events_in(&state)? {
            if pdu.kind().to_string() != kinds::MEMBER {
                continue;
            }
            match membership_of(&pdu) {
                Some(Membership::Join) => joined += 1,
                Some(Membership::Invite) => invited += 1,
                _ => continue,
            }
            candidates.extend(pdu.state_key_str().map(str::to_owned));
        }
        candidates.sort();
        candidates.truncate(HEROES + 1);
        let summary = Arc::new(MemberSummary { joined, invited, candidates });
        self.summaries.insert(room.current_state, Arc::clone(&summary));
        Ok(summary)
    }
}
