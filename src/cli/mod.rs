//! The command line: run the server, or operate on it.
//!
//! ```text
//! conduit [--config PATH]                                   run the server
//! conduit [--config PATH] [--json] user|room … | backup DIR   through the admin API
//! conduit [--config PATH] restore DIR | user renew|expire | server rotate-key   stopped server only
//! conduit [--config PATH] config check
//! ```
//! The configuration file may also be named by `CONDUIT_CONFIG`. Commands
//! through the admin API ([`operator`]) reach a running server on its
//! operators' socket, or serve the API themselves while it is stopped; the
//! others ([`offline`], [`backup::restore`]) need it stopped. Without
//! `--password` a random password is generated and printed. Exit codes: 0
//! done, 1 failed (the reason on stderr), 2 bad arguments or configuration.

mod backup;
mod offline;
mod operator;

use std::{path::PathBuf, process::ExitCode};

use crate::{
    config::{Config, ConfigSource, LogFormat, CONFIG_ENV},
    http,
    services::Services,
};
use operator::{AdminCommand, Operator, Output, PurgeBefore, QuarantineTarget};

const USAGE: &str = "\
usage: conduit [--config PATH]                      run the server
       conduit [--config PATH] [--json] COMMAND     operate on it

While the server runs, these reach it through its operators' socket
(admin_socket); while it is stopped, they open its database:
  user create NAME [--admin] [--password PASSWORD]
  user list [--search TEXT] [--deactivated]      (--deactivated: include them)
  user deactivate NAME [--erase]
  user reset-password NAME [--password PASSWORD] (logs out every device)
  user make-admin NAME [--revoke]
  user login-token NAME                          (a new device of the user, for support)
  room list [--search TEXT]
  room info ROOM_ID
  room shutdown ROOM_ID [--block] [--purge]      (members removed; --block: nobody here joins again;
                                                 --purge: the room leaves the database)
  room purge-history ROOM_ID (--before-event EVENT_ID | --days N) [--local-events]
                                                 events before it (state, latest kept); --local-events:
                                                 this server's users' too
  media quarantine MXC_URI [--release]           downloads answer 404 (--release: again served)
  media quarantine --room ROOM_ID | --user NAME  every item the room mentions, every upload of the user
  media purge-remote --days N                    drop other servers' media cached over N days ago
  debug storage-stats                            entries and bytes of each table of the database
  backup DIR                                     consistent copy of the database, and new media files

Only while the server is stopped:
  restore DIR                    fill an empty database directory from a backup
  user renew NAME [--days N]     valid N days from now ([account_validity]; default: its period)
  user expire NAME               ends the account's validity now
  server rotate-key              new signing key; the old one stays published
  config check                   validate; print the effective configuration, secrets hidden
  --version

--json prints the admin API's answers (or the backup's manifest) as JSON.
Exit status: 0 done, 1 failed (reason on stderr), 2 bad arguments or configuration.

The configuration file may also be given by CONDUIT_CONFIG; without one, the
server starts on a development default (server name localhost, data in
./conduit-data, http://127.0.0.1:6167, open registration).";

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run,
    Admin(AdminCommand),
    Backup { dir: PathBuf },
    Restore { dir: PathBuf },
    SetValidity { name: String, days: Option<u64>, expire: bool },
    RotateKey,
    CheckConfig,
    Help,
    Version,
}

#[derive(Debug, PartialEq, Eq)]
struct Invocation {
    config: Option<PathBuf>,
    output: Output,
    command: Command,
}

/// Options that stand alone, and options that take a value.
const FLAGS: &[&str] =
    &["--admin", "--erase", "--block", "--revoke", "--purge", "--release", "--deactivated", "--local-events"];
const VALUED: &[&str] = &["--password", "--search", "--days", "--room", "--user", "--before-event"];

/// The options given, by name (with their value), so that a command can
/// refuse those it does not take.
#[derive(Default)]
struct Options {
    given: Vec<(&'static str, Option<String>)>,
}

impl Options {
    fn has(&self, flag: &str) -> bool {
        self.given.iter().any(|(name, _)| *name == flag)
    }

    fn value(&self, option: &str) -> Option<String> {
        self.given.iter().find(|(name, _)| *name == option).and_then(|(_, value)| value.clone())
    }

    fn days(&self) -> Result<Option<u64>, String> {
        self.value("--days")
            .map(|days| days.parse::<u64>().map_err(|_| format!("--days needs a number, not {days:?}")))
            .transpose()
    }

