//! Asking a peer's identity service about an address its email map sends
//! to it, as one of our users (identity service API: `/account/register`
//! with an OpenID token, `/hash_details`, `/lookup`, `/store-invite`), and
//! handing a completed invite by email to the inviter's server
//! (server-server API `PUT /exchange_third_party_invite/{roomId}`).

use ruma::{OwnedUserId, RoomId, ServerName, UserId};
use serde_json::{json, Value};

use super::{Federation, FederationError};
use crate::{
    http::request::percent_encode,
    users::{threepids::lookup_hash, Identity, Users},
};

/// What a peer's identity service said of an invited address.
pub enum Invited {
    /// The address is bound to this account.
    Bound(OwnedUserId),
    /// It stored the invite (mailing the invitee): its `store-invite` answer.
    Stored(Value),
}

impl Federation {
    /// Looks `address` up at `home`'s identity service as `who`, and has it
    /// store an invite to `room_id` when nobody holds the address.
    pub async fn invite_through_identity_service(
        &self,
        users: &Users,
        home: &ServerName,
        who: &Identity,
        address: &str,
        room_id: &RoomId,
    ) -> Result<Invited, FederationError> {
        self.check_federates_with(home.as_str())?;
        let openid = users.new_openid_token(&who.localpart).await.map_err(|e| FederationError::BadAnswer(e.message))?;
        let register = json!({ "access_token": openid, "token_type": "Bearer",
                               "matrix_server_name": self.server_name, "expires_in": 3600 });
        let registered = self.post_unsigned(home.as_str(), "/_matrix/identity/v2/account/register", &register).await?;
        let token = registered["token"]
            .as_str()
            .ok_or_else(|| FederationError::BadAnswer(format!("{home} gave no identity token")))?;
        let bearer = || Some(format!("Bearer {token}"));
        let details = self.send(home, "GET", "/_matrix/identity/v2/hash_details", None, bearer()).await?;
        let pepper = details["lookup_pepper"].as_str().unwrap_or_default();
        let hash = lookup_hash(address, pepper);
        let lookup = json!({ "algorithm": "sha256", "pepper": pepper, "addresses": [hash] });
        let found = self.send(home, "POST", "/_matrix/identity/v2/lookup", Some(&lookup), bearer()).await?;
        if let Some(user) = found["mappings"][&hash].as_str().and_then(|user| UserId::parse(user).ok()) {
            return Ok(Invited::Bound(user));
        }
        let store = json!({ "medium": "email", "address": address, "room_id": room_id, "sender": who.user_id });
        let stored = self.send(home, "POST", "/_matrix/identity/v2/store-invite", Some(&store), bearer()).await?;
        Ok(Invited::Stored(stored))
    }

    /// Sends the member invite of `invitee` (ours) built from an invite by
    /// email to the server of `sender`, who invited the address.
    pub async fn exchange_third_party_invite(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        invitee: &UserId,
        content: Value,
    ) -> Result<(), FederationError> {
        let path = format!("/_matrix/federation/v1/exchange_third_party_invite/{}", percent_encode(room_id.as_str()));
        let event = json!({ "type": crate::events::kinds::MEMBER, "room_id": room_id, "sender": sender,
                            "state_key": invitee, "content": content });
        self.request(sender.server_name(), "PUT", &path, Some(&event)).await.map(drop)
    }
}
