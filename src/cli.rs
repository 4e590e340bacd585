//! The command line: run the server, or operate on a stopped server's database.
//!
//! ```text
//! conduit [--config PATH]                                   run the server
//! conduit [--config PATH] user create NAME [--admin] [--password PW]
//! conduit [--config PATH] user reset-password NAME [--password PW]
//! conduit [--config PATH] user renew NAME [--days N]
//! conduit [--config PATH] user expire NAME
//! conduit [--config PATH] server rotate-key
//! conduit [--config PATH] config check
//! ```
//! The configuration file may also be named by `CONDUIT_CONFIG`. Operator
//! commands open the database directly, so they refuse (clearly) while the
//! server runs. Without `--password` a random password is generated and printed.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use crate::{
    config::{Config, ConfigSource, LogFormat, CONFIG_ENV},
    crypto::tokens::random_alphanumeric,
    http,
    services::Services,
    storage::Storage,
    users::Users,
};

const USAGE: &str = "\
usage: conduit [--config PATH]                      run the server
       conduit [--config PATH] user create NAME [--admin] [--password PASSWORD]
       conduit [--config PATH] user reset-password NAME [--password PASSWORD]
       conduit [--config PATH] user renew NAME [--days N]   valid N days from now ([account_validity]; default: its period)
       conduit [--config PATH] user expire NAME             ends the account's validity now
       conduit [--config PATH] server rotate-key      new signing key; the old one stays published
       conduit [--config PATH] config check           validate; print the effective configuration, secrets hidden
       conduit --version

The configuration file may also be given by CONDUIT_CONFIG; without one, the
server starts on a development default (server name localhost, data in
./conduit-data, http://127.0.0.1:6167, open registration).";

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run,
    CreateUser { name: String, admin: bool, password: Option<String> },
    ResetPassword { name: String, password: Option<String> },
    SetValidity { name: String, days: Option<u64>, expire: bool },
    RotateKey,
    CheckConfig,
    Help,
    Version,
}

#[derive(Debug, PartialEq, Eq)]
struct Invocation {
    config: Option<PathBuf>,
    command: Command,
}

