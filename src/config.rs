//! Typed configuration: `conduit.toml`, `CONDUIT_*` environment overrides,
//! `*_file` secrets, and validation before any port is bound.
//!
//! Loading order:
//! 1. the TOML file (or the embedded development default when there is none);
//! 2. `CONDUIT_<KEY>` environment variables, `__` separating nested keys
//!    (`CONDUIT_WELL_KNOWN__CLIENT`); values are read as TOML when they parse as
//!    TOML (`true`, `42`, `[...]`), otherwise as plain strings;
//! 3. secret keys given as `<key>_file` are replaced by the file's contents;
//! 4. deserialisation, which refuses unknown keys by name;
//! 5. [`Config::validate`], which refuses invalid values naming the key.
//!
//! `conduit.toml.example` at the repository root documents every key; a unit test
//! checks that it parses and matches the defaults below.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use ruma::OwnedServerName;

use crate::http::client_address::Network;
use serde::Deserialize;

mod email;
pub use email::{
    AccountValidityConfig, EmailConfig, EmailIdentityConfig, InfoMapEntry, MailLanguage, PasswordPolicyConfig,
    SmtpSecurity, SmtpServer,
};

/// The configuration a developer gets with no file at all: enough to run the
/// server locally and point a client at it.
pub const EMBEDDED_DEFAULT: &str = r#"
server_name = "localhost"
database_path = "./conduit-data"
registration = "open"

[[listeners]]
address = "127.0.0.1:6167"

# A developer's push gateway runs on this machine.
[push]
allow_private_gateways = true
"#;

/// Keys whose value may instead be read from a file named by `<key>_file`.
const SECRET_KEYS: &[&str] = &["token", "smtp_password", "registration_shared_secret"];

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "CONDUIT_CONFIG";
const ENV_PREFIX: &str = "CONDUIT_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The name in every user id (`@alice:server_name`); cannot change later.
    pub server_name: OwnedServerName,
    #[serde(default = "default_database_path")]
    pub database_path: PathBuf,
    /// The operators' Unix socket (mode 0600), through which the command
    /// line reaches the running server. Default: `admin.sock` in `database_path`.
    #[serde(default)]
    pub admin_socket: Option<PathBuf>,
    /// Page cache of the storage engine, in MiB.
    #[serde(default = "default_database_cache_mb")]
    pub database_cache_mb: u64,
    /// A `tracing` filter, such as `info` or `conduit=debug,info`. The
    /// auth-rule library's per-event chatter is at `warn` unless named.
    #[serde(default = "default_log")]
    pub log: String,
    /// `text` (one readable line per record) or `json` (one JSON object per
    /// line, for log collectors).
    #[serde(default)]
    pub log_format: LogFormat,
    /// Reverse proxies (addresses or networks such as `10.0.0.0/8`) whose
    /// `X-Forwarded-For` gives the client's address, for logs and rate
    /// limits. Requests from anyone else are taken at their TCP address.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default = "default_listeners")]
    pub listeners: Vec<ListenerConfig>,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_request_size")]
    pub max_request_size: u64,
    /// Time a client has to send its request headers, and then its body.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// How long a keep-alive connection may stay unused before it is closed.
    #[serde(default = "default_keepalive_timeout_secs")]
    pub keepalive_timeout_secs: u64,
    /// Open connections across all listeners; further ones wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default)]
    pub registration: RegistrationMode,
    #[serde(default)]
    pub registration_tokens: Vec<RegistrationTokenConfig>,
    #[serde(default)]
    pub allow_guest_registration: bool,
    /// The secret of shared-secret registration (`register_new_matrix_user`,
    /// `POST /_synapse/admin/v1/register`); absent: that registration is off.
    /// Or `registration_shared_secret_file`.
    #[serde(default)]
    pub registration_shared_secret: Option<Secret>,
    /// Lifetime of access tokens issued to clients that support refresh tokens.
    #[serde(default = "default_refreshable_token_lifetime_secs")]
    pub refreshable_access_token_lifetime_secs: u64,
    /// How long an unfinished user-interactive authentication session lives.
    #[serde(default = "default_uiaa_session_lifetime_secs")]
    pub uiaa_session_lifetime_secs: u64,
    /// Version of new rooms unless the client asks for another.
    #[serde(default = "default_room_version")]
    pub default_room_version: String,
    /// Whether presence (online, away, last active) is tracked and shared.
    #[serde(default = "default_presence")]
    pub presence: bool,
    #[serde(default)]
    pub login_rate_limit: LoginRateLimit,
    #[serde(default)]
    pub well_known: WellKnownConfig,
    #[serde(default)]
    pub user_directory: UserDirectoryConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub push: PushConfig,
    #[serde(default)]
    pub federation: FederationConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// How mail goes out; absent, the server sends none.
    #[serde(default)]
    pub email: Option<EmailConfig>,
    #[serde(default)]
    pub email_identity: EmailIdentityConfig,
    #[serde(default)]
    pub account_validity: AccountValidityConfig,
    /// The Prometheus metrics listener; absent: none.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
}

