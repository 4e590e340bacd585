//! The reference network on one machine: `--servers N` conduit release
//! binaries (16 ministries and the external partners' server for N = 17),
//! each on loopback TLS with a certificate of a CA made here, each knowing
//! the others through `federation.destinations` — pointed at a TCP proxy per
//! (server, destination) link, which counts the federation traffic and can
//! cut the network in two.
//!
//! `--users M` accounts spread over the servers. Rooms that span servers:
//! each ministry's rooms (its users in groups of 50, and the next server's
//! watcher), a few large forums (every server's watcher and 10 users of each
//! server), DMs between users of different servers. Then, for `--seconds`,
//! messages at `--rate` per second from random members; each server's
//! watcher long-polls `/sync` and notes when each message arrived.
//!
//! Reported: cross-server delivery p50/p99 (send on one server → a watcher
//! on another has it), messages per second, each server's peak RSS during
//! the load, the federation traffic (bytes and TCP connections through the
//! proxies), and the closing line outside scripts read:
//! `federation: servers=… users=… messages=… p50_ms=… p99_ms=… max_rss_mb=… lost=…`
//! (`lost`: messages some member never received).
//!
//! `--partition`: the middle third of the load runs with the network cut in
//! two halves, both sending and changing the forums' state (names, power
//! levels, bans); after healing, every server must hold the same state for
//! every forum and every message must have reached every member; the run
//! ends with `N passed, N failed`.
//!
//! The servers log errors only; `NETWORK_BENCH_LOG` sets their log filter
//! and `NETWORK_BENCH_LOG_DIR` a directory for one log file per server.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{watch, Semaphore},
};

use crate::{
    support::{self, enc, random_suffix, Connection, Result, Target},
    Certificates,
};

/// What the network run is asked for.
pub struct NetworkOptions {
    pub servers: usize,
    pub users: usize,
    pub seconds: u64,
    pub rate: f64,
    pub partition: bool,
    pub cache_mb: u64,
}

const FORUMS: usize = 3;
const FORUM_MEMBERS_PER_SERVER: usize = 10;
const MINISTRY_ROOM_SIZE: usize = 50;
const CONCURRENCY: usize = 8;

/// A TCP proxy for one (server, destination) link: counts bytes and
/// connections, and while cut refuses new connections and drops live ones.
pub(crate) struct Link {
    port: u16,
    cut: watch::Sender<bool>,
    bytes: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
}

impl Link {
    async fn to(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let (cut, watching) = watch::channel(false);
        let (bytes, connections) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (counted, opened) = (Arc::clone(&bytes), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if *watching.borrow() {
                    continue; // dropped: the link is down
                }
                opened.fetch_add(1, Ordering::Relaxed);
                let (watching, counted) = (watching.clone(), Arc::clone(&counted));
                tokio::spawn(relay(inbound, target, watching, counted));
            }
        });
        Ok(Self { port, cut, bytes, connections })
    }

    fn set_cut(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }
}

/// Copies both ways until either side closes or the link is cut.
async fn relay(inbound: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>, bytes: Arc<AtomicU64>) {
    let Ok(outbound) = TcpStream::connect(target).await else { return };
    let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
    let (inbound_read, inbound_write) = inbound.into_split();
    let (outbound_read, outbound_write) = outbound.into_split();
    let copy = |mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf| {
        let bytes = Arc::clone(&bytes);
        async move {
            let mut buffer = vec![0; 64 * 1024];
            while let Ok(read @ 1..) = from.read(&mut buffer).await {
                bytes.fetch_add(read as u64, Ordering::Relaxed);
                if to.write_all(&buffer[..read]).await.is_err() {
                    break;
                }
            }
        }
    };
    tokio::select! {
        _ = copy(inbound_read, outbound_write) => {}
        _ = copy(outbound_read, inbound_write) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}

/// One server of the network.
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) client: SocketAddr,
    process: support::Process,
}

impl Server {
    pub(crate) fn pid(&self) -> u32 {
        self.process.child.id()
    }
}

