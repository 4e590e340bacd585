//! The abuse tool: what a client (or many) can make the server spend. It
//! starts the real `conduit` binary on a temporary database, then runs
//! phases that a hostile or careless client could run, and reports for each
//! the server's peak and settled RSS (from `/proc`), its open files, and the
//! latency of a normal user working meanwhile.
//!
//! ```text
//! ulimit -n 20000   # the phases open thousands of sockets
//! cargo bench --bench abuse -- [--phase NAME]... [--connections 4000] [--settle-secs 10] [--binary PATH]
//! ```
//!
//! Phases (all by default, in this order):
//! - `register-100`, `register-1000`: that many unauthenticated registrations
//!   at once (two requests each: the flows, then the dummy stage);
//! - `login-100`, `login-1000`: that many password logins at once, to the
//!   accounts registered before;
//! - `idle`: `--connections` TCP connections that send nothing; then whether
//!   the server closed them (it must, or they would lock everyone out);
//! - `h2-preface`: connections that send half of the HTTP/2 preface and stop;
//! - `slow-headers`: connections that send a header byte every second;
//! - `big-json`: four 15 MiB `/login` bodies of 1.5 M tiny members at once,
//!   then four such bodies (authenticated) to `/user_directory/search`;
//! - `deep-json`: an authenticated body with a member nested 1 M arrays deep;
//! - `huge-filter`: a filter of 100,000 event types, then one of 2,500, each
//!   stored and then used by `/sync`;
//! - `long-polls`: 200 devices of one user each waiting in `/sync`.
//!
//! The normal user meanwhile sends a message and syncs (`timeout=0`) every
//! 50 ms on a connection opened before the phase: the latency reported is
//! one send plus one sync.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

mod support;
use support::{enc, mib, percentile, random_suffix, rss_kib, Account, Result, Target};

/// The server's `request_timeout_secs` in this tool's configuration.
const REQUEST_TIMEOUT_SECS: u64 = 10;

struct Options {
    phases: Vec<String>,
    /// Another build of the server to measure (a baseline).
    binary: Option<PathBuf>,
    connections: usize,
    settle: Duration,
}

const ALL_PHASES: &[&str] = &[
    "register-100",
    "register-1000",
    "login-100",
    "login-1000",
    "idle",
    "h2-preface",
    "slow-headers",
    "big-json",
    "deep-json",
    "huge-filter",
    "long-polls",
];

fn parse_options() -> Result<Options> {
    let mut options = Options { phases: Vec::new(), binary: None, connections: 4000, settle: Duration::from_secs(10) };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let number = |text: String| text.parse::<u64>().map_err(|_| format!("not a number: {text}"));
        match arg.as_str() {
            "--phase" => {
                let phase = value()?;
                if !ALL_PHASES.contains(&phase.as_str()) {
                    return Err(format!("unknown phase {phase}; phases: {}", ALL_PHASES.join(", ")));
                }
                options.phases.push(phase);
            }
            "--connections" => options.connections = number(value()?)? as usize,
            "--binary" => options.binary = Some(PathBuf::from(value()?)),
            "--settle-secs" => options.settle = Duration::from_secs(number(value()?)?),
            _ => {}
        }
    }
    if options.phases.is_empty() {
        options.phases = ALL_PHASES.iter().map(|p| (*p).to_owned()).collect();
    }
    Ok(options)
}

/// The server process (killed when dropped) and its address.
struct Server {
    process: support::Process,
    addr: SocketAddr,
}

async fn start_server(binary: &Path) -> Result<Server> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = support::free_port()?;
    let config = format!(
        "server_name = \"abuse.local\"\ndatabase_path = {:?}\nregistration = \"open\"\nlog = \"warn\"\n\
         request_timeout_secs = {REQUEST_TIMEOUT_SECS}\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n",
        dir.path().join("db").display().to_string()
    );
    let process = support::spawn_conduit(binary, &config, dir)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    support::wait_listening(addr).await?;
    Ok(Server { process, addr })
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count()).unwrap_or(0)
}

