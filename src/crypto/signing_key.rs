//! The server's ed25519 signing key and JSON signing.
//!
//! Spec: appendices "Signing JSON" and server-server API "Publishing Keys".
//! The key is generated with ring on first start, persisted once (the first
//! writer wins, so two racing starts agree), and never changes afterwards.

use base64::{engine::general_purpose::STANDARD_NO_PAD, Engine};
use ring::{
    rand::{SecureRandom, SystemRandom},
    signature::{Ed25519KeyPair, KeyPair},
};
use ruma::CanonicalJsonValue;
use serde_json::{json, Value};

use crate::storage::{records::SigningKeyRecord, Storage, StorageError};

const META_KEY: &str = "signing_key";

pub struct ServerKey {
    key_id: String,
    pair: Ed25519KeyPair,
}

/// Why a JSON object could not be signed.
#[derive(Debug, PartialEq, Eq)]
pub struct SigningError(pub String);

impl std::fmt::Display for SigningError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ServerKey {
    /// Loads the persisted key, or generates and persists a new one.
    pub fn load_or_generate(storage: &Storage) -> Result<Self, StorageError> {
        let record = match storage.meta_get::<SigningKeyRecord>(META_KEY)? {
            Some(record) => record,
            None => {
                let generated = generate()?;
                let stored = storage.meta_insert_if_absent(META_KEY, &generated)?;
                tracing::info!(key_id = %format!("ed25519:{}", stored.version), "generated server signing key");
                stored
            }
        };
        Self::from_record(&record)
    }

    fn from_record(record: &SigningKeyRecord) -> Result<Self, StorageError> {
        let pair = Ed25519KeyPair::from_pkcs8(&record.pkcs8)
            .map_err(|e| StorageError::corrupt(format!("stored signing key: {e}")))?;
        Ok(Self { key_id: format!("ed25519:{}", record.version), pair })
    }

    /// `ed25519:<version>`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, unpadded base64 as the spec writes keys.
    pub fn public_key_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.pair.public_key().as_ref())
    }

    /// Signs a JSON object in place, as the spec's "Signing JSON": the canonical
    /// form of the object without `signatures` and `unsigned` is signed, and the
    /// signature added under `signatures.<server_name>.<key_id>`.
    pub fn sign_json(&self, server_name: &str, object: &mut Value) -> Result<(), SigningError> {
        let map = object.as_object_mut().ok_or_else(|| SigningError("only objects can be signed".into()))?;
        let mut signatures = map.remove("signatures").unwrap_or_else(|| json!({}));
        let unsigned = map.remove("unsigned");
        let canonical = canonical_json(object)?;
        let signature = STANDARD_NO_PAD.encode(self.pair.sign(canonical.as_bytes()).as_ref());
        let map = object.as_object_mut().expect("checked above");
        if !signatures.is_object() {
            return Err(SigningError("`signatures` is not an object".into()));
        }
        let per_server = signatures
            .as_object_mut()
            .expect("checked above")
            .entry(server_name.to_owned())
            .or_insert_with(|| json!({}));
        per_server
            .as_object_mut()
            .ok_or_else(|| SigningError("signatures of a server must be an object".into()))?
            .insert(self.key_id.clone(), Value::String(signature));
        map.insert("signatures".into(), signatures);
        if let Some(unsigned) = unsigned {
            map.insert("unsigned".into(), unsigned);
        }
        Ok(())
    }

    /// The body of `GET /_matrix/key/v2/server`, signed.
    pub fn server_keys_document(&self, server_name: &str, valid_until_ts: u64) -> Result<Value, SigningError> {
        let mut document = json!({
            "server_name": server_name,
            "valid_until_ts": valid_until_ts,
            "verify_keys": { self.key_id.clone(): { "key": self.public_key_base64() } },
            "old_verify_keys": {},
        });
        self.sign_json(server_name, &mut document)?;
        Ok(document)
    }
}

/// The canonical JSON text of a value (appendices, "Canonical JSON").
pub fn canonical_json(value: &Value) -> Result<String, SigningError> {
    let canonical: CanonicalJsonValue =
        value.clone().try_into().map_err(|e| SigningError(format!("not canonical JSON: {e}")))?;
    Ok(canonical.to_string())
}

fn generate() -> Result<SigningKeyRecord, StorageError> {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| StorageError::corrupt("key generation failed"))?;
    let mut version_bytes = [0u8; 6];
    rng.fill(&mut version_bytes).map_err(|_| StorageError::corrupt("no randomness"))?;
    let version =
        version_bytes.iter().map(|b| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[*b as usize % 36])).collect();
    Ok(SigningKeyRecord { version, pkcs8: pkcs8.as_ref().to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::{
        serde::Base64,
        signatures::{verify_json, PublicKeyMap, PublicKeySet},
        CanonicalJsonObject,
    };

    fn test_key() -> ServerKey {
        ServerKey::from_record(&generate().unwrap()).unwrap()
    }

    fn ruma_verifies(key: &ServerKey, server: &str, document: &Value) -> bool {
        let mut set = PublicKeySet::new();
        set.insert(key.key_id().to_owned(), Base64::parse(key.public_key_base64()).unwrap());
        let mut map = PublicKeyMap::new();
        map.insert(server.to_owned(), set);
        let object: CanonicalJsonObject = serde_json::from_value(document.clone()).unwrap();
        verify_json(&map, &object).is_ok()
    }

    #[test]
    fn server_key_document_verifies_with_an_independent_implementation() {
        let key = test_key();
        let document = key.server_keys_document("example.org", 1_000).unwrap();
        assert!(ruma_verifies(&key, "example.org", &document));

        let mut tampered = document.clone();
        tampered["valid_until_ts"] = json!(2_000);
        assert!(!ruma_verifies(&key, "example.org", &tampered));
    }

    #[test]
    fn signing_ignores_unsigned_and_keeps_other_signatures() {
        let key = test_key();
        let mut object = json!({
            "a": 1, "unsigned": {"age": 5},
            "signatures": {"other.org": {"ed25519:x": "abc"}}
        });
        key.sign_json("example.org", &mut object).unwrap();
        assert_eq!(object["signatures"]["other.org"]["ed25519:x"], "abc");
        assert_eq!(object["unsigned"]["age"], 5);
        let mut without_unsigned = object.clone();
        without_unsigned.as_object_mut().unwrap().remove("unsigned");
        without_unsigned["signatures"].as_object_mut().unwrap().remove("other.org");
        assert!(ruma_verifies(&key, "example.org", &without_unsigned));
    }

    #[test]
    fn canonical_json_matches_the_spec_examples() {
        let value = json!({"b": "2", "a": "1", "nested": {"z": 1, "é": "\u{1F600}"}});
        assert_eq!(canonical_json(&value).unwrap(), r#"{"a":"1","b":"2","nested":{"z":1,"é":"😀"}}"#);
        assert!(canonical_json(&json!({"f": 1.5})).is_err(), "floats are not canonical JSON");
    }

    #[test]
    fn key_persists_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let storage = Storage::open(dir.path(), 8 << 20).unwrap();
            let key = ServerKey::load_or_generate(&storage).unwrap();
            (key.key_id().to_owned(), key.public_key_base64())
        };
        let storage = Storage::open(dir.path(), 8 << 20).unwrap();
        let key = ServerKey::load_or_generate(&storage).unwrap();
        assert_eq!((key.key_id().to_owned(), key.public_key_base64()), first);
    }
}