/// A port for a server's listener, named in other servers' configuration
/// before it is bound: taken below the kernel's ephemeral range, where the
/// proxies' and clients' own sockets (bound to port 0) never land.
fn low_port() -> Result<u16> {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 12_000 + (std::process::id() % 6_000) as u16;
    let _ = NEXT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..10_000 {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        if port < 30_000 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port below the ephemeral range".into())
}

fn server_names(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            if i + 1 == count && count > 2 {
                "externes.gouv.test".to_owned()
            } else {
                format!("m{:02}.gouv.test", i + 1)
            }
        })
        .collect()
}

/// Starts every server, with a link per (server, destination).
pub(crate) async fn start_network(
    binary: &Path,
    certs: &Certificates,
    names: &[String],
    cache_mb: u64,
) -> Result<(Vec<Server>, HashMap<(usize, usize), Link>)> {
    let mut federation_ports = Vec::new();
    for _ in names {
        federation_ports.push(low_port()?);
    }
    let mut links = HashMap::new();
    for from in 0..names.len() {
        for to in (0..names.len()).filter(|to| *to != from) {
            let target = SocketAddr::from(([127, 0, 0, 1], federation_ports[to]));
            links.insert((from, to), Link::to(target).await?);
        }
    }
    // The servers' log filter: errors only, unless NETWORK_BENCH_LOG says otherwise.
    let log = std::env::var("NETWORK_BENCH_LOG").unwrap_or_else(|_| "error".to_owned());
    let mut servers = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let client_port = low_port()?;
        let destinations: String = (0..names.len())
            .filter(|to| *to != index)
            .map(|to| format!("\"{}\" = \"127.0.0.1:{}\"\n", names[to], links[&(index, to)].port))
            .collect();
        let config = format!(
            "server_name = \"{name}\"\ndatabase_path = {:?}\nregistration = \"open\"\nlog = {log:?}\n\
             database_cache_mb = {cache_mb}\npresence = false\n\
             [[listeners]]\naddress = \"127.0.0.1:{client_port}\"\n\
             [[listeners]]\naddress = \"127.0.0.1:{}\"\ntls = {{ certificate = {:?}, key = {:?} }}\n\
             [federation]\nca_file = {:?}\nallow_private_addresses = true\nmax_retry_interval_secs = 10\n\
             [federation.destinations]\n{destinations}",
            dir.path().join("db").display().to_string(),
            federation_ports[index],
            certs.path("leaf.pem").display().to_string(),
            certs.path("leaf.key").display().to_string(),
            certs.path("ca.pem").display().to_string(),
        );
        // NETWORK_BENCH_LOG_DIR: each server's log in a file of its own there.
        let log = match std::env::var_os("NETWORK_BENCH_LOG_DIR") {
            Some(log_dir) => {
                let path = Path::new(&log_dir).join(format!("{name}.log"));
                std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?.into()
            }
            None => std::process::Stdio::inherit(),
        };
        let process = support::spawn_conduit_logging(binary, &config, dir, log)?;
        servers.push(Server { name: name.clone(), client: SocketAddr::from(([127, 0, 0, 1], client_port)), process });
    }
    for (server, port) in servers.iter().zip(&federation_ports) {
        support::wait_listening(server.client).await?;
        support::wait_listening(SocketAddr::from(([127, 0, 0, 1], *port))).await?;
    }
    Ok((servers, links))
}

/// An account of one server.
#[derive(Clone)]
pub(crate) struct Member {
    pub(crate) server: usize,
    pub(crate) user_id: String,
    pub(crate) token: String,
    pub(crate) client: SocketAddr,
}

impl Member {
    pub(crate) async fn connect(&self) -> Result<Connection> {
        Connection::open(self.client, "localhost", Some(self.token.clone())).await
    }
}

/// Runs `work` over `items` with at most `CONCURRENCY` at once; the results in order.
pub(crate) async fn concurrently<T, R, F, Fut>(items: Vec<T>, work: F) -> Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<R>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let work = Arc::new(work);
    let mut tasks = Vec::new();
    for item in items {
        let (permits, work) = (Arc::clone(&permits), Arc::clone(&work));
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire().await.map_err(|e| e.to_string())?;
            work(item).await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.map_err(|e| e.to_string())??);
    }
    Ok(results)
}

async fn register_all(servers: &[Server], users: usize) -> Result<Vec<Member>> {
    let run = random_suffix();
    let plan: Vec<(usize, SocketAddr, String)> =
        (0..users).map(|n| (n % servers.len(), servers[n % servers.len()].client, format!("agent{n}x{run}"))).collect();
    concurrently(plan, |(server, client, name)| register_member(server, client, name)).await
}