    /// Refuses any option given that `allowed` does not name.
    fn only(&self, allowed: &[&str], command: &str) -> Result<(), String> {
        match self.given.iter().find(|(option, _)| !allowed.contains(option)) {
            Some((option, _)) => Err(format!("{command} does not take {option}")),
            None => Ok(()),
        }
    }
}

fn parse_args(args: &[String]) -> Result<Invocation, String> {
    let mut config = None;
    let mut output = Output::Text;
    let mut words = Vec::new();
    let mut options = Options::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut value = |name: &str| iter.next().cloned().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-c" | "--config" => config = Some(PathBuf::from(value("--config")?)),
            "--json" => output = Output::Json,
            "-h" | "--help" => return Ok(Invocation { config, output, command: Command::Help }),
            "-V" | "--version" => return Ok(Invocation { config, output, command: Command::Version }),
            option if option.starts_with('-') => {
                if let Some(flag) = FLAGS.iter().find(|flag| **flag == option) {
                    options.given.push((flag, None));
                } else if let Some(name) = VALUED.iter().find(|name| **name == option) {
                    options.given.push((name, Some(value(name)?)));
                } else {
                    return Err(format!("unknown option {option}"));
                }
            }
            word => words.push(word.to_owned()),
        }
    }
    let command = command_of(&words, options)?;
    Ok(Invocation { config, output, command })
}

