//! The public-sector policy layer: room access rules, forums, direct rooms,
//! imposed power levels, the external partners' server, and the last admin
//! leaving a room — the rules plain Matrix leaves to clients, enforced by
//! the server (`[policy]` in `conduit.toml`, off by default).
//!
//! Behaviour: `../shared/guides/public-sector.md`, sections "Room access
//! rules", "External partners' server" and "When the last admin leaves a
//! room"; where it is silent, the reference deployment's Synapse modules
//! (the access-rules and last-admin modules) as they behave. `docs/policy.md`
//! lists each rule, its config key and the error a user gets.
//!
//! It plugs into the event pipeline as an [`EventPolicy`]: every state event
//! a room would store, sent here or arriving over federation, is checked
//! against the state before it ([`PublicSectorPolicy::check`]), and a local
//! user's leave may be preceded by a power-levels event
//! ([`last_admin`]). The request-level rules (room creation, publication in
//! the room directory, the externals' joins and user directory) are called
//! by the client API.
//!
//! Every refusal names its rule ([`Rule`]) in the error text and in a
//! `tracing` line (`target: "conduit::policy"`, field `rule`).

pub mod access_rules;
pub mod creation;
pub mod forums;
pub mod last_admin;
pub mod power;

use std::collections::HashSet;

use ruma::{OwnedServerName, OwnedUserId, RoomId, ServerName, UserId};
use serde_json::Value;

use crate::{
    config::PolicyConfig,
    error::{Error, ErrorKind, Result},
    events::{kinds, Pdu},
    rooms::{membership_of, pipeline::StateView, EventPolicy, EventRequest, Membership, Rooms},
    users::AdminLookup,
};
pub use access_rules::AccessRule;

/// The state event holding a room's access rule.
pub const ACCESS_RULES: &str = "im.vector.room.access_rules";

/// The rules, by the name refusals carry (`error` text, log field `rule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The access rule itself: valid values and transitions.
    AccessRuleChange,
    /// `restricted`: no external partners.
    Restricted,
    /// `unrestricted`: external partners only when invited, without power.
    Unrestricted,
    /// `direct`: two members, no name, topic or avatar, never public.
    Direct,
    /// Public rooms (forums) stay unencrypted; they leave `public` only once encrypted.
    Forum,
    /// Only `restricted` rooms are published in the room directory.
    Publication,
    /// The power levels a new room starts with; a client may only raise them.
    CreationPowerLevels,
    /// External partners are never moderators.
    ExternalPower,
    /// The external partners' server: its users create no rooms.
    ExternalsCreateRoom,
    /// The external partners' server: its users join only rooms they are
    /// invited to, never public ones.
    ExternalsJoin,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::AccessRuleChange => "access_rules.change",
            Rule::Restricted => "access_rules.restricted",
            Rule::Unrestricted => "access_rules.unrestricted",
            Rule::Direct => "access_rules.direct",
            Rule::Forum => "forum",
            Rule::Publication => "directory.publication",
            Rule::CreationPowerLevels => "power_levels.creation",
            Rule::ExternalPower => "power_levels.externals",
            Rule::ExternalsCreateRoom => "externals.create_room",
            Rule::ExternalsJoin => "externals.join",
        }
    }
}

/// A rule a request or an event breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub rule: Rule,
    pub reason: String,
}

impl Broken {
    pub fn new(rule: Rule, reason: impl Into<String>) -> Self {
        Self { rule, reason: reason.into() }
    }

    /// The client's error (`kind`, usually `M_FORBIDDEN`), logged for the operator.
    fn into_error(self, kind: ErrorKind, user: &UserId, room: Option<&RoomId>) -> Error {
        let room = room.map(ToString::to_string).unwrap_or_default();
        tracing::info!(target: "conduit::policy", rule = self.rule.as_str(), %user, %room, reason = %self.reason, "refused by the room rules");
        Error::new(kind, format!("Refused by the room rule {}: {}", self.rule.as_str(), self.reason))
    }

    pub fn forbidden(self, user: &UserId, room: Option<&RoomId>) -> Error {
        self.into_error(ErrorKind::Forbidden, user, room)
    }

    pub fn invalid(self, user: &UserId, room: Option<&RoomId>) -> Error {
        self.into_error(ErrorKind::InvalidParam, user, room)
    }
}

pub type Checked = std::result::Result<(), Broken>;

/// The public-sector rules of one server.
pub struct PublicSectorPolicy {
    server_name: OwnedServerName,
    external_servers: HashSet<OwnedServerName>,
    externals_mode: bool,
    bypass_users: HashSet<OwnedUserId>,
    admins: AdminLookup,
}

impl PublicSectorPolicy {
    /// The policy `config` describes (`None` when `access_rules` is off).
    /// The config was validated at load: unparsable names are skipped.
    pub fn from_config(config: &PolicyConfig, server_name: OwnedServerName, admins: AdminLookup) -> Option<Self> {
        if !config.access_rules {
            return None;
        }
        let mut external_servers: HashSet<OwnedServerName> =
            config.external_servers.iter().filter_map(|s| OwnedServerName::try_from(s.as_str()).ok()).collect();
        if config.externals_mode {
            external_servers.insert(server_name.clone());
        }
        Some(Self {
            server_name,
            external_servers,
            externals_mode: config.externals_mode,
            bypass_users: config.bypass_users.iter().filter_map(|u| OwnedUserId::try_from(u.as_str()).ok()).collect(),
            admins,
        })
    }

