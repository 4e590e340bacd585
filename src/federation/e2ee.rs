//! End-to-end encryption across servers (server-server API "End-to-End
//! Encryption"): the device and cross-signing keys and one-time keys of other
//! servers' users, asked of their servers (`/user/keys/query`,
//! `/user/keys/claim`, each server at once, 10 s at most, a server that does
//! not answer named in `failures`), and to-device messages for their devices
//! sent as `m.direct_to_device` EDUs.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use futures_util::StreamExt;
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, UserId};
use serde_json::{json, Map, Value};

use super::{device_lists, Federation};
use crate::{error::Result, http::request::percent_encode, rooms::Rooms};

/// How long a remote server has to answer a key query or claim.
const KEYS_TIMEOUT: Duration = Duration::from_secs(10);
/// Most device lists fetched at once for one query.
const MAX_FETCHES_AT_ONCE: usize = 8;

/// The wanted users of other servers than `own`, by server.
fn by_server<T: Clone>(
    wanted: &BTreeMap<OwnedUserId, T>,
    own: &ruma::ServerName,
) -> BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> {
    let mut servers: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> = BTreeMap::new();
    for (user, value) in wanted.iter().filter(|(user, _)| user.server_name() != own) {
        servers.entry(user.server_name().to_owned()).or_default().insert(user.clone(), value.clone());
    }
    servers
}

impl Federation {
    /// Asks each server of `wanted`'s remote users at once (`path`, the
    /// request's `field` holding its users), within [`KEYS_TIMEOUT`]:
    /// (server, its answer or the failure to name).
    async fn ask_each<T: Clone + serde::Serialize>(
        &self,
        wanted: &BTreeMap<OwnedUserId, T>,
        path: &str,
        field: &str,
    ) -> Vec<(OwnedServerName, std::result::Result<Value, Value>)> {
        let asks = by_server(wanted, &self.server_name).into_iter().map(|(server, users)| async move {
            let body = json!({ field: users });
            let answer = tokio::time::timeout(KEYS_TIMEOUT, self.request(&server, "POST", path, Some(&body))).await;
            let outcome = match answer {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(error)) => Err(json!({ "errcode": "M_UNKNOWN", "error": error.to_string() })),
                Err(_) => Err(json!({ "errcode": "M_UNKNOWN", "error": "The server did not answer in time" })),
            };
            (server, outcome)
        });
        futures_util::future::join_all(asks).await
    }

    /// Adds the keys of `wanted`'s remote users to `viewer`'s `/keys/query`
    /// answer: from the cached device lists ([`super::device_lists`]); the
    /// lists of users sharing a room with the viewer and not cached (or
    /// stale) are fetched whole and cached; the other users' keys are asked
    /// of their servers. A stale copy is served when its server cannot be
    /// reached.
    pub async fn query_remote_keys(
        &self,
        rooms: &Rooms,
        viewer: &UserId,
        wanted: &BTreeMap<OwnedUserId, Vec<String>>,
        answer: &mut Value,
    ) -> Result<()> {
        // The asker's rooms, read when a copy is missing.
        let mut mine: Option<HashSet<OwnedRoomId>> = None;
        let mut to_fetch = Vec::new();
        let mut to_ask = BTreeMap::new();
        for (user, devices) in wanted.iter().filter(|(user, _)| user.server_name() != self.server_name) {
            if let Some(record) = self.fresh_device_list(user)? {
                device_lists::add_to_answer(user, &record, devices, answer);
                continue;
            }
            let mine = match &mut mine {
                Some(mine) => mine,
                empty => empty.insert(rooms.joined_rooms(viewer.localpart())?.into_iter().collect()),
            };
            if rooms.joined_to_any(user, mine)? {
                to_fetch.push((user.clone(), devices.clone()));
            } else {
                to_ask.insert(user.clone(), devices.clone());
            }
        }
        let fetches = to_fetch.into_iter().map(|(user, devices)| async move {
            let fetched = tokio::time::timeout(KEYS_TIMEOUT, self.resync_device_list(&user)).await;
            let outcome = match fetched {
                Ok(Ok(record)) => Ok(record),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("The server did not answer in time".to_owned()),
            };
            (user, devices, outcome)
        });
        let fetched =
            futures_util::stream::iter(fetches).buffer_unordered(MAX_FETCHES_AT_ONCE).collect::<Vec<_>>().await;
        for (user, devices, outcome) in fetched {
            match outcome {
                Ok(record) => device_lists::add_to_answer(&user, &record, &devices, answer),
                Err(error) => match self.any_device_list(&user)? {
                    Some(stale) => device_lists::add_to_answer(&user, &stale, &devices, answer),
                    None => {
                        answer["failures"][user.server_name().as_str()] =
                            json!({ "errcode": "M_UNKNOWN", "error": error })
                    }
                },
            }
        }
        for (server, outcome) in self.ask_each(&to_ask, "/_matrix/federation/v1/user/keys/query", "device_keys").await {
            match outcome {
                Ok(keys) => {
                    for section in ["device_keys", "master_keys", "self_signing_keys"] {
                        merge_users_of(&server, &keys[section], &mut answer[section]);
                    }
                }
                Err(failure) => answer["failures"][server.as_str()] = failure,
            }
        }
        Ok(())
    }

    /// Adds one-time keys of `wanted`'s remote users' devices to a `/keys/claim` answer.
    pub async fn claim_remote_keys(
        &self,
        wanted: &BTreeMap<OwnedUserId, BTreeMap<String, String>>,
        answer: &mut Value,
    ) {
        for (server, outcome) in self.ask_each(wanted, "/_matrix/federation/v1/user/keys/claim", "one_time_keys").await
        {
            match outcome {
                Ok(keys) => merge_users_of(&server, &keys["one_time_keys"], &mut answer["one_time_keys"]),
                Err(failure) => answer["failures"][server.as_str()] = failure,
            }
        }
    }

    /// Sends the messages for other servers' users as `m.direct_to_device`
    /// EDUs, one per server, identified by the sender's device and transaction.
    pub fn send_remote_to_device(
        &self,
        rooms: &Rooms,
        sender: &UserId,
        device_id: &str,
        event_type: &str,
        txn_id: &str,
        messages: &BTreeMap<OwnedUserId, Map<String, Value>>,
    ) {
        let servers = by_server(messages, &self.server_name);
        let message_id = format!("{}-{}", percent_encode(device_id), percent_encode(txn_id));
        let servers: BTreeMap<_, _> =
            servers.into_iter().filter(|(server, _)| self.config.federates_with(server.as_str())).collect();
        for (server, messages) in &servers {
            let edu = json!({ "edu_type": "m.direct_to_device", "content": {
                "sender": sender, "type": event_type, "message_id": message_id, "messages": messages } });
            self.sender.queue_edu(server, edu);
        }
        rooms.outbox_signal().mark(servers.into_keys());
    }
}

