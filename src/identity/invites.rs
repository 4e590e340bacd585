//! Invites by email address waiting for their address to be bound: owns
//! the `email_invites` table.
//!
//! Spec: identity service API "Invitation storage" (`store-invite`, whose
//! answer carries the public keys that will verify the invite) and
//! client-server API "Third-party invites". This server is the identity
//! service of the addresses its email map sends to it: an invite to one of
//! them is stored here — by this server's own rooms, or by a peer's through
//! `store-invite` — the invitee gets a mail, and when the address is bound
//! (the invitee registers or adds it) each waiting invite is turned into an
//! `m.room.member` invite carrying `third_party_invite.signed`, signed with
//! this server's key (see `crate::api::client::third_party_invites`).

use std::sync::Arc;

use ruma::RoomId;

use crate::{
    crypto::tokens::random_alphanumeric,
    error::Result,
    storage::{records::EmailInviteRecord, Batch, Storage},
    util::now_ms,
};

/// Invites kept for one address at most (a room cannot fill the disk).
pub const MAX_INVITES_PER_ADDRESS: usize = 100;

pub struct EmailInvites {
    storage: Arc<Storage>,
}

/// An invite waiting for its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingInvite {
    pub token: String,
    pub room_id: String,
    /// Who invited (of this server or a peer).
    pub sender: String,
    /// The address as the room shows it.
    pub display_name: String,
}

impl EmailInvites {
    pub fn new(storage: Arc<Storage>) -> Self {
        Self { storage }
    }

    /// Stores an invite of `address` to `room_id` by `sender`: its token
    /// and the address as shown in the room (partly hidden).
    pub async fn store(&self, address: &str, room_id: &RoomId, sender: &str) -> Result<(String, String)> {
        if self.waiting_for(address)?.len() >= MAX_INVITES_PER_ADDRESS {
            return Err(crate::error::Error::new(
                crate::error::ErrorKind::LimitExceeded { retry_after_ms: 24 * 3600 * 1000 },
                "Too many invites wait for this address",
            ));
        }
        let token = random_alphanumeric(32);
        let display_name = obfuscate(address);
        let record = EmailInviteRecord {
            room_id: room_id.to_string(),
            sender: sender.to_owned(),
            display_name: display_name.clone(),
            created_ts: now_ms(),
        };
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.email_invites, &(address.to_owned(), token.clone()), &record)?;
        self.storage.commit(batch).await?;
        tracing::info!(%address, room = %room_id, %sender, "invite by email stored");
        Ok((token, display_name))
    }

    /// The invites waiting for `address`.
    pub fn waiting_for(&self, address: &str) -> Result<Vec<WaitingInvite>> {
        let entries = self.storage.tables.email_invites.scan_leading((address,))?;
        Ok(entries
            .into_iter()
            .map(|((_, token), record)| WaitingInvite {
                token,
                room_id: record.room_id,
                sender: record.sender,
                display_name: record.display_name,
            })
            .collect())
    }

    /// Whether an invite waits for `address`.
    pub fn is_invited(&self, address: &str) -> Result<bool> {
        Ok(!self.waiting_for(address)?.is_empty())
    }

    /// Forgets an invite (done, or its room refused it).
    pub async fn remove(&self, address: &str, token: &str) -> Result<()> {
        let mut batch = Batch::new();
        batch.remove(&self.storage.tables.email_invites, &(address.to_owned(), token.to_owned()));
        Ok(self.storage.commit(batch).await?)
    }
}

/// The address as the room shows it before the invitee joins: the first
/// three characters of the part before `@`, then `...`, then the domain
/// (as Sydent shows it).
pub fn obfuscate(address: &str) -> String {
    let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
    let kept: String = local.chars().take(3).collect();
    format!("{kept}...@{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_shown_partly() {
        assert_eq!(obfuscate("jean.dupont@example.org"), "jea...@example.org");
        assert_eq!(obfuscate("jo@example.org"), "jo...@example.org");
    }

    #[tokio::test]
    async fn invites_wait_per_address_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let invites = EmailInvites::new(Arc::new(Storage::open(dir.path(), 8 << 20).unwrap()));
        let room = RoomId::parse("!r:x.fr").unwrap();
        let (token, shown) = invites.store("a@x.fr", &room, "@alice:x.fr").await.unwrap();
        assert_eq!(shown, "a...@x.fr");
        assert!(invites.is_invited("a@x.fr").unwrap() && !invites.is_invited("b@x.fr").unwrap());
        assert_eq!(invites.waiting_for("a@x.fr").unwrap()[0].sender, "@alice:x.fr");
        invites.remove("a@x.fr", &token).await.unwrap();
        assert!(!invites.is_invited("a@x.fr").unwrap());
    }
}
