//! Stored sync filters (`POST /user/{userId}/filter`, `GET
//! /user/{userId}/filter/{filterId}`): the filter's JSON per user and id,
//! as the client uploaded it. Owns the `filters` table. What a filter means
//! is [`crate::sync::filter`]'s.
//!
//! Bounded: a filter is at most [`MAX_FILTER_BYTES`] of JSON, and its id is
//! derived from its content, so a client that uploads the same filter at
//! every start (as Element does) adds nothing after the first time. Filters
//! stored with a counter as id before stay valid.
//!
//! Spec: client-server API "Filtering".

use super::Users;
use crate::{
    error::{Error, Result},
    storage::Batch,
};

/// Largest filter accepted, in bytes of JSON (a filter listing thousands of
/// event types still fits; one that would make every sync crawl does not).
pub const MAX_FILTER_BYTES: usize = 64 * 1024;

impl Users {
    /// Stores a user's filter durably; returns its id (the same id for the
    /// same JSON).
    pub async fn add_filter(&self, localpart: &str, json: &str) -> Result<String> {
        if json.len() > MAX_FILTER_BYTES {
            return Err(Error::invalid_param(format!("Filters are at most {MAX_FILTER_BYTES} bytes of JSON")));
        }
        let filter_id = content_id(json);
        let key = (localpart.to_owned(), filter_id.clone());
        if self.storage.tables.filters.contains(&key)? {
            return Ok(filter_id);
        }
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.filters, &key, &json.to_owned())?;
        self.storage.commit(batch).await?;
        Ok(filter_id)
    }

    /// A user's stored filter (JSON).
    pub fn filter(&self, localpart: &str, filter_id: &str) -> Result<Option<String>> {
        Ok(self.storage.tables.filters.get(&(localpart.to_owned(), filter_id.to_owned()))?)
    }
}

/// The id of a filter: the first 16 bytes of its JSON's SHA-256, in hex
/// (never a number, so never an id of the counter-numbered filters).
fn content_id(json: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, json.as_bytes());
    digest.as_ref()[..16].iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_same_filter_is_stored_once_and_huge_ones_are_refused() {
        let (_dir, users) = crate::users::test_users();
        let first = users.add_filter("alice", r#"{"room":{"timeline":{"limit":10}}}"#).await.unwrap();
        let again = users.add_filter("alice", r#"{"room":{"timeline":{"limit":10}}}"#).await.unwrap();
        let other = users.add_filter("alice", r#"{"room":{"timeline":{"limit":20}}}"#).await.unwrap();
        assert_eq!(first, again);
        assert_ne!(first, other);
        assert!(users.filter("alice", &first).unwrap().is_some());
        assert!(users.filter("bob", &first).unwrap().is_none(), "filters are per user");
        let huge = format!(r#"{{"room":{{"timeline":{{"types":["{}"]}}}}}}"#, "x".repeat(MAX_FILTER_BYTES));
        assert!(users.add_filter("alice", &huge).await.is_err());
    }
}
