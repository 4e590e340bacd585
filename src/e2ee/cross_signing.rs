//! Cross-signing: `POST /keys/device_signing/upload` and
//! `POST /keys/signatures/upload`.
//!
//! Spec: "End-to-End Encryption" → "Cross-signing". Every key and signature
//! is verified before it is stored: self-signing and user-signing keys must be
//! signed by the master key; a device signed by the owner's self-signing key;
//! an owner's master key by one of their devices; another user's master key
//! by the signer's user-signing key.

use serde_json::{json, Map, Value};

use super::{signatures, E2ee};
use crate::{
    error::{Error, ErrorKind, Result},
    storage::Batch,
    users::Identity,
};

pub const MASTER: &str = "master";
pub const SELF_SIGNING: &str = "self_signing";
pub const USER_SIGNING: &str = "user_signing";

/// The cross-signing keys of one upload.
#[derive(Default)]
pub struct SigningKeys {
    pub master: Option<Value>,
    pub self_signing: Option<Value>,
    pub user_signing: Option<Value>,
}

/// Checks a cross-signing key's shape: the caller's, with the right usage
/// and one ed25519 key. Returns the key id and public key.
fn check_key(who: &Identity, key: &Map<String, Value>, usage: &str) -> Result<(String, String)> {
    if key.get("user_id").and_then(Value::as_str) != Some(who.user_id.as_str()) {
        return Err(Error::invalid_param(format!("The {usage} key must belong to you")));
    }
    let usages = key.get("usage").and_then(Value::as_array);
    if !usages.is_some_and(|u| u.iter().any(|x| x.as_str() == Some(usage))) {
        return Err(Error::invalid_param(format!("The {usage} key must have usage {usage:?}")));
    }
    let keys = key.get("keys").and_then(Value::as_object);
    if keys.map_or(0, Map::len) != 1 {
        return Err(Error::invalid_param(format!("The {usage} key must contain exactly one key")));
    }
    signatures::ed25519_key(key, None).ok_or_else(|| Error::invalid_param(format!("The {usage} key must be ed25519")))
}

impl E2ee {
    /// A user's cross-signing key of `usage`, as stored.
    pub fn cross_signing_key(&self, localpart: &str, usage: &str) -> Result<Option<Value>> {
        let stored = self.storage.tables.cross_signing_keys.get(&(localpart.to_owned(), usage.to_owned()))?;
        Ok(stored.and_then(|text| serde_json::from_str(&text).ok()))
    }

    /// Whether this upload would replace an existing, different master key
    /// (which needs user-interactive authentication).
    pub fn replaces_master_key(&self, who: &Identity, keys: &SigningKeys) -> Result<bool> {
        let existing = self.cross_signing_key(&who.localpart, MASTER)?;
        Ok(match (&existing, &keys.master) {
            (Some(existing), Some(new)) => existing.get("keys") != new.get("keys"),
            (Some(_), None) => keys.self_signing.is_some() || keys.user_signing.is_some(),
            (None, _) => false,
        })
    }

