//! Membership across servers (server-server API "Joining Rooms", "Leaving
//! Rooms (Rejecting Invites)").
//!
//! As the resident server: `/make_join` and `/make_leave` hand out an
//! unsigned template built on the room's tip after checking the room's rules
//! would allow it (`M_INCOMPATIBLE_ROOM_VERSION` when the joining server does
//! not support the room's version); `/send_join` and `/send_leave` (v2)
//! receive the signed event through the same receipt checks as `/send`,
//! forward it to the room's other servers, and for a join answer the state
//! before it and its auth chain (countersigning a restricted join this
//! server authorised); with `omit_members` (MSC3706) without its member
//! events but the joiner's and an untitled room's heroes', naming the
//! servers in the room before the join.
//!
//! As the joining server ([`Federation::join_remote`]): `/make_join` through
//! each candidate server in turn, the template signed, `/send_join`, then
//! every event of the answer checked (format, signatures, hashes, the auth
//! rules against its own auth events, oldest first) and the join checked
//! against the state before it, before the room is stored here. The join
//! asks for partial state; an answer without members marks the room
//! partial, completed later by [`super::partial_state`].

use std::collections::HashMap;

use ruma::state_res::Event as _;
use ruma::{
    room_version_rules::{EventsReferenceFormatVersion, RoomVersionRules},
    OwnedEventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
};
use serde_json::{json, Value};

use super::{
    receive::{auth_events, checked_with, Receipt},
    Federation,
};
use crate::{
    error::{Error, ErrorKind, Result},
    events::{build_and_sign, countersign, kinds, mint_event_id, room_version, NewEvent, Pdu, V1Ids},
    http::request::percent_encode,
    rooms::{
        pipeline::{EventView, StateView, Verdict},
        Membership, RoomRecord, Rooms,
    },
    storage::records::PartialStateRecord,
    util::now_ms,
};

/// Most servers kept from a partial join's `servers_in_room`.
const MAX_SERVERS_IN_ROOM: usize = 10_000;

/// Reference hashes read from a template (versions 1 and 2).
type ReferenceHashes = Vec<(OwnedEventId, Option<String>)>;

/// The events a template names in `name` (`prev_events`, `auth_events`):
/// ids, or in versions 1 and 2 `[id, {"sha256": hash}]` pairs, whose hashes
/// are returned too.
fn template_references(
    template: &Value,
    name: &str,
    rules: &RoomVersionRules,
) -> Result<(Vec<OwnedEventId>, ReferenceHashes)> {
    let list = template[name].as_array().ok_or_else(|| Error::bad_json(format!("The template has no {name}")))?;
    let mut ids = Vec::with_capacity(list.len());
    let mut hashes = Vec::new();
    for reference in list {
        let bad = || Error::bad_json(format!("Bad reference in the template's {name}: {reference}"));
        let id = if rules.events_reference_format == EventsReferenceFormatVersion::V1 {
            let pair = reference.as_array().filter(|pair| pair.len() == 2).ok_or_else(bad)?;
            // Synapse's templates give an empty hash object: kept as it came.
            let hash = pair[1].as_object().ok_or_else(bad)?.get("sha256");
            let hash = hash.map(|hash| hash.as_str().map(str::to_owned).ok_or_else(bad)).transpose()?;
            let id = pair[0].as_str().and_then(|id| OwnedEventId::try_from(id).ok()).ok_or_else(bad)?;
            hashes.push((id.clone(), hash));
            id
        } else {
            reference.as_str().and_then(|id| OwnedEventId::try_from(id).ok()).ok_or_else(bad)?
        };
        ids.push(id);
    }
    Ok((ids, hashes))
}

/// What a make/send membership handshake gave: the room's version and
/// rules, the event this server signed, the resident server's answer.
struct Handshake {
    version: RoomVersionId,
    rules: RoomVersionRules,
    event: Pdu,
    answer: Value,
}

