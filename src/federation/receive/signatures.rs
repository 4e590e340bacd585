//! Receipt step 2: "Passes signature checks, otherwise it is dropped."
//! The servers that must have signed (the sender's; the event id's in
//! versions 1 and 2; the authorising server of a restricted join) as the
//! spec's "Validating hashes and signatures on received events" lists them,
//! each with one of its keys valid when the event was sent (old keys
//! included), fetched as needed.

use ruma::{
    canonical_json::CanonicalJsonValue,
    room_version_rules::RoomVersionRules,
    serde::Base64,
    signatures::{required_server_signatures_to_verify_event, verify_event, PublicKeyMap, Verified},
};

use super::Dropped;
use crate::{events::Pdu, federation::Federation};

/// Whether the signatures verify and the content hash matches
/// ([`Verified::All`]) or only the signatures ([`Verified::Signatures`]).
pub async fn verify(federation: &Federation, pdu: &Pdu, rules: &RoomVersionRules) -> Result<Verified, Dropped> {
    let object = pdu.as_object();
    let servers = required_server_signatures_to_verify_event(object, &rules.signatures)
        .map_err(|error| Dropped(format!("signatures: {error}")))?;
    let mut keys = PublicKeyMap::new();
    for server in servers {
        let key_ids = signed_key_ids(object, server.as_str());
        let mut server_keys = std::collections::BTreeMap::new();
        for key_id in key_ids {
            match federation.server_key(server.as_str(), &key_id, pdu.origin_server_ts_millis()).await {
                Ok(key) => {
                    if let Ok(key) = Base64::parse(key) {
                        server_keys.insert(key_id, key);
                    }
                }
                Err(error) => tracing::debug!(%server, %key_id, %error, "no key to check an event's signature"),
            }
        }
        if server_keys.is_empty() {
            return Err(Dropped(format!("no key of {server} to check its signature")));
        }
        keys.insert(server.to_string(), server_keys);
    }
    verify_event(&keys, object, rules).map_err(|error| Dropped(format!("signature check failed: {error}")))
}

/// The ed25519 key ids `server` signed the event with.
fn signed_key_ids(object: &ruma::CanonicalJsonObject, server: &str) -> Vec<String> {
    let Some(CanonicalJsonValue::Object(signatures)) = object.get("signatures") else { return Vec::new() };
    let Some(CanonicalJsonValue::Object(by_server)) = signatures.get(server) else { return Vec::new() };
    by_server.keys().filter(|key_id| key_id.starts_with("ed25519:")).cloned().collect()
}
