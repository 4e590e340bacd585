//! A room being created, in memory: its events are prepared and authorised
//! one after the other against the state the previous ones make, before
//! any of them is stored. A refused event (an `initial_state` the auth rules
//! or the policy refuse, content out of the canonical JSON range…) thus
//! stores nothing.

use std::collections::HashMap;

use ruma::{room_version_rules::RoomVersionRules, EventId, OwnedEventId, UserId};

use super::{authorise::Refusal, prepare::Tip, EventView, StateView, Verdict};
use crate::{
    error::{Error, Result},
    events::Pdu,
    rooms::{EventRequest, Rooms},
};

/// The events of a room not stored yet, with the state they make.
pub struct Draft {
    events: Vec<Pdu>,
    by_id: HashMap<OwnedEventId, usize>,
    /// (type, state key) → index in `events`.
    state: HashMap<(String, String), usize>,
}

impl Draft {
    fn new() -> Self {
        Self { events: Vec::new(), by_id: HashMap::new(), state: HashMap::new() }
    }

    fn push(&mut self, pdu: Pdu) {
        let index = self.events.len();
        self.by_id.insert(pdu.event_id().clone(), index);
        if let Some(state_key) = pdu.state_key_str() {
            self.state.insert((pdu.kind().to_string(), state_key.to_owned()), index);
        }
        self.events.push(pdu);
    }

    /// After the last event, one deeper.
    fn tip(&self) -> Tip {
        match self.events.last() {
            Some(last) => Tip { prev_events: vec![last.event_id().clone()], depth: last.depth() + 1 },
            None => Tip { prev_events: Vec::new(), depth: 1 },
        }
    }

    /// The events in order, the create event first.
    pub fn into_events(self) -> Vec<Pdu> {
        self.events
    }
}

impl StateView for Draft {
    fn state_event(&self, kind: &str, state_key: &str) -> Result<Option<Pdu>> {
        Ok(self.state.get(&(kind.to_owned(), state_key.to_owned())).map(|&index| self.events[index].clone()))
    }

    fn member_events(&self) -> Result<Vec<Pdu>> {
        Ok(self
            .state
            .iter()
            .filter(|((kind, _), _)| kind == crate::events::kinds::MEMBER)
            .map(|(_, &index)| self.events[index].clone())
            .collect())
    }
}

impl EventView for Draft {
    fn event(&self, event_id: &EventId) -> Result<Option<Pdu>> {
        Ok(self.by_id.get(event_id).map(|&index| self.events[index].clone()))
    }
}

impl Rooms {
    /// Prepares and authorises a new room's events in memory: `create`, then
    /// each of `initial` as `sender`. The first refusal is returned.
    pub(super) fn draft_room(
        &self,
        sender: &UserId,
        rules: &RoomVersionRules,
        create: Pdu,
        initial: Vec<EventRequest>,
    ) -> Result<Draft> {
        let room_id = create.room_id_or_derived();
        let mut draft = Draft::new();
        match self.authorise(&create, rules, &draft, &draft, None)? {
            Verdict::Accept => {}
            // The creator chose the create content (creation_content): a bad request.
            Verdict::Reject(Refusal::AuthRules(reason)) => {
                return Err(Error::bad_json(format!("Invalid create event: {reason}")));
            }
            other => other.accepted()?,
        }
        draft.push(create);
        for request in initial {
            self.check_request(&room_id, &request)?;
            let tip = draft.tip();
            let pdu = self.build_event(&room_id, sender, request, rules, &draft, &tip)?;
            self.authorise(&pdu, rules, &draft, &draft, None)?.accepted()?;
            draft.push(pdu);
        }
        Ok(draft)
    }
}
