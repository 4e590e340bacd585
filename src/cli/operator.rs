//! The operator commands that go through the admin API: `user create|list|
//! deactivate|reset-password|make-admin|login-token`, `room list|info|
//! shutdown|purge-history`, `media quarantine|purge-remote`, and `backup`'s
//! copy of the database.
//!
//! While the server runs they reach it on the operators' socket
//! ([`crate::http::operator_socket`]); while it is stopped the command serves
//! the same API in its own process, on a private socket, for the length of
//! the command. Either way one code path: the admin API's, with its checks.

use serde_json::{json, Value};

use crate::{
    config::Config,
    crypto::tokens::random_alphanumeric,
    http::{
        self,
        operator_socket::{OperatorClient, OperatorError, OperatorReply},
        request::percent_encode,
    },
    services::Services,
};

/// How results are printed: sentences, or the API's JSON (`--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// A command that goes through the admin API.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminCommand {
    UserCreate { name: String, admin: bool, password: Option<String> },
    UserList { search: Option<String>, deactivated: bool },
    UserDeactivate { name: String, erase: bool },
    UserResetPassword { name: String, password: Option<String> },
    UserMakeAdmin { name: String, revoke: bool },
    UserLoginToken { name: String },
    RoomList { search: Option<String> },
    RoomInfo { room: String },
    RoomShutdown { room: String, block: bool, purge: bool },
    RoomPurgeHistory { room: String, before: PurgeBefore, local_events: bool },
    MediaQuarantine { target: QuarantineTarget, release: bool },
    MediaPurgeRemote { days: u64 },
    StorageStats,
}

/// Where `room purge-history` stops.
#[derive(Debug, PartialEq, Eq)]
pub enum PurgeBefore {
    Event(String),
    DaysAgo(u64),
}

/// What `media quarantine` applies to.
#[derive(Debug, PartialEq, Eq)]
pub enum QuarantineTarget {
    /// One item, `mxc://server/media_id`.
    Item(String),
    /// Every item the room's events mention.
    Room(String),
    /// Every upload of a local user.
    User(String),
}

/// The admin API of the running server, or of one started for the command.
pub struct Operator {
    client: OperatorClient,
    server_name: String,
    in_process: Option<http::ServerHandle>,
    /// Whether the server was running (the command went through its socket).
    pub server_running: bool,
}

impl Operator {
    pub async fn connect(config: &Config) -> Result<Self, String> {
        let server_name = config.server_name.to_string();
        let client = OperatorClient::new(config.admin_socket_path());
        match client.send("GET", "/_synapse/admin/v1/server_version", None).await {
            Ok(_) => return Ok(Self { client, server_name, in_process: None, server_running: true }),
            Err(OperatorError::NotRunning) => {}
            Err(error) => return Err(error.to_string()),
        }
        let mut private = config.clone();
        private.listeners.clear();
        private.metrics = None;
        let socket = config.database_path.join(format!("cli-{}.sock", random_alphanumeric(8)));
        private.admin_socket = Some(socket.clone());
        let services = Services::open(private).map_err(|error| error.to_string())?;
        let handle = http::start(services).await.map_err(|error| error.to_string())?;
        Ok(Self { client: OperatorClient::new(socket), server_name, in_process: Some(handle), server_running: false })
    }

    /// Stops the server started for the command (flushing the database).
    pub async fn finish(self) {
        if let Some(handle) = self.in_process {
            handle.shutdown().await;
        }
    }

    pub fn client(&self) -> &OperatorClient {
        &self.client
    }

    /// A full user id from a name or user id.
    fn user_id(&self, name: &str) -> String {
        if name.starts_with('@') {
            name.to_owned()
        } else {
            format!("@{}:{}", name.to_lowercase(), self.server_name)
        }
    }

