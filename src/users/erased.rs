//! Accounts erased when deactivated (`erase: true`).
//!
//! Spec: client-server API `POST /account/deactivate`, `erase`: "any users
//! (or servers) which join the room after the erasure request are served
//! redacted copies of the events sent by this account. Users which had
//! visibility on the event prior to the erasure are still able to see
//! unredacted copies." As Synapse reads it, a user sees an erased sender's
//! event whole when they were joined to the room at that event, redacted
//! otherwise (the rooms' `serve_event` asks [`ErasedUsers::contains`]).
//!
//! Owns the `erased_users` table (user id → when erased). The set is small
//! and read for every event served, so it is held in memory, loaded once;
//! [`Users`] holds one handle, the rooms another.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

use ruma::UserId;

use super::Users;
use crate::{
    error::Result,
    storage::{Batch, Storage},
};

#[derive(Clone, Default)]
pub struct ErasedUsers {
    ids: Arc<RwLock<HashSet<String>>>,
}

impl ErasedUsers {
    /// The erased accounts as stored.
    pub fn load(storage: &Storage) -> Result<Self> {
        let ids = storage.tables.erased_users.all()?.into_iter().map(|(user_id, _)| user_id).collect();
        Ok(Self { ids: Arc::new(RwLock::new(ids)) })
    }

    /// Whether the account of `user_id` was erased.
    pub fn contains(&self, user_id: &str) -> bool {
        let ids = self.ids.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        !ids.is_empty() && ids.contains(user_id)
    }

    fn note(&self, user_id: &UserId) {
        self.ids.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(user_id.to_string());
    }
}

impl Users {
    /// Records in `batch` that `user_id` is erased; call
    /// [`Users::note_erased`] once the batch is committed.
    pub(super) fn erase_in(&self, batch: &mut Batch, user_id: &UserId) -> Result<()> {
        batch.insert(&self.storage.tables.erased_users, &user_id.to_string(), &crate::util::now_ms())?;
        Ok(())
    }

    pub(super) fn note_erased(&self, user_id: &UserId) {
        self.erased.note(user_id);
    }

    /// Whether `user_id`'s account was erased.
    pub fn is_erased(&self, user_id: &UserId) -> bool {
        self.erased.contains(user_id.as_str())
    }
}
