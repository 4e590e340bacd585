//! Step 2 of the pipeline: may the room have this event?
//!
//! The checks of the server-server API's "Checks performed on receipt of a
//! PDU" that concern authorisation, in its order:
//! - the auth rules against the event's own auth events (state-independent
//!   checks, and the create event's rules) — a failure rejects;
//! - the auth rules against the state before the event — a failure rejects;
//! - the auth rules against the room's current state, when it differs — a
//!   failure soft-fails (the event is kept but neither served nor built on);
//! - then the deployment's [`super::EventPolicy`], whose refusal rejects.
//!
//! A local event is built on the current state, so it is accepted or
//! rejected, never soft-failed; its rejection is refused to the client with
//! `M_FORBIDDEN` and stores nothing.

use ruma::state_res::Event as _;
use ruma::{events::StateEventType, room_version_rules::RoomVersionRules, state_res};

use super::{EventView, StateView};
use crate::{
    error::{Error, Result},
    events::Pdu,
    rooms::Rooms,
};

/// What the checks decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Allowed by the state before it, refused by the current state.
    SoftFail(String),
    Reject(Refusal),
}

/// Who refused an event, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    AuthRules(String),
    Policy(String),
}

impl Verdict {
    /// For a local event: anything but acceptance is the client's `M_FORBIDDEN`.
    pub fn accepted(self) -> Result<()> {
        match self {
            Verdict::Accept => Ok(()),
            Verdict::SoftFail(reason) | Verdict::Reject(Refusal::AuthRules(reason) | Refusal::Policy(reason)) => {
                Err(Error::forbidden(reason))
            }
        }
    }
}

impl Rooms {
    /// Authorises `pdu` against its auth events (`events`), the state before
    /// it, and (when given and different) the current state. Storage errors
    /// are errors, not verdicts.
    pub(crate) fn authorise(
        &self,
        pdu: &Pdu,
        rules: &RoomVersionRules,
        events: &dyn EventView,
        state_before: &dyn StateView,
        current_state: Option<&dyn StateView>,
    ) -> Result<Verdict> {
        if let Some(reason) = auth_rules_refusal(pdu, rules, events, state_before)? {
            return Ok(Verdict::Reject(Refusal::AuthRules(reason)));
        }
        if let Some(current) = current_state {
            if let Some(reason) = auth_rules_refusal(pdu, rules, events, current)? {
                return Ok(Verdict::SoftFail(reason));
            }
        }
        Ok(match self.policy().check(self, pdu, state_before) {
            Ok(()) => Verdict::Accept,
            Err(refusal) => Verdict::Reject(Refusal::Policy(refusal.message)),
        })
    }
}

/// Why the room version's auth rules refuse `pdu` against `state`, if they do.
pub(crate) fn auth_rules_refusal(
    pdu: &Pdu,
    rules: &RoomVersionRules,
    events: &dyn EventView,
    state: &dyn StateView,
) -> Result<Option<String>> {
    // ruma's checks take infallible lookups: the first storage error is kept
    // and returned instead of a verdict.
    let failure = std::cell::RefCell::new(None);
    let keep = |result: Result<Option<Pdu>>| {
        result.unwrap_or_else(|error| {
            failure.borrow_mut().get_or_insert(error);
            None
        })
    };
    let fetch_event = |id: &ruma::EventId| keep(events.event(id));
    let independent = state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event);
    let fetch_state = |kind: &StateEventType, state_key: &str| keep(state.state_event(&kind.to_string(), state_key));
    // The create event has no state before it: its rules are all state-independent.
    let is_create = pdu.event_type() == &ruma::events::TimelineEventType::RoomCreate;
    let outcome = independent.and_then(|()| {
        if is_create {
            Ok(())
        } else {
            state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state)
        }
    });
    if let Some(error) = failure.into_inner() {
        return Err(error);
    }
    Ok(outcome.err().map(|reason| format!("Event refused by the authorization rules: {reason}")))
}