/// Registers `name` on `server` (its client listener `client`).
pub(crate) async fn register_member(server: usize, client: SocketAddr, name: String) -> Result<Member> {
    let target = Target { addr: client, host: "localhost".to_owned() };
    let (status, reply) = support::register_raw(&target, &name, "bench-password-1", None).await?;
    if status != 200 {
        return Err(format!("register {name}: {status} {reply}"));
    }
    let field = |key: &str| reply[key].as_str().map(str::to_owned).ok_or(format!("no {key}"));
    Ok(Member { server, user_id: field("user_id")?, token: field("access_token")?, client })
}

/// A room of the network and its members.
struct Room {
    id: String,
    members: Vec<Member>,
    /// Members never chosen to send (ban targets in a partition run).
    silent: Vec<Member>,
    /// Who may change the state: one admin per half of the network.
    admins: Vec<Member>,
}

pub(crate) async fn create_room(creator: &Member, body: Value) -> Result<String> {
    let reply = creator.connect().await?.ok("POST", "/_matrix/client/v3/createRoom", Some(&body)).await?;
    reply["room_id"].as_str().map(str::to_owned).ok_or_else(|| "no room_id".to_owned())
}

/// Joins `members` to `room` (through `via`'s server), a few at a time.
pub(crate) async fn join_all(room: &str, via: &str, members: Vec<Member>) -> Result<()> {
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(room), enc(via));
    concurrently(members, move |member| {
        let path = path.clone();
        async move { member.connect().await?.ok("POST", &path, Some(&json!({}))).await.map(|_| ()) }
    })
    .await
    .map(|_| ())
}

/// The rooms of the network: ministry rooms, forums, DMs.
struct Rooms {
    ministries: Vec<Room>,
    forums: Vec<Room>,
    dms: Vec<Room>,
}

async fn build_rooms(servers: &[Server], members: &[Member], watchers: &[Member]) -> Result<Rooms> {
    let count = servers.len();
    let mut ministries = Vec::new();
    for server in 0..count {
        let local: Vec<Member> = members.iter().filter(|m| m.server == server).cloned().collect();
        for group in local.chunks(MINISTRY_ROOM_SIZE) {
            let creator = &group[0];
            let id = create_room(creator, json!({ "preset": "public_chat", "name": "Bureau" })).await?;
            let next_watcher = watchers[(server + 1) % count].clone();
            let mut joining: Vec<Member> = group[1..].to_vec();
            if next_watcher.server != server {
                joining.push(next_watcher);
            }
            join_all(&id, &servers[server].name, joining.clone()).await?;
            let mut room_members = vec![creator.clone()];
            room_members.extend(joining);
            ministries.push(Room { id, members: room_members, silent: Vec::new(), admins: vec![creator.clone()] });
        }
    }
    println!("network: {} ministry rooms", ministries.len());
    let mut forums = Vec::new();
    for forum in 0..FORUMS.min(count) {
        let creator = watchers[forum].clone();
        // A second admin on the other half, for the partition run.
        let other_admin = watchers[count - 1 - forum].clone();
        let id = create_room(&creator, json!({ "preset": "public_chat", "name": format!("Forum {forum}") })).await?;
        let mut joining: Vec<Member> = watchers.iter().filter(|w| w.user_id != creator.user_id).cloned().collect();
        let mut silent = Vec::new();
        for server in 0..count {
            let local: Vec<&Member> = members
                .iter()
                .filter(|m| m.server == server && !watchers.iter().any(|w| w.user_id == m.user_id))
                .skip(forum * FORUM_MEMBERS_PER_SERVER)
                .take(FORUM_MEMBERS_PER_SERVER)
                .collect();
            if let Some(last) = local.last() {
                silent.push((*last).clone());
            }
            joining.extend(local.into_iter().cloned());
        }
        join_all(&id, &servers[creator.server].name, joining.clone()).await?;
        if other_admin.user_id != creator.user_id {
            // (In version 12 the creator's power is implied, not listed.)
            let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&id));
            let mut connection = creator.connect().await?;
            let mut levels = connection.ok("GET", &path, None).await?;
            levels["users"][other_admin.user_id.as_str()] = json!(100);
            connection.ok("PUT", &path, Some(&levels)).await?;
        }
        let mut room_members = vec![creator.clone()];
        room_members.extend(joining);
        forums.push(Room { id, members: room_members, silent, admins: vec![creator, other_admin] });
    }
    println!("network: {} forums of {} members", forums.len(), forums.first().map_or(0, |f| f.members.len()));
    let mut dms = Vec::new();
    let dm_count = members.len() / 50;
    for n in 0..dm_count {
        let a = &members[(n * 7 + 1) % members.len()];
        let b = &members[(n * 13 + 2) % members.len()];
        if a.server == b.server || a.user_id == b.user_id {
            continue;
        }
        let body = json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [b.user_id] });
        let id = create_room(a, body).await?;
        join_all(&id, &servers[a.server].name, vec![b.clone()]).await?;
        dms.push(Room { id, members: vec![a.clone(), b.clone()], silent: Vec::new(), admins: Vec::new() });
    }
    println!("network: {} DMs across servers", dms.len());
    Ok(Rooms { ministries, forums, dms })
}