/// `[rate_limits]`: a burst, then a rate, per user (per client address for
/// registration, login and address validation; per origin server for
/// federation transactions). Server admins are exempt.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    #[serde(default = "crate::util::yes")]
    pub enabled: bool,
    #[serde(default = "RateLimit::message")]
    pub message: RateLimit,
    #[serde(default = "RateLimit::room_creation")]
    pub room_creation: RateLimit,
    #[serde(default = "RateLimit::join")]
    pub join: RateLimit,
    #[serde(default = "RateLimit::invite")]
    pub invite: RateLimit,
    #[serde(default = "RateLimit::media_upload")]
    pub media_upload: RateLimit,
    #[serde(default = "RateLimit::registration")]
    pub registration: RateLimit,
    #[serde(default = "RateLimit::login")]
    pub login: RateLimit,
    #[serde(default = "RateLimit::threepid_request")]
    pub threepid_request: RateLimit,
    #[serde(default = "RateLimit::federation_transaction")]
    pub federation_transaction: RateLimit,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            message: RateLimit::message(),
            room_creation: RateLimit::room_creation(),
            join: RateLimit::join(),
            invite: RateLimit::invite(),
            media_upload: RateLimit::media_upload(),
            registration: RateLimit::registration(),
            login: RateLimit::login(),
            threepid_request: RateLimit::threepid_request(),
            federation_transaction: RateLimit::federation_transaction(),
        }
    }
}

/// One limit: `burst` actions at once, then `per_second`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimit {
    fn message() -> Self {
        Self { per_second: 20.0, burst: 1000 }
    }
    fn room_creation() -> Self {
        Self { per_second: 1.0, burst: 150 }
    }
    fn join() -> Self {
        Self { per_second: 5.0, burst: 150 }
    }
    fn invite() -> Self {
        Self { per_second: 2.0, burst: 100 }
    }
    fn media_upload() -> Self {
        Self { per_second: 5.0, burst: 50 }
    }
    fn registration() -> Self {
        Self { per_second: 1.0, burst: 50 }
    }
    fn login() -> Self {
        Self { per_second: 5.0, burst: 100 }
    }
    fn threepid_request() -> Self {
        Self { per_second: 0.5, burst: 10 }
    }
    fn federation_transaction() -> Self {
        Self { per_second: 50.0, burst: 500 }
    }
}

/// A secret value: read like a string, never shown by `Debug` (logs,
/// `conduit config check`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

/// `[metrics]`: where `GET /metrics` is served (its own listener, plain
/// HTTP, meant for loopback or the monitoring network).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub address: SocketAddr,
}

/// The public-sector room rules (`crate::policy`); off by default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Turns on the `im.vector.room.access_rules` state event and every rule
    /// of the policy layer. Off: plain Matrix.
    #[serde(default)]
    pub access_rules: bool,
    /// The external partners' server names.
    #[serde(default)]
    pub external_servers: Vec<String>,
    /// This server is the external partners' own: its users cannot create
    /// rooms, search the user directory, join public rooms or rooms they are
    /// not invited to, and are never moderators.
    #[serde(default)]
    pub externals_mode: bool,
    /// Users (full ids) whose events the rules do not check; server admins
    /// bypass them too.
    #[serde(default)]
    pub bypass_users: Vec<String>,
}

