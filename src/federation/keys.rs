//! Other servers' signing keys (server-server API "Retrieving server keys"):
//! fetched from the server itself (`GET /_matrix/key/v2/server`), else
//! through the configured notaries (`POST /_matrix/key/v2/query`), verified
//! (the document names the server and every current key signs it; a
//! notary's answer is also signed by the notary), kept in memory and on disk,
//! and fetched again once `valid_until_ts` has passed. `old_verify_keys`
//! answer for events signed before their `expired_ts`.
//!
//! This server as a notary: `/_matrix/key/v2/query` serves its own keys and
//! the documents it holds, each countersigned with its own key.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use serde_json::{json, Map, Value};

use super::{Federation, FederationError};
use crate::{crypto::json_signatures, storage::records::ServerKeysRecord, util::now_ms};

/// Largest key document read.
pub const MAX_KEY_DOCUMENT_BYTES: usize = 64 * 1024;

/// A server's keys, from its verified document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    /// Key id → public key (unpadded base64).
    pub verify_keys: BTreeMap<String, String>,
    /// Key id → (public key, when it stopped being used).
    pub old_verify_keys: BTreeMap<String, (String, u64)>,
    pub valid_until_ts: u64,
}

impl KeySet {
    /// The public key `key_id` for a signature made at `at` (ms): a current
    /// key, or an old one that expired after `at`.
    pub fn key(&self, key_id: &str, at: u64) -> Option<&str> {
        if let Some(key) = self.verify_keys.get(key_id) {
            return Some(key);
        }
        self.old_verify_keys.get(key_id).filter(|(_, expired)| at < *expired).map(|(key, _)| key.as_str())
    }
}

/// Checks a key document of `server` (pure): it names `server`, every
/// current key signs it, and it has a validity. The keys it holds.
pub fn verify_document(server: &str, document: &Value) -> Result<KeySet, String> {
    let object = document.as_object().ok_or("the key document is not an object")?;
    if object.get("server_name").and_then(Value::as_str) != Some(server) {
        return Err(format!("the key document is not {server}'s"));
    }
    let valid_until_ts =
        object.get("valid_until_ts").and_then(Value::as_u64).ok_or("the key document has no valid_until_ts")?;
    let verify_keys = key_map(object.get("verify_keys"))?;
    if verify_keys.is_empty() {
        return Err("the key document has no verify key".into());
    }
    for (key_id, key) in &verify_keys {
        json_signatures::verify(object, server, key_id, key)?;
    }
    let mut old_verify_keys = BTreeMap::new();
    if let Some(old) = object.get("old_verify_keys").and_then(Value::as_object) {
        for (key_id, entry) in old {
            let (Some(key), Some(expired)) =
                (entry.get("key").and_then(Value::as_str), entry.get("expired_ts").and_then(Value::as_u64))
            else {
                continue;
            };
            old_verify_keys.insert(key_id.clone(), (key.to_owned(), expired));
        }
    }
    Ok(KeySet { verify_keys, old_verify_keys, valid_until_ts })
}

fn key_map(keys: Option<&Value>) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for (key_id, entry) in keys.and_then(Value::as_object).into_iter().flatten() {
        if !key_id.starts_with("ed25519:") {
            continue;
        }
        let key = entry.get("key").and_then(Value::as_str).ok_or_else(|| format!("{key_id} has no key"))?;
        map.insert(key_id.clone(), key.to_owned());
    }
    Ok(map)
}

/// The keys of other servers in memory, in front of the `server_keys` table.
#[derive(Default)]
pub struct KeyCache(Mutex<HashMap<String, Arc<KeySet>>>);

impl KeyCache {
    fn get(&self, server: &str) -> Option<Arc<KeySet>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(server).cloned()
    }

    fn put(&self, server: &str, keys: Arc<KeySet>) {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= 10_000 {
            cache.clear();
        }
        cache.insert(server.to_owned(), keys);
    }
}

impl Federation {
    /// The public key `key_id` of `server` for a signature made at `at`
    /// (ms), fetching the server's keys when they are unknown, expired, or
    /// do not have it.
    pub async fn server_key(&self, server: &str, key_id: &str, at: u64) -> Result<String, FederationError> {
        let now = now_ms();
        if let Some(keys) = self.known_keys(server)? {
            if let Some(key) = keys.key(key_id, at).filter(|_| keys.valid_until_ts >= now.min(at)) {
                return Ok(key.to_owned());
            }
        }
        let keys = self.fetch_keys(server).await?;
        keys.key(key_id, at)
            .map(str::to_owned)
            .ok_or_else(|| FederationError::Keys(format!("{server} has no key {key_id} for that time")))
    }

    /// Keys held for `server` (memory, else disk).
    fn known_keys(&self, server: &str) -> Result<Option<Arc<KeySet>>, FederationError> {
        if let Some(keys) = self.key_cache.get(server) {
            return Ok(Some(keys));
        }
        let Some(record) = self.storage.tables.server_keys.get(&server.to_owned())? else { return Ok(None) };
        let document: Value = serde_json::from_str(&record.document).unwrap_or_default();
        let Ok(keys) = verify_document(server, &document) else { return Ok(None) };
        let keys = Arc::new(keys);
        self.key_cache.put(server, Arc::clone(&keys));
        Ok(Some(keys))
    }