/// A message sent during the load: where, by whom, when.
struct Sent {
    room: RoomRef,
    sender_server: usize,
    at: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum RoomRef {
    Ministry(usize),
    Forum(usize),
    Dm(usize),
}

/// What the watchers saw: (watcher, message) → when.
type Arrivals = Arc<Mutex<HashMap<(usize, u64), Instant>>>;

/// A watcher's endless long poll, noting each message of the run it sees.
async fn watch_sync(watcher: usize, member: Member, run: String, arrivals: Arrivals, stop: watch::Receiver<bool>) {
    let filter = enc(&json!({
        "room": {
            "timeline": { "limit": 1000, "types": ["m.room.message"] },
            "state": { "lazy_load_members": true, "types": [] },
            "ephemeral": { "types": [] },
            "account_data": { "types": [] },
        },
        "presence": { "types": [] },
        "account_data": { "types": [] },
    })
    .to_string());
    let mut since: Option<String> = None;
    while !*stop.borrow() {
        let Ok(mut connection) = member.connect().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        loop {
            if *stop.borrow() {
                return;
            }
            let path = match &since {
                Some(token) => format!("/_matrix/client/v3/sync?since={token}&timeout=5000&filter={filter}"),
                None => format!("/_matrix/client/v3/sync?timeout=0&filter={filter}"),
            };
            let Ok((200, sync)) = connection.call("GET", &path, None).await else { break };
            let arrived = Instant::now();
            since = sync["next_batch"].as_str().map(str::to_owned).or(since);
            let rooms = sync["rooms"]["join"].as_object().cloned().unwrap_or_default();
            let mut seen = arrivals.lock().unwrap_or_else(|p| p.into_inner());
            for event in
                rooms.values().flat_map(|room| room["timeline"]["events"].as_array().cloned().unwrap_or_default())
            {
                let Some(body) = event["content"]["body"].as_str() else { continue };
                let Some(seq) = body.strip_prefix(&run).and_then(|rest| rest.parse::<u64>().ok()) else { continue };
                seen.entry((watcher, seq)).or_insert(arrived);
            }
        }
    }
}

/// The watchers that must see a message sent in `room`.
fn expected_watchers(room: RoomRef, rooms: &Rooms, watchers: &[Member]) -> Vec<usize> {
    let members = match room {
        RoomRef::Ministry(n) => &rooms.ministries[n].members,
        RoomRef::Forum(n) => &rooms.forums[n].members,
        RoomRef::Dm(_) => return Vec::new(),
    };
    (0..watchers.len()).filter(|w| members.iter().any(|m| m.user_id == watchers[*w].user_id)).collect()
}

/// Picks a room and a sender for message `seq` (a simple deterministic mix:
/// 6 in 10 to a forum, 2 to a DM, 2 to a ministry room).
fn pick(seq: u64, rooms: &Rooms) -> Option<(RoomRef, Member)> {
    let spread = seq.wrapping_mul(2_654_435_761);
    let (room, list) = match seq % 10 {
        0..=5 if !rooms.forums.is_empty() => {
            let n = (spread as usize) % rooms.forums.len();
            (RoomRef::Forum(n), &rooms.forums[n])
        }
        6 | 7 if !rooms.dms.is_empty() => {
            let n = (spread as usize) % rooms.dms.len();
            (RoomRef::Dm(n), &rooms.dms[n])
        }
        _ if !rooms.ministries.is_empty() => {
            let n = (spread as usize) % rooms.ministries.len();
            (RoomRef::Ministry(n), &rooms.ministries[n])
        }
        _ => return None,
    };
    let speakers: Vec<&Member> =
        list.members.iter().filter(|m| !list.silent.iter().any(|s| s.user_id == m.user_id)).collect();
    let sender = speakers.get(((spread >> 16) as usize) % speakers.len().max(1))?;
    Some((room, (*sender).clone()))
}

fn room_id(room: RoomRef, rooms: &Rooms) -> &str {
    match room {
        RoomRef::Ministry(n) => &rooms.ministries[n].id,
        RoomRef::Forum(n) => &rooms.forums[n].id,
        RoomRef::Dm(n) => &rooms.dms[n].id,
    }
}

/// Sends messages at `rate` per second for `duration`; what was sent.
async fn send_load(
    rooms: &Arc<Rooms>,
    run: &str,
    first_seq: u64,
    rate: f64,
    duration: Duration,
    sent: &Arc<Mutex<HashMap<u64, Sent>>>,
) -> Result<u64> {
    let permits = Arc::new(Semaphore::new(64));
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let started = Instant::now();
    let mut seq = first_seq;
    let mut tasks = Vec::new();
    while started.elapsed() < duration {
        let Some((room, sender)) = pick(seq, rooms) else { break };
        let permit = Arc::clone(&permits).acquire_owned().await.map_err(|e| e.to_string())?;
        let (rooms, sent, body) = (Arc::clone(rooms), Arc::clone(sent), format!("{run}{seq}"));
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{body}", enc(room_id(room, &rooms)));
            let at = Instant::now();
            let mut connection = sender.connect().await?;
            connection.ok("PUT", &path, Some(&json!({ "msgtype": "m.text", "body": body }))).await?;
            sent.lock().unwrap_or_else(|p| p.into_inner()).insert(seq, Sent { room, sender_server: sender.server, at });
            Ok::<(), String>(())
        }));
        seq += 1;
        let next = started + interval.mul_f64((seq - first_seq) as f64);
        tokio::time::sleep_until(next.into()).await;
    }
    let mut failures = 0;
    for task in tasks {
        if task.await.map_err(|e| e.to_string())?.is_err() {
            failures += 1;
        }
    }
    if failures > 0 {
        println!("network: {failures} sends failed");
    }
    Ok(seq)
}