/// Samples the server's RSS every 5 ms while a phase runs; keeps the peak.
struct PeakSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakSampler {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak_in, stop_in) = (Arc::clone(&peak), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            while !stop_in.load(Ordering::Relaxed) {
                peak_in.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self { peak, stop, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// A normal user sending and syncing every 50 ms while a phase runs.
struct NormalUser {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<Duration>, usize)>,
}

impl NormalUser {
    async fn start(target: &Target, account: &Account, room: &str) -> Result<Self> {
        let mut connection = target.connect(Some(account)).await?;
        let room = room.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_in = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let (mut samples, mut failures) = (Vec::new(), 0);
            let filter = enc(r#"{"room":{"timeline":{"limit":5}}}"#);
            let mut since = String::new();
            let mut n = 0;
            while !stop_in.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let send = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/n{n}", enc(&room));
                let sent = connection.call("PUT", &send, Some(&json!({ "msgtype": "m.text", "body": "hello" }))).await;
                let sync = format!("/_matrix/client/v3/sync?timeout=0&filter={filter}{since}");
                let synced = connection.call("GET", &sync, None).await;
                match (sent, synced) {
                    (Ok((200, _)), Ok((200, body))) => {
                        samples.push(started.elapsed());
                        if let Some(next) = body["next_batch"].as_str() {
                            since = format!("&since={}", enc(next));
                        }
                    }
                    _ => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (samples, failures)
        });
        Ok(Self { stop, task })
    }

    async fn finish(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let (samples, failures) = self.task.await.unwrap_or_default();
        let (n, p50, p99, max) = support::summary(samples);
        format!("normal user send+sync n={n} p50 {p50:.1} ms p99 {p99:.1} ms max {max:.1} ms failures {failures}")
    }
}

/// What every phase shares: the server, its pid, a normal user and their room.
struct Bench {
    server: Server,
    target: Target,
    normal: Account,
    room: String,
    settle: Duration,
    /// Accounts registered by the registration phases (for the login phases).
    registered: std::sync::Mutex<Vec<String>>,
    password: String,
}

impl Bench {
    fn pid(&self) -> u32 {
        self.server.process.child.id()
    }

    /// Runs `work` with the sampler and the normal user, then waits for the
    /// server to settle and prints the figures.
    async fn measure<F, Fut>(&self, name: &str, work: F) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<String>>,
    {
        let before = rss_kib(self.pid());
        let files_before = open_files(self.pid());
        let sampler = PeakSampler::start(self.pid());
        let normal = NormalUser::start(&self.target, &self.normal, &self.room).await?;
        let started = Instant::now();
        let outcome = work().await?;
        let elapsed = started.elapsed();
        let normal = normal.finish().await;
        let files_during = open_files(self.pid());
        tokio::time::sleep(self.settle).await;
        let peak = sampler.finish().await;
        let settled = rss_kib(self.pid());
        println!("== {name} ({:.2} s): {outcome}", elapsed.as_secs_f64());
        println!(
            "   RSS before {:.1} MiB, peak {:.1} MiB, settled {:.1} MiB ({} s after); open files {} → {} → {}",
            mib(before),
            mib(peak),
            mib(settled),
            self.settle.as_secs(),
            files_before,
            files_during,
            open_files(self.pid()),
        );
        println!("   {normal}");
        Ok(())
    }
}

async fn register_burst(bench: &Bench, count: usize) -> Result<String> {
    let suffix = random_suffix();
    let mut tasks = Vec::new();
    for i in 0..count {
        let target = Target { addr: bench.target.addr, host: bench.target.host.clone() };
        let (name, password) = (format!("burst{suffix}x{i}"), bench.password.clone());
        tasks.push(tokio::spawn(async move {
            let outcome = support::register_raw(&target, &name, &password, None).await;
            (name, outcome)
        }));
    }
    let (mut ok, mut limited, mut other) = (0, 0, Vec::new());
    for task in tasks {
        let (name, outcome) = task.await.map_err(|e| e.to_string())?;
        match outcome {
            Ok((200, _)) => {
                ok += 1;
                bench.registered.lock().map_err(|e| e.to_string())?.push(name);
            }
            Ok((429, _)) => limited += 1,
            Ok((status, body)) => other.push(format!("{status} {}", body["errcode"])),
            Err(error) => other.push(error),
        }
    }
    Ok(format!("{ok} registered, {limited} refused with 429, others: {:?}", first_few(&other)))
}

async fn login_burst(bench: &Bench, count: usize) -> Result<String> {
    let registered = bench.registered.lock().map_err(|e| e.to_string())?.clone();
    if registered.is_empty() {
        return Err("the login phases log in to the accounts of the registration phases".into());
    }
    let mut tasks = Vec::new();
    for i in 0..count {
        let mut connection = bench.target.connect(None).await?;
        let user = registered[i % registered.len()].clone();
        let password = bench.password.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": user },
                "password": password,
            });
            connection.call("POST", "/_matrix/client/v3/login", Some(&body)).await
        }));
    }
    let (mut ok, mut limited, mut other) = (0, 0, Vec::new());
    for task in tasks {
        match task.await.map_err(|e| e.to_string())? {
            Ok((200, _)) => ok += 1,
            Ok((429, _)) => limited += 1,
            Ok((status, body)) => other.push(format!("{status} {}", body["errcode"])),
            Err(error) => other.push(error),
        }
    }
    Ok(format!("{ok} logged in, {limited} refused with 429, others: {:?}", first_few(&other)))
}

fn first_few(list: &[String]) -> &[String] {
    &list[..list.len().min(3)]
}

