//! Lazy-loading room members in `/sync`.
//!
//! Spec: client-server API "Lazy-loading room members" and the filter's
//! `lazy_load_members` / `include_redundant_members`. With lazy loading, a
//! room's `state` carries only the member events of the timeline's senders
//! (and the user's own). The server remembers, per device and room, which
//! member event of each user it sent last, and does not send it again
//! (unless the filter sets `include_redundant_members`). A member event that
//! changed since (a new display name, a leave and rejoin in a gap) differs
//! from the one remembered and is sent. An initial or `full_state` sync
//! starts the memory afresh.
//!
//! The memory lives in RAM and is bounded; losing it (a restart, eviction)
//! only means sending a member event again, which is harmless (as Synapse
//! keeps it).

use std::{collections::BTreeSet, collections::HashMap, sync::Arc};

use ruma::{OwnedRoomId, RoomId};

use crate::{
    cache::BoundedCache,
    error::Result,
    events::{kinds, Pdu},
    rooms::{state::StateMap, Rooms, StoredEvent},
    users::Identity,
};

use super::SyncRequest;

/// Member events remembered across devices and rooms, each generation
/// (about 150 bytes each: at most about 15 MiB in all).
const REMEMBERED_MEMBERS: usize = 50_000;

/// (localpart, device, room) → member user id → the member event id sent last.
type DeviceRoom = (String, String, OwnedRoomId);
type Sent = Arc<HashMap<String, String>>;

/// Which member events each device was sent, per room.
pub struct SentMembers {
    cache: BoundedCache<DeviceRoom, Sent>,
}

impl Default for SentMembers {
    fn default() -> Self {
        Self { cache: BoundedCache::weighted(REMEMBERED_MEMBERS, |sent: &Sent| sent.len()) }
    }
}

/// What one room's lazy loading reads.
pub(super) struct RoomView<'a> {
    pub room_id: &'a RoomId,
    pub timeline: &'a [StoredEvent],
    /// The state at the start of the timeline.
    pub start_state: &'a StateMap,
    /// An initial or `full_state` sync: the device has nothing yet.
    pub whole_state: bool,
}

/// The `state` events to send for a room: all of `state` without lazy
/// loading; with it, the non-member events and the senders' member events
/// the device was not sent yet.
pub(super) fn lazy_load(
    rooms: &Rooms,
    sent_members: &SentMembers,
    request: &SyncRequest,
    who: &Identity,
    room: &RoomView<'_>,
    state: Vec<Pdu>,
) -> Result<Vec<Pdu>> {
    let filter = &request.filter.room.state;
    if !filter.lazy_load_members {
        return Ok(state);
    }
    let senders: BTreeSet<&str> =
        room.timeline.iter().map(|(pdu, _)| pdu.sender_str()).chain([who.user_id.as_str()]).collect();
    let mut kept: Vec<Pdu> = state
        .into_iter()
        .filter(|pdu| !is_member_event(pdu) || pdu.state_key_str().is_some_and(|k| senders.contains(k)))
        .collect();
    for sender in &senders {
        let present = kept.iter().any(|pdu| is_member_event(pdu) && pdu.state_key_str() == Some(*sender));
        if !present {
            kept.extend(rooms.state_event_in(room.start_state, kinds::MEMBER, sender)?);
        }
    }
    let key = (who.localpart.clone(), who.device_id.clone(), room.room_id.to_owned());
    let remembered: Sent = match room.whole_state {
        true => Sent::default(),
        false => sent_members.cache.get(&key).unwrap_or_default(),
    };
    let already_sent = |pdu: &Pdu| {
        pdu.state_key_str()
            .and_then(|user| remembered.get(user))
            .is_some_and(|id| id.as_str() == pdu.event_id().as_str())
    };
    if !filter.include_redundant_members {
        kept.retain(|pdu| !is_member_event(pdu) || !already_sent(pdu));
    }
    // What the device now has that the memory lacks: usually nothing, and
    // then the memory (as big as the room's talkers) is not copied.
    let timeline_members = room.timeline.iter().map(|(pdu, _)| pdu);
    let news: Vec<&Pdu> =
        kept.iter().chain(timeline_members).filter(|pdu| is_member_event(pdu) && !already_sent(pdu)).collect();
    if room.whole_state || !news.is_empty() {
        let mut updated = HashMap::clone(&remembered);
        for pdu in news {
            if let Some(user) = pdu.state_key_str() {
                updated.insert(user.to_owned(), pdu.event_id().to_string());
            }
        }
        sent_members.cache.insert(key, Arc::new(updated));
    }
    Ok(kept)
}

pub(super) fn is_member_event(pdu: &Pdu) -> bool {
    pdu.kind() == &ruma::events::TimelineEventType::RoomMember
}