/// Talking to other homeservers (server-server API).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Federation on or off, both directions.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Server name → `"host:port"` to connect to, consulted before any DNS
    /// (a network without DNS); the certificate is still checked for the
    /// server name.
    #[serde(default)]
    pub destinations: std::collections::BTreeMap<String, String>,
    /// Certificates (PEM) trusted for peers besides the system's roots: the
    /// administration's own certificate authority.
    pub ca_file: Option<PathBuf>,
    /// Check peers' certificates. Only a test may turn this off.
    #[serde(default = "default_true")]
    pub verify_certificates: bool,
    /// The only servers federated with, both directions (empty: everyone).
    #[serde(default)]
    pub allowed_servers: Vec<String>,
    /// Servers never federated with, both directions.
    #[serde(default)]
    pub denied_servers: Vec<String>,
    /// Reach peers on loopback or private addresses (an air-gapped network).
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// Notaries asked for other servers' keys when those servers cannot be
    /// reached directly (none by default).
    #[serde(default)]
    pub trusted_key_servers: Vec<String>,
    /// The longest wait (seconds) between two attempts to send to a server
    /// that does not answer (the wait doubles from 1 s up to this).
    #[serde(default = "default_max_retry_interval_secs")]
    pub max_retry_interval_secs: u64,
    /// DNS servers (`ip:port`) asked for SRV records; empty: the system's.
    #[serde(default)]
    pub nameservers: Vec<String>,
}

fn default_max_retry_interval_secs() -> u64 {
    300
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            destinations: Default::default(),
            ca_file: None,
            verify_certificates: true,
            allowed_servers: Vec::new(),
            denied_servers: Vec::new(),
            allow_private_addresses: false,
            trusted_key_servers: Vec::new(),
            max_retry_interval_secs: default_max_retry_interval_secs(),
            nameservers: Vec::new(),
        }
    }
}

impl FederationConfig {
    /// Whether this server federates with `server` (the lists, and `enabled`).
    pub fn federates_with(&self, server: &str) -> bool {
        self.enabled
            && !self.denied_servers.iter().any(|denied| denied == server)
            && (self.allowed_servers.is_empty() || self.allowed_servers.iter().any(|allowed| allowed == server))
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// When present the listener speaks TLS (HTTP/2 and HTTP/1.1 by ALPN).
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Reloaded on SIGHUP.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Reloaded on SIGHUP.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Anyone may register.
    Open,
    /// Registration needs one of `registration_tokens`.
    Token,
    /// Only operators create accounts (`conduit user create`).
    #[default]
    Closed,
}

#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistrationTokenConfig {
    /// The token itself (or `token_file`). Letters, digits, `.`, `_`, `~`, `-`; at most 64.
    pub token: String,
    /// How many registrations it allows; unlimited when absent.
    pub uses_allowed: Option<u32>,
    /// Expiry, in milliseconds since the Unix epoch; never when absent.
    pub expiry_time: Option<u64>,
}

impl fmt::Debug for RegistrationTokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationTokenConfig")
            .field("token", &"<redacted>")
            .field("uses_allowed", &self.uses_allowed)
            .field("expiry_time", &self.expiry_time)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LoginRateLimit {
    /// Failed password attempts allowed per (account, client address) in a window.
    #[serde(default = "default_failed_attempts")]
    pub failed_attempts: u32,
    #[serde(default = "default_failed_window_secs")]
    pub window_secs: u64,
    /// Failed attempts allowed per client address across accounts in a window.
    #[serde(default = "default_failed_attempts_per_address")]
    pub failed_attempts_per_address: u32,
    /// Failures of one account in a window (from any addresses) after which
    /// each address gets one attempt on it per window.
    #[serde(default = "default_account_attack_threshold")]
    pub account_attack_threshold: u32,
}

impl Default for LoginRateLimit {
    fn default() -> Self {
        Self {
            failed_attempts: default_failed_attempts(),
            window_secs: default_failed_window_secs(),
            failed_attempts_per_address: default_failed_attempts_per_address(),
            account_attack_threshold: default_account_attack_threshold(),
        }
    }
}

fn default_failed_attempts_per_address() -> u32 {
    30
}

fn default_account_attack_threshold() -> u32 {
    20
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WellKnownConfig {
    /// Base URL served as `m.homeserver.base_url` at `/.well-known/matrix/client`.
    pub client: Option<String>,
    /// `host:port` served as `m.server` at `/.well-known/matrix/server`.
    pub server: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Where uploaded files are kept; default: `media` inside `database_path`.
    pub path: Option<PathBuf>,
    /// Largest upload in bytes (uploads are streamed to disk, so this may
    /// be far above `max_request_size`).
    #[serde(default = "default_max_upload_size")]
    pub max_upload_size: u64,
    /// Serve downloads on the legacy unauthenticated `/_matrix/media/v3/download`
    /// routes too (the spec froze them in v1.11; off by default).
    #[serde(default)]
    pub legacy_unauthenticated_downloads: bool,
    /// Fetch the pages users link to for their previews (`/preview_url`).
    /// Off by default (as Synapse): the server then contacts any site its
    /// users paste.
    #[serde(default)]
    pub url_previews: bool,
    /// Allow previews of pages on loopback and private addresses (an
    /// intranet). Off: users cannot make the server read its own network.
    #[serde(default)]
    pub url_preview_allow_private: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_upload_size: default_max_upload_size(),
            legacy_unauthenticated_downloads: false,
            url_previews: false,
            url_preview_allow_private: false,
        }
    }
}