    /// Whether `user` belongs to an external partners' server.
    pub fn is_external(&self, user: &UserId) -> bool {
        self.external_servers.contains(user.server_name())
    }

    /// Whether this is the external partners' own server.
    pub fn externals_mode(&self) -> bool {
        self.externals_mode
    }

    /// Configured users and this server's admins are not held by the rules.
    pub fn bypasses(&self, user: &UserId) -> bool {
        self.bypass_users.contains(user)
            || (user.server_name() == self.server_name && self.admins.is_admin(user.localpart()))
    }

    /// Whether a local user of the externals' server is held by its rules.
    fn is_local_external(&self, user: &UserId) -> bool {
        self.externals_mode && user.server_name() == self.server_name && !self.bypasses(user)
    }

    /// The externals' server: its users find nobody in the user directory.
    pub fn hides_user_directory_from(&self, searcher: &UserId) -> bool {
        self.is_local_external(searcher)
    }

    /// The externals' server: a local user joins a room of another server
    /// only with a pending invite (`invite_state`, the room's stripped state
    /// the inviting server sent), and never a public room. (Rooms this
    /// server is in are checked by the pipeline, as every join.)
    pub fn check_remote_join(&self, user: &UserId, room_id: &RoomId, invite_state: Option<&[Value]>) -> Result<()> {
        if !self.is_local_external(user) {
            return Ok(());
        }
        let broken = match invite_state {
            None => Broken::new(
                Rule::ExternalsJoin,
                "users of the external partners' server join only rooms they are invited to",
            ),
            Some(state) if stripped_join_rule(state).as_deref() == Some("public") => {
                Broken::new(Rule::ExternalsJoin, "users of the external partners' server cannot join public rooms")
            }
            Some(_) => return Ok(()),
        };
        Err(broken.forbidden(user, Some(room_id)))
    }

    /// An invite of a local user arriving from another server, checked on
    /// the room's stripped state: the access rule, when the inviting server
    /// sent it, must admit the user.
    pub fn check_incoming_invite(&self, invitee: &UserId, room_id: &RoomId, stripped: &[Value]) -> Result<()> {
        let rule = stripped
            .iter()
            .find(|event| event["type"] == ACCESS_RULES && event["state_key"] == "")
            .map(|event| AccessRule::parse(event["content"]["rule"].as_str().unwrap_or_default()));
        if let Some(Some(AccessRule::Restricted)) = rule {
            if self.is_external(invitee) && !self.bypasses(invitee) {
                return Err(access_rules::restricted_refusal().forbidden(invitee, Some(room_id)));
            }
        }
        Ok(())
    }

    /// An invite by email of an address the email map sends to `home`: an
    /// external partners' server's address never enters a restricted room
    /// (checked before anything is stored or mailed; the member invite the
    /// address later becomes is checked again like any other).
    pub fn check_email_invite(
        &self,
        rooms: &Rooms,
        inviter: &UserId,
        room_id: &RoomId,
        home: &ServerName,
    ) -> Result<()> {
        if self.bypasses(inviter) || !self.external_servers.contains(home) {
            return Ok(());
        }
        let Some(room) = rooms.room(room_id)? else { return Ok(()) };
        let state = crate::rooms::pipeline::StoredState::new(rooms, rooms.current_state(&room)?);
        if RoomFacts::read(&state)?.rule == AccessRule::Restricted {
            return Err(access_rules::restricted_refusal().forbidden(inviter, Some(room_id)));
        }
        Ok(())
    }

    /// Publication in the room directory: only `restricted` rooms.
    pub fn check_publication(&self, rooms: &Rooms, user: &UserId, room_id: &RoomId) -> Result<()> {
        if self.bypasses(user) {
            return Ok(());
        }
        if self.listable(rooms, room_id)? {
            return Ok(());
        }
        Err(forums::publication_refusal().forbidden(user, Some(room_id)))
    }

    /// Whether a published room may be listed in the directory (its rule is `restricted`).
    pub fn listable(&self, rooms: &Rooms, room_id: &RoomId) -> Result<bool> {
        let Some(room) = rooms.room(room_id)? else { return Ok(false) };
        let state = crate::rooms::pipeline::StoredState::new(rooms, rooms.current_state(&room)?);
        Ok(RoomFacts::read(&state)?.rule == AccessRule::Restricted)
    }
}

/// What the rules read of a room's state.
#[derive(Debug, Clone)]
pub struct RoomFacts {
    /// The access rule (`restricted` when the room has none, as the
    /// reference deployment reads it).
    pub rule: AccessRule,
    /// Whether the room has an access rules event at all.
    pub rule_is_set: bool,
    pub join_rule: Option<String>,
    pub encrypted: bool,
}