/// Copies into `into` the entries of `from` that are users of `server` (a
/// server answers only for its own users).
fn merge_users_of(server: &ruma::ServerName, from: &Value, into: &mut Value) {
    let Some(from) = from.as_object() else { return };
    if !into.is_object() {
        *into = json!({});
    }
    for (user, keys) in from {
        if UserId::parse(user).is_ok_and(|user| user.server_name() == server) {
            into[user] = keys.clone();
        }
    }
}

/// This server's part of another server's key query or claim: only its own users.
pub fn local_users_only<T: Clone>(
    wanted: &BTreeMap<OwnedUserId, T>,
    own: &ruma::ServerName,
) -> BTreeMap<OwnedUserId, T> {
    wanted.iter().filter(|(user, _)| user.server_name() == own).map(|(u, v)| (u.clone(), v.clone())).collect()
}

/// Serves `/user/keys/query` (`Result` for the handler's convenience).
pub fn serve_query(
    e2ee: &crate::e2ee::E2ee,
    own: &ruma::ServerName,
    wanted: &BTreeMap<OwnedUserId, Vec<String>>,
) -> Result<Value> {
    let answer = e2ee.query_as(None, &local_users_only(wanted, own))?;
    Ok(json!({
        "device_keys": answer["device_keys"],
        "master_keys": answer["master_keys"],
        "self_signing_keys": answer["self_signing_keys"],
    }))
}

/// `GET /user/devices/{userId}` for one of this server's users: its devices
/// with their keys and display names, and its cross-signing keys.
pub fn serve_devices(e2ee: &crate::e2ee::E2ee, user_id: &UserId, stream_id: u64) -> Result<Value> {
    let wanted = BTreeMap::from([(user_id.to_owned(), Vec::new())]);
    let answer = e2ee.query_as(None, &wanted)?;
    let devices: Vec<Value> = answer["device_keys"][user_id.as_str()]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(device_id, keys)| {
            let mut keys = keys.clone();
            // The display name moves out of `unsigned`, which goes (a null
            // `unsigned` makes the keys unreadable to matrix-sdk-crypto).
            let unsigned = keys.as_object_mut().and_then(|keys| keys.remove("unsigned")).unwrap_or_default();
            let name = unsigned["device_display_name"].clone();
            json!({ "device_id": device_id, "keys": keys, "device_display_name": name })
        })
        .collect();
    let mut body = json!({ "user_id": user_id, "stream_id": stream_id, "devices": devices });
    for (field, section) in [("master_key", "master_keys"), ("self_signing_key", "self_signing_keys")] {
        if let Some(key) = answer[section].get(user_id.as_str()) {
            body[field] = key.clone();
        }
    }
    Ok(body)
}