    /// One admin API call; an error answer becomes its message.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let reply = self.client.send(method, path, body.as_ref()).await.map_err(|error| error.to_string())?;
        ok_or_message(reply)
    }

    pub async fn run(&self, command: AdminCommand, output: Output) -> Result<(), String> {
        match command {
            AdminCommand::UserCreate { name, admin, password } => {
                self.create_user(&name, admin, password, output).await
            }
            AdminCommand::UserList { search, deactivated } => self.list_users(search, deactivated, output).await,
            AdminCommand::UserDeactivate { name, erase } => {
                let user = self.user_id(&name);
                let path = format!("/_synapse/admin/v1/deactivate/{}", percent_encode(&user));
                let answer = self.call("POST", &path, Some(json!({ "erase": erase }))).await?;
                print(output, &answer, || format!("{user} is deactivated"));
                Ok(())
            }
            AdminCommand::UserResetPassword { name, password } => self.reset_password(&name, password, output).await,
            AdminCommand::UserMakeAdmin { name, revoke } => {
                let user = self.user_id(&name);
                self.existing_user(&user).await?;
                let answer = self.call("PUT", &user_path(&user), Some(json!({ "admin": !revoke }))).await?;
                let what = if revoke { "is no longer a server admin" } else { "is a server admin" };
                print(output, &answer, || format!("{user} {what}"));
                Ok(())
            }
            AdminCommand::UserLoginToken { name } => {
                let user = self.user_id(&name);
                let path = format!("/_synapse/admin/v1/users/{}/login", percent_encode(&user));
                let answer = self.call("POST", &path, Some(json!({}))).await?;
                let token = answer["access_token"].as_str().unwrap_or_default().to_owned();
                print(output, &answer, || format!("access token of {user} (a new device \"Admin login\"): {token}"));
                Ok(())
            }
            AdminCommand::RoomList { search } => self.list_rooms(search, output).await,
            AdminCommand::RoomInfo { room } => {
                let path = format!("/_synapse/admin/v1/rooms/{}", percent_encode(&room));
                let answer = self.call("GET", &path, None).await?;
                print(output, &answer, || room_lines(&answer, true));
                Ok(())
            }
            AdminCommand::RoomPurgeHistory { room, before, local_events } => {
                let mut body = json!({ "delete_local_events": local_events });
                match &before {
                    PurgeBefore::Event(event_id) => body["purge_up_to_event_id"] = json!(event_id),
                    PurgeBefore::DaysAgo(days) => {
                        let ts = crate::util::now_ms().saturating_sub(days.saturating_mul(24 * 3600 * 1000));
                        body["purge_up_to_ts"] = json!(ts);
                    }
                }
                let path = format!("/_synapse/admin/v1/purge_history/{}", percent_encode(&room));
                let answer = self.call("POST", &path, Some(body)).await?;
                let purge_id = answer["purge_id"].as_str().unwrap_or_default();
                let status_path = format!("/_synapse/admin/v1/purge_history_status/{}", percent_encode(purge_id));
                let status = self.call("GET", &status_path, None).await?;
                if status["status"] != "complete" {
                    return Err(format!("the purge of {room} failed: {}", status["error"]));
                }
                let kept =
                    if local_events { "" } else { " (this server's users' events kept: --local-events to purge them)" };
                print(output, &status, || format!("{} events of {room} purged{kept}", status["purged_events"]));
                Ok(())
            }
            AdminCommand::MediaQuarantine { target, release } => self.quarantine(target, release, output).await,
            AdminCommand::StorageStats => {
                let answer = self.call("GET", "/_conduit/admin/v1/storage", None).await?;
                print(output, &answer, || storage_lines(&answer));
                Ok(())
            }
            AdminCommand::MediaPurgeRemote { days } => {
                let before = crate::util::now_ms().saturating_sub(days.saturating_mul(24 * 3600 * 1000));
                let path = format!("/_synapse/admin/v1/purge_media_cache?before_ts={before}");
                let answer = self.call("POST", &path, Some(json!({}))).await?;
                print(output, &answer, || {
                    format!(
                        "{} cached items of other servers removed (fetched over {days} days ago)",
                        answer["deleted"]
                    )
                });
                Ok(())
            }
            AdminCommand::RoomShutdown { room, block, purge } => {
                let path = format!("/_synapse/admin/v2/rooms/{}", percent_encode(&room));
                let answer = self.call("DELETE", &path, Some(json!({ "block": block, "purge": purge }))).await?;
                let delete_id = answer["delete_id"].as_str().unwrap_or_default();
                let status_path = format!("/_synapse/admin/v2/rooms/delete_status/{}", percent_encode(delete_id));
                let status = self.call("GET", &status_path, None).await?;
                if status["status"] != "complete" {
                    return Err(format!("the shutdown of {room} failed: {}", status["error"]));
                }
                let kicked = status["shutdown_room"]["kicked_users"].as_array().map_or(0, Vec::len);
                let blocked = if block { "; it is blocked" } else { "" };
                let purged = if purge { "; its history is purged" } else { "" };
                print(output, &status, || {
                    format!("{room} is shut down: {kicked} local members removed{blocked}{purged}")
                });
                Ok(())
            }
        }
    }

    async fn quarantine(&self, target: QuarantineTarget, release: bool, output: Output) -> Result<(), String> {
        let (path, described) = match &target {
            QuarantineTarget::Item(uri) => {
                let item = uri.strip_prefix("mxc://").ok_or_else(|| format!("{uri} is not an mxc:// URI"))?;
                let (server, media_id) = item.split_once('/').ok_or_else(|| format!("{uri} names no media id"))?;
                let action = if release { "unquarantine" } else { "quarantine" };
                let path = format!(
                    "/_synapse/admin/v1/media/{action}/{}/{}",
                    percent_encode(server),
                    percent_encode(media_id)
                );
                (path, uri.clone())
            }
            QuarantineTarget::Room(room) => (
                format!("/_synapse/admin/v1/room/{}/media/quarantine", percent_encode(room)),
                format!("media of {room}"),
            ),
            QuarantineTarget::User(name) => {
                let user = self.user_id(name);
                (
                    format!("/_synapse/admin/v1/user/{}/media/quarantine", percent_encode(&user)),
                    format!("uploads of {user}"),
                )
            }
        };
        let answer = self.call("POST", &path, Some(json!({}))).await?;
        print(output, &answer, || match (&target, release) {
            (QuarantineTarget::Item(_), true) => format!("{described} is out of quarantine"),
            (QuarantineTarget::Item(_), false) => format!("{described} is quarantined"),
            _ => format!("{described}: {} items quarantined", answer["num_quarantined"]),
        });
        Ok(())
    }

    async fn existing_user(&self, user: &str) -> Result<Value, String> {
        self.call("GET", &user_path(user), None).await
    }

    async fn create_user(
        &self,
        name: &str,
        admin: bool,
        password: Option<String>,
        output: Output,
    ) -> Result<(), String> {
        let user = self.user_id(name);
        let path = user_path(&user);
        let reply = self.client.send("GET", &path, None).await.map_err(|error| error.to_string())?;
        if reply.status != 404 {
            ok_or_message(reply)?;
            return Err(format!("{user} already exists"));
        }
        let password = NewPassword::from(password);
        let answer = self.call("PUT", &path, Some(json!({ "password": password.value, "admin": admin }))).await?;
        let text = format!("created {user}{}", if admin { " (server admin)" } else { "" });
        let (answer, text) = password.shown(answer, text);
        print(output, &answer, || text);
        Ok(())
    }

    async fn reset_password(&self, name: &str, password: Option<String>, output: Output) -> Result<(), String> {
        let user = self.user_id(name);
        let password = NewPassword::from(password);
        let path = format!("/_synapse/admin/v1/reset_password/{}", percent_encode(&user));
        let body = json!({ "new_password": password.value, "logout_devices": true });
        let answer = self.call("POST", &path, Some(body)).await?;
        let text = format!("password reset for {user}; all its devices were logged out");
        let (answer, text) = password.shown(answer, text);
        print(output, &answer, || text);
        Ok(())
    }

    async fn list_users(&self, search: Option<String>, deactivated: bool, output: Output) -> Result<(), String> {
        let mut query = format!("deactivated={deactivated}&limit=1000000");
        if let Some(search) = &search {
            query.push_str(&format!("&name={}", percent_encode(search)));
        }
        let answer = self.call("GET", &format!("/_synapse/admin/v2/users?{query}"), None).await?;
        print(output, &answer, || {
            let users = answer["users"].as_array().cloned().unwrap_or_default();
            let mut lines: Vec<String> = users
                .iter()
                .map(|user| {
                    let mut flags = Vec::new();
                    for (flag, shown) in [("admin", "admin"), ("deactivated", "deactivated"), ("is_guest", "guest")] {
                        if user[flag] == true {
                            flags.push(shown);
                        }
                    }
                    let name = user["displayname"].as_str().map(|name| format!(" \"{name}\"")).unwrap_or_default();
                    let flags = if flags.is_empty() { String::new() } else { format!(" [{}]", flags.join(", ")) };
                    format!("{}{name}{flags}", user["name"].as_str().unwrap_or_default())
                })
                .collect();
            lines.push(format!("{} users", answer["total"]));
            lines.join("\n")
        });
        Ok(())
    }

    async fn list_rooms(&self, search: Option<String>, output: Output) -> Result<(), String> {
        let mut query = "limit=1000000".to_owned();
        if let Some(search) = &search {
            query.push_str(&format!("&search_term={}", percent_encode(search)));
        }
        let answer = self.call("GET", &format!("/_synapse/admin/v1/rooms?{query}"), None).await?;
        print(output, &answer, || {
            let rooms = answer["rooms"].as_array().cloned().unwrap_or_default();
            let mut lines: Vec<String> = rooms.iter().map(|room| room_lines(room, false)).collect();
            lines.push(format!("{} rooms", answer["total_rooms"]));
            lines.join("\n")
        });
        Ok(())
    }
}

