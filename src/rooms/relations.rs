//! Relations between events (`m.relates_to`): the index of children, thread
//! roots, and the bundled aggregations served in `unsigned.m.relations`.
//!
//! Spec: client-server API "Forming relationships between events",
//! "Aggregations of child events", modules "Event replacements" (`m.replace`:
//! the most recent valid edit, never applied to the content), "Threading"
//! (`m.thread`: count, latest event, participation) and "Reference relations"
//! (`m.reference`: the list of referencing event ids).

use serde_json::{json, Value};

use super::{client_event, ClientEvent, Rooms};
use crate::{
    error::{Error, ErrorKind, Result},
    events::Pdu,
    storage::{
        prefix_of,
        records::{RelationRecord, StoredPdu},
        Batch,
    },
};

/// `content["m.relates_to"]`: (rel_type, parent event id).
pub fn relation_of(content: &Value) -> Option<(String, String)> {
    let relates_to = content.get("m.relates_to")?;
    let rel_type = relates_to.get("rel_type")?.as_str()?;
    let parent = relates_to.get("event_id")?.as_str()?;
    Some((rel_type.to_owned(), parent.to_owned()))
}

pub(super) fn content_of(pdu: &Pdu) -> Value {
    serde_json::from_str(pdu.content_json()).unwrap_or_default()
}

impl Rooms {
    /// Refuses relations the spec forbids before an event is built: a thread
    /// may not start from an event that itself relates to another.
    pub(super) fn check_relation(&self, room_id: &ruma::RoomId, content: &Value) -> Result<()> {
        let Some((rel_type, parent)) = relation_of(content) else { return Ok(()) };
        if rel_type != "m.thread" {
            return Ok(());
        }
        let Ok(parent_id) = ruma::EventId::parse(&parent) else {
            return Err(Error::bad_json("m.relates_to.event_id is not an event id"));
        };
        if let Some((parent, stored)) = self.get_pdu(&parent_id)? {
            if stored.room_id == room_id.as_str() && relation_of(&content_of(&parent)).is_some() {
                return Err(Error::new(
                    ErrorKind::BadRequest,
                    "A thread cannot start from an event that relates to another",
                ));
            }
        }
        Ok(())
    }

    /// Index writes for a new event that relates to a parent in the same room.
    pub(super) fn index_relation(
        &self,
        batch: &mut Batch,
        room_id: &ruma::RoomId,
        pdu: &Pdu,
        count: u64,
    ) -> Result<()> {
        if pdu.is_state() {
            return Ok(());
        }
        let Some((rel_type, parent)) = relation_of(&content_of(pdu)) else { return Ok(()) };
        let Ok(parent_id) = ruma::EventId::parse(&parent) else { return Ok(()) };
        let Some((_, parent_stored)) = self.get_pdu(&parent_id)? else { return Ok(()) };
        if parent_stored.room_id != room_id.as_str() {
            return Ok(());
        }
        let record = RelationRecord {
            child: pdu.event_id().to_string(),
            rel_type: rel_type.clone(),
            kind: pdu.kind().to_string(),
            sender: pdu.sender_str().to_owned(),
        };
        batch.insert(&self.storage.tables.relations, &(parent.clone(), count), &record)?;
        if rel_type == "m.thread" {
            batch.insert(&self.storage.tables.thread_roots, &(room_id.to_string(), parent), &count)?;
        }
        Ok(())
    }

    /// A redacted child no longer relates to its parent.
    pub(super) fn unindex_relation(&self, batch: &mut Batch, target: &Pdu, stored: &StoredPdu) {
        if let Some((_, parent)) = relation_of(&content_of(target)) {
            batch.remove(&self.storage.tables.relations, &(parent, stored.count));
        }
    }

    /// The children of an event, oldest first: (count, relation).
    pub fn children(&self, parent: &str) -> Result<Vec<(u64, RelationRecord)>> {
        let entries = self.storage.tables.relations.scan_prefix(&prefix_of(parent))?;
        Ok(entries.into_iter().map(|((_, count), record)| (count, record)).collect())
    }

    /// Thread roots of a room with the count of their latest event.
    pub fn thread_roots(&self, room_id: &ruma::RoomId) -> Result<Vec<(String, u64)>> {
        let entries = self.storage.tables.thread_roots.scan_prefix(&prefix_of(room_id.as_str()))?;
        Ok(entries.into_iter().map(|((_, root), latest)| (root, latest)).collect())
    }

    fn visible_child(&self, viewer: &ruma::UserId, id: &str) -> Result<Option<super::StoredEvent>> {
        let Ok(event_id) = ruma::EventId::parse(id) else { return Ok(None) };
        let Some((pdu, stored)) = self.get_pdu(&event_id)? else { return Ok(None) };
        Ok(self.can_see_event(viewer, &pdu, &stored)?.then_some((pdu, stored)))
    }

