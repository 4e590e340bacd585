//! A new room under the rules (`POST /createRoom`).
//!
//! Guide: "Room access rules"; where it is silent, the reference
//! deployment's module.
//! - The access rule comes from `initial_state`, else `direct` when
//!   `is_direct`, else `restricted` (added to `initial_state`, before the
//!   rest of it). A `direct` rule without `is_direct`, or the reverse, an
//!   unknown rule, or a `direct` room made public: 400 `M_INVALID_PARAM`.
//! - A room published at creation (`visibility: public`) is `restricted`,
//!   and a `restricted` room invites no external partner: 403 `M_FORBIDDEN`.
//! - Power levels: [`super::power`]'s floors; external invitees get no power
//!   (nor the creatorship `trusted_private_chat` gives in room version 12).
//! - History visibility: `invited`, or `shared` in a public room, unless
//!   `initial_state` says.
//!
//! On the externals' server its users create no rooms (403 `M_FORBIDDEN`).
//! Server admins and `bypass_users` create rooms as in plain Matrix.

use serde_json::{json, Value};

use super::{power, AccessRule, Broken, PublicSectorPolicy, Rule, ACCESS_RULES};
use crate::{
    error::Result,
    events::kinds,
    rooms::creation::{NewRoom, Plan, Preset},
};

impl PublicSectorPolicy {
    /// Checks a creation request and completes its `initial_state`: true
    /// when the rules shaped it (false: the creator bypasses them, and
    /// [`PublicSectorPolicy::shape_plan`] is not for their room either).
    pub fn shape_new_room(&self, room: &mut NewRoom, published: bool) -> Result<bool> {
        let creator = room.creator.clone();
        if self.bypasses(&creator) {
            return Ok(false);
        }
        if self.externals_mode && creator.server_name() == self.server_name {
            let broken =
                Broken::new(Rule::ExternalsCreateRoom, "users of the external partners' server cannot create rooms");
            return Err(broken.forbidden(&creator, None));
        }
        let invalid = |reason: String| Broken::new(Rule::AccessRuleChange, reason).invalid(&creator, None);
        let given =
            room.initial_state.iter().rev().find(|(kind, state_key, _)| kind == ACCESS_RULES && state_key.is_empty());
        let rule = match given {
            Some((_, _, content)) => {
                let asked = content["rule"].as_str().unwrap_or_default();
                AccessRule::parse(asked).ok_or_else(|| {
                    invalid(format!("unknown access rule {asked:?}: restricted, unrestricted or direct"))
                })?
            }
            None => {
                let rule = if room.is_direct { AccessRule::Direct } else { AccessRule::Restricted };
                room.initial_state
                    .insert(0, (ACCESS_RULES.to_owned(), String::new(), json!({ "rule": rule.as_str() })));
                rule
            }
        };
        if room.is_direct != (rule == AccessRule::Direct) {
            return Err(invalid(format!("is_direct is {} but the access rule is {}", room.is_direct, rule.as_str())));
        }
        if rule == AccessRule::Direct && (is_public(room) || published) {
            return Err(Broken::new(Rule::Direct, "a direct room cannot be public").invalid(&creator, None));
        }
        if published && rule != AccessRule::Restricted {
            return Err(super::forums::publication_refusal().forbidden(&creator, None));
        }
        let invitees = room.invitees.iter().chain(&room.remote_invitees);
        if rule == AccessRule::Restricted && invitees.clone().any(|invitee| self.is_external(invitee)) {
            return Err(super::access_rules::restricted_refusal().forbidden(&creator, None));
        }
        self.check_client_power_levels(room, rule)?;
        Ok(true)
    }

    /// The power levels a client gives (override, or in `initial_state`).
    fn check_client_power_levels(&self, room: &NewRoom, rule: AccessRule) -> Result<()> {
        let given = room.power_level_override.iter().cloned().chain(
            room.initial_state
                .iter()
                .filter(|(kind, _, _)| kind == kinds::POWER_LEVELS)
                .filter_map(|(_, _, c)| c.as_object().cloned()),
        );
        for content in given {
            let checked = power::check_creation_floors(&content)
                .and_then(|()| power::check_users(&Value::Object(content), rule, |user| self.is_external_id(user)));
            checked.map_err(|broken| broken.invalid(&room.creator, None))?;
        }
        Ok(())
    }

    fn is_external_id(&self, user: &str) -> bool {
        ruma::UserId::parse(user).is_ok_and(|user| self.is_external(&user))
    }

    /// Imposes the floors and history visibility on a planned room, and
    /// takes from external invitees the power the preset would give them.
    pub fn shape_plan(&self, plan: &mut Plan, public: bool) {
        if let Some(creators) = plan.create_content.get_mut("additional_creators").and_then(Value::as_array_mut) {
            creators.retain(|creator| !creator.as_str().is_some_and(|c| self.is_external_id(c)));
        }
        let mut history_given = false;
        for event in &mut plan.events {
            match event.kind.as_str() {
                kinds::POWER_LEVELS => {
                    power::raise_to_floors(&mut event.content);
                    if let Some(users) = event.content.get_mut("users").and_then(Value::as_object_mut) {
                        users.retain(|user, _| !self.is_external_id(user));
                    }
                }
                // The preset's comes first; one from initial_state later.
                kinds::HISTORY_VISIBILITY if !history_given => {
                    history_given = true;
                    event.content = json!({ "history_visibility": if public { "shared" } else { "invited" } });
                }
                _ => {}
            }
        }
    }
}

/// Whether the room will be public (its preset, or a join rule in `initial_state`).
pub fn is_public(room: &NewRoom) -> bool {
    let join_rule = room.initial_state.iter().rev().find(|(kind, _, _)| kind == kinds::JOIN_RULES);
    match join_rule {
        Some((_, _, content)) => content["join_rule"] == "public",
        None => room.preset == Preset::Public,
    }
}