impl Federation {
    /// `/make_join` or `/make_leave`: a template of `user_id`'s member event.
    pub fn make_membership(
        &self,
        rooms: &Rooms,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        membership: Membership,
        supported_versions: &[&str],
    ) -> Result<Value> {
        if user_id.server_name() != origin {
            return Err(Error::forbidden("A server may only ask for its own users' membership"));
        }
        rooms.check_server_acl(room_id, origin)?;
        let room = resident_room(rooms, room_id, &self.server_name)?;
        if membership != Membership::Leave && !supported_versions.contains(&room.version.as_str()) {
            return Err(Error::new(
                ErrorKind::IncompatibleRoomVersion { room_version: room.version.clone() },
                format!("The room is of version {}, which your server did not say it supports", room.version),
            ));
        }
        let mut content = json!({ "membership": membership.as_str() });
        if membership == Membership::Join {
            if let Some(authoriser) = rooms.restricted_join_authoriser(room_id, user_id)? {
                content["join_authorised_via_users_server"] = json!(authoriser);
            }
        }
        let (version, template) = rooms.membership_template(room_id, user_id, content)?;
        Ok(json!({ "room_version": version, "event": template }))
    }

    /// `/send_join` or `/send_leave` (v2): the signed member event received
    /// and forwarded; for a join, the state before it and the auth chain.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_membership(
        &self,
        rooms: &Rooms,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &str,
        json: Value,
        membership: Membership,
        omit_members: bool,
    ) -> Result<Value> {
        rooms.check_server_acl(room_id, origin)?;
        let room = resident_room(rooms, room_id, &self.server_name)?;
        let (_, rules) = Rooms::rules_of(&room)?;
        let receipt = Receipt::new(rooms, self, origin);
        let mut pdu = super::receive::format::parse_with(&json, &rules).map_err(|d| Error::bad_json(d.0))?;
        if pdu.event_id().as_str() != event_id {
            return Err(Error::bad_json("The event id does not match the event"));
        }
        check_member_event(&pdu, room_id, origin, membership)?;
        let authoriser = (membership == Membership::Join)
            .then(|| crate::rooms::content_string(&pdu, "join_authorised_via_users_server"))
            .flatten()
            .and_then(|user| UserId::parse(user).ok())
            .filter(|user| user.server_name() == self.server_name);
        let authorised_here = authoriser.is_some();
        if let Some(authoriser) = authoriser {
            // The restrictions are checked again here: a server may send a
            // join naming our user without having asked `/make_join`.
            if !rooms.may_vouch_for_join(room_id, pdu.sender(), &authoriser)? {
                return Err(Error::forbidden(format!("{authoriser} cannot vouch for this join")));
            }
            pdu = countersign(&pdu, &rules, &self.key, &self.server_name)?;
        }
        let json = serde_json::from_str::<Value>(&pdu.to_canonical_json()).unwrap_or(Value::Null);
        let pdu = receipt.checked(&room_id.to_owned(), &json).await.map_err(|d| Error::forbidden(d.0))?;
        {
            let _guard = rooms.locks.lock(room_id).await;
            match receipt.receive(&pdu).await? {
                Verdict::Accept => {}
                Verdict::SoftFail(reason)
                | Verdict::Reject(
                    crate::rooms::pipeline::authorise::Refusal::AuthRules(reason)
                    | crate::rooms::pipeline::authorise::Refusal::Policy(reason),
                ) => return Err(Error::forbidden(reason)),
            }
        }
        rooms.forward_to_servers(pdu.event_id(), origin).await?;
        tracing::info!(room = %room_id, user = %pdu.sender(), %origin, membership = membership.as_str(), "remote membership received");
        match membership {
            Membership::Join => {}
            Membership::Knock => {
                let room = rooms.room(room_id)?.ok_or_else(|| Error::not_found("The room is gone"))?;
                return Ok(json!({ "knock_room_state": rooms.stripped_state(&room, None)? }));
            }
            _ => return Ok(json!({})),
        }
        let (state, auth_chain) = rooms.join_answer(&pdu, omit_members)?;
        let servers = rooms.servers_before(pdu.event_id())?;
        let mut answer = json!({
            "origin": self.server_name,
            "state": state,
            "auth_chain": auth_chain,
            "members_omitted": omit_members,
            "servers_in_room": servers,
        });
        if authorised_here {
            answer["event"] = json;
        }
        Ok(answer)
    }

    /// Joins `user_id` (a local user) to a room this server is not in,
    /// through the first of `via` that lets it; `content` is the member
    /// event's content (profile, reason).
    pub async fn join_remote(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
        user_id: &UserId,
        via: &[OwnedServerName],
        content: Value,
    ) -> Result<()> {
        // Meanwhile, events of the room other servers send wait for it (see
        // `receive::transaction`) rather than being dropped.
        let _joining = self.joins_in_flight.start(room_id);
        self.through_each_server(via, room_id, "join", |server| {
            self.join_through(rooms, server, room_id, user_id, content.clone())
        })
        .await
    }

    /// `attempt` through each of `via` (not this server) until one succeeds;
    /// the last failure otherwise. `what` names the attempt in logs and errors.
    pub(crate) async fn through_each_server<'s, T, F, Fut>(
        &self,
        via: &'s [OwnedServerName],
        room_id: &RoomId,
        what: &str,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(&'s ServerName) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut last_error =
            Error::not_found(format!("No server to {what} through (give one with server_name or via)"));
        for server in via.iter().filter(|server| **server != self.server_name) {
            match attempt(server).await {
                Ok(done) => return Ok(done),
                Err(error) => {
                    tracing::info!(room = %room_id, %server, %error, what, "could not go through this server");
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    async fn join_through(
        &self,
        rooms: &Rooms,
        server: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        content: Value,
    ) -> Result<()> {
        let handshake = self.handshake(server, room_id, user_id, Membership::Join, content).await?;
        let Handshake { version, rules, event: join, answer } = handshake;
        let join = match answer.get("event") {
            Some(event) => {
                let signed = checked_with(self, event, &rules).await.map_err(|d| Error::forbidden(d.0))?;
                if signed.event_id() != join.event_id() {
                    return Err(Error::forbidden("The resident server answered another join event"));
                }
                signed
            }
            None => join,
        };
        let imported = self.check_join_answer(&answer, &join, room_id, &rules).await?;
        let room = rooms.room(room_id)?.unwrap_or(RoomRecord {
            version: version.to_string(),
            short_id: rooms.next_short_room_id()?,
            current_state: 0,
            forward_extremities: vec![],
            max_depth: 0,
            backfill_floor: 0,
        });
        let partial = (answer["members_omitted"] == true).then(|| PartialStateRecord {
            join_event_id: join.event_id().to_string(),
            resident: server.to_string(),
            servers_in_room: servers_in_room(&answer),
            joined_ts: now_ms(),
        });
        rooms.store_joined_room(room, &imported.outliers, &imported.state, &join, partial.as_ref()).await?;
        if partial.is_some() {
            self.partial_state_wakeup.notify_one();
        }
        let partial = partial.is_some();
        tracing::info!(room = %room_id, user = %user_id, %server, partial, "joined a room of another server");
        Ok(())
    }

    /// A resident server's template (`make` is `v1/make_join`,
    /// `v1/make_leave` or `v1/make_knock`), telling it the room versions this
    /// server supports: the room's version, its rules, the template.
    async fn make_template(
        &self,
        server: &ServerName,
        make: &str,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<(RoomVersionId, RoomVersionRules, Value)> {
        let versions: Vec<String> = room_version::KNOWN
            .iter()
            .filter(|v| room_version::can_join(v))
            .map(|v| format!("ver={}", percent_encode(v.as_str())))
            .collect();
        let path = format!(
            "/_matrix/federation/{make}/{}/{}?{}",
            percent_encode(room_id.as_str()),
            percent_encode(user_id.as_str()),
            versions.join("&")
        );
        let mut answer = self.request(server, "GET", &path, None).await?;
        let version = answer
            .get("room_version")
            .and_then(Value::as_str)
            .and_then(|version| RoomVersionId::try_from(version).ok())
            .filter(room_version::can_join)
            .ok_or_else(|| Error::bad_json("The resident server named no room version this server supports"))?;
        let rules = room_version::rules(&version)?;
        let template = answer.get_mut("event").map(Value::take).filter(Value::is_object);
        let template = template.ok_or_else(|| Error::bad_json("The resident server sent no event template"))?;
        Ok((version, rules, template))
    }

    /// `user_id`'s member event of `membership` built from a resident
    /// server's template (`/make_join`, `/make_leave`, `/make_knock`) and
    /// signed by this server; `content` is ours (profile, reason).
    pub(crate) fn sign_template(
        &self,
        template: &Value,
        room_id: &RoomId,
        user_id: &UserId,
        membership: Membership,
        mut content: Value,
        rules: &RoomVersionRules,
    ) -> Result<Pdu> {
        let field = |name: &str| template.get(name).and_then(Value::as_str);
        if field("type") != Some(kinds::MEMBER)
            || field("state_key") != Some(user_id.as_str())
            || field("sender") != Some(user_id.as_str())
            || template["content"]["membership"] != membership.as_str()
            || field("room_id").is_some_and(|id| id != room_id.as_str())
        {
            return Err(Error::bad_json(format!(
                "The resident server's template is not a {} of this user",
                membership.as_str()
            )));
        }
        if let Some(authoriser) = template["content"].get("join_authorised_via_users_server") {
            content["join_authorised_via_users_server"] = authoriser.clone();
        }
        content["membership"] = json!(membership.as_str());
        let (prev_events, prev_hashes) = template_references(template, "prev_events", rules)?;
        let (auth_events, auth_hashes) = template_references(template, "auth_events", rules)?;
        // Versions 1 and 2: the event id is this server's (the id's server
        // must sign the event, and only we do), whatever the template says.
        let v1 = if rules.events_reference_format == EventsReferenceFormatVersion::V1 {
            let hashes = prev_hashes.into_iter().chain(auth_hashes).collect();
            Some(V1Ids { event_id: mint_event_id(&self.server_name)?, hashes })
        } else {
            None
        };
        let new = NewEvent {
            kind: kinds::MEMBER.to_owned(),
            state_key: Some(user_id.to_string()),
            content,
            sender: user_id.to_owned(),
            room_id: Some(room_id.to_owned()),
            prev_events,
            auth_events,
            depth: template["depth"].as_u64().ok_or_else(|| Error::bad_json("The template has no depth"))?,
            origin_server_ts: now_ms(),
            redacts: None,
            v1,
        };
        Ok(build_and_sign(new, rules, &self.key, &self.server_name)?)
    }

    /// The make/send handshake with `server` for `user_id`'s `membership`
    /// (leave or knock; a join's answer is then checked whole by the
    /// caller): the signed event and the send's answer.
    pub(crate) async fn membership_handshake(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        membership: Membership,
        content: Value,
    ) -> Result<(Pdu, Value)> {
        let Handshake { event, answer, .. } = self.handshake(server, room_id, user_id, membership, content).await?;
        Ok((event, answer))
    }

    /// `/make_*` to `server`, the template signed, `/send_*` of it.
    async fn handshake(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        membership: Membership,
        content: Value,
    ) -> Result<Handshake> {
        let (make, send) = match membership {
            Membership::Join => ("v1/make_join", "v2/send_join"),
            Membership::Knock => ("v1/make_knock", "v1/send_knock"),
            _ => ("v1/make_leave", "v2/send_leave"),
        };
        let (version, rules, template) = self.make_template(server, make, room_id, user_id).await?;
        let event = self.sign_template(&template, room_id, user_id, membership, content, &rules)?;
        // A join asks for the state without its members (MSC3706), completed later.
        let query = if membership == Membership::Join { "?omit_members=true" } else { "" };
        let path = format!(
            "/_matrix/federation/{send}/{}/{}{query}",
            percent_encode(room_id.as_str()),
            percent_encode(event.event_id().as_str())
        );
        let body = serde_json::from_str::<Value>(&event.to_canonical_json()).unwrap_or(Value::Null);
        let answer = self.request(server, "PUT", &path, Some(&body)).await?;
        Ok(Handshake { version, rules, event, answer })
    }

    /// Knocks on a room this server is not in, through the first of `via`
    /// that lets it; the knock is kept with the room's stripped state.
    pub async fn knock_remote(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
        user_id: &UserId,
        via: &[OwnedServerName],
        content: Value,
    ) -> Result<()> {
        let (knock, answer) = self
            .through_each_server(via, room_id, "knock", |server| {
                self.membership_handshake(server, room_id, user_id, Membership::Knock, content.clone())
            })
            .await?;
        let state = answer["knock_room_state"].as_array().cloned().unwrap_or_default();
        rooms.store_remote_knock(&knock, &state).await
    }

    /// Checks a `/send_join` answer: every event valid and signed, accepted
    /// by its own auth events (oldest first; others left out), the create
    /// event of this room among them, and the join allowed by the state.
    /// When the answer omits members, the join's own member auth events
    /// (an authorising user's) stand in the state for the check.
    async fn check_join_answer(
        &self,
        answer: &Value,
        join: &Pdu,
        room_id: &RoomId,
        rules: &RoomVersionRules,
    ) -> Result<ImportedRoom> {
        let list = |name: &str| answer.get(name).and_then(Value::as_array).cloned().unwrap_or_default();
        let (accepted, mut state_ids) = self.import_state(&list("state"), &list("auth_chain"), room_id, rules).await?;
        if answer["members_omitted"] == true {
            add_member_auth_events(join, &accepted, &mut state_ids);
        }
        let state = StateOf { events: &accepted, ids: &state_ids };
        if let Some(reason) = crate::rooms::pipeline::authorise::auth_rules_refusal(join, rules, &accepted, &state)? {
            return Err(Error::forbidden(format!("The join is not allowed by the room's state: {reason}")));
        }
        Ok(ImportedRoom { outliers: accepted.in_order(), state: state_ids })
    }

    /// Checks a room's state from another server (`state`) and the auth
    /// chain given with it: every event valid and signed, accepted by its
    /// own auth events (oldest first; others left out), the room's create
    /// event in the state. The events accepted, in an order where auth
    /// events come first, and the ids of the state's.
    pub(super) async fn import_state(
        &self,
        state_json: &[Value],
        chain_json: &[Value],
        room_id: &RoomId,
        rules: &RoomVersionRules,
    ) -> Result<(Accepted, Vec<OwnedEventId>)> {
        let mut events: HashMap<OwnedEventId, Pdu> = HashMap::new();
        let mut state_ids = Vec::new();
        for (json, in_state) in chain_json.iter().map(|j| (j, false)).chain(state_json.iter().map(|j| (j, true))) {
            match checked_with(self, json, rules).await {
                Ok(pdu) if pdu.room_id_or_derived() == room_id => {
                    if in_state {
                        state_ids.push(pdu.event_id().clone());
                    }
                    events.insert(pdu.event_id().clone(), pdu);
                }
                Ok(pdu) => tracing::info!(event = %pdu.event_id(), "an event of another room in a room's state"),
                Err(dropped) => tracing::info!(%dropped, "an event of a room's state was dropped"),
            }
        }
        let mut ordered: Vec<Pdu> = events.into_values().collect();
        ordered.sort_by_key(|pdu| (pdu.depth(), pdu.origin_server_ts_millis()));
        let mut accepted = Accepted::default();
        for pdu in ordered {
            match auth_events::refusal_among(&pdu, rules, &accepted) {
                Ok(None) => {
                    accepted.order.push(pdu.event_id().clone());
                    accepted.events.insert(pdu.event_id().clone(), pdu);
                }
                Ok(Some(reason)) => {
                    tracing::info!(event = %pdu.event_id(), %reason, "an event of a room's state is rejected")
                }
                Err(error) if auth_events::is_unknown_auth_event(&error) => {
                    tracing::info!(event = %pdu.event_id(), %error, "an event of a room's state is left out")
                }
                Err(error) => return Err(error),
            }
        }
        state_ids.retain(|id| accepted.events.contains_key(id));
        let create = state_ids
            .iter()
            .filter_map(|id| accepted.events.get(id))
            .find(|pdu| pdu.kind().to_string() == kinds::CREATE)
            .ok_or_else(|| Error::forbidden("The room's state has no valid create event"))?;
        if create.room_id_or_derived() != room_id {
            return Err(Error::forbidden("The room's create event is of another room"));
        }
        Ok((accepted, state_ids))
    }
}

/// Adds to a partial state the join's member auth events whose entries it
/// lacks (the resident chose them from the state before the join).
fn add_member_auth_events(join: &Pdu, accepted: &Accepted, state_ids: &mut Vec<OwnedEventId>) {
    let key = |pdu: &Pdu| (pdu.kind().to_string(), pdu.state_key_str().map(str::to_owned));
    let held: std::collections::HashSet<_> =
        state_ids.iter().filter_map(|id| accepted.events.get(id)).map(key).collect();
    for auth_event in join.auth_events() {
        let Some(event) = accepted.events.get(auth_event) else { continue };
        if event.kind().to_string() == kinds::MEMBER && !held.contains(&key(event)) {
            state_ids.push(auth_event.clone());
        }
    }
}

/// The servers a partial `/send_join` answer names (`servers_in_room`), valid names only.
fn servers_in_room(answer: &Value) -> Vec<String> {
    let names = answer["servers_in_room"].as_array().into_iter().flatten().filter_map(Value::as_str);
    let valid: std::collections::BTreeSet<String> =
        names.filter(|name| ServerName::parse(name).is_ok()).take(MAX_SERVERS_IN_ROOM).map(str::to_owned).collect();
    valid.into_iter().collect()
}

/// What a checked `/send_join` answer gives: events in an order where auth
/// events come first, and the ids of the state before the join.
struct ImportedRoom {
    outliers: Vec<Pdu>,
    state: Vec<OwnedEventId>,
}

/// Events of a room's state accepted so far.
#[derive(Default)]
pub(super) struct Accepted {
    events: HashMap<OwnedEventId, Pdu>,
    order: Vec<OwnedEventId>,
}

impl Accepted {
    /// The events accepted, auth events first.
    pub(super) fn in_order(&self) -> Vec<Pdu> {
        self.order.iter().filter_map(|id| self.events.get(id).cloned()).collect()
    }
}

impl EventView for Accepted {
    fn event(&self, event_id: &ruma::EventId) -> Result<Option<Pdu>> {
        Ok(self.events.get(event_id).cloned())
    }
}

/// The state a join answer gives, as a view for the auth rules.
struct StateOf<'a> {
    events: &'a Accepted,
    ids: &'a [OwnedEventId],
}

impl StateView for StateOf<'_> {
    fn state_event(&self, kind: &str, state_key: &str) -> Result<Option<Pdu>> {
        Ok(self
            .ids
            .iter()
            .filter_map(|id| self.events.events.get(id))
            .find(|pdu| pdu.kind().to_string() == kind && pdu.state_key_str() == Some(state_key))
            .cloned())
    }

    fn member_events(&self) -> Result<Vec<Pdu>> {
        Ok(self
            .ids
            .iter()
            .filter_map(|id| self.events.events.get(id))
            .filter(|pdu| pdu.event_type() == &ruma::events::TimelineEventType::RoomMember)
            .cloned()
            .collect())
    }
}

/// The room, which this server is in with its whole state (one joined with
/// partial state does not act as a resident server yet).
fn resident_room(rooms: &Rooms, room_id: &RoomId, own: &ServerName) -> Result<RoomRecord> {
    let room = rooms.room(room_id)?.ok_or_else(|| Error::not_found("This server is not in the room"))?;
    if !rooms.server_in_room(&room, own)? {
        return Err(Error::not_found("This server is not in the room"));
    }
    if rooms.has_partial_state(room_id)? {
        return Err(Error::not_found("This server does not have the room's whole state yet"));
    }
    Ok(room)
}

/// A member event of `origin`'s user, of the membership asked for.
fn check_member_event(pdu: &Pdu, room_id: &RoomId, origin: &ServerName, membership: Membership) -> Result<()> {
    if pdu.room_id_or_derived() != room_id || pdu.kind().to_string() != kinds::MEMBER {
        return Err(Error::bad_json("Not a member event of this room"));
    }
    if pdu.state_key_str() != Some(pdu.sender().as_str()) || pdu.sender().server_name() != origin {
        return Err(Error::forbidden("A server may only send its own users' membership"));
    }
    if crate::rooms::membership_of(pdu) != Some(membership) {
        return Err(Error::bad_json(format!("The event's membership is not {}", membership.as_str())));
    }
    Ok(())
}

impl Federation {
    /// A remote alias's room and the servers in it (`/query/directory`).
    pub async fn resolve_remote_alias(&self, alias: &ruma::RoomAliasId) -> Result<(ruma::OwnedRoomId, Vec<String>)> {
        let path = format!("/_matrix/federation/v1/query/directory?room_alias={}", percent_encode(alias.as_str()));
        let answer = self.request(alias.server_name(), "GET", &path, None).await?;
        let room_id = answer["room_id"]
            .as_str()
            .and_then(|id| ruma::OwnedRoomId::try_from(id).ok())
            .ok_or_else(|| Error::new(ErrorKind::Unavailable, "The alias's server gave no valid room id"))?;
        let servers = answer["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|server| server.as_str().map(str::to_owned))
            .collect();
        Ok((room_id, servers))
    }
}

/// The servers to try for a room: those named, then the room id's (before version 12).
pub fn candidate_servers(room_id: &RoomId, named: &[&str]) -> Vec<OwnedServerName> {
    let mut servers: Vec<OwnedServerName> =
        named.iter().filter_map(|name| OwnedServerName::try_from(*name).ok()).collect();
    if let Some(server) = room_id.server_name() {
        if !servers.iter().any(|s| s == server) {
            servers.push(server.to_owned());
        }
    }
    servers
}