/// Peak RSS (VmHWM) of a process, in MiB, since the last reset.
pub(crate) fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Resets a process's peak RSS to its current RSS (Linux `clear_refs` 5).
fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// State changes of both halves during a partition: names, power levels, bans.
async fn change_state_in_halves(rooms: &Rooms, round: usize) -> Result<()> {
    for (n, forum) in rooms.forums.iter().enumerate() {
        for (side, admin) in forum.admins.iter().enumerate() {
            let mut connection = admin.connect().await?;
            let room = enc(&forum.id);
            let name = json!({ "name": format!("Forum {n} ({side}-{round})") });
            let _ = connection
                .call("PUT", &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"), Some(&name))
                .await;
            if round == 0 {
                // Each side bans one silent member, and raises another member.
                if let Some(target) = forum.silent.get(side) {
                    let ban = json!({ "user_id": target.user_id, "reason": "partition test" });
                    let _ = connection.call("POST", &format!("/_matrix/client/v3/rooms/{room}/ban"), Some(&ban)).await;
                }
                let state = format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/");
                if let Ok((200, mut levels)) = connection.call("GET", &state, None).await {
                    if let Some(raised) = forum.members.get(2 + side) {
                        levels["users"][raised.user_id.as_str()] = json!(50);
                        let _ = connection.call("PUT", &state, Some(&levels)).await;
                    }
                }
            }
        }
    }
    Ok(())
}

/// A room's current state as (type, state_key, event id), sorted.
type StateEntries = Vec<(String, String, String)>;

/// Every server's current state of `room`, as (type, state_key) → event id.
async fn states_of(room: &Room, watchers: &[Member]) -> Vec<Option<StateEntries>> {
    let mut states = Vec::new();
    for watcher in watchers {
        let path = format!("/_matrix/client/v3/rooms/{}/state", enc(&room.id));
        let state = match watcher.connect().await {
            Ok(mut connection) => connection.call("GET", &path, None).await.ok(),
            Err(_) => None,
        };
        states.push(state.and_then(|(status, events)| {
            let events = events.as_array().filter(|_| status == 200)?.clone();
            let mut state: Vec<(String, String, String)> = events
                .iter()
                .map(|e| {
                    let text = |key: &str| e[key].as_str().unwrap_or_default().to_owned();
                    (text("type"), text("state_key"), text("event_id"))
                })
                .collect();
            state.sort();
            Some(state)
        }));
    }
    states
}

/// Of the (watcher, message) deliveries the syncs never showed: how many
/// messages are still missing from a watcher's `/messages` history, and how
/// many deliveries were found there.
async fn check_history(
    expected: &HashMap<u64, Vec<usize>>,
    sent: &HashMap<u64, Sent>,
    arrivals: &Arrivals,
    watchers: &[Member],
    rooms: &Rooms,
    run: &str,
) -> (usize, usize) {
    let mut wanted: HashMap<(usize, String), HashSet<String>> = HashMap::new();
    {
        let seen = arrivals.lock().unwrap_or_else(|p| p.into_inner());
        for (seq, watcher_list) in expected {
            let Some(message) = sent.get(seq) else { continue };
            for watcher in watcher_list.iter().filter(|w| !seen.contains_key(&(**w, *seq))) {
                let room = room_id(message.room, rooms).to_owned();
                wanted.entry((*watcher, room)).or_default().insert(format!("{run}{seq}"));
            }
        }
    }
    let (mut lost_messages, mut found) = (HashSet::new(), 0);
    for ((watcher, room), bodies) in wanted {
        let history = history_bodies(&watchers[watcher], &room).await;
        for body in bodies {
            if history.contains(&body) {
                found += 1;
            } else {
                lost_messages.insert(body);
            }
        }
    }
    (lost_messages.len(), found)
}

/// The message bodies of a room's history as `member` reads it (a few pages back).
async fn history_bodies(member: &Member, room: &str) -> HashSet<String> {
    let mut bodies = HashSet::new();
    let Ok(mut connection) = member.connect().await else { return bodies };
    let mut from: Option<String> = None;
    for _ in 0..10 {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=500", enc(room));
        if let Some(token) = &from {
            path.push_str(&format!("&from={}", enc(token)));
        }
        let Ok((200, page)) = connection.call("GET", &path, None).await else { break };
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        bodies.extend(chunk.iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)));
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    bodies
}

