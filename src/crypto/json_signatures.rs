//! Checking ed25519 signatures on signed JSON objects, as the spec's
//! "Signing JSON" appendix defines them: the canonical JSON of the object
//! without `signatures` and `unsigned`. Used for device and cross-signing
//! keys, server keys and federation requests.

use base64::Engine;
use serde_json::{Map, Value};

/// Unpadded standard base64, accepting padding too.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(text).ok()
}

/// The bytes a signature covers.
pub fn signed_bytes(object: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let mut unsigned = object.clone();
    unsigned.remove("signatures");
    unsigned.remove("unsigned");
    let canonical = ruma::canonical_json::to_canonical_value(Value::Object(unsigned))
        .map_err(|e| format!("not canonical JSON: {e}"))?;
    Ok(canonical.to_string().into_bytes())
}

/// Checks the signature `signatures[signer][key_id]` of `object` against the
/// base64 ed25519 `public_key`.
pub fn verify(object: &Map<String, Value>, signer: &str, key_id: &str, public_key: &str) -> Result<(), String> {
    let signature = object
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no signature by {signer} with {key_id}"))?;
    let signature = decode_base64(signature).ok_or("signature is not base64")?;
    let public_key = decode_base64(public_key).ok_or("public key is not base64")?;
    let message = signed_bytes(object)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public_key)
        .verify(&message, &signature)
        .map_err(|_| format!("the signature by {signer} with {key_id} does not match"))
}
