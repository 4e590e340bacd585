//! What other servers ask of a room this server is in: whether they may see
//! an event (history visibility for servers), membership event templates
//! (`/make_join`, `/make_leave`), the state and auth chain at an event
//! (`/state`, `/state_ids`, `/event_auth`, `/send_join`), and walks back
//! through `prev_events` (`/get_missing_events`, `/backfill`).
//!
//! Spec: server-server API "Joining Rooms", "Leaving Rooms", "Retrieving
//! events", "Backfilling and retrieving missing events", and "History
//! visibility" as it applies to servers: an event is visible to a server
//! when the room is world-readable or shared with it at that event, or one
//! of its users was joined (or invited, for `invited`) at that event.

use std::collections::{BTreeSet, HashSet, VecDeque};

use ruma::state_res::Event as _;
use ruma::{canonical_json::CanonicalJsonObject, EventId, OwnedEventId, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::Value;

use super::{content_string, membership_of, pipeline::StoredState, state::StateMap, Membership, RoomRecord, Rooms};
use crate::{
    error::{Error, Result},
    events::{build_and_sign, kinds, unsigned_object, Pdu},
    rooms::EventRequest,
    storage::records::{EventStatus, StoredPdu},
};

/// Most events answered to one `/backfill` or `/get_missing_events`.
pub const MAX_WALK: usize = 100;

impl Rooms {
    /// Whether `server` has a joined member in the room's current state.
    pub fn server_in_room(&self, room: &RoomRecord, server: &ServerName) -> Result<bool> {
        let state = self.current_state(room)?;
        Ok(self.audience(room.current_state, &state)?.servers.contains(server))
    }

    /// Whether another server's `user` is joined to a room where a local user
    /// is joined too (its device list matters here). Reads every room's
    /// audience, cached per state snapshot.
    pub fn shares_room_with_local(&self, user: &UserId) -> Result<bool> {
        for (room_id, room) in self.storage.tables.roomid_room.all()? {
            let state = self.current_state(&room)?;
            let audience = self.audience(room.current_state, &state)?;
            if audience.local_members.is_empty() || !audience.servers.contains(user.server_name()) {
                continue;
            }
            let Ok(room_id) = ruma::RoomId::parse(&room_id) else { continue };
            if self.membership(&room_id, user)? == Some(super::Membership::Join) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether `authoriser`, a local user, may vouch for `user_id`'s join of a
    /// restricted room (`join_authorised_via_users_server`): the join rules
    /// are restricted, the user is in one of the rooms they allow and neither
    /// invited nor joined, and the authoriser is joined with the power to
    /// invite. Checked when another server sends the join, whatever its
    /// `/make_join` said.
    pub fn may_vouch_for_join(&self, room_id: &RoomId, user_id: &UserId, authoriser: &UserId) -> Result<bool> {
        if !matches!(self.restricted_join_authoriser(room_id, user_id), Ok(Some(_))) {
            return Ok(false);
        }
        let Some(room) = self.room(room_id)? else { return Ok(false) };
        let (_, rules) = Self::rules_of(&room)?;
        let state = self.current_state(&room)?;
        if self.membership_in(&state, authoriser)? != Some(Membership::Join) {
            return Ok(false);
        }
        let levels = self.power_levels(&state, &rules)?;
        Ok(levels.user(authoriser) >= levels.action(super::power_levels::Action::Invite))
    }

    /// Whether `/event` may hand `server` this event, for a server in the
    /// room (or a world-readable one): an event of the room's graph it may
    /// see — soft-failed ones included (later events may build on them, and
    /// the other servers need them to place those), never a rejected one;
    /// an event held without its state (an auth or state event fetched from
    /// a peer) to any server in the room, as its visibility cannot be
    /// judged here (Synapse does the same).
    pub fn may_serve_event(&self, server: &ServerName, room_id: &RoomId, stored: &StoredPdu) -> Result<bool> {
        let Some(room) = self.room(room_id)? else { return Ok(false) };
        let member = self.server_in_room(&room, server)? || self.is_world_readable(&room)?;
        if !member || stored.status == EventStatus::Rejected {
            return Ok(false);
        }
        if stored.state_before.is_none() {
            return Ok(true);
        }
        self.server_can_see(server, stored)
    }

    /// Whether the room's current history visibility is `world_readable`.
    pub fn is_world_readable(&self, room: &RoomRecord) -> Result<bool> {
        let state = self.current_state(room)?;
        Ok(self
            .state_event_in(&state, kinds::HISTORY_VISIBILITY, "")?
            .and_then(|event| content_string(&event, "history_visibility"))
            .is_some_and(|visibility| visibility == "world_readable"))
    }

    /// Whether `server` may see the event (see the module documentation).
    pub fn server_can_see(&self, server: &ServerName, stored: &StoredPdu) -> Result<bool> {
        let Some(before) = stored.state_before else { return Ok(false) };
        let state = self.state.full_state(before)?;
        let visibility = self
            .state_event_in(&state, kinds::HISTORY_VISIBILITY, "")?
            .and_then(|event| content_string(&event, "history_visibility"))
            .unwrap_or_else(|| "shared".to_owned());
        if visibility == "world_readable" || visibility == "shared" {
            return Ok(true);
        }
        for membership in self.server_memberships_in(&state, server)? {
            match (membership, visibility.as_str()) {
                (Membership::Join, _) | (Membership::Invite, "invited") => return Ok(true),
                _ => {}
            }
        }
        Ok(false)
    }

    /// The memberships of `server`'s users in `state`.
    fn server_memberships_in(&self, state: &StateMap, server: &ServerName) -> Result<Vec<Membership>> {
        let suffix = format!(":{server}");
        let mut memberships = Vec::new();
        for (short_key, short_event) in state {
            let (kind, state_key) = self.state.state_key_of(*short_key)?;
            if kind != kinds::MEMBER || !state_key.ends_with(&suffix) {
                continue;
            }
            let event_id = self.event_id_of_short(*short_event)?;
            if let Some(membership) = self.get_pdu(&event_id)?.and_then(|(pdu, _)| membership_of(&pdu)) {
                memberships.push(membership);
            }
        }
        Ok(memberships)
    }

    /// An unsigned membership event of `user_id` on the room's tip, for its
    /// server to sign (`/make_join`, `/make_leave`, `/make_knock`), after
    /// checking the room's rules would allow it; with the room's version.
    pub fn membership_template(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        content: Value,
    ) -> Result<(RoomVersionId, CanonicalJsonObject)> {
        let room = self.room(room_id)?.ok_or_else(|| Error::not_found("This server is not in the room"))?;
        let (version, rules) = Self::rules_of(&room)?;
        let state = self.current_state(&room)?;
        let view = StoredState::new(self, state);
        let tip = self.tip_of(&room)?;
        let request = EventRequest::state(kinds::MEMBER, user_id.as_str(), content);
        let new = self.new_event(room_id, user_id, request, &rules, &view, &tip)?;
        // Signed by us only to run the auth rules on it; the template goes unsigned.
        let trial = build_and_sign(new.clone(), &rules, &self.key, &self.server_name)?;
        self.authorise(&trial, &rules, self, &view, None)?.accepted()?;
        Ok((version, unsigned_object(new)?))
    }

    /// The state before an event (ids) and the auth chain of that state
    /// (ids), for `/state_ids` and `/state`.
    pub fn state_at_event(&self, event_id: &EventId) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
        let (_, stored) = self.get_pdu(event_id)?.ok_or_else(|| Error::not_found("Unknown event"))?;
        let snapshot =
            stored.snapshot_before().map_err(|_| Error::not_found("This server has no state at that event"))?;
        let state = self.state.full_state(snapshot)?;
        let mut state_ids = Vec::with_capacity(state.len());
        for short in state.values() {
            state_ids.push(self.event_id_of_short(*short)?);
        }
        let chain = self.auth_chain(&state_ids)?;
        Ok((state_ids, chain.into_iter().collect()))
    }

    /// The stored PDU JSON of an event (as signed, redacted if it was).
    pub fn pdu_json(&self, event_id: &EventId) -> Result<Option<(Value, std::sync::Arc<StoredPdu>)>> {
        Ok(self.get_pdu(event_id)?.map(|(_, stored)| {
            let json = serde_json::from_str(&stored.json).unwrap_or(Value::Null);
            (json, stored)
        }))
    }

    /// Events reached from `latest` through `prev_events`, not beyond
    /// `earliest` nor below `min_depth`, at most `limit`, oldest first,
    /// only those `server` may see (`/get_missing_events`: `latest` itself
    /// is not included).
    pub fn missing_events(
        &self,
        room_id: &RoomId,
        server: &ServerName,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: usize,
        min_depth: u64,
    ) -> Result<Vec<Value>> {
        let stop: HashSet<&OwnedEventId> = earliest.iter().collect();
        let mut starts = Vec::new();
        for event_id in latest {
            if let Some((pdu, _)) = self.get_pdu(event_id)? {
                starts.extend(pdu.prev_events().cloned());
            }
        }
        let found = self.walk_back(room_id, server, starts, &stop, limit.min(MAX_WALK), min_depth)?;
        Ok(found)
    }

    /// Events from `from` (included) back through `prev_events`, at most
    /// `limit`, that `server` may see, oldest first (`/backfill`).
    pub fn backfill(
        &self,
        room_id: &RoomId,
        server: &ServerName,
        from: Vec<OwnedEventId>,
        limit: usize,
    ) -> Result<Vec<Value>> {
        self.walk_back(room_id, server, from, &HashSet::new(), limit.min(MAX_WALK), 0)
    }

    fn walk_back(
        &self,
        room_id: &RoomId,
        server: &ServerName,
        starts: Vec<OwnedEventId>,
        stop: &HashSet<&OwnedEventId>,
        limit: usize,
        min_depth: u64,
    ) -> Result<Vec<Value>> {
        let mut queue: VecDeque<OwnedEventId> = starts.into();
        let mut seen: BTreeSet<OwnedEventId> = BTreeSet::new();
        let mut found: Vec<(u64, Value)> = Vec::new();
        // Events the asking server may not see do not count towards `limit`:
        // the walk itself is bounded too.
        let mut visits = 0;
        while let Some(event_id) = queue.pop_front() {
            visits += 1;
            if found.len() >= limit || visits > limit.saturating_mul(10).max(100) {
                break;
            }
            if stop.contains(&event_id) || !seen.insert(event_id.clone()) {
                continue;
            }
            let Some((pdu, stored)) = self.get_pdu(&event_id)? else { continue };
            if stored.room_id != room_id.as_str() || pdu.depth() < min_depth || stored.status == EventStatus::Rejected {
                continue;
            }
            // (An event held without its state is served as `/event` serves it.)
            if stored.state_before.is_none() || self.server_can_see(server, &stored)? {
                found.push((pdu.depth(), serde_json::from_str(&stored.json).unwrap_or(Value::Null)));
            }
            queue.extend(pdu.prev_events().cloned());
        }
        found.sort_by_key(|(depth, _)| *depth);
        Ok(found.into_iter().map(|(_, json)| json).collect())
    }

    /// The event nearest `ts` (at or before it going backwards, at or after
    /// it going forwards) that `visible` lets through: its id and timestamp
    /// (`/timestamp_to_event`, client and federation).
    pub fn event_near_timestamp(
        &self,
        room: &RoomRecord,
        ts: u64,
        backwards: bool,
        visible: impl Fn(&Pdu, &StoredPdu) -> Result<bool>,
    ) -> Result<Option<(OwnedEventId, u64)>> {
        let mut position = if backwards { self.current_position()? + 1 } else { 0 };
        loop {
            let page = self.timeline_page(room, position, backwards, 100)?;
            let last_page = page.len() < 100;
            for (count, event_id) in page {
                position = if backwards { count } else { count + 1 };
                let Some((pdu, stored)) = self.get_pdu(&event_id)? else { continue };
                let event_ts = pdu.origin_server_ts_millis();
                let matches = if backwards { event_ts <= ts } else { event_ts >= ts };
                if matches && visible(&pdu, &stored)? {
                    return Ok(Some((event_id, event_ts)));
                }
            }
            if last_page {
                return Ok(None);
            }
        }
    }

    /// The state before `pdu` and the auth chains, as PDU JSON, for a
    /// joining server (`/send_join`): (state, auth chain). With
    /// `omit_members` (MSC3706, spec `omit_members`), member events are left
    /// out of the state but the joining user's own and, in a room with
    /// neither name nor canonical alias, its heroes'; the auth chain then
    /// covers the join and the state returned, less what the state holds.
    pub fn join_answer(&self, pdu: &Pdu, omit_members: bool) -> Result<(Vec<Value>, Vec<Value>)> {
        let (state_ids, chain_ids) = if omit_members {
            self.partial_state_at_join(pdu)?
        } else {
            let (state_ids, mut chain_ids) = self.state_at_event(pdu.event_id())?;
            let known: HashSet<OwnedEventId> = chain_ids.iter().cloned().collect();
            let own_chain = self.auth_chain(&[pdu.event_id().clone()])?;
            chain_ids.extend(own_chain.into_iter().filter(|id| !known.contains(id)));
            (state_ids, chain_ids)
        };
        let as_json = |ids: &[OwnedEventId]| -> Result<Vec<Value>> {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some((json, _)) = self.pdu_json(id)? {
                    out.push(json);
                }
            }
            Ok(out)
        };
        Ok((as_json(&state_ids)?, as_json(&chain_ids)?))
    }

    /// The servers with joined members in the state before an event.
    pub fn servers_before(&self, event_id: &EventId) -> Result<Vec<String>> {
        let (_, stored) = self.get_pdu(event_id)?.ok_or_else(|| Error::not_found("Unknown event"))?;
        let snapshot = stored.snapshot_before()?;
        let state = self.state.full_state(snapshot)?;
        Ok(self.audience(snapshot, &state)?.servers.iter().map(ToString::to_string).collect())
    }

    /// The partial state before a join and its auth chain (see [`Self::join_answer`]).
    fn partial_state_at_join(&self, join: &Pdu) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
        let (_, stored) = self.get_pdu(join.event_id())?.ok_or_else(|| Error::not_found("Unknown event"))?;
        let snapshot =
            stored.snapshot_before().map_err(|_| Error::not_found("This server has no state at the join"))?;
        let state = self.state.full_state(snapshot)?;
        let room_id = join.room_id_or_derived();
        let untitled = self.state_event_in(&state, kinds::NAME, "")?.is_none()
            && self.state_event_in(&state, kinds::CANONICAL_ALIAS, "")?.is_none();
        let mut members_kept: HashSet<String> = HashSet::from([join.sender().to_string()]);
        if untitled {
            if let Some(room) = self.room(&room_id)? {
                members_kept.extend(self.member_summary(&room)?.heroes_for(join.sender()));
            }
        }
        let mut state_ids = Vec::new();
        for (key, short) in state.iter() {
            let (kind, state_key) = self.state.state_key_of(*key)?;
            if kind != kinds::MEMBER || members_kept.contains(&state_key) {
                state_ids.push(self.event_id_of_short(*short)?);
            }
        }
        let mut chain_of = state_ids.clone();
        chain_of.push(join.event_id().clone());
        let in_state: HashSet<&OwnedEventId> = state_ids.iter().collect();
        let chain = self.auth_chain(&chain_of)?.into_iter().filter(|id| !in_state.contains(id)).collect();
        Ok((state_ids, chain))
    }
}