fn parse_args(args: &[String]) -> Result<Invocation, String> {
    let mut config = None;
    let mut words = Vec::new();
    let mut admin = false;
    let mut password = None;
    let mut days = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "-c" | "--config" => config = Some(PathBuf::from(iter.next().ok_or("--config needs a path")?)),
            "--admin" => admin = true,
            "--password" => password = Some(iter.next().ok_or("--password needs a value")?.clone()),
            "--days" => {
                let value = iter.next().ok_or("--days needs a number")?;
                days = Some(value.parse::<u64>().map_err(|_| format!("--days needs a number, not {value:?}"))?);
            }
            "-h" | "--help" => return Ok(Invocation { config, command: Command::Help }),
            "-V" | "--version" => return Ok(Invocation { config, command: Command::Version }),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            word => words.push(word.to_owned()),
        }
    }
    if days.is_some() && !matches!(words.get(..2), Some([user, renew]) if user == "user" && renew == "renew") {
        return Err("--days goes with user renew".to_owned());
    }
    let command = match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] if !admin && password.is_none() => Command::Run,
        ["user", "renew", name] if !admin && password.is_none() => {
            Command::SetValidity { name: (*name).to_owned(), days, expire: false }
        }
        ["user", "expire", name] if !admin && password.is_none() => {
            Command::SetValidity { name: (*name).to_owned(), days: None, expire: true }
        }
        ["user", "create", name] => Command::CreateUser { name: (*name).to_owned(), admin, password },
        ["user", "reset-password", name] if !admin => Command::ResetPassword { name: (*name).to_owned(), password },
        ["server", "rotate-key"] if !admin && password.is_none() => Command::RotateKey,
        ["config", "check"] if !admin && password.is_none() => Command::CheckConfig,
        _ => return Err(format!("unexpected arguments: {}", words.join(" "))),
    };
    Ok(Invocation { config, command })
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invocation = match parse_args(&args) {
        Ok(invocation) => invocation,
        Err(message) => {
            eprintln!("conduit: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match invocation.command {
        Command::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("conduit {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let config_path = invocation.config.or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from));
    let (config, source) = match Config::load(config_path.as_deref(), std::env::vars()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("conduit: {error}");
            return ExitCode::from(2);
        }
    };
    if invocation.command == Command::CheckConfig {
        // Loaded and validated above (an invalid file exits 2 naming the key).
        println!("{config:#?}");
        println!("configuration OK ({})", describe_source(&source));
        return ExitCode::SUCCESS;
    }
    init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("conduit: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match invocation.command {
            Command::Run => run_server(config, source).await,
            Command::CreateUser { name, admin, password } => create_user(config, &name, admin, password).await,
            Command::ResetPassword { name, password } => reset_password(config, &name, password).await,
            Command::SetValidity { name, days, expire } => set_validity(config, &name, days, expire).await,
            Command::RotateKey => rotate_key(config),
            Command::Help | Command::Version | Command::CheckConfig => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("conduit: {message}");
            ExitCode::FAILURE
        }
    }
}

fn describe_source(source: &ConfigSource) -> String {
    match source {
        ConfigSource::File(path) => path.display().to_string(),
        ConfigSource::EmbeddedDefault => "the embedded development default".to_owned(),
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(config.log_filter()).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
}

async fn run_server(config: Config, source: ConfigSource) -> Result<(), String> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "conduit starting");
    match &source {
        ConfigSource::File(path) => tracing::info!(config = %path.display(), "configuration loaded"),
        ConfigSource::EmbeddedDefault => tracing::warn!(
            "no configuration file: using the development default (server name localhost, data in \
             ./conduit-data, http://127.0.0.1:6167, open registration); do not use this in production"
        ),
    }
    tracing::info!(server_name = %config.server_name, database = %config.database_path.display(), registration = ?config.registration, "settings");
    let services = Services::open(config).map_err(|e| e.to_string())?;
    let server = http::start(services).await.map_err(|e| e.to_string())?;
    wait_for_signals(&server).await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signals(server: &http::ServerHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hangup), Ok(mut terminate), Ok(mut interrupt)) =
        (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => { let _ = server.reload_certificates(); }
            _ = terminate.recv() => return,
            _ = interrupt.recv() => return,
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_server: &http::ServerHandle) {
    let _ = tokio::signal::ctrl_c().await;
}

fn open_users(config: &Config) -> Result<(Arc<Storage>, Users), String> {
    let storage =
        Arc::new(Storage::open(&config.database_path, config.cache_capacity_bytes()).map_err(|e| e.to_string())?);
    let users = Users::new(Arc::clone(&storage), config);
    Ok((storage, users))
}

async fn create_user(config: Config, name: &str, admin: bool, password: Option<String>) -> Result<(), String> {
    let (storage, users) = open_users(&config)?;
    let localpart = users.localpart_for_registration(name).map_err(|e| e.message)?;
    let (password, generated) = match password {
        Some(password) => (password, false),
        None => (random_alphanumeric(20), true),
    };
    users.create_account(&localpart, Some(&password), false, admin).await.map_err(|e| e.message)?;
    let user_id = users.user_id(&localpart).map_err(|e| e.message)?;
    storage.shutdown().map_err(|e| e.to_string())?;
    println!("created {user_id}{}", if admin { " (server admin)" } else { "" });
    if generated {
        println!("password: {password}");
    }
    Ok(())
}

/// `server rotate-key`: a new signing key; the old one is kept under
/// `old_verify_keys` so what it signed still verifies for other servers.
fn rotate_key(config: Config) -> Result<(), String> {
    let storage = Storage::open(&config.database_path, config.cache_capacity_bytes()).map_err(|e| e.to_string())?;
    let (old, new) =
        crate::crypto::signing_key::ServerKey::rotate(&storage, crate::util::now_ms()).map_err(|e| e.to_string())?;
    storage.shutdown().map_err(|e| e.to_string())?;
    println!("rotated the server signing key: {old} -> {new} ({old} stays published under old_verify_keys)");
    Ok(())
}

