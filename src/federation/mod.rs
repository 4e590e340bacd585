//! Federation: talking to other homeservers (server-server API).
//!
//! What is here so far: who this server federates with (`federation.enabled`,
//! `allowed_servers`, `denied_servers`: both directions, refusals logged with
//! the server's name), where other servers are ([`resolve`]), their keys
//! ([`keys`], this server also a notary), and signed requests both ways
//! ([`x_matrix`]): every outgoing request is signed; every incoming request
//! to a server endpoint is verified against the origin's key before its
//! handler runs ([`Federation::authenticate`]).
//!
//! Outgoing requests go through [`crate::http::client`] with the federation
//! policy: TLS checked against the system roots plus `federation.ca_file`,
//! for the server name even when `federation.destinations` says where to
//! connect; private and loopback addresses refused unless
//! `federation.allow_private_addresses`.

pub mod backfill;
pub mod device_lists;
pub mod e2ee;
pub mod edu;
pub mod hierarchy;
pub mod identity;
pub mod invite;
pub mod keys;
pub mod media;
pub mod membership;
pub mod openid;
pub mod partial_state;
pub mod profile;
pub mod receive;
pub mod resolve;
pub mod sender;
pub mod x_matrix;

use std::sync::Arc;

use ruma::{OwnedServerName, ServerName};
use serde_json::Value;

use crate::{
    config::FederationConfig,
    crypto::signing_key::ServerKey,
    error::{Error, ErrorKind},
    http::client::{ClientError, ClientPolicy, HttpClient, ServerRequest},
    storage::{Storage, StorageError},
    util::now_ms,
};

/// Largest answer read from another server (a room's whole state fits).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Why talking to another server failed.
#[derive(Debug)]
pub enum FederationError {
    /// Federation is off, or the server is not in the allowlist, or denied.
    NotFederated(String),
    /// No answer (connection, TLS, timeout, an address refused).
    Unreachable(String),
    /// The server answered with an error status.
    Refused {
        status: u16,
        body: Value,
    },
    /// The answer is not what the spec says.
    BadAnswer(String),
    /// Its keys could not be had or did not verify.
    Keys(String),
    Storage(StorageError),
}

impl std::fmt::Display for FederationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFederated(server) => write!(f, "this server does not federate with {server}"),
            Self::Unreachable(reason) => write!(f, "unreachable: {reason}"),
            Self::Refused { status, body } => write!(f, "answered {status}: {body}"),
            Self::BadAnswer(reason) => write!(f, "bad answer: {reason}"),
            Self::Keys(reason) => write!(f, "server keys: {reason}"),
            Self::Storage(error) => write!(f, "{error}"),
        }
    }
}

impl From<StorageError> for FederationError {
    fn from(error: StorageError) -> Self {
        Self::Storage(error)
    }
}

impl From<FederationError> for Error {
    fn from(error: FederationError) -> Self {
        match error {
            FederationError::NotFederated(server) => {
                Error::forbidden(format!("This server does not federate with {server}"))
            }
            FederationError::Refused { status: 404, .. } => Error::not_found("The other server has no such thing"),
            FederationError::Refused { status: 403, body } => Error::forbidden(format!(
                "The other server refused: {}",
                body["error"].as_str().unwrap_or("no reason given")
            )),
            FederationError::Refused { status: 400, body } if body["errcode"] == "M_INCOMPATIBLE_ROOM_VERSION" => {
                Error::new(
                    ErrorKind::IncompatibleRoomVersion {
                        room_version: body["room_version"].as_str().unwrap_or_default().to_owned(),
                    },
                    "This server does not support the room's version",
                )
            }
            FederationError::Storage(error) => error.into(),
            other => Error::new(ErrorKind::Unavailable, format!("The other server could not be reached: {other}")),
        }
    }
}

/// The federation service, built once with the other services.
pub struct Federation {
    config: FederationConfig,
    server_name: OwnedServerName,
    key: Arc<ServerKey>,
    storage: Arc<Storage>,
    client: HttpClient,
    resolver: resolve::Resolver,
    key_cache: keys::KeyCache,
    /// Other servers' users' profiles, kept a while.
    pub profiles: profile::RemoteProfiles,
    /// Rooms this server is joining through another server right now.
    pub joins_in_flight: JoinsInFlight,
    /// The tasks sending queued events to each destination.
    pub sender: sender::Sender,
    /// Wakes the task completing rooms joined with partial state.
    pub partial_state_wakeup: Arc<tokio::sync::Notify>,
}

impl Federation {
    pub fn new(
        config: &FederationConfig,
        server_name: OwnedServerName,
        key: Arc<ServerKey>,
        storage: Arc<Storage>,
    ) -> Self {
        let policy = ClientPolicy {
            allow_private_addresses: config.allow_private_addresses,
            extra_ca_file: config.ca_file.clone(),
            skip_certificate_checks: !config.verify_certificates,
        };
        Self {
            resolver: resolve::Resolver::with_nameservers(config.destinations.clone(), &config.nameservers),
            config: config.clone(),
            server_name,
            key,
            storage,
            client: HttpClient::new(policy),
            key_cache: keys::KeyCache::default(),
            profiles: profile::RemoteProfiles::default(),
            joins_in_flight: JoinsInFlight::default(),
            partial_state_wakeup: Arc::default(),
            sender: sender::Sender::default(),
        }
    }

    /// Refuses a server this one does not federate with (logged).
    pub fn check_federates_with(&self, server: &str) -> Result<(), FederationError> {
        if self.config.federates_with(server) {
            return Ok(());
        }
        tracing::warn!(%server, "refused: this server does not federate with it (federation.enabled, allowed_servers, denied_servers)");
        Err(FederationError::NotFederated(server.to_owned()))
    }