/// The state entries on which servers disagree: each server's event for them.
fn report_state_difference(states: &[Option<StateEntries>], servers: &[Server]) {
    let mut by_key: std::collections::BTreeMap<(String, String), Vec<(String, String)>> = Default::default();
    for (server, state) in servers.iter().zip(states) {
        let Some(state) = state else {
            println!("network:   {} gave no state", server.name);
            continue;
        };
        for (kind, key, event) in state {
            by_key.entry((kind.clone(), key.clone())).or_default().push((server.name.clone(), event.clone()));
        }
    }
    let answered = states.iter().filter(|s| s.is_some()).count();
    for ((kind, key), events) in by_key {
        let distinct: HashSet<&String> = events.iter().map(|(_, event)| event).collect();
        if distinct.len() > 1 || events.len() != answered {
            println!("network:   {kind} {key:?}: {events:?}");
        }
    }
}

/// Names the first few messages some watcher never received: which room,
/// from which server, missing where.
fn report_missing(
    expected: &HashMap<u64, Vec<usize>>,
    sent: &HashMap<u64, Sent>,
    arrivals: &Arrivals,
    watchers: &[Member],
    servers: &[Server],
) {
    let seen = arrivals.lock().unwrap_or_else(|p| p.into_inner());
    let mut reported = 0;
    for (seq, wanted) in expected {
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|w| !seen.contains_key(&(**w, *seq)))
            .map(|w| servers[watchers[*w].server].name.as_str())
            .collect();
        if missing.is_empty() || reported == 5 {
            continue;
        }
        reported += 1;
        let Some(message) = sent.get(seq) else { continue };
        let kind = match message.room {
            RoomRef::Ministry(n) => format!("ministry room {n}"),
            RoomRef::Forum(n) => format!("forum {n}"),
            RoomRef::Dm(n) => format!("DM {n}"),
        };
        println!(
            "network: message {seq} ({kind}, from {}) never reached the watchers of {missing:?}",
            servers[message.sender_server].name
        );
    }
}