async fn reset_password(config: Config, name: &str, password: Option<String>) -> Result<(), String> {
    let (storage, users) = open_users(&config)?;
    let localpart = users.localpart_from_identifier(name).ok_or("not a user of this server")?;
    if users.get_active(&localpart).map_err(|e| e.message)?.is_none() {
        return Err(format!("no active user {name}"));
    }
    let (password, generated) = match password {
        Some(password) => (password, false),
        None => (random_alphanumeric(20), true),
    };
    users.set_password(&localpart, &password).await.map_err(|e| e.message)?;
    users.logout_all(&localpart).await.map_err(|e| e.message)?;
    storage.shutdown().map_err(|e| e.to_string())?;
    println!("password reset for {localpart}; all its devices were logged out");
    if generated {
        println!("password: {password}");
    }
    Ok(())
}

/// `user renew` / `user expire`: when an account ends (`[account_validity]`).
async fn set_validity(config: Config, name: &str, days: Option<u64>, expire: bool) -> Result<(), String> {
    let (storage, users) = open_users(&config)?;
    if !users.validity.is_enabled() {
        return Err("accounts do not expire on this server: set [account_validity] period_days".to_owned());
    }
    let localpart = users.localpart_from_identifier(name).ok_or("not a user of this server")?;
    if users.get_active(&localpart).map_err(|e| e.message)?.is_none() {
        return Err(format!("no active user {name}"));
    }
    let now = crate::util::now_ms();
    let end = match (expire, days) {
        (true, _) => Some(now),
        (false, Some(days)) => Some(now.saturating_add(days.saturating_mul(24 * 3600 * 1000))),
        (false, None) => None,
    };
    let end = users.validity.set_expiry(&localpart, end).await.map_err(|e| e.message)?;
    storage.shutdown().map_err(|e| e.to_string())?;
    let (year, month, day) = crate::util::utc_date(end);
    if expire {
        println!("{localpart} has expired");
    } else {
        println!("{localpart} is valid until {year}-{month:02}-{day:02}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, String> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(parse(&[]).unwrap().command, Command::Run);
        assert_eq!(parse(&["--config", "c.toml"]).unwrap().config, Some(PathBuf::from("c.toml")));
        assert_eq!(
            parse(&["user", "create", "alice", "--admin"]).unwrap().command,
            Command::CreateUser { name: "alice".into(), admin: true, password: None }
        );
        assert_eq!(
            parse(&["user", "reset-password", "bob", "--password", "pw"]).unwrap().command,
            Command::ResetPassword { name: "bob".into(), password: Some("pw".into()) }
        );
        assert_eq!(parse(&["server", "rotate-key"]).unwrap().command, Command::RotateKey);
        assert!(parse(&["server", "rotate-key", "--admin"]).is_err());
        assert_eq!(
            parse(&["user", "renew", "carol", "--days", "90"]).unwrap().command,
            Command::SetValidity { name: "carol".into(), days: Some(90), expire: false }
        );
        assert_eq!(
            parse(&["user", "expire", "carol"]).unwrap().command,
            Command::SetValidity { name: "carol".into(), days: None, expire: true }
        );
        assert!(parse(&["user", "expire", "carol", "--days", "3"]).is_err());
        assert_eq!(parse(&["--config", "c.toml", "config", "check"]).unwrap().command, Command::CheckConfig);
        assert!(parse(&["user", "renew", "carol", "--days", "x"]).is_err());
    }

    #[test]
    fn refuses_nonsense() {
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["user", "delete", "x"]).is_err());
        assert!(parse(&["--config"]).is_err());
        assert!(parse(&["--admin"]).is_err());
    }
}