    /// A signed request to `destination` (`path_and_query` as sent), its JSON answer.
    pub async fn request(
        &self,
        destination: &ServerName,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, FederationError> {
        self.check_federates_with(destination.as_str())?;
        let authorization = x_matrix::authorization(
            &self.key,
            self.server_name.as_str(),
            destination.as_str(),
            method,
            path_and_query,
            body,
        )
        .map_err(FederationError::BadAnswer)?;
        self.send(destination, method, path_and_query, body, Some(authorization)).await
    }

    /// An unsigned `GET` (the key endpoints need no authentication).
    async fn get_unsigned(&self, server: &str, path: &str) -> Result<Value, FederationError> {
        let destination = self.peer(server)?;
        self.send(&destination, "GET", path, None, None).await
    }

    /// An unsigned `POST` with a JSON body.
    async fn post_unsigned(&self, server: &str, path: &str, body: &Value) -> Result<Value, FederationError> {
        let destination = self.peer(server)?;
        self.send(&destination, "POST", path, Some(body), None).await
    }

    fn peer(&self, server: &str) -> Result<OwnedServerName, FederationError> {
        self.check_federates_with(server)?;
        ServerName::parse(server).map_err(|_| FederationError::BadAnswer(format!("{server:?} is not a server name")))
    }

    async fn send(
        &self,
        destination: &ServerName,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
        authorization: Option<String>,
    ) -> Result<Value, FederationError> {
        let resolved = self.resolver.resolve(&self.client, destination).await;
        let url = resolved.url(path_and_query);
        let request = ServerRequest {
            method,
            url: &url,
            connect_to: resolved.connect_to.as_deref(),
            authorization,
            json_body: body.map(|body| body.to_string().into_bytes()),
            max_response: MAX_RESPONSE_BYTES,
        };
        let response = self.client.server_request(request).await.map_err(unreachable)?;
        let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if response.status != 200 {
            return Err(FederationError::Refused { status: response.status, body: answer });
        }
        if answer.is_null() {
            return Err(FederationError::BadAnswer(format!("{destination} did not answer JSON")));
        }
        Ok(answer)
    }

    /// Verifies an incoming request's `X-Matrix` authorization: the origin
    /// federates with us, the request was signed for us with one of the
    /// origin's keys. The origin.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        method: &str,
        uri: &str,
        content: Option<&Value>,
    ) -> Result<OwnedServerName, Error> {
        let header = authorization
            .ok_or_else(|| Error::new(ErrorKind::Unauthorized, "Server requests need an X-Matrix Authorization"))?;
        let header = x_matrix::parse(header).map_err(|error| Error::new(ErrorKind::Unauthorized, error.to_string()))?;
        let origin = ServerName::parse(&header.origin)
            .map_err(|_| Error::new(ErrorKind::Unauthorized, "The origin is not a server name"))?;
        self.check_federates_with(origin.as_str())?;
        let key = self.server_key(origin.as_str(), &header.key_id, now_ms()).await.map_err(|error| {
            tracing::debug!(%origin, %error, "could not get the origin's key");
            Error::new(ErrorKind::Unauthorized, format!("The key {} of {origin} could not be had", header.key_id))
        })?;
        x_matrix::verify(&header, self.server_name.as_str(), method, uri, content, &key)
            .map_err(|error| Error::new(ErrorKind::Unauthorized, error.to_string()))?;
        self.sender.contacted(&origin);
        Ok(origin)
    }
}

impl Federation {
    /// Forgets transaction answers older than a day (maintenance); how many.
    pub fn forget_old_transactions(&self) -> Result<usize, Error> {
        receive::transaction::forget_old_answers(&self.storage, now_ms())
    }

    /// `PUT /send/{txnId}` from `origin` (see [`receive::transaction`]).
    pub async fn receive_transaction(
        &self,
        rooms: &crate::rooms::Rooms,
        sinks: edu::EduSinks<'_>,
        origin: &ServerName,
        txn_id: &str,
        transaction: receive::transaction::Transaction,
    ) -> Result<Value, Error> {
        let mut receipt = receive::Receipt::new(rooms, self, origin);
        receipt.edu_sinks = Some(sinks);
        receive::transaction::receive(&receipt, &self.storage, txn_id, transaction).await
    }
}

/// Rooms being joined through another server: the resident server starts
/// sending the room's events as soon as it accepted the join, before the
/// joining server has stored the room.
#[derive(Default)]
pub struct JoinsInFlight {
    rooms: std::sync::Mutex<std::collections::HashMap<ruma::OwnedRoomId, usize>>,
}

/// Marks a room as being joined until dropped.
pub struct JoinInFlight<'a> {
    joins: &'a JoinsInFlight,
    room_id: ruma::OwnedRoomId,
}

impl JoinsInFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ruma::OwnedRoomId, usize>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn start(&self, room_id: &ruma::RoomId) -> JoinInFlight<'_> {
        *self.lock().entry(room_id.to_owned()).or_insert(0) += 1;
        JoinInFlight { joins: self, room_id: room_id.to_owned() }
    }

    pub fn is_joining(&self, room_id: &ruma::RoomId) -> bool {
        self.lock().contains_key(room_id)
    }
}

impl Drop for JoinInFlight<'_> {
    fn drop(&mut self) {
        let mut rooms = self.joins.lock();
        if let Some(count) = rooms.get_mut(&self.room_id) {
            *count -= 1;
            if *count == 0 {
                rooms.remove(&self.room_id);
            }
        }
    }
}

fn unreachable(error: ClientError) -> FederationError {
    FederationError::Unreachable(error.to_string())
}