impl RoomFacts {
    pub fn read(state: &dyn StateView) -> Result<Self> {
        let rule = state
            .state_event(ACCESS_RULES, "")?
            .map(|event| crate::rooms::content_string(&event, "rule").and_then(|rule| AccessRule::parse(&rule)));
        let join_rule = state
            .state_event(kinds::JOIN_RULES, "")?
            .and_then(|event| crate::rooms::content_string(&event, "join_rule"));
        Ok(Self {
            rule: rule.flatten().unwrap_or(AccessRule::Restricted),
            rule_is_set: rule.is_some(),
            join_rule,
            encrypted: state.state_event(kinds::ENCRYPTION, "")?.is_some(),
        })
    }

    pub fn is_public(&self) -> bool {
        self.join_rule.as_deref() == Some("public")
    }
}

/// The join rule in a stripped state, if it has one.
fn stripped_join_rule(stripped: &[Value]) -> Option<String> {
    stripped
        .iter()
        .find(|event| event["type"] == kinds::JOIN_RULES)
        .and_then(|event| event["content"]["join_rule"].as_str())
        .map(str::to_owned)
}

/// The event types the rules look at.
fn concerns(kind: &str) -> bool {
    matches!(
        kind,
        ACCESS_RULES
            | kinds::MEMBER
            | kinds::POWER_LEVELS
            | kinds::JOIN_RULES
            | kinds::ENCRYPTION
            | kinds::NAME
            | kinds::TOPIC
            | kinds::AVATAR
    )
}

impl EventPolicy for PublicSectorPolicy {
    fn check(&self, rooms: &Rooms, pdu: &Pdu, state_before: &dyn StateView) -> Result<()> {
        let Some(state_key) = pdu.state_key_str() else { return Ok(()) };
        let kind = pdu.kind().to_string();
        if !concerns(&kind) {
            return Ok(());
        }
        let sender = UserId::parse(pdu.sender_str()).map_err(|_| Error::bad_json("Invalid sender"))?;
        if self.bypasses(&sender) {
            return Ok(());
        }
        let facts = RoomFacts::read(state_before)?;
        let content: Value = serde_json::from_str(pdu.content_json()).unwrap_or_default();
        let room_id = pdu.room_id_or_derived();
        let checked = match kind.as_str() {
            ACCESS_RULES => access_rules::check_change(rooms, &room_id, state_key, &content, &facts, state_before)?,
            kinds::MEMBER => self.check_member(&sender, state_key, &content, &facts, state_before)?,
            kinds::POWER_LEVELS => power::check(self, &content, &facts),
            kinds::JOIN_RULES => forums::check_join_rule(&content, &facts),
            kinds::ENCRYPTION => forums::check_encryption(&facts),
            _ => access_rules::check_decoration(&kind, &facts),
        };
        checked.map_err(|broken| broken.forbidden(&sender, Some(&room_id)))
    }

    fn events_before(
        &self,
        sender: &UserId,
        request: &EventRequest,
        rules: &ruma::room_version_rules::RoomVersionRules,
        state: &dyn StateView,
    ) -> Result<Vec<EventRequest>> {
        if !self.may_send_before(sender, request) {
            return Ok(Vec::new());
        }
        Ok(last_admin::promotion(self, sender, rules, state)?.into_iter().collect())
    }

    /// A user's own leave (the last admin's promotion goes first).
    fn may_send_before(&self, sender: &UserId, request: &EventRequest) -> bool {
        request.kind == kinds::MEMBER
            && request.state_key.as_deref() == Some(sender.as_str())
            && request.content["membership"] == "leave"
    }
}

impl PublicSectorPolicy {
    /// A member event: the access rule's membership rules, then the
    /// externals' server's own.
    fn check_member(
        &self,
        sender: &UserId,
        target: &str,
        content: &Value,
        facts: &RoomFacts,
        state: &dyn StateView,
    ) -> Result<Checked> {
        let Ok(target) = UserId::parse(target) else { return Ok(Ok(())) };
        let membership = content["membership"].as_str().and_then(Membership::parse);
        let Some(membership @ (Membership::Invite | Membership::Join | Membership::Knock)) = membership else {
            return Ok(Ok(()));
        };
        let previous = state.state_event(kinds::MEMBER, target.as_str())?.and_then(|event| membership_of(&event));
        let was_invited = matches!(previous, Some(Membership::Invite | Membership::Join));
        // The sender does not bypass the rules (the caller checked): their
        // own event needs no second look.
        let own_event = sender == &*target;
        let external = self.is_external(&target) && (own_event || !self.bypasses(&target));
        if let Err(broken) = access_rules::check_membership(external, &target, membership, was_invited, facts, state)? {
            return Ok(Err(broken));
        }
        let local_external = self.externals_mode && target.server_name() == self.server_name;
        if membership == Membership::Join && own_event && local_external {
            if !was_invited {
                return Ok(Err(Broken::new(
                    Rule::ExternalsJoin,
                    "users of the external partners' server join only rooms they are invited to",
                )));
            }
            if facts.is_public() {
                return Ok(Err(Broken::new(
                    Rule::ExternalsJoin,
                    "users of the external partners' server cannot join public rooms",
                )));
            }
        }
        Ok(Ok(()))
    }
}