fn default_max_upload_size() -> u64 {
    50 * 1024 * 1024
}

impl Config {
    fn validate_federation(&self) -> Result<(), ConfigError> {
        let federation = &self.federation;
        if let Some(ca_file) = &federation.ca_file {
            check_readable_file("federation.ca_file", ca_file)?;
        }
        for (server, address) in &federation.destinations {
            if ruma::ServerName::parse(server).is_err() {
                return Err(invalid("federation.destinations", format!("{server:?} is not a server name")));
            }
            let valid =
                address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(invalid(
                    &format!("federation.destinations.{server}"),
                    format!("{address:?} is not \"host:port\""),
                ));
            }
        }
        let lists = [
            ("federation.allowed_servers", &federation.allowed_servers),
            ("federation.denied_servers", &federation.denied_servers),
            ("federation.trusted_key_servers", &federation.trusted_key_servers),
        ];
        for (key, list) in lists {
            if let Some(bad) = list.iter().find(|server| ruma::ServerName::parse(server.as_str()).is_err()) {
                return Err(invalid(key, format!("{bad:?} is not a server name")));
            }
        }
        Ok(())
    }

    fn validate_policy(&self) -> Result<(), ConfigError> {
        let policy = &self.policy;
        if let Some(bad) =
            policy.external_servers.iter().find(|server| ruma::ServerName::parse(server.as_str()).is_err())
        {
            return Err(invalid("policy.external_servers", format!("{bad:?} is not a server name")));
        }
        if let Some(bad) = policy.bypass_users.iter().find(|user| ruma::UserId::parse(user.as_str()).is_err()) {
            return Err(invalid("policy.bypass_users", format!("{bad:?} is not a user id")));
        }
        if !policy.access_rules && (policy.externals_mode || !policy.external_servers.is_empty()) {
            return Err(invalid("policy.access_rules", "must be true for external_servers or externals_mode to apply"));
        }
        Ok(())
    }

    /// The trusted proxies, parsed (validated at load).
    pub fn trusted_proxy_networks(&self) -> Vec<Network> {
        self.trusted_proxies.iter().filter_map(|p| Network::parse(p)).collect()
    }

    /// The log filter: `log`, with the auth-rule library's per-event lines
    /// at `warn` unless `log` names it.
    pub fn log_filter(&self) -> String {
        if self.log.contains("ruma_state_res") {
            self.log.clone()
        } else {
            format!("{},ruma_state_res=warn", self.log)
        }
    }

    /// Where the operators' socket is.
    pub fn admin_socket_path(&self) -> PathBuf {
        self.admin_socket.clone().unwrap_or_else(|| self.database_path.join("admin.sock"))
    }

    /// The directory of uploaded files.
    pub fn media_path(&self) -> PathBuf {
        self.media.path.clone().unwrap_or_else(|| self.database_path.join("media"))
    }

    /// The upload limit.
    pub fn max_upload_size(&self) -> u64 {
        self.media.max_upload_size
    }
}

/// Sending notifications to push gateways.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Allow pusher URLs that resolve to loopback or private addresses (a
    /// gateway inside an air-gapped network). Off: users cannot make the
    /// server call hosts of its own network.
    #[serde(default)]
    pub allow_private_gateways: bool,
    /// PEM certificates trusted for https gateways besides the system's roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserDirectoryConfig {
    /// Every local user is searchable by everyone; otherwise only users who
    /// share a room with the searcher or are in a public room.
    #[serde(default)]
    pub search_all_users: bool,
}