/// Opens `count` connections, sends `prefix` on each (nothing for idle
/// ones), then trickles `trickle` one byte a second; after the server's
/// deadline, counts the connections it has closed.
async fn hold_connections(
    bench: &Bench,
    count: usize,
    prefix: &'static [u8],
    trickle: &'static [u8],
) -> Result<String> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        match TcpStream::connect(bench.server.addr).await {
            Ok(mut stream) => {
                if !prefix.is_empty() {
                    let _ = stream.write_all(prefix).await;
                }
                streams.push(stream);
            }
            Err(error) => return Err(format!("opened {} connections, then: {error}", streams.len())),
        }
    }
    let opened = streams.len();
    let files_held = open_files(bench.pid());
    let rss_held = rss_kib(bench.pid());
    let deadline = Instant::now() + Duration::from_secs(REQUEST_TIMEOUT_SECS * 3);
    let mut step = 0;
    while Instant::now() < deadline {
        if let Some(byte) = trickle.get(step % trickle.len().max(1)) {
            for stream in &mut streams {
                let _ = stream.write_all(std::slice::from_ref(byte)).await;
            }
        }
        step += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut closed = 0;
    for stream in &mut streams {
        let mut buffer = [0u8; 4096];
        // A closed connection reads its end (after any error response) at once.
        let mut ended = false;
        while let Ok(Ok(read)) = tokio::time::timeout(Duration::from_millis(2), stream.read(&mut buffer)).await {
            if read == 0 {
                ended = true;
                break;
            }
        }
        closed += usize::from(ended);
    }
    Ok(format!(
        "{opened} opened (server: {files_held} open files, {:.1} MiB while held); {closed} closed by the server within {} s",
        mib(rss_held),
        REQUEST_TIMEOUT_SECS * 3
    ))
}

/// A JSON object of `members` tiny members: `{"a0":0,"a1":0,…}`.
fn wide_object(members: usize) -> Bytes {
    let mut text = String::with_capacity(members * 12);
    text.push('{');
    for i in 0..members {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!("\"{i:x}\":0"));
    }
    text.push('}');
    Bytes::from(text)
}

/// Four bodies of `body` at once to `path` (with the normal user's token when `authenticated`).
async fn four_at_once(bench: &Bench, path: &'static str, body: Bytes, authenticated: bool) -> Result<Vec<String>> {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let account = authenticated.then_some(&bench.normal);
        let mut connection = bench.target.connect(account).await?;
        let body = body.clone();
        tasks.push(tokio::spawn(async move { connection.call_raw("POST", path, Some(body)).await }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(match task.await.map_err(|e| e.to_string())? {
            Ok((status, body)) => format!("{status} {}", body["errcode"].as_str().unwrap_or_default()),
            // The server may answer 413 from the declared length and close before the body is sent.
            Err(error) => format!("refused while sending ({error})"),
        });
    }
    Ok(statuses)
}

async fn big_json(bench: &Bench) -> Result<String> {
    let body = wide_object(1_500_000);
    let size = body.len() as f64 / 1048576.0;
    let anonymous = four_at_once(bench, "/_matrix/client/v3/login", body.clone(), false).await?;
    // Authenticated (max_request_size applies): a search whose 1.5 M unknown members are skipped.
    let mut search = body.to_vec();
    search.splice(1..1, br#""search_term":"x","#.iter().copied());
    let authenticated =
        four_at_once(bench, "/_matrix/client/v3/user_directory/search", Bytes::from(search), true).await?;
    Ok(format!("4 × {size:.1} MiB anonymous /login: {anonymous:?}; 4 × {size:.1} MiB /user_directory/search: {authenticated:?}"))
}

async fn deep_json(bench: &Bench) -> Result<String> {
    let depth = 1_000_000;
    let body = Bytes::from(format!("{{\"search_term\":\"x\",\"deep\":{}{}}}", "[".repeat(depth), "]".repeat(depth)));
    let mut connection = bench.target.connect(Some(&bench.normal)).await?;
    let outcome = match connection.call_raw("POST", "/_matrix/client/v3/user_directory/search", Some(body)).await {
        Ok((status, reply)) => format!("{status} {}", reply["errcode"].as_str().unwrap_or_default()),
        Err(error) => format!("refused while sending ({error})"),
    };
    Ok(format!("an ignored member nested {depth} deep: {outcome}"))
}

async fn huge_filter(bench: &Bench) -> Result<String> {
    let mut connection = bench.target.connect(Some(&bench.normal)).await?;
    let user = connection.ok("GET", "/_matrix/client/v3/account/whoami", None).await?;
    let user = user["user_id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/_matrix/client/v3/user/{}/filter", enc(&user));
    let mut outcome = String::new();
    // 100,000 types (2.3 MiB), then one under the 64 KiB limit (2,500 types).
    for types in [100_000, 2_500] {
        let list: Vec<String> = (0..types).map(|i| format!("org.example.type{i}")).collect();
        let filter = json!({ "room": { "timeline": { "types": list, "limit": 10 } } });
        let (status, reply) = connection.call("POST", &path, Some(&filter)).await?;
        outcome.push_str(&format!("{types} types ({} KiB): {status}; ", filter.to_string().len() / 1024));
        let Some(filter_id) = reply["filter_id"].as_str() else { continue };
        let mut samples = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let sync = format!("/_matrix/client/v3/sync?timeout=0&filter={}", enc(filter_id));
            let (status, _) = connection.call("GET", &sync, None).await?;
            samples.push(started.elapsed());
            if status != 200 {
                outcome.push_str(&format!("sync {status}; "));
                break;
            }
        }
        samples.sort();
        outcome.push_str(&format!("20 syncs with it p50 {:.1} ms; ", percentile(&samples, 0.5).as_secs_f64() * 1000.0));
    }
    Ok(outcome)
}

async fn long_polls(bench: &Bench) -> Result<String> {
    let user = format!("poller{}", random_suffix());
    support::register(&bench.target, &user, &bench.password, None).await?;
    let mut waiting = Vec::new();
    for _ in 0..200 {
        let mut connection = bench.target.connect(None).await?;
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": bench.password,
        });
        let login = connection.ok("POST", "/_matrix/client/v3/login", Some(&body)).await?;
        connection.token = login["access_token"].as_str().map(str::to_owned);
        let first = connection.ok("GET", "/_matrix/client/v3/sync?timeout=0", None).await?;
        let since = first["next_batch"].as_str().unwrap_or_default().to_owned();
        waiting.push(tokio::spawn(async move {
            let path = format!("/_matrix/client/v3/sync?timeout=20000&since={}", enc(&since));
            connection.call("GET", &path, None).await.map(|(status, _)| status)
        }));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let files = open_files(bench.pid());
    let rss = rss_kib(bench.pid());
    let mut statuses = std::collections::BTreeMap::new();
    for task in waiting {
        let status = task.await.map_err(|e| e.to_string())?.map_or_else(|e| e, |s| s.to_string());
        *statuses.entry(status).or_insert(0) += 1;
    }
    Ok(format!("200 devices of one user waiting ({files} open files, {:.1} MiB): {statuses:?}", mib(rss)))
}