    /// Stores the uploaded cross-signing keys after checking them.
    pub async fn upload_signing_keys(&self, who: &Identity, keys: SigningKeys) -> Result<()> {
        // Serialised with signature uploads, which read a key and write it back.
        let _one_at_a_time = self.serial.lock().await;
        let as_object = |value: &Value, usage: &str| {
            value.as_object().cloned().ok_or_else(|| Error::bad_json(format!("The {usage} key must be an object")))
        };
        let master = match &keys.master {
            Some(master) => Some(as_object(master, MASTER)?),
            None => self.cross_signing_key(&who.localpart, MASTER)?.and_then(|v| v.as_object().cloned()),
        };
        let mut batch = Batch::new();
        let mut store = |usage: &str, key: &Map<String, Value>| -> Result<()> {
            let record = (who.localpart.clone(), usage.to_owned());
            batch.insert(&self.storage.tables.cross_signing_keys, &record, &Value::Object(key.clone()).to_string())?;
            Ok(())
        };
        if let Some(value) = &keys.master {
            let key = as_object(value, MASTER)?;
            let (_, public_key) = check_key(who, &key, MASTER)?;
            self.refuse_device_id_as_key(who, &public_key)?;
            store(MASTER, &key)?;
        }
        for (usage, value) in [(SELF_SIGNING, &keys.self_signing), (USER_SIGNING, &keys.user_signing)] {
            let Some(value) = value else { continue };
            let key = as_object(value, usage)?;
            let (_, public_key) = check_key(who, &key, usage)?;
            self.refuse_device_id_as_key(who, &public_key)?;
            // The spec's codes: no master key is M_MISSING_PARAM, a bad signature M_INVALID_SIGNATURE.
            let no_master = || Error::new(ErrorKind::MissingParam, "Upload a master key first");
            let master = master.as_ref().ok_or_else(no_master)?;
            let (master_id, master_public) = check_key(who, master, MASTER)?;
            signatures::verify(&key, who.user_id.as_str(), &master_id, &master_public).map_err(|reason| {
                let message = format!("The {usage} key is not signed by the master key: {reason}");
                Error::new(ErrorKind::InvalidSignature, message)
            })?;
            store(usage, &key)?;
        }
        if batch.is_empty() {
            return Ok(());
        }
        // A new user-signing key alone concerns its owner only (it shows
        // whom they verify): others' device lists stay quiet, as Synapse.
        let reservation = if keys.master.is_none() && keys.self_signing.is_none() {
            self.log_private_key_change(&mut batch, &who.localpart, &who.user_id)?
        } else {
            self.log_key_change(&mut batch, &who.user_id)?
        };
        self.commit_with_change(batch, reservation).await
    }

    /// A cross-signing public key may not be one of the user's device ids
    /// (a signature by it would read as the device's): 403, as the spec says.
    fn refuse_device_id_as_key(&self, who: &Identity, public_key: &str) -> Result<()> {
        let device = (who.localpart.clone(), public_key.to_owned());
        if self.storage.tables.device_keys.contains(&device)? {
            return Err(Error::forbidden("A cross-signing key may not be one of your device ids"));
        }
        Ok(())
    }

    /// `POST /keys/signatures/upload`: verifies and stores each signature;
    /// returns the per-key `failures`.
    pub async fn upload_signatures(&self, who: &Identity, body: &Map<String, Value>) -> Result<Value> {
        // Each signature is merged into the stored key and written back: one
        // upload at a time, so that concurrent ones keep each other's.
        let _one_at_a_time = self.serial.lock().await;
        let mut failures = Map::new();
        for (user, keys) in body {
            let Some(keys) = keys.as_object() else { continue };
            for (key_id, signed) in keys {
                if let Err(reason) = self.add_signature(who, user, key_id, signed).await {
                    tracing::info!(target_user = %user, key = %key_id, %reason, "signature refused");
                    let user_failures = failures.entry(user.clone()).or_insert_with(|| json!({}));
                    user_failures[key_id] = json!({ "errcode": "M_INVALID_SIGNATURE", "error": reason });
                }
            }
        }
        Ok(json!({ "failures": failures }))
    }

