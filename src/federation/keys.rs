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
    time::{Duration, Instant},
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

/// Servers remembered at most (keys and fetch attempts); beyond, the memory starts over.
const MAX_CACHED_SERVERS: usize = 10_000;

/// A server's keys are fetched at most once in this time, whatever asks
/// (a request naming an unknown key id, a notary query, a failing server):
/// nobody can make this server hammer another one, or wait on a dead one
/// at every request.
const MIN_REFETCH: Duration = Duration::from_secs(60);

/// At most this many servers are answered per notary query.
pub const MAX_NOTARY_SERVERS: usize = 32;

/// The keys of other servers in memory, in front of the `server_keys`
/// table, and when each was last fetched.
#[derive(Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<String, Arc<KeySet>>>,
    fetched: Mutex<HashMap<String, Instant>>,
    /// One fetch per server at a time: requests arriving meanwhile wait
    /// for it instead of being refused by [`MIN_REFETCH`].
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyCache {
    /// The lock held while `server`'s keys are fetched.
    fn fetch_lock(&self, server: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut fetching = lock(&self.fetching);
        if let Some(existing) = fetching.get(server) {
            return Arc::clone(existing);
        }
        let created = Arc::new(tokio::sync::Mutex::new(()));
        bounded_insert(&mut fetching, server, Arc::clone(&created));
        created
    }

    fn get(&self, server: &str) -> Option<Arc<KeySet>> {
        lock(&self.keys).get(server).cloned()
    }

    fn put(&self, server: &str, keys: Arc<KeySet>) {
        bounded_insert(&mut lock(&self.keys), server, keys);
    }

    /// Records an attempt to fetch `server`'s keys now, unless one was made
    /// less than [`MIN_REFETCH`] ago (then `false`).
    fn may_fetch(&self, server: &str) -> bool {
        let now = Instant::now();
        let mut fetched = lock(&self.fetched);
        if fetched.get(server).is_some_and(|last| now.duration_since(*last) < MIN_REFETCH) {
            return false;
        }
        bounded_insert(&mut fetched, server, now);
        true
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn bounded_insert<V>(map: &mut HashMap<String, V>, server: &str, value: V) {
    if map.len() >= MAX_CACHED_SERVERS {
        map.clear();
    }
    map.insert(server.to_owned(), value);
}

impl Federation {
    /// The public key `key_id` of `server` for a signature made at `at`
    /// (ms), fetching the server's keys when they are unknown, expired, or
    /// do not have it.
    pub async fn server_key(&self, server: &str, key_id: &str, at: u64) -> Result<String, FederationError> {
        // Our own keys are known here: never taken from a peer or a notary.
        if server == self.server_name.as_str() {
            return self
                .own_key_document()
                .and_then(|document| verify_document(server, &document).ok())
                .and_then(|keys| keys.key(key_id, at).map(str::to_owned))
                .ok_or_else(|| FederationError::Keys(format!("{key_id} is not one of this server's keys")));
        }
        let now = now_ms();
        let usable =
            |keys: Arc<KeySet>| keys.key(key_id, at).filter(|_| keys.valid_until_ts >= now.min(at)).map(str::to_owned);
        if let Some(key) = self.known_keys(server)?.and_then(usable) {
            return Ok(key);
        }
        // Concurrent requests of one server wait for one fetch, then look again.
        let fetch_lock = self.key_cache.fetch_lock(server);
        let _fetching = fetch_lock.lock().await;
        if let Some(key) = self.known_keys(server)?.and_then(usable) {
            return Ok(key);
        }
        let (_, keys) = self.fetch_keys(server).await?;
        keys.key(key_id, at)
            .map(str::to_owned)
            .ok_or_else(|| FederationError::Keys(format!("{server} has no key {key_id} for that time")))
    }

    /// Keys held for `server` (memory, else disk).
    fn known_keys(&self, server: &str) -> Result<Option<Arc<KeySet>>, FederationError> {
        if let Some(keys) = self.key_cache.get(server) {
            return Ok(Some(keys));
        }
        let Some((_, keys)) = self.stored_document(server)? else { return Ok(None) };
        self.key_cache.put(server, Arc::clone(&keys));
        Ok(Some(keys))
    }

    /// The document stored for `server`, checked again.
    fn stored_document(&self, server: &str) -> Result<Option<(Value, Arc<KeySet>)>, FederationError> {
        let Some(record) = self.storage.tables.server_keys.get(&server.to_owned())? else { return Ok(None) };
        let Ok(document) = serde_json::from_str::<Value>(&record.document) else { return Ok(None) };
        Ok(verify_document(server, &document).ok().map(|keys| (document, Arc::new(keys))))
    }

    /// Fetches `server`'s keys (from the server, else from each notary),
    /// stores them, and returns them with their document. At most once per
    /// [`MIN_REFETCH`] per server.
    async fn fetch_keys(&self, server: &str) -> Result<(Value, Arc<KeySet>), FederationError> {
        if !self.key_cache.may_fetch(server) {
            return Err(FederationError::Keys(format!("the keys of {server} were fetched less than a minute ago")));
        }
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
        Ok((document, keys))
    }

    async fn fetch_direct(&self, server: &str) -> Result<(Value, KeySet), FederationError> {
        let document = self.get_unsigned(server, "/_matrix/key/v2/server").await?;
        let keys = verify_document(server, &document).map_err(FederationError::Keys)?;
        Ok((document, keys))
    }

    async fn fetch_from_notary(&self, notary: &str, server: &str) -> Result<(Value, KeySet), FederationError> {
        let notary_keys = match self.known_keys(notary)? {
            Some(keys) if keys.valid_until_ts >= now_ms() => keys,
            // Directly (a notary's own keys do not come from a notary).
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

    /// `/_matrix/key/v2/query` as a notary: for each server asked (the first
    /// [`MAX_NOTARY_SERVERS`]), its key document countersigned by us (our
    /// own document for us).
    pub async fn notary_answer(&self, servers: &[String]) -> Vec<Value> {
        let mut documents = Vec::new();
        for server in servers.iter().take(MAX_NOTARY_SERVERS) {
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
        let stored = self.stored_document(server).ok().flatten();
        match stored.filter(|(_, keys)| keys.valid_until_ts >= now_ms()) {
            Some((document, _)) => Some(document),
            None => self.fetch_keys(server).await.ok().map(|(document, _)| document),
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
    fn a_server_is_fetched_at_most_once_a_minute() {
        let cache = KeyCache::default();
        assert!(cache.may_fetch("a.example"));
        assert!(!cache.may_fetch("a.example"), "again at once: refused");
        assert!(cache.may_fetch("b.example"), "other servers are not held up");
    }

    #[test]
    fn queries_name_their_servers() {
        let body = json!({ "server_keys": { "a.example": {}, "b.example": { "ed25519:x": {} } } });
        assert_eq!(queried_servers(body.as_object().unwrap()), ["a.example", "b.example"]);
        assert!(queried_servers(&Map::new()).is_empty());
    }
}
