//! Invites across servers: the stripped state an invite carries (spec:
//! "Stripped state"), and invites of local users to rooms of other servers
//! this server is not in — kept with the state the inviting server sent
//! until the user joins (the room then comes with its real state) or
//! declines (the rejection kept for `/sync`'s `leave` section).

use ruma::state_res::Event as _;
use ruma::{RoomId, UserId};
use serde_json::{json, Value};

use super::{kinds, Membership, RoomRecord, Rooms};
use crate::{
    error::Result,
    events::Pdu,
    storage::{records::RemoteInviteRecord, Batch},
};

impl Rooms {
    /// The room's stripped state for an invite or a knock, with `own_member`
    /// (the invite or knock itself) last.
    pub fn stripped_state(&self, room: &RoomRecord, own_member: Option<&Pdu>) -> Result<Vec<Value>> {
        let state = self.current_state(room)?;
        let mut events = Vec::new();
        for kind in [
            kinds::CREATE,
            kinds::JOIN_RULES,
            kinds::NAME,
            kinds::AVATAR,
            kinds::CANONICAL_ALIAS,
            kinds::ENCRYPTION,
            kinds::TOPIC,
            // The public-sector access rule: the invitee's server checks it.
            crate::policy::ACCESS_RULES,
        ] {
            if let Some(pdu) = self.state_event_in(&state, kind, "")? {
                events.push(stripped(&pdu));
            }
        }
        if let Some(member) = own_member {
            events.push(stripped(member));
        }
        Ok(events)
    }

    /// Keeps another server's invite of a local user (signed by both
    /// servers) with the stripped state it came with; the user's membership
    /// becomes `invite`.
    pub async fn store_remote_invite(&self, invite: &Pdu, stripped_state: &[Value]) -> Result<()> {
        let Some(invitee) = invite.state_key_str().and_then(|key| UserId::parse(key).ok()) else { return Ok(()) };
        let room_id = invite.room_id_or_derived();
        let mut state: Vec<Value> = stripped_state
            .iter()
            .filter(|event| event["type"] != kinds::MEMBER || event["state_key"] != invitee.as_str())
            .cloned()
            .collect();
        state.push(stripped(invite));
        let record = |position| RemoteInviteRecord {
            event: invite.to_canonical_json(),
            stripped_state: Value::Array(state.clone()).to_string(),
            position,
            rejection: None,
            knock: false,
        };
        self.write_remote_invite(invitee.localpart(), &room_id, Membership::Invite, record).await
    }

    /// The invite event of a local user's pending invite to another server's
    /// room: their member event among the stripped state it came with.
    pub fn remote_invite_event(&self, user_id: &UserId, room_id: &RoomId) -> Result<Option<Value>> {
        let Some(record) = self.remote_invite(user_id.localpart(), room_id)? else { return Ok(None) };
        if record.knock || record.rejection.is_some() {
            return Ok(None);
        }
        let state: Vec<Value> = serde_json::from_str(&record.stripped_state).unwrap_or_default();
        Ok(state.into_iter().find(|event| {
            event["type"] == kinds::MEMBER
                && event["state_key"] == user_id.as_str()
                && event["content"]["membership"] == "invite"
        }))
    }

    /// Keeps a local user's knock on a room of another server, with the
    /// stripped state the resident server answered; the membership becomes `knock`.
    pub async fn store_remote_knock(&self, knock: &Pdu, stripped_state: &[Value]) -> Result<()> {
        let Some(user) = knock.state_key_str().and_then(|key| UserId::parse(key).ok()) else { return Ok(()) };
        let room_id = knock.room_id_or_derived();
        let mut state = stripped_state.to_vec();
        state.push(stripped(knock));
        let record = |position| RemoteInviteRecord {
            event: knock.to_canonical_json(),
            stripped_state: Value::Array(state.clone()).to_string(),
            position,
            rejection: None,
            knock: true,
        };
        self.write_remote_invite(user.localpart(), &room_id, Membership::Knock, record).await
    }

    /// The user declined a remote invite with `leave` (sent through the
    /// inviting server); their membership becomes `leave`, and `/sync`
    /// gives the rejection (in the client format).
    pub async fn store_invite_rejection(&self, user_id: &UserId, room_id: &RoomId, leave: &Pdu) -> Result<()> {
        let Some(mut invite) = self.remote_invite(user_id.localpart(), room_id)? else { return Ok(()) };
        invite.rejection = Some(super::client_event(leave, room_id).to_string());
        let record = |position| RemoteInviteRecord { position, ..invite.clone() };
        self.write_remote_invite(user_id.localpart(), room_id, Membership::Leave, record).await
    }

    async fn write_remote_invite(
        &self,
        localpart: &str,
        room_id: &RoomId,
        membership: Membership,
        record: impl Fn(u64) -> RemoteInviteRecord,
    ) -> Result<()> {
        let tables = &self.storage.tables;
        let key = (localpart.to_owned(), room_id.to_string());
        let reservation = self.storage.reserve_count()?;
        let mut batch = Batch::new();
        batch.insert(&tables.remote_invites, &key, &record(reservation.count))?;
        batch.insert(&tables.localpart_roomid_membership, &key, &membership.as_str().to_owned())?;
        batch.remove(&tables.localpart_roomid_forgotten, &key);
        self.storage.apply(batch)?;
        self.storage.wait_durable().await?;
        reservation.announce();
        Ok(())
    }

    /// A local user's pending (or declined) invite to a room of another server.
    pub fn remote_invite(&self, localpart: &str, room_id: &RoomId) -> Result<Option<RemoteInviteRecord>> {
        Ok(self.storage.tables.remote_invites.get(&(localpart.to_owned(), room_id.to_string()))?)
    }

    /// A remote invite no longer stands on its own once the room's own
    /// events give the user's membership (written in that event's batch).
    pub(crate) fn drop_remote_invite(&self, batch: &mut Batch, localpart: &str, room_id: &RoomId) {
        batch.remove(&self.storage.tables.remote_invites, &(localpart.to_owned(), room_id.to_string()));
    }
}

/// An event as stripped state.
pub fn stripped(pdu: &Pdu) -> Value {
    let content: Value = serde_json::from_str(pdu.content_json()).unwrap_or_default();
    json!({ "type": pdu.kind().to_string(), "state_key": pdu.state_key_str().unwrap_or_default(), "sender": pdu.sender(), "content": content })
}
