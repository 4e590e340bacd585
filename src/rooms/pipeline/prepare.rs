//! Step 1 of the pipeline for local events: the checks a client's request
//! must pass, then the PDU built and signed (server-server API "PDUs",
//! "Signing events"; the auth events chosen as the room version's
//! `auth_types_for_event` says).

use ruma::state_res::Event as _;
use ruma::{
    events::{StateEventType, TimelineEventType},
    room_version_rules::{EventsReferenceFormatVersion, RoomVersionRules},
    state_res, OwnedEventId, RoomId, RoomVersionId, UserId,
};
use serde_json::Value;
use std::collections::BTreeMap;

use super::StateView;
use crate::events::kinds;
use crate::{
    error::{Error, Result},
    events::{build_and_sign, mint_event_id, reference_hash_of, NewEvent, Pdu, V1Ids},
    rooms::{content, state::StateMap, EventRequest, Rooms},
    storage::{records::RoomRecord, Batch, StorageError},
};

/// The largest depth an event may have (2^53 - 1, canonical JSON's limit).
pub const MAX_DEPTH: u64 = (1 << 53) - 1;

/// Where a new event goes: after the room's forward extremities, one deeper.
#[derive(Debug, Clone)]
pub struct Tip {
    pub prev_events: Vec<OwnedEventId>,
    pub depth: u64,
}

impl Rooms {
    /// The checks of a client's request that come before any event is built:
    /// relations the spec forbids, content schemas of well-known state
    /// events (`M_BAD_JSON`), canonical aliases that must name this room.
    pub(crate) fn check_request(&self, room_id: &RoomId, request: &EventRequest) -> Result<()> {
        self.check_relation(room_id, &request.content)?;
        if request.state_key.is_some() {
            content::validate_state_content(&request.kind, &request.content)?;
            if request.kind == kinds::CANONICAL_ALIAS {
                self.check_canonical_alias(room_id, &request.content)?;
            }
        }
        Ok(())
    }

    /// The stored room's tip: its forward extremities and next depth.
    pub(crate) fn tip_of(&self, room: &RoomRecord) -> Result<Tip> {
        let prev_events = room
            .forward_extremities
            .iter()
            .map(|id| OwnedEventId::try_from(id.as_str()).map_err(|_| StorageError::corrupt("stored extremity").into()))
            .collect::<Result<Vec<_>>>()?;
        // Depths stop at the largest canonical JSON integer (a peer's event may
        // have taken the room there): new events still get a valid depth.
        Ok(Tip { prev_events, depth: (room.max_depth + 1).min(MAX_DEPTH) })
    }