/// Where the device-list announcements stand (a position in the key-change log).
const DEVICE_UPDATES_SENT_UPTO: &str = "federation.device_updates_sent_upto";

/// Sends `m.device_list_update` EDUs for this server's users whose keys or
/// devices changed (the key-change log, from where the last run stopped) to
/// the servers sharing a room with them, with an `m.signing_key_update`
/// carrying their cross-signing keys when they have some. The update names
/// no device and no `prev_id`: the receiver fetches the whole list again
/// (`/user/devices`). EDUs wait in memory: one queued when the server stops
/// is not sent after the restart.
pub fn start_device_list_updates(services: &std::sync::Arc<crate::services::Services>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let weak = std::sync::Arc::downgrade(services);
    let mut changes = services.storage.subscribe_changes();
    let now = services.rooms.current_position().unwrap_or(0);
    let mut cursor = services.federation.device_updates_sent_upto().unwrap_or(now);
    runtime.spawn(async move {
        loop {
            let Some(s) = weak.upgrade() else { return };
            if let Ok(upto) = s.rooms.current_position() {
                match announce_key_changes(&s, cursor, upto) {
                    Ok(()) => cursor = upto,
                    Err(error) => tracing::warn!(%error, "could not announce key changes"),
                }
            }
            drop(s);
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Announces the key changes of local users in `(since, upto]`.
fn announce_key_changes(s: &crate::services::Services, since: u64, upto: u64) -> Result<()> {
    if upto <= since {
        return Ok(());
    }
    let users = s.e2ee.users_with_key_changes(since, upto)?;
    let local: Vec<_> = users.iter().filter(|user| user.server_name() == s.config.server_name).collect();
    if local.is_empty() {
        return Ok(()); // the cursor is saved with the next announcement
    }
    for user in local {
        let mut master = s.e2ee.cross_signing_key(user.localpart(), "master")?;
        // Other servers see only the owner's signatures on it.
        if let Some(signatures) = master.as_mut().and_then(|key| key["signatures"].as_object_mut()) {
            signatures.retain(|signer, _| signer == user.as_str());
        }
        let cross_signing =
            CrossSigningKeys { master, self_signing: s.e2ee.cross_signing_key(user.localpart(), "self_signing")? };
        s.federation.send_device_list_update(&s.rooms, user, upto, &cross_signing)?;
    }
    s.federation.set_device_updates_sent_upto(upto)
}

/// A user's public cross-signing keys, as other servers see them.
struct CrossSigningKeys {
    master: Option<Value>,
    self_signing: Option<Value>,
}

impl Federation {
    fn device_updates_sent_upto(&self) -> Option<u64> {
        self.storage.meta_get::<u64>(DEVICE_UPDATES_SENT_UPTO).ok().flatten()
    }

    fn set_device_updates_sent_upto(&self, position: u64) -> Result<()> {
        Ok(self.storage.meta_put(DEVICE_UPDATES_SENT_UPTO, &position)?)
    }

    /// An `m.device_list_update` for `user` to every server sharing a room
    /// with it, and its cross-signing keys in an `m.signing_key_update`.
    fn send_device_list_update(
        &self,
        rooms: &Rooms,
        user: &UserId,
        stream_id: u64,
        cross_signing: &CrossSigningKeys,
    ) -> Result<()> {
        let mut servers = std::collections::BTreeSet::new();
        for room_id in rooms.joined_rooms(user.localpart())? {
            servers.extend(rooms.other_servers_in(&room_id, &self.server_name)?);
        }
        if servers.is_empty() {
            return Ok(());
        }
        let mut edus = vec![json!({ "edu_type": "m.device_list_update", "content": {
            "user_id": user, "device_id": "*", "stream_id": stream_id, "prev_id": [], "deleted": false } })];
        if let Some(master) = &cross_signing.master {
            let mut content = json!({ "user_id": user, "master_key": master });
            if let Some(self_signing) = &cross_signing.self_signing {
                content["self_signing_key"] = self_signing.clone();
            }
            edus.push(json!({ "edu_type": "m.signing_key_update", "content": content }));
        }
        for server in &servers {
            for edu in &edus {
                self.sender.queue_edu(server, edu.clone());
            }
        }
        rooms.outbox_signal().mark(servers);
        Ok(())
    }
}
