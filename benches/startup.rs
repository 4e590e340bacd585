//! Start-up time and memory of the release binary on an existing database:
//! the time from spawning `conduit` to its first answered request
//! (`GET /_matrix/client/versions` on the first listener), and its RSS once
//! idle, then the initial syncs (5) and one incremental sync of a user.
//!
//! ```text
//! cargo bench --bench startup -- --config conduit.toml [--binary target/release/conduit]
//!     [--runs 3] [--drop-caches] [--user NAME --password PW]
//! ```
//!
//! `--drop-caches` empties the kernel's page cache before each run (root
//! only): a cold start, as after a reboot. Fill a database first with
//! `cargo bench --bench load -- --fill N` (see BENCHMARKS.md).

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

mod support;
use support::{mib, rss_kib, Connection, Result};

struct Options {
    config: String,
    binary: String,
    runs: usize,
    drop_caches: bool,
    user: Option<(String, String)>,
}

fn parse_options() -> Result<Options> {
    let mut options = Options {
        config: String::new(),
        binary: "target/release/conduit".to_owned(),
        runs: 3,
        drop_caches: false,
        user: None,
    };
    let mut user = None;
    let mut password = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--config" => options.config = value()?,
            "--binary" => options.binary = value()?,
            "--runs" => options.runs = value()?.parse().map_err(|_| "--runs needs a number")?,
            "--drop-caches" => options.drop_caches = true,
            "--user" => user = Some(value()?),
            "--password" => password = Some(value()?),
            _ => {}
        }
    }
    if options.config.is_empty() {
        return Err("--config PATH is required".into());
    }
    options.user = user.zip(password);
    Ok(options)
}

/// The first listener's address, from the configuration file.
fn listener_of(config_path: &str) -> Result<(SocketAddr, String)> {
    let text = std::fs::read_to_string(config_path).map_err(|e| format!("{config_path}: {e}"))?;
    let config = conduit::config::Config::from_toml_with_env(&text, Vec::new()).map_err(|e| e.to_string())?;
    let listener = config.listeners.first().ok_or("the configuration has no listener")?;
    Ok((listener.address, config.server_name.to_string()))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn one_run(options: &Options, addr: SocketAddr, host: &str) -> Result<()> {
    if options.drop_caches {
        std::fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("--drop-caches (root only): {e}"))?;
    }
    let started = Instant::now();
    let child = Command::new(&options.binary)
        .args(["--config", &options.config])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", options.binary))?;
    let server = Server(child);
    let first_answer = loop {
        if started.elapsed() > Duration::from_secs(120) {
            return Err("no answer within 120 s".into());
        }
        if let Ok(mut connection) = Connection::open(addr, host, None).await {
            if connection.ok("GET", "/_matrix/client/versions", None).await.is_ok() {
                break started.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = server.0.id();
    let idle = mib(rss_kib(pid));
    let mut line = format!("first answer after {:.1} ms; idle RSS {idle:.1} MiB", first_answer.as_secs_f64() * 1000.0);
    if let Some((user, password)) = &options.user {
        let mut connection = Connection::open(addr, host, None).await?;
        let body = serde_json::json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password
        });
        let login = connection.ok("POST", "/_matrix/client/v3/login", Some(&body)).await?;
        let token = login["access_token"].as_str().ok_or("no access token")?.to_owned();
        let mut connection = Connection::open(addr, host, Some(token)).await?;
        let mut initial_ms = Vec::new();
        let mut since = String::new();
        for _ in 0..5 {
            let synced = Instant::now();
            let body = connection.ok("GET", "/_matrix/client/v3/sync?timeout=0", None).await?;
            initial_ms.push(synced.elapsed().as_secs_f64() * 1000.0);
            since = body["next_batch"].as_str().unwrap_or_default().to_owned();
        }
        let synced = Instant::now();
        connection.ok("GET", &format!("/_matrix/client/v3/sync?timeout=0&since={since}"), None).await?;
        let incremental_ms = synced.elapsed().as_secs_f64() * 1000.0;
        let after = mib(rss_kib(pid));
        let first = initial_ms[0];
        initial_ms.sort_by(f64::total_cmp);
        line.push_str(&format!(
            "; initial sync {first:.1} ms (first), {:.1} ms (median of 5); incremental {incremental_ms:.2} ms; then RSS {after:.1} MiB",
            initial_ms[2]
        ));
    }
    println!("{line}");
    drop(server);
    Ok(())
}

fn main() {
    let outcome = parse_options().and_then(|options| {
        let (addr, host) = listener_of(&options.config)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            for _ in 0..options.runs {
                one_run(&options, addr, &host).await?;
            }
            Ok::<_, String>(())
        })
    });
    if let Err(error) = outcome {
        eprintln!("startup: {error}");
        std::process::exit(1);
    }
}