async fn run(binary: PathBuf, options: Options) -> Result<()> {
    let server = start_server(&binary).await?;
    let target = Target { addr: server.addr, host: "abuse.local".to_owned() };
    let password = "abuse-tool-password".to_owned();
    let normal = support::register(&target, &format!("normal{}", random_suffix()), &password, None).await?;
    let mut connection = target.connect(Some(&normal)).await?;
    let room = connection.ok("POST", "/_matrix/client/v3/createRoom", Some(&json!({}))).await?;
    let room = room["room_id"].as_str().ok_or("no room id")?.to_owned();
    let bench =
        Bench { server, target, normal, room, settle: options.settle, registered: Default::default(), password };
    println!("conduit pid {} at {}, idle RSS {:.1} MiB", bench.pid(), bench.server.addr, mib(rss_kib(bench.pid())));
    for phase in &options.phases {
        let connections = options.connections;
        match phase.as_str() {
            "register-100" => bench.measure(phase, || register_burst(&bench, 100)).await?,
            "register-1000" => bench.measure(phase, || register_burst(&bench, 1000)).await?,
            "login-100" => bench.measure(phase, || login_burst(&bench, 100)).await?,
            "login-1000" => bench.measure(phase, || login_burst(&bench, 1000)).await?,
            "idle" => bench.measure(phase, || hold_connections(&bench, connections, b"", b"")).await?,
            "h2-preface" => {
                bench.measure(phase, || hold_connections(&bench, connections, b"PRI * HTTP/2.0\r\n", b"")).await?
            }
            "slow-headers" => {
                let trickle =
                    b"GET /_matrix/client/versions HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                bench.measure(phase, || hold_connections(&bench, connections, b"", trickle)).await?
            }
            "big-json" => bench.measure(phase, || big_json(&bench)).await?,
            "deep-json" => bench.measure(phase, || deep_json(&bench)).await?,
            "huge-filter" => bench.measure(phase, || huge_filter(&bench)).await?,
            "long-polls" => bench.measure(phase, || long_polls(&bench)).await?,
            _ => {}
        }
    }
    Ok(())
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("abuse: {error}");
            std::process::exit(2);
        }
    };
    let binary = options.binary.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_conduit")));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(error) = runtime.block_on(run(binary, options)) {
        eprintln!("abuse: {error}");
        std::process::exit(1);
    }
}