    /// Fetches `server`'s keys: from the server, else from each notary.
    async fn fetch_keys(&self, server: &str) -> Result<Arc<KeySet>, FederationError> {
        let direct = self.fetch_direct(server).await;
        let (document, keys) = match direct {
            Ok(found) => found,
            Err(direct_error) => {
                let mut found = None;
                for notary in &self.config.trusted_key_servers {
                    match self.fetch_from_notary(notary, server).await {
                        Ok(answer) => {
                            found = Some(answer);
                            break;
                        }
                        Err(error) => tracing::debug!(%server, %notary, %error, "notary could not give the keys"),
                    }
                }
                found.ok_or(direct_error)?
            }
        };
        let record = ServerKeysRecord { document: document.to_string(), fetched_ts: now_ms() };
        let mut batch = crate::storage::Batch::new();
        batch.insert(&self.storage.tables.server_keys, &server.to_owned(), &record)?;
        self.storage.apply(batch)?;
        let keys = Arc::new(keys);
        self.key_cache.put(server, Arc::clone(&keys));
        Ok(keys)
    }

    async fn fetch_direct(&self, server: &str) -> Result<(Value, KeySet), FederationError> {
        let document = self.get_unsigned(server, "/_matrix/key/v2/server").await?;
        let keys = verify_document(server, &document).map_err(FederationError::Keys)?;
        Ok((document, keys))
    }

    async fn fetch_from_notary(&self, notary: &str, server: &str) -> Result<(Value, KeySet), FederationError> {
        let notary_keys = match self.known_keys(notary)? {
            Some(keys) if keys.valid_until_ts >= now_ms() => keys,
            _ => Arc::new(self.fetch_direct(notary).await?.1),
        };
        let body = json!({ "server_keys": { server: {} } });
        let answer = self.post_unsigned(notary, "/_matrix/key/v2/query", &body).await?;
        for document in answer["server_keys"].as_array().into_iter().flatten() {
            let Ok(keys) = verify_document(server, document) else { continue };
            let object = document.as_object().cloned().unwrap_or_default();
            let countersigned = notary_keys
                .verify_keys
                .iter()
                .any(|(key_id, key)| json_signatures::verify(&object, notary, key_id, key).is_ok());
            if countersigned {
                return Ok((document.clone(), keys));
            }
        }
        Err(FederationError::Keys(format!("{notary} gave no verified keys of {server}")))
    }

    /// `/_matrix/key/v2/query` as a notary: for each server asked, its key
    /// document countersigned by us (our own document for us).
    pub async fn notary_answer(&self, servers: &[String]) -> Vec<Value> {
        let mut documents = Vec::new();
        for server in servers {
            let document = if server == self.server_name.as_str() {
                self.own_key_document()
            } else {
                self.held_document(server).await
            };
            let Some(mut document) = document else { continue };
            if self.key.sign_json(self.server_name.as_str(), &mut document).is_ok() {
                documents.push(document);
            }
        }
        documents
    }

    /// Our own key document.
    pub fn own_key_document(&self) -> Option<Value> {
        self.key.server_keys_document(self.server_name.as_str(), now_ms() + OWN_KEY_VALIDITY_MS).ok()
    }

    /// A document held for `server`, fetched when missing or expired.
    async fn held_document(&self, server: &str) -> Option<Value> {
        if !self.config.federates_with(server) {
            return None;
        }
        let stored = self.storage.tables.server_keys.get(&server.to_owned()).ok().flatten();
        let fresh = stored.and_then(|record| {
            let document: Value = serde_json::from_str(&record.document).ok()?;
            let keys = verify_document(server, &document).ok()?;
            (keys.valid_until_ts >= now_ms()).then_some(document)
        });
        match fresh {
            Some(document) => Some(document),
            None => self.fetch_direct(server).await.ok().map(|(document, _)| document),
        }
    }
}

/// How long peers may cache our keys.
pub const OWN_KEY_VALIDITY_MS: u64 = 24 * 60 * 60 * 1000;

/// The server names a `/_matrix/key/v2/query` body asks for (pure).
pub fn queried_servers(body: &Map<String, Value>) -> Vec<String> {
    body.get("server_keys")
        .and_then(Value::as_object)
        .map(|servers| servers.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_document(server: &str, valid_until_ts: u64) -> (Value, String) {
        let key = crate::crypto::signing_key::tests::spec_test_key();
        let document = key.server_keys_document(server, valid_until_ts).unwrap();
        (document, key.key_id().to_owned())
    }

    #[test]
    fn documents_are_checked_for_their_server_and_signatures() {
        let (document, key_id) = signed_document("a.example", 5_000);
        let keys = verify_document("a.example", &document).unwrap();
        assert_eq!(keys.valid_until_ts, 5_000);
        assert!(keys.key(&key_id, 1).is_some());
        assert!(verify_document("b.example", &document).is_err(), "another server's document");
        let mut tampered = document.clone();
        tampered["valid_until_ts"] = json!(9_999_999);
        assert!(verify_document("a.example", &tampered).is_err(), "a changed document no longer verifies");
        let mut unsigned = document;
        unsigned.as_object_mut().unwrap().remove("signatures");
        assert!(verify_document("a.example", &unsigned).is_err());
    }

    #[test]
    fn old_keys_answer_only_for_signatures_made_before_they_expired() {
        let keys = KeySet {
            verify_keys: BTreeMap::new(),
            old_verify_keys: [("ed25519:old".to_owned(), ("OLDKEY".to_owned(), 1_000))].into(),
            valid_until_ts: 2_000,
        };
        assert_eq!(keys.key("ed25519:old", 999), Some("OLDKEY"));
        assert_eq!(keys.key("ed25519:old", 1_000), None);
        assert_eq!(keys.key("ed25519:other", 1), None);
    }

    #[test]
    fn queries_name_their_servers() {
        let body = json!({ "server_keys": { "a.example": {}, "b.example": { "ed25519:x": {} } } });
        assert_eq!(queried_servers(body.as_object().unwrap()), ["a.example", "b.example"]);
        assert!(queried_servers(&Map::new()).is_empty());
    }
}