    /// Builds and signs `request` as `sender`'s event on top of `tip`, with
    /// the auth events `state` names.
    pub(crate) fn build_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        request: EventRequest,
        rules: &RoomVersionRules,
        state: &dyn StateView,
        tip: &Tip,
    ) -> Result<Pdu> {
        let new = self.new_event(room_id, sender, request, rules, state, tip)?;
        Ok(build_and_sign(new, rules, &self.key, &self.server_name)?)
    }

    /// `request` as `sender`'s event on top of `tip`, with the auth events
    /// `state` names, not yet signed.
    pub(crate) fn new_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        request: EventRequest,
        rules: &RoomVersionRules,
        state: &dyn StateView,
        tip: &Tip,
    ) -> Result<NewEvent> {
        let kind = TimelineEventType::from(request.kind.as_str());
        let raw_content =
            serde_json::value::to_raw_value(&request.content).map_err(|e| Error::bad_json(e.to_string()))?;
        let auth_types = state_res::auth_types_for_event(
            &kind,
            sender,
            request.state_key.as_deref(),
            &raw_content,
            &rules.authorization,
        )
        .map_err(|reason| Error::bad_json(format!("Invalid event: {reason}")))?;
        let mut auth_events = Vec::new();
        let mut auth_pdus = Vec::new();
        for (auth_kind, auth_state_key) in auth_types {
            if auth_kind == StateEventType::RoomCreate && !rules.event_format.allow_room_create_in_auth_events {
                continue;
            }
            if let Some(event) = state.state_event(&auth_kind.to_string(), &auth_state_key)? {
                auth_events.push(event.event_id().clone());
                auth_pdus.push(event);
            }
        }
        let v1 = if rules.events_reference_format == EventsReferenceFormatVersion::V1 {
            Some(self.v1_ids(rules, &tip.prev_events, &auth_pdus)?)
        } else {
            None
        };
        let new = NewEvent {
            kind: request.kind,
            state_key: request.state_key,
            content: request.content,
            sender: sender.to_owned(),
            room_id: Some(room_id.to_owned()),
            prev_events: tip.prev_events.clone(),
            auth_events,
            depth: tip.depth,
            origin_server_ts: crate::util::now_ms(),
            redacts: if rules.redaction.keep_room_redaction_redacts { None } else { request.redacts },
            v1,
        };
        Ok(new)
    }

    /// For room versions 1 and 2: a new event id of this server and the
    /// reference hashes of the prev events (read from storage) and of the
    /// auth events (at hand).
    fn v1_ids(&self, rules: &RoomVersionRules, prev_events: &[OwnedEventId], auth: &[Pdu]) -> Result<V1Ids> {
        let mut hashes = BTreeMap::new();
        for pdu in auth {
            hashes.insert(pdu.event_id().clone(), Some(reference_hash_of(pdu, rules)?));
        }
        for id in prev_events {
            let (pdu, _) =
                self.get_pdu(id)?.ok_or_else(|| Error::from(StorageError::corrupt("forward extremity not stored")))?;
            hashes.insert(id.clone(), Some(reference_hash_of(&pdu, rules)?));
        }
        Ok(V1Ids { event_id: mint_event_id(&self.server_name)?, hashes })
    }

    /// The create event of a new room (its room id comes from it in version 12).
    pub(crate) fn build_create(
        &self,
        sender: &UserId,
        version: &RoomVersionId,
        rules: &RoomVersionRules,
        mut content: Value,
        origin_server_ts: u64,
    ) -> Result<Pdu> {
        let fields = content.as_object_mut().ok_or_else(|| Error::bad_json("creation_content must be an object"))?;
        fields.insert("room_version".into(), Value::String(version.to_string()));
        if !rules.authorization.use_room_create_sender {
            fields.insert("creator".into(), Value::String(sender.to_string()));
        }
        let room_id = if rules.event_format.require_room_create_room_id {
            let random = crate::crypto::tokens::random_alphanumeric(18);
            Some(
                ruma::OwnedRoomId::try_from(format!("!{random}:{}", self.server_name))
                    .map_err(|e| Error::internal("room id", e))?,
            )
        } else {
            None
        };
        let new = NewEvent {
            kind: kinds::CREATE.into(),
            state_key: Some(String::new()),
            content,
            sender: sender.to_owned(),
            room_id,
            prev_events: vec![],
            auth_events: vec![],
            depth: 1,
            origin_server_ts,
            redacts: None,
            // Rooms of versions 1 and 2 are not created here (`can_create`).
            v1: None,
        };
        Ok(build_and_sign(new, rules, &self.key, &self.server_name)?)
    }

    /// A redaction applies only to an event of the same room, and to someone
    /// else's event only with the `redact` power level (spec: "Redactions").
    /// Returns the write that replaces the target by its redacted form.
    pub(crate) fn prepare_redaction(
        &self,
        room_id: &RoomId,
        pdu: &Pdu,
        rules: &RoomVersionRules,
        state: &StateMap,
    ) -> Result<Batch> {
        let target_id = pdu.redacts().ok_or_else(|| Error::bad_json("A redaction must name the event it redacts"))?;
        let (target, stored) =
            self.get_pdu(target_id)?.ok_or_else(|| Error::not_found("The event to redact is unknown"))?;
        if stored.room_id != room_id.as_str() {
            // As Synapse: a redaction names an event of its own room.
            return Err(Error::invalid_param("The event to redact is in another room"));
        }
        if target.sender() != pdu.sender() {
            let levels = self.power_levels(state, rules)?;
            if levels.user(pdu.sender()) < levels.action(crate::rooms::power_levels::Action::Redact) {
                return Err(Error::forbidden("Redacting other users' events needs a higher power level"));
            }
        }
        let mut batch = Batch::new();
        self.unindex_relation(&mut batch, &target, &stored);
        self.unindex_search_words(&mut batch, &target, stored.count);
        let mut stored = std::sync::Arc::unwrap_or_clone(stored);
        stored.json = target.redacted(rules)?.to_canonical_json();
        stored.redacted = true;
        stored.redacted_by = Some(pdu.event_id().to_string());
        batch.insert(&self.storage.tables.eventid_pdu, &target_id.to_string(), &stored)?;
        Ok(batch)
    }
}