fn default_database_path() -> PathBuf {
    PathBuf::from("./conduit-data")
}
fn default_database_cache_mb() -> u64 {
    64
}
fn default_log() -> String {
    "info".to_owned()
}
fn default_listeners() -> Vec<ListenerConfig> {
    vec![ListenerConfig { address: SocketAddr::from(([127, 0, 0, 1], 6167)), tls: None }]
}
fn default_max_request_size() -> u64 {
    20 * 1024 * 1024
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_keepalive_timeout_secs() -> u64 {
    75
}
fn default_max_connections() -> usize {
    4096
}
fn default_refreshable_token_lifetime_secs() -> u64 {
    300
}
fn default_uiaa_session_lifetime_secs() -> u64 {
    900
}
fn default_room_version() -> String {
    crate::events::room_version::DEFAULT_ROOM_VERSION.to_string()
}
fn default_presence() -> bool {
    true
}
fn default_failed_attempts() -> u32 {
    5
}
fn default_failed_window_secs() -> u64 {
    60
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(key: &str, reason: impl fmt::Display) -> ConfigError {
    ConfigError(format!("invalid configuration key `{key}`: {reason}"))
}

/// Where the configuration came from, for the first log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    EmbeddedDefault,
}

impl Config {
    /// Loads the file at `path` (or the embedded default), applies the given
    /// environment, and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, ConfigSource), ConfigError> {
        let (text, source) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read configuration file {}: {e}", path.display())))?;
                (text, ConfigSource::File(path.to_owned()))
            }
            None => (EMBEDDED_DEFAULT.to_owned(), ConfigSource::EmbeddedDefault),
        };
        let config = Self::from_toml_with_env(&text, env)?;
        Ok((config, source))
    }

    /// Parses TOML text, applies environment overrides and secrets, validates.
    pub fn from_toml_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError(format!("configuration is not valid TOML: {e}")))?;
        apply_env_overrides(&mut table, env)?;
        resolve_secret_files(&mut table, "")?;
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            let reason = e.into_inner();
            let reason = reason.message().trim_end();
            if path == "." {
                ConfigError(format!("invalid configuration: {reason}"))
            } else {
                invalid(&path, reason)
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot: ranges, consistency, files that must exist.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(bad) = self.trusted_proxies.iter().find(|p| Network::parse(p).is_none()) {
            return Err(invalid("trusted_proxies", format!("{bad:?} is not an address or a network (10.0.0.0/8)")));
        }
        if self.listeners.is_empty() {
            return Err(invalid("listeners", "at least one listener is needed"));
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            let duplicates = self.listeners.iter().filter(|l| l.address == listener.address).count();
            if duplicates > 1 {
                return Err(invalid(&format!("listeners[{i}].address"), "address is listed twice"));
            }
            if let Some(tls) = &listener.tls {
                check_readable_file(&format!("listeners[{i}].tls.certificate"), &tls.certificate)?;
                check_readable_file(&format!("listeners[{i}].tls.key"), &tls.key)?;
            }
        }
        if let Some(ca_file) = &self.push.ca_file {
            check_readable_file("push.ca_file", ca_file)?;
        }
        self.validate_federation()?;
        self.validate_policy()?;
        if let Some(email) = &self.email {
            email.validate()?;
        }
        self.email_identity.validate(self.email.is_some())?;
        self.account_validity.validate(self.email.is_some())?;
        if self.max_request_size < 1024 {
            return Err(invalid("max_request_size", "must be at least 1024 bytes"));
        }
        if self.request_timeout_secs == 0 {
            return Err(invalid("request_timeout_secs", "must be at least 1"));
        }
        if self.keepalive_timeout_secs == 0 {
            return Err(invalid("keepalive_timeout_secs", "must be at least 1"));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        if self.database_cache_mb == 0 {
            return Err(invalid("database_cache_mb", "must be at least 1"));
        }
        if self.refreshable_access_token_lifetime_secs == 0 {
            return Err(invalid("refreshable_access_token_lifetime_secs", "must be at least 1"));
        }
        if self.uiaa_session_lifetime_secs < 10 {
            return Err(invalid("uiaa_session_lifetime_secs", "must be at least 10"));
        }
        if self.login_rate_limit.failed_attempts == 0 || self.login_rate_limit.window_secs == 0 {
            return Err(invalid("login_rate_limit", "failed_attempts and window_secs must be at least 1"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log).map_err(|e| invalid("log", e))?;
        crate::events::room_version::parse_creatable(&self.default_room_version)
            .map_err(|_| invalid("default_room_version", "must be a room version from 3 to 12"))?;
        for (i, token) in self.registration_tokens.iter().enumerate() {
            if !is_valid_registration_token(&token.token) {
                return Err(invalid(
                    &format!("registration_tokens[{i}].token"),
                    "1 to 64 characters among A-Z a-z 0-9 . _ ~ -",
                ));
            }
        }
        if self.registration == RegistrationMode::Token && self.registration_tokens.is_empty() {
            return Err(invalid("registration", "\"token\" needs at least one entry in registration_tokens"));
        }
        if let Some(client) = &self.well_known.client {
            if !(client.starts_with("https://") || client.starts_with("http://")) {
                return Err(invalid("well_known.client", "must be an http(s) URL"));
            }
        }
        Ok(())
    }

    pub fn cache_capacity_bytes(&self) -> u64 {
        self.database_cache_mb * 1024 * 1024
    }
}

/// The grammar of registration tokens from the spec's
/// "Token-authenticated registration".
pub fn is_valid_registration_token(token: &str) -> bool {
    (1..=64).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

fn check_readable_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path).map(drop).map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
}

fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut overrides: Vec<(String, String)> =
        env.into_iter().filter(|(name, _)| name.starts_with(ENV_PREFIX) && name != CONFIG_ENV).collect();
    overrides.sort();
    for (name, raw) in overrides {
        let path: Vec<String> = name[ENV_PREFIX.len()..].split("__").map(|part| part.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError(format!("environment variable {name} does not name a configuration key")));
        }
        let value = parse_env_value(&raw);
        let (last, parents) = path.split_last().expect("split always yields one part");
        let mut current = &mut *table;
        for part in parents {
            let entry = current.entry(part.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            current = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError(format!("environment variable {name}: `{part}` is not a table of keys")))?;
        }
        current.insert(last.clone(), value);
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("value = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("value"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Replaces every `<secret>_file = "path"` by `<secret> = "<file contents>"`,
/// at any depth, including inside arrays of tables.
fn resolve_secret_files(table: &mut toml::Table, prefix: &str) -> Result<(), ConfigError> {
    for secret in SECRET_KEYS {
        let file_key = format!("{secret}_file");
        let Some(path_value) = table.remove(&file_key) else { continue };
        let full_key = format!("{prefix}{file_key}");
        let path = path_value.as_str().ok_or_else(|| invalid(&full_key, "must be a file path"))?;
        if table.contains_key(*secret) {
            return Err(invalid(&full_key, format!("give either `{secret}` or `{file_key}`, not both")));
        }
        let contents =
            std::fs::read_to_string(path).map_err(|e| invalid(&full_key, format!("cannot read {path}: {e}")))?;
        table.insert((*secret).to_owned(), toml::Value::String(contents.trim_end_matches(['\r', '\n']).to_owned()));
    }
    for (key, value) in table.iter_mut() {
        match value {
            toml::Value::Table(inner) => resolve_secret_files(inner, &format!("{prefix}{key}."))?,
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let toml::Value::Table(inner) = item {
                        resolve_secret_files(inner, &format!("{prefix}{key}[{i}]."))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, Vec::new())
    }

    #[test]
    fn embedded_default_is_local_and_open() {
        let config = load(EMBEDDED_DEFAULT).unwrap();
        assert_eq!(config.server_name.as_str(), "localhost");
        assert_eq!(config.registration, RegistrationMode::Open);
        assert_eq!(config.listeners[0].address.to_string(), "127.0.0.1:6167");
        assert_eq!(config.database_path, PathBuf::from("./conduit-data"));
        assert!(config.push.allow_private_gateways, "a developer's push gateway runs on loopback");
    }

    #[test]
    fn example_file_parses_and_documents_the_defaults() {
        let text = include_str!("../conduit.toml.example");
        let config = load(text).expect("conduit.toml.example must be valid");
        let minimal = load("server_name = \"example.org\"").unwrap();
        assert_eq!(config.database_cache_mb, minimal.database_cache_mb);
        assert_eq!(config.max_request_size, minimal.max_request_size);
        assert_eq!(config.request_timeout_secs, minimal.request_timeout_secs);
        assert_eq!(config.keepalive_timeout_secs, minimal.keepalive_timeout_secs);
        assert_eq!(config.federation, minimal.federation);
        assert_eq!(config.max_connections, minimal.max_connections);
        assert_eq!(config.registration, minimal.registration);
        assert_eq!(config.login_rate_limit, minimal.login_rate_limit);
        assert_eq!(config.log, minimal.log);
        assert_eq!(config.default_room_version, minimal.default_room_version);
        assert_eq!(config.presence, minimal.presence);
        assert_eq!(config.listeners, minimal.listeners);
        assert_eq!(config.refreshable_access_token_lifetime_secs, minimal.refreshable_access_token_lifetime_secs);
        assert_eq!(config.uiaa_session_lifetime_secs, minimal.uiaa_session_lifetime_secs);
        assert_eq!(config.email_identity, minimal.email_identity);
        assert_eq!(config.email, None);
        assert_eq!(config.account_validity, minimal.account_validity);
        assert_eq!(config.metrics, None);
        assert_eq!(config.rate_limits, minimal.rate_limits);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let error = load("server_name = \"a.b\"\nregistraton = \"open\"").unwrap_err();
        assert!(error.0.contains("registraton"), "{error}");
        let error = load("server_name = \"a.b\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\ntsl = {}").unwrap_err();
        assert!(error.0.contains("tsl"), "{error}");
    }

    #[test]
    fn invalid_values_are_refused_naming_the_key() {
        let error = load("server_name = \"not a server\"").unwrap_err();
        assert!(error.0.contains("server_name"), "{error}");
        let error = load("server_name = \"a.b\"\nregistration = \"token\"").unwrap_err();
        assert!(error.0.contains("`registration`"), "{error}");
        let error = load("server_name = \"a.b\"\nmax_connections = 0").unwrap_err();
        assert!(error.0.contains("max_connections"), "{error}");
        let error = load("server_name = \"a.b\"\nlog = \"[[[\"").unwrap_err();
        assert!(error.0.contains("`log`"), "{error}");
    }

    #[test]
    fn missing_tls_files_are_refused_naming_the_key() {
        let text = "server_name = \"a.b\"\n[[listeners]]\naddress = \"127.0.0.1:8448\"\n\
                    tls = { certificate = \"/nonexistent/cert.pem\", key = \"/nonexistent/key.pem\" }";
        let error = load(text).unwrap_err();
        assert!(error.0.contains("listeners[0].tls.certificate"), "{error}");
        let error = load("server_name = \"a.b\"\n[push]\nca_file = \"/nonexistent/ca.pem\"").unwrap_err();
        assert!(error.0.contains("push.ca_file"), "{error}");
    }

    #[test]
    fn environment_overrides_keys_including_nested_ones() {
        let env = vec![
            ("CONDUIT_SERVER_NAME".to_owned(), "env.example".to_owned()),
            ("CONDUIT_MAX_CONNECTIONS".to_owned(), "7".to_owned()),
            ("CONDUIT_WELL_KNOWN__CLIENT".to_owned(), "https://matrix.env.example".to_owned()),
            ("CONDUIT_CONFIG".to_owned(), "/ignored".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let config = Config::from_toml_with_env("server_name = \"file.example\"", env).unwrap();
        assert_eq!(config.server_name.as_str(), "env.example");
        assert_eq!(config.max_connections, 7);
        assert_eq!(config.well_known.client.as_deref(), Some("https://matrix.env.example"));
    }

    #[test]
    fn unknown_environment_keys_are_refused() {
        let env = vec![("CONDUIT_NO_SUCH_KEY".to_owned(), "1".to_owned())];
        let error = Config::from_toml_with_env("server_name = \"a.b\"", env).unwrap_err();
        assert!(error.0.contains("no_such_key"), "{error}");
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("token");
        std::fs::write(&secret, "s3cret-token\n").unwrap();
        let text = format!(
            "server_name = \"a.b\"\nregistration = \"token\"\n[[registration_tokens]]\ntoken_file = {:?}\n",
            secret.display().to_string()
        );
        let config = load(&text).unwrap();
        assert_eq!(config.registration_tokens[0].token, "s3cret-token");

        let both = format!("{text}token = \"x\"\n");
        assert!(load(&both).unwrap_err().0.contains("registration_tokens[0].token_file"));
        let missing = text.replace(&secret.display().to_string(), "/nonexistent/token");
        assert!(load(&missing).unwrap_err().0.contains("token_file"));
    }

    #[test]
    fn token_debug_output_hides_the_secret() {
        let token = RegistrationTokenConfig { token: "hunter2".into(), uses_allowed: None, expiry_time: None };
        assert!(!format!("{token:?}").contains("hunter2"));
    }
}