fn command_of(words: &[String], options: Options) -> Result<Command, String> {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let name = |word: &str| word.to_owned();
    let days = options.days()?;
    let (allowed, command): (&[&str], Command) = match words.as_slice() {
        [] => (&[], Command::Run),
        ["user", "create", user] => (
            &["--admin", "--password"],
            Command::Admin(AdminCommand::UserCreate {
                name: name(user),
                admin: options.has("--admin"),
                password: options.value("--password"),
            }),
        ),
        ["user", "list"] => (
            &["--search", "--deactivated"],
            Command::Admin(AdminCommand::UserList {
                search: options.value("--search"),
                deactivated: options.has("--deactivated"),
            }),
        ),
        ["user", "deactivate", user] => (
            &["--erase"],
            Command::Admin(AdminCommand::UserDeactivate { name: name(user), erase: options.has("--erase") }),
        ),
        ["user", "reset-password", user] => (
            &["--password"],
            Command::Admin(AdminCommand::UserResetPassword { name: name(user), password: options.value("--password") }),
        ),
        ["user", "make-admin", user] => (
            &["--revoke"],
            Command::Admin(AdminCommand::UserMakeAdmin { name: name(user), revoke: options.has("--revoke") }),
        ),
        ["user", "login-token", user] => (&[], Command::Admin(AdminCommand::UserLoginToken { name: name(user) })),
        ["user", "renew", user] => (&["--days"], Command::SetValidity { name: name(user), days, expire: false }),
        ["user", "expire", user] => (&[], Command::SetValidity { name: name(user), days: None, expire: true }),
        ["room", "list"] => {
            (&["--search"], Command::Admin(AdminCommand::RoomList { search: options.value("--search") }))
        }
        ["room", "info", room] => (&[], Command::Admin(AdminCommand::RoomInfo { room: name(room) })),
        ["room", "shutdown", room] => {
            let shutdown = AdminCommand::RoomShutdown {
                room: name(room),
                block: options.has("--block"),
                purge: options.has("--purge"),
            };
            (&["--block", "--purge"], Command::Admin(shutdown))
        }
        ["room", "purge-history", room] => {
            let before = match (options.value("--before-event"), days) {
                (Some(event), None) => PurgeBefore::Event(event),
                (None, Some(days)) => PurgeBefore::DaysAgo(days),
                _ => return Err("room purge-history needs one of --before-event and --days".to_owned()),
            };
            (
                &["--before-event", "--days", "--local-events"],
                Command::Admin(AdminCommand::RoomPurgeHistory {
                    room: name(room),
                    before,
                    local_events: options.has("--local-events"),
                }),
            )
        }
        ["media", "quarantine", uri] => (
            &["--release"],
            Command::Admin(AdminCommand::MediaQuarantine {
                target: QuarantineTarget::Item(name(uri)),
                release: options.has("--release"),
            }),
        ),
        ["media", "quarantine"] => {
            let target = match (options.value("--room"), options.value("--user")) {
                (Some(room), None) => QuarantineTarget::Room(room),
                (None, Some(user)) => QuarantineTarget::User(user),
                _ => return Err("media quarantine needs an mxc:// URI, or one of --room and --user".to_owned()),
            };
            (&["--room", "--user"], Command::Admin(AdminCommand::MediaQuarantine { target, release: false }))
        }
        ["media", "purge-remote"] => {
            let days = days.ok_or("media purge-remote needs --days N")?;
            (&["--days"], Command::Admin(AdminCommand::MediaPurgeRemote { days }))
        }
        ["debug", "storage-stats"] => (&[], Command::Admin(AdminCommand::StorageStats)),
        ["backup", dir] => (&[], Command::Backup { dir: PathBuf::from(dir) }),
        ["restore", dir] => (&[], Command::Restore { dir: PathBuf::from(dir) }),
        ["server", "rotate-key"] => (&[], Command::RotateKey),
        ["config", "check"] => (&[], Command::CheckConfig),
        _ => return Err(format!("unexpected arguments: {}", words.join(" "))),
    };
    let described =
        if words.is_empty() { "running the server".to_owned() } else { words[..2.min(words.len())].join(" ") };
    options.only(allowed, &described)?;
    Ok(command)
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
    // A command's own output is what the operator reads: the server's
    // routine log lines stay out of it.
    let log_filter = if invocation.command == Command::Run { config.log_filter() } else { "warn".to_owned() };
    init_tracing(&config, &log_filter);
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
            Command::Admin(command) => run_admin_command(&config, command, invocation.output).await,
            Command::Backup { dir } => backup::backup(&config, &dir, invocation.output).await,
            Command::Restore { dir } => backup::restore(&config, &dir, invocation.output).await,
            Command::SetValidity { name, days, expire } => offline::set_validity(config, &name, days, expire).await,
            Command::RotateKey => offline::rotate_key(config),
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

async fn run_admin_command(config: &Config, command: AdminCommand, output: Output) -> Result<(), String> {
    let operator = Operator::connect(config).await?;
    let result = operator.run(command, output).await;
    operator.finish().await;
    result
}

fn init_tracing(config: &Config, log_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter).unwrap_or_else(|_| "info".into());
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
            Command::Admin(AdminCommand::UserCreate { name: "alice".into(), admin: true, password: None })
        );
        assert_eq!(
            parse(&["user", "reset-password", "bob", "--password", "pw"]).unwrap().command,
            Command::Admin(AdminCommand::UserResetPassword { name: "bob".into(), password: Some("pw".into()) })
        );
        let listed = parse(&["--json", "user", "list", "--search", "ali", "--deactivated"]).unwrap();
        assert_eq!(listed.output, Output::Json);
        assert_eq!(
            listed.command,
            Command::Admin(AdminCommand::UserList { search: Some("ali".into()), deactivated: true })
        );
        assert_eq!(
            parse(&["room", "shutdown", "!r:x", "--block"]).unwrap().command,
            Command::Admin(AdminCommand::RoomShutdown { room: "!r:x".into(), block: true, purge: false })
        );
        assert_eq!(
            parse(&["media", "quarantine", "--user", "bob"]).unwrap().command,
            Command::Admin(AdminCommand::MediaQuarantine {
                target: QuarantineTarget::User("bob".into()),
                release: false
            })
        );
        assert!(parse(&["media", "quarantine", "--user", "bob", "--room", "!r:x"]).is_err());
        assert!(parse(&["media", "quarantine", "--user", "bob", "--release"]).is_err());
        assert_eq!(
            parse(&["media", "purge-remote", "--days", "30"]).unwrap().command,
            Command::Admin(AdminCommand::MediaPurgeRemote { days: 30 })
        );
        assert!(parse(&["media", "purge-remote"]).is_err());
        assert_eq!(
            parse(&["room", "purge-history", "!r:x", "--days", "90", "--local-events"]).unwrap().command,
            Command::Admin(AdminCommand::RoomPurgeHistory {
                room: "!r:x".into(),
                before: PurgeBefore::DaysAgo(90),
                local_events: true
            })
        );
        assert!(parse(&["room", "purge-history", "!r:x"]).is_err());
        assert_eq!(parse(&["backup", "/b"]).unwrap().command, Command::Backup { dir: PathBuf::from("/b") });
        assert_eq!(parse(&["restore", "/b"]).unwrap().command, Command::Restore { dir: PathBuf::from("/b") });
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
        assert!(parse(&["room", "list", "--block"]).unwrap_err().contains("room list does not take --block"));
        assert!(parse(&["user", "make-admin", "x", "--password", "p"]).is_err());
        assert!(parse(&["backup"]).is_err());
    }
}
