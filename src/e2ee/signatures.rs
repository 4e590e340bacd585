//! Checking ed25519 signatures on signed JSON objects (device keys,
//! cross-signing keys), as the spec's "Signing JSON" appendix defines them:
//! the canonical JSON of the object without `signatures` and `unsigned`.

use serde_json::{Map, Value};

pub use crate::crypto::json_signatures::verify;

/// The one `ed25519:<id>` key of a key object's `keys`: (key id, public key).
pub fn ed25519_key(object: &Map<String, Value>, expected_id: Option<&str>) -> Option<(String, String)> {
    let keys = object.get("keys")?.as_object()?;
    keys.iter().filter_map(|(id, key)| Some((id.clone(), key.as_str()?.to_owned()))).find(|(id, _)| match expected_id {
        Some(expected) => id == &format!("ed25519:{expected}"),
        None => id.starts_with("ed25519:"),
    })
}

/// Copies into `target` the signatures of `source` it lacks.
pub fn merge_signatures(target: &mut Map<String, Value>, source: &Map<String, Value>) {
    let Some(Value::Object(extra)) = source.get("signatures") else { return };
    let signatures = target.entry("signatures").or_insert_with(|| Value::Object(Map::new()));
    let Some(signatures) = signatures.as_object_mut() else { return };
    for (signer, keys) in extra {
        let Some(keys) = keys.as_object() else { continue };
        let entry = signatures.entry(signer.clone()).or_insert_with(|| Value::Object(Map::new()));
        if let Some(entry) = entry.as_object_mut() {
            for (key_id, signature) in keys {
                entry.insert(key_id.clone(), signature.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::json_signatures::signed_bytes;
    use base64::Engine;
    use ring::signature::KeyPair;

    fn sign(object: &mut Map<String, Value>, signer: &str, key_id: &str, key: &ring::signature::Ed25519KeyPair) {
        let signature = key.sign(&signed_bytes(object).unwrap());
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(signature.as_ref());
        let mut signatures = Map::new();
        signatures.insert(signer.to_owned(), serde_json::json!({ key_id: b64 }));
        merge_signatures(object, &serde_json::json!({ "signatures": signatures }).as_object().unwrap().clone());
    }

    #[test]
    fn a_signature_is_checked_over_the_object_without_signatures_and_unsigned() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.public_key().as_ref());
        let mut object =
            serde_json::json!({ "user_id": "@a:x", "keys": { "ed25519:DEV": public } }).as_object().unwrap().clone();
        sign(&mut object, "@a:x", "ed25519:DEV", &key);
        object.insert("unsigned".into(), serde_json::json!({ "device_display_name": "phone" }));
        assert_eq!(verify(&object, "@a:x", "ed25519:DEV", &public), Ok(()));
        assert_eq!(ed25519_key(&object, Some("DEV")), Some(("ed25519:DEV".into(), public.clone())));
        object.insert("user_id".into(), "@b:x".into());
        assert!(verify(&object, "@a:x", "ed25519:DEV", &public).is_err(), "tampered object");
        assert!(verify(&object, "@a:x", "ed25519:OTHER", &public).is_err(), "missing signature");
    }
}