/// How many of the messages sent into a DM one of its members lacks (the
/// most any member lacks).
async fn dm_lost(room: &Room, sent_bodies: &HashSet<String>) -> usize {
    if sent_bodies.is_empty() {
        return 0;
    }
    let mut found = HashMap::new();
    for member in &room.members {
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(&room.id));
        let Ok(mut connection) = member.connect().await else { continue };
        if let Ok((200, page)) = connection.call("GET", &path, None).await {
            let bodies: HashSet<String> = page["chunk"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect();
            found.insert(member.user_id.clone(), sent_bodies.iter().filter(|b| !bodies.contains(*b)).count());
        }
    }
    found.values().copied().max().unwrap_or(sent_bodies.len())
}

pub async fn run(binary: &Path, options: &NetworkOptions) -> Result<()> {
    let names = server_names(options.servers);
    let certs = Certificates::for_names(&names)?;
    let started = Instant::now();
    let (servers, links) = start_network(binary, &certs, &names, options.cache_mb).await?;
    println!("network: {} servers started in {:.1} s", servers.len(), started.elapsed().as_secs_f64());
    let setup = Instant::now();
    let members = register_all(&servers, options.users.max(servers.len())).await?;
    println!("network: {} users registered in {:.1} s", members.len(), setup.elapsed().as_secs_f64());
    let watchers: Vec<Member> = (0..servers.len()).map(|s| members[s].clone()).collect();
    let rooms = Arc::new(build_rooms(&servers, &members, &watchers).await?);
    println!("network: set up in {:.1} s", setup.elapsed().as_secs_f64());

    let run = format!("m{}-", random_suffix());
    let arrivals: Arrivals = Arc::default();
    let (stop, stopping) = watch::channel(false);
    for (index, watcher) in watchers.iter().enumerate() {
        tokio::spawn(watch_sync(index, watcher.clone(), run.clone(), Arc::clone(&arrivals), stopping.clone()));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // the watchers' first syncs
    for server in &servers {
        reset_peak_rss(server.pid());
    }
    let bytes_before: u64 = links.values().map(|l| l.bytes.load(Ordering::Relaxed)).sum();
    let connections_before: u64 = links.values().map(|l| l.connections.load(Ordering::Relaxed)).sum();
    let sent: Arc<Mutex<HashMap<u64, Sent>>> = Arc::default();
    let load_started = Instant::now();
    let total = Duration::from_secs(options.seconds);
    let mut partition_checks = None;
    if options.partition {
        let third = total / 3;
        let mut seq = send_load(&rooms, &run, 0, options.rate, third, &sent).await?;
        let half = servers.len() / 2;
        let crosses = |(from, to): &(usize, usize)| (*from < half) != (*to < half);
        for (_, link) in links.iter().filter(|(key, _)| crosses(key)) {
            link.set_cut(true);
        }
        println!("network: cut into {} + {} servers", half, servers.len() - half);
        let cut_started = Instant::now();
        let mut round = 0;
        let changes = async {
            while cut_started.elapsed() < third {
                change_state_in_halves(&rooms, round).await?;
                round += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Ok::<(), String>(())
        };
        let (during, changed) = tokio::join!(send_load(&rooms, &run, seq, options.rate, third, &sent), changes);
        seq = during?;
        changed?;
        for link in links.values() {
            link.set_cut(false);
        }
        println!("network: healed");
        send_load(&rooms, &run, seq, options.rate, third, &sent).await?;
        partition_checks = Some(());
    } else {
        send_load(&rooms, &run, 0, options.rate, total, &sent).await?;
    }
    let load_time = load_started.elapsed();

    // Drain: until every watcher has what it should, or two minutes.
    let expected: HashMap<u64, Vec<usize>> = {
        let sent = sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.iter().map(|(seq, s)| (*seq, expected_watchers(s.room, &rooms, &watchers))).collect()
    };
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    let missing = || {
        let seen = arrivals.lock().unwrap_or_else(|p| p.into_inner());
        expected.iter().filter(|(seq, ws)| ws.iter().any(|w| !seen.contains_key(&(*w, **seq)))).count()
    };
    while missing() > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop.send(true);
    let max_rss = servers.iter().map(|s| peak_rss_mb(s.pid())).fold(0.0, f64::max);
    let bytes = links.values().map(|l| l.bytes.load(Ordering::Relaxed)).sum::<u64>() - bytes_before;
    let connections_total: u64 = links.values().map(|l| l.connections.load(Ordering::Relaxed)).sum();
    let connections = connections_total - connections_before;

    // The load is over: what was sent is read without the lock.
    let sent: HashMap<u64, Sent> = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));
    let mut samples = Vec::new();
    {
        let seen = arrivals.lock().unwrap_or_else(|p| p.into_inner());
        for (seq, message) in sent.iter() {
            for watcher in expected.get(seq).into_iter().flatten() {
                if watchers[*watcher].server == message.sender_server {
                    continue; // local delivery is not federation
                }
                if let Some(arrived) = seen.get(&(*watcher, *seq)) {
                    samples.push(arrived.saturating_duration_since(message.at));
                }
            }
        }
    }
    report_missing(&expected, &sent, &arrivals, &watchers, &servers);
    // A message a watcher's sync never showed may still be in its history:
    // its server left a gap (fetched later by backfill, as the spec allows).
    let (mut lost, backfilled) = check_history(&expected, &sent, &arrivals, &watchers, &rooms, &run).await;
    if backfilled > 0 {
        println!(
            "network: {backfilled} deliveries missing from the watchers' syncs were found in their history (/messages)"
        );
    }
    let mut dm_bodies: HashMap<usize, HashSet<String>> = HashMap::new();
    for (seq, message) in sent.iter() {
        if let RoomRef::Dm(n) = message.room {
            dm_bodies.entry(n).or_default().insert(format!("{run}{seq}"));
        }
    }
    for (n, bodies) in &dm_bodies {
        let missing = dm_lost(&rooms.dms[*n], bodies).await;
        if missing > 0 {
            let servers_of: Vec<&str> = rooms.dms[*n].members.iter().map(|m| servers[m.server].name.as_str()).collect();
            println!("network: DM {} between {servers_of:?} lacks {missing} messages", rooms.dms[*n].id);
        }
        lost += missing;
    }
    samples.sort();
    let (count, p50, p99, _) = support::summary(samples);
    let messages = sent.len();
    println!("network: {count} cross-server deliveries measured");
    println!(
        "network: {messages} messages in {:.1} s ({:.1}/s), federation traffic {:.1} MiB, {connections} new connections (TLS connections are kept alive: {connections_total} since start)",
        load_time.as_secs_f64(),
        messages as f64 / load_time.as_secs_f64(),
        bytes as f64 / 1024.0 / 1024.0,
    );
    for server in &servers {
        println!("network: {} peak RSS {:.1} MiB", server.name, peak_rss_mb(server.pid()));
    }
    if partition_checks.is_some() {
        let (mut passed, mut failed) = (0, 0);
        for forum in &rooms.forums {
            let deadline = Instant::now() + Duration::from_secs(60);
            let same = loop {
                let states = states_of(forum, &watchers).await;
                let same = states.iter().all(|s| s.is_some() && *s == states[0]);
                if same || Instant::now() > deadline {
                    break same;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            println!("{} - every server holds the same state for {}", if same { "ok" } else { "not ok" }, forum.id);
            if !same {
                report_state_difference(&states_of(forum, &watchers).await, &servers);
            }
            if same {
                passed += 1
            } else {
                failed += 1
            }
        }
        println!("{} - every message reached every member ({lost} lost)", if lost == 0 { "ok" } else { "not ok" });
        if lost == 0 {
            passed += 1
        } else {
            failed += 1
        }
        println!("{passed} passed, {failed} failed");
    }
    println!(
        "federation: servers={} users={} messages={messages} p50_ms={:.1} p99_ms={:.1} max_rss_mb={:.1} lost={lost}",
        servers.len(),
        members.len(),
        p50,
        p99,
        max_rss,
    );
    Ok(())
}
