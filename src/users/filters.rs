//! Stored sync filters (`POST /user/{userId}/filter`, `GET
//! /user/{userId}/filter/{filterId}`): the filter's JSON per user and id,
//! as the client uploaded it. Owns the `filters` table. What a filter means
//! is [`crate::sync::filter`]'s.
//!
//! Spec: client-server API "Filtering".

use super::Users;
use crate::{error::Result, storage::Batch};

impl Users {
    /// Stores a user's filter durably; returns its new id.
    pub async fn add_filter(&self, localpart: &str, json: &str) -> Result<String> {
        let filter_id = self.storage.next_count()?.to_string();
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.filters, &(localpart.to_owned(), filter_id.clone()), &json.to_owned())?;
        self.storage.commit(batch).await?;
        Ok(filter_id)
    }

    /// A user's stored filter (JSON).
    pub fn filter(&self, localpart: &str, filter_id: &str) -> Result<Option<String>> {
        Ok(self.storage.tables.filters.get(&(localpart.to_owned(), filter_id.to_owned()))?)
    }
}