/// The admin API's path of a user.
fn user_path(user_id: &str) -> String {
    format!("/_synapse/admin/v2/users/{}", percent_encode(user_id))
}

/// A password the operator gave, or one generated for them.
struct NewPassword {
    value: String,
    generated: bool,
}

impl NewPassword {
    fn from(given: Option<String>) -> Self {
        match given {
            Some(value) => Self { value, generated: false },
            None => Self { value: random_alphanumeric(20), generated: true },
        }
    }

    /// The answer and its sentence, with a generated password added to both
    /// (the operator has to pass it on).
    fn shown(&self, mut answer: Value, mut text: String) -> (Value, String) {
        if self.generated {
            answer["password"] = json!(self.value);
            text.push_str(&format!("\npassword: {}", self.value));
        }
        (answer, text)
    }
}

fn ok_or_message(reply: OperatorReply) -> Result<Value, String> {
    let body = reply.json();
    if reply.status < 400 {
        return Ok(body);
    }
    match (body["error"].as_str(), body["errcode"].as_str()) {
        (Some(error), Some(code)) => Err(format!("{error} ({code})")),
        _ => Err(format!("the server answered {}: {}", reply.status, String::from_utf8_lossy(&reply.body))),
    }
}

/// The storage statistics as a table, largest trees first.
fn storage_lines(answer: &Value) -> String {
    let mebibytes = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let mut lines = vec![format!("{:<44} {:>10} {:>10} {:>10}", "tree", "entries", "keys MiB", "values MiB")];
    let (mut entries, mut keys, mut values) = (0, 0, 0);
    for tree in answer["trees"].as_array().cloned().unwrap_or_default() {
        let (n, k, v) = (
            tree["entries"].as_u64().unwrap_or(0),
            tree["key_bytes"].as_u64().unwrap_or(0),
            tree["value_bytes"].as_u64().unwrap_or(0),
        );
        (entries, keys, values) = (entries + n, keys + k, values + v);
        let name = tree["name"].as_str().unwrap_or("?");
        lines.push(format!("{name:<44} {n:>10} {:>10.1} {:>10.1}", mebibytes(k), mebibytes(v)));
    }
    lines.push(format!("{:<44} {entries:>10} {:>10.1} {:>10.1}", "total", mebibytes(keys), mebibytes(values)));
    let on_disk = answer["size_on_disk"].as_u64().unwrap_or(0);
    lines.push(format!(
        "on disk: {:.1} MiB ({:.1}× the keys and values)",
        mebibytes(on_disk),
        on_disk as f64 / (keys + values).max(1) as f64
    ));
    lines.join("\n")
}

/// A room in one line, or in detail.
fn room_lines(room: &Value, detailed: bool) -> String {
    let text = |key: &str| room[key].as_str().unwrap_or("-").to_owned();
    let summary = format!(
        "{}  {}  members {} (local {})  v{}",
        text("room_id"),
        room["name"].as_str().map_or_else(|| "(no name)".to_owned(), |name| format!("\"{name}\"")),
        room["joined_members"],
        room["joined_local_members"],
        text("version"),
    );
    if !detailed {
        return summary;
    }
    let mut lines = vec![summary];
    for key in ["canonical_alias", "topic", "creator", "join_rules", "history_visibility", "encryption"] {
        lines.push(format!("  {key}: {}", text(key)));
    }
    lines.push(format!("  public: {}  state events: {}", room["public"], room["state_events"]));
    lines.join("\n")
}

/// Prints the JSON answer, or the sentence `text` makes.
pub(super) fn print(output: Output, answer: &Value, text: impl FnOnce() -> String) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(answer).unwrap_or_default()),
        Output::Text => println!("{}", text()),
    }
}
