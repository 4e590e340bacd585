//! History from before this server joined a room, fetched from the room's
//! other servers when a client pages back past what is held here
//! (server-server API "Backfilling and retrieving missing events").
//!
//! `/backfill` from the room's earliest event here, through each other
//! server of the room in turn; each event checked (format, signatures,
//! content hash, the rules against its own auth events, fetched when
//! missing), only ancestors of that earliest event kept, and stored below
//! it, newest first, in the
//! positions kept when the room was joined (`rooms::pipeline::remote`). The
//! history is shown with the state before that earliest event; an event the
//! rules refuse is kept as rejected, outside the timeline.

use ruma::{OwnedServerName, RoomId};
use serde_json::Value;

use super::{
    receive::{auth_events, Receipt},
    Federation,
};
use crate::{
    error::Result,
    http::request::percent_encode,
    rooms::{pipeline::Verdict, Rooms},
    storage::records::EventStatus,
};

/// Most events asked for at once.
pub const MAX_BACKFILL: usize = 100;

/// Servers asked for history in one `/messages` call, at most.
const MAX_SERVERS_TRIED: usize = 3;

impl Federation {
    /// Fetches up to `limit` events of history older than what `room_id`'s
    /// timeline holds; how many were added to it.
    pub async fn backfill(&self, rooms: &Rooms, room_id: &RoomId, limit: usize) -> Result<usize> {
        let Some(room) = rooms.room(room_id)? else { return Ok(0) };
        if rooms.backfill_point(&room)?.is_none() {
            return Ok(0);
        }
        let servers: Vec<OwnedServerName> = rooms.other_servers_in(room_id, &self.server_name)?;
        // A few servers at most: each may take its whole request time.
        for server in servers.into_iter().take(MAX_SERVERS_TRIED) {
            match self.backfill_from(rooms, &server, room_id, limit.clamp(1, MAX_BACKFILL)).await {
                Ok(0) => tracing::debug!(room = %room_id, %server, "this server had no earlier events"),
                Ok(added) => return Ok(added),
                Err(error) => tracing::info!(room = %room_id, %server, %error, "could not backfill from this server"),
            }
        }
        Ok(0)
    }

    async fn backfill_from(
        &self,
        rooms: &Rooms,
        server: &OwnedServerName,
        room_id: &RoomId,
        limit: usize,
    ) -> Result<usize> {
        let Some(room) = rooms.room(room_id)? else { return Ok(0) };
        let Some(point) = rooms.backfill_point(&room)? else { return Ok(0) };
        let path = format!(
            "/_matrix/federation/v1/backfill/{}?v={}&limit={limit}",
            percent_encode(room_id.as_str()),
            percent_encode(point.earliest.as_str())
        );
        let answer = self.request(server, "GET", &path, None).await?;
        let receipt = Receipt::new(rooms, self, server);
        let (_, rules) = Rooms::rules_of(&room)?;
        let mut events = Vec::new();
        for json in answer.get("pdus").and_then(Value::as_array).into_iter().flatten().take(limit + 1) {
            match receipt.checked(&room_id.to_owned(), json).await {
                Ok(pdu) if pdu.room_id_or_derived() == room_id => events.push(pdu),
                Ok(_) => {}
                Err(dropped) => tracing::info!(%server, %dropped, "a backfilled event was dropped"),
            }
        }
        let mut events = ancestors_of(rooms, &point.earliest, events)?;
        // Newest first: each takes the next position down.
        events.sort_by_key(|pdu| std::cmp::Reverse((pdu.depth(), pdu.origin_server_ts_millis())));
        // Fetched and checked without the room's lock; stored under it, if
        // nobody stored history meanwhile.
        let _guard = rooms.locks.lock(room_id).await;
        let Some(mut room) = rooms.room(room_id)? else { return Ok(0) };
        let Some(mut point) = rooms.backfill_point(&room)?.filter(|now| now.earliest == point.earliest) else {
            return Ok(0);
        };
        let mut added = 0;
        for pdu in events {
            if rooms.get_pdu(pdu.event_id())?.is_some_and(|(_, stored)| stored.position().is_some()) {
                continue;
            }
            if point.next_position <= point.floor {
                break;
            }
            let status = match auth_events::check(&receipt, &pdu, &rules).await {
                Ok(None) => EventStatus::Accepted,
                Ok(Some(Verdict::Reject(refusal))) => {
                    tracing::info!(event = %pdu.event_id(), ?refusal, "a backfilled event is rejected");
                    rooms.store_outlier(&mut room, &pdu, EventStatus::Rejected).await?;
                    continue;
                }
                Ok(Some(_)) => continue,
                Err(error) if auth_events::is_unknown_auth_event(&error) => continue,
                Err(error) => return Err(error),
            };
            if rooms.store_backfilled(&mut room, &pdu, status, point.next_position, point.snapshot).await? {
                point.next_position -= 1;
                added += 1;
            }
        }
        tracing::debug!(room = %room_id, %server, added, "history backfilled");
        Ok(added)
    }
}

/// The events of a `/backfill` answer that are ancestors of `earliest`
/// (through `prev_events`, within the answer): a peer cannot slip in events
/// that are not the room's history before it.
fn ancestors_of(
    rooms: &Rooms,
    earliest: &ruma::EventId,
    events: Vec<crate::events::Pdu>,
) -> Result<Vec<crate::events::Pdu>> {
    use ruma::state_res::Event as _;
    let mut by_id: std::collections::HashMap<ruma::OwnedEventId, crate::events::Pdu> =
        events.into_iter().map(|pdu| (pdu.event_id().clone(), pdu)).collect();
    let Some((start, _)) = rooms.get_pdu(earliest)? else { return Ok(Vec::new()) };
    let mut queue: Vec<ruma::OwnedEventId> = start.prev_events().cloned().collect();
    let mut kept = Vec::new();
    while let Some(event_id) = queue.pop() {
        if let Some(pdu) = by_id.remove(&event_id) {
            queue.extend(pdu.prev_events().cloned());
            kept.push(pdu);
        }
    }
    Ok(kept)
}
