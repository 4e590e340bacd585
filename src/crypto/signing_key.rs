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
use ruma::{AnyKeyName, CanonicalJsonValue, OwnedSigningKeyId};
use serde_json::{json, Value};

use crate::storage::{
    records::{OldSigningKey, SigningKeyRecord},
    Storage, StorageError,
};

const META_KEY: &str = "signing_key";

pub struct ServerKey {
    key_id: String,
    /// The same id, typed, for ruma's event signing.
    typed_key_id: OwnedSigningKeyId<AnyKeyName>,
    pair: Ed25519KeyPair,
    /// Retired keys, published under `old_verify_keys`.
    old_keys: Vec<OldSigningKey>,
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

    /// A key from a raw 32-byte ed25519 seed (the spec's test vectors use one).
    pub fn from_seed(version: &str, seed: &[u8]) -> Result<Self, SigningError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| SigningError(format!("invalid seed: {e}")))?;
        Self::new(version, pair).map_err(|e| SigningError(e.to_string()))
    }

    fn from_record(record: &SigningKeyRecord) -> Result<Self, StorageError> {
        let pair = Ed25519KeyPair::from_pkcs8(&record.pkcs8)
            .map_err(|e| StorageError::corrupt(format!("stored signing key: {e}")))?;
        let mut key = Self::new(&record.version, pair)?;
        key.old_keys = record.old_keys.clone();
        Ok(key)
    }

    fn new(version: &str, pair: Ed25519KeyPair) -> Result<Self, StorageError> {
        let key_id = format!("ed25519:{version}");
        let typed_key_id = OwnedSigningKeyId::try_from(key_id.as_str())
            .map_err(|e| StorageError::corrupt(format!("signing key id {key_id}: {e}")))?;
        Ok(Self { key_id, typed_key_id, pair, old_keys: Vec::new() })
    }

    /// Replaces the stored key by a new one (`conduit server rotate-key`,
    /// with the server stopped); the old key's public half stays published
    /// under `old_verify_keys`, expired now. The (old, new) key ids.
    pub fn rotate(storage: &Storage, now: u64) -> Result<(String, String), StorageError> {
        let current = Self::load_or_generate(storage)?;
        let Some(mut record) = storage.meta_get::<SigningKeyRecord>(META_KEY)? else {
            return Err(StorageError::corrupt("the signing key vanished"));
        };
        let mut new = generate()?;
        while new.version == record.version || record.old_keys.iter().any(|old| old.version == new.version) {
            new = generate()?;
        }
        record.old_keys.push(OldSigningKey {
            version: record.version.clone(),
            public_key: current.public_key_base64(),
            expired_ts: now,
        });
        new.old_keys = std::mem::take(&mut record.old_keys);
        storage.meta_put(META_KEY, &new)?;
        Ok((current.key_id, format!("ed25519:{}", new.version)))
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
            "old_verify_keys": self.old_verify_keys(),
        });
        self.sign_json(server_name, &mut document)?;
        Ok(document)
    }
}

impl ServerKey {
    /// `old_verify_keys` of the key document: retired keys and when they expired.
    fn old_verify_keys(&self) -> Value {
        let keys = self
            .old_keys
            .iter()
            .map(|old| {
                (format!("ed25519:{}", old.version), json!({ "key": old.public_key, "expired_ts": old.expired_ts }))
            })
            .collect::<serde_json::Map<_, _>>();
        Value::Object(keys)
    }
}

/// Lets ruma's event hashing and signing use our ring key.
impl ruma::signatures::KeyPair for ServerKey {
    fn sign(&self, message: &[u8]) -> ruma::signatures::Signature {
        ruma::signatures::Signature::new(self.typed_key_id.clone(), self.pair.sign(message).as_ref().to_vec())
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
    Ok(SigningKeyRecord { version, pkcs8: pkcs8.as_ref().to_vec(), old_keys: Vec::new() })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ruma::{
        serde::Base64,
        signatures::{verify_json, PublicKeyMap, PublicKeySet},
        CanonicalJsonObject,
    };

    /// The key of the spec's "Cryptographic Test Vectors" (server `domain`, key `ed25519:1`).
    pub(crate) fn spec_test_key() -> ServerKey {
        use base64::engine::{general_purpose::GeneralPurposeConfig, DecodePaddingMode, GeneralPurpose};
        // The spec's seed has non-zero trailing bits, which strict decoders refuse.
        let lenient = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let seed = lenient.decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1").unwrap();
        ServerKey::from_seed("1", &seed).unwrap()
    }

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

    /// Appendices, "Cryptographic Test Vectors" → "JSON Signing".
    #[test]
    fn json_signing_matches_the_spec_test_vectors() {
        let key = spec_test_key();
        let mut empty = json!({});
        key.sign_json("domain", &mut empty).unwrap();
        assert_eq!(
            empty["signatures"]["domain"]["ed25519:1"],
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
        );
        let mut data = json!({ "one": 1, "two": "Two" });
        key.sign_json("domain", &mut data).unwrap();
        assert_eq!(
            data["signatures"]["domain"]["ed25519:1"],
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        );
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