    /// `unsigned["m.relations"]` for an event served to `viewer`, if any.
    pub fn bundled_aggregations(&self, pdu: &Pdu, stored: &StoredPdu, viewer: &ruma::UserId) -> Result<Option<Value>> {
        if pdu.is_state() {
            return Ok(None);
        }
        let children = self.children(pdu.event_id().as_str())?;
        if children.is_empty() {
            return Ok(None);
        }
        let room_id = ruma::RoomId::parse(&stored.room_id).map_err(|e| Error::internal("stored room id", e))?;
        let mut relations = serde_json::Map::new();
        let mut edit: Option<(u64, String, Value)> = None;
        let mut thread_count = 0u64;
        let mut thread_latest: Option<Value> = None;
        let mut participated = pdu.sender_str() == viewer.as_str();
        let mut references = Vec::new();
        for (_, relation) in children {
            let is_edit = relation.rel_type == "m.replace";
            if is_edit
                && (stored.redacted || relation.sender != pdu.sender_str() || relation.kind != pdu.kind().to_string())
            {
                continue;
            }
            let Some((child, _)) = self.visible_child(viewer, &relation.child)? else { continue };
            match relation.rel_type.as_str() {
                "m.replace" if content_of(&child).get("m.new_content").is_some() => {
                    let key = (child.origin_server_ts_millis(), child.event_id().to_string());
                    if edit.as_ref().is_none_or(|(ts, id, _)| (*ts, id.clone()) < key) {
                        edit = Some((key.0, key.1, client_event(&child, &room_id)));
                    }
                }
                "m.thread" => {
                    thread_count += 1;
                    participated |= child.sender_str() == viewer.as_str();
                    thread_latest = Some(client_event(&child, &room_id));
                }
                "m.reference" => references.push(json!({ "event_id": child.event_id() })),
                _ => {}
            }
        }
        if let Some((_, _, event)) = edit {
            relations.insert("m.replace".into(), event);
        }
        if let Some(latest) = thread_latest {
            relations.insert(
                "m.thread".into(),
                json!({ "latest_event": latest, "count": thread_count, "current_user_participated": participated }),
            );
        }
        if !references.is_empty() {
            relations.insert("m.reference".into(), json!({ "chunk": references }));
        }
        Ok((!relations.is_empty()).then_some(Value::Object(relations)))
    }

    /// An erased sender's event as a viewer who was not joined when it was
    /// sent gets it: redacted, without aggregations (`users::erased`).
    /// `None` when the viewer gets the event whole.
    fn erased_copy(
        &self,
        pdu: &Pdu,
        stored: &StoredPdu,
        viewer: &ruma::UserId,
        room_id: &ruma::RoomId,
    ) -> Result<Option<ClientEvent>> {
        if !self.erased.contains(pdu.sender_str()) || self.joined_at_event(viewer, stored)? {
            return Ok(None);
        }
        let rules = Self::rules_of_stored(stored)?;
        let redacted = pdu.redacted(&rules).map_err(|e| Error::internal("redacting an erased sender's event", e))?;
        Ok(Some(ClientEvent::new(&redacted, room_id)))
    }

    /// The client format of an event for one device of the viewer, with its
    /// bundled aggregations; an event that device sent with a transaction id
    /// carries it (`unsigned.transaction_id`).
    pub fn serve_event(&self, pdu: &Pdu, stored: &StoredPdu, viewer: &ruma::UserId, device_id: &str) -> Result<Value> {
        Ok(self.serve_client_event(pdu, stored, viewer, device_id)?.to_value())
    }

    /// [`Self::serve_event`] before it becomes a JSON tree: written out
    /// as it is, its content is copied as stored text.
    pub fn serve_client_event(
        &self,
        pdu: &Pdu,
        stored: &StoredPdu,
        viewer: &ruma::UserId,
        device_id: &str,
    ) -> Result<ClientEvent> {
        let room_id = ruma::RoomId::parse(&stored.room_id).map_err(|e| Error::internal("stored room id", e))?;
        if let Some(erased) = self.erased_copy(pdu, stored, viewer, &room_id)? {
            return Ok(erased);
        }
        let mut event = ClientEvent::new(pdu, &room_id);
        if let Some(relations) = self.bundled_aggregations(pdu, stored, viewer)? {
            event.set_unsigned("m.relations", relations);
        }
        let redaction = stored.redacted_by.as_deref().and_then(|id| ruma::EventId::parse(id).ok());
        if let Some((redaction, _)) = redaction.map(|id| self.get_pdu(&id)).transpose()?.flatten() {
            event.set_unsigned("redacted_because", client_event(&redaction, &room_id));
        }
        if let Some((sending_device, txn_id)) = &stored.transaction {
            if sending_device == device_id && pdu.sender_str() == viewer.as_str() {
                event.set_unsigned("transaction_id", Value::String(txn_id.clone()));
            }
        }
        Ok(event)
    }
}