    async fn add_signature(&self, who: &Identity, user: &str, key_id: &str, signed: &Value) -> Result<(), String> {
        let signed = signed.as_object().ok_or("the signed object must be an object")?;
        let user_id = ruma::UserId::parse(user).map_err(|_| "invalid user id".to_owned())?;
        if !self.is_local(&user_id) {
            return Err("the user's server is not reachable".into());
        }
        let signer = who.user_id.as_str();
        let localpart = user_id.localpart().to_owned();
        let storage_error = |e: Error| e.to_string();
        let own = user_id == who.user_id;
        let master = self.cross_signing_key(&localpart, MASTER).map_err(storage_error)?;
        let master_id = master.as_ref().and_then(|m| m.as_object()).and_then(|m| signatures::ed25519_key(m, None));
        let signing_key = |usage: &str| -> Result<(String, String), String> {
            let key = self.cross_signing_key(&who.localpart, usage).map_err(storage_error)?;
            key.as_ref()
                .and_then(Value::as_object)
                .and_then(|k| signatures::ed25519_key(k, None))
                .ok_or_else(|| format!("you have no {usage} key"))
        };
        let is_master_key = master_id.as_ref().is_some_and(|(id, _)| id.strip_prefix("ed25519:") == Some(key_id));
        let mut batch = Batch::new();
        if own && !is_master_key {
            // One of the caller's devices, signed by their self-signing key.
            let record_key = (localpart.clone(), key_id.to_owned());
            let stored = self.storage.tables.device_keys.get(&record_key).map_err(|e| e.to_string())?;
            let mut stored: Map<String, Value> =
                stored.and_then(|t| serde_json::from_str(&t).ok()).ok_or_else(|| format!("unknown device {key_id}"))?;
            if stored.get("keys") != signed.get("keys") {
                return Err("the signed object is not the device's current keys".into());
            }
            let (ssk_id, ssk_public) = signing_key(SELF_SIGNING)?;
            signatures::verify(signed, signer, &ssk_id, &ssk_public)?;
            signatures::merge_signatures(&mut stored, &only_signature(signed, signer, &ssk_id));
            let text = Value::Object(stored).to_string();
            batch.insert(&self.storage.tables.device_keys, &record_key, &text).map_err(|e| e.to_string())?;
        } else if is_master_key {
            let mut stored = master.and_then(|m| m.as_object().cloned()).ok_or("no master key")?;
            if stored.get("keys") != signed.get("keys") {
                return Err("the signed object is not the current master key".into());
            }
            let (signature_key_id, public_key) = if own {
                // The owner's master key, signed by one of their devices.
                let signatures = signed.get("signatures").and_then(|s| s.get(signer)).and_then(Value::as_object);
                let device_key_id = signatures
                    .into_iter()
                    .flat_map(|s| s.keys())
                    .find(|id| {
                        id.starts_with("ed25519:") && Some(id.as_str()) != master_id.as_ref().map(|(m, _)| m.as_str())
                    })
                    .ok_or("no device signature")?
                    .clone();
                let device_id = device_key_id.trim_start_matches("ed25519:").to_owned();
                let device_keys = self
                    .storage
                    .tables
                    .device_keys
                    .get(&(localpart.clone(), device_id.clone()))
                    .map_err(|e| e.to_string())?
                    .and_then(|t| serde_json::from_str::<Map<String, Value>>(&t).ok())
                    .ok_or_else(|| format!("unknown device {device_id}"))?;
                signatures::ed25519_key(&device_keys, Some(&device_id)).ok_or("the device has no ed25519 key")?
            } else {
                // Another user's master key, signed by the caller's user-signing key.
                signing_key(USER_SIGNING)?
            };
            signatures::verify(signed, signer, &signature_key_id, &public_key)?;
            signatures::merge_signatures(&mut stored, &only_signature(signed, signer, &signature_key_id));
            let record_key = (localpart.clone(), MASTER.to_owned());
            let text = Value::Object(stored).to_string();
            batch.insert(&self.storage.tables.cross_signing_keys, &record_key, &text).map_err(|e| e.to_string())?;
        } else {
            return Err(format!("{key_id} is not a key you may sign"));
        }
        // Another user's master key signed by the caller: only the caller
        // sees that signature, so only the caller's device lists change.
        let reservation = if own {
            self.log_key_change(&mut batch, &user_id)
        } else {
            self.log_private_key_change(&mut batch, &who.localpart, &user_id)
        };
        self.commit_with_change(batch, reservation.map_err(storage_error)?).await.map_err(storage_error)
    }
}

/// `{"signatures": {signer: {key_id: signature}}}` taken from `signed`.
fn only_signature(signed: &Map<String, Value>, signer: &str, key_id: &str) -> Map<String, Value> {
    // `Map` indexing would panic on a missing key; `get` cannot.
    let signature = signed.get("signatures").and_then(|s| s.get(signer)).and_then(|s| s.get(key_id)).cloned();
    let mut result = Map::new();
    result.insert("signatures".into(), json!({ signer: { key_id: signature.unwrap_or(Value::Null) } }));
    result
}
