//! A homeserver-agnostic load tool: it speaks only the standard client-server
//! API (register with dummy auth, createRoom, join, send, sync), so it runs
//! against this server or any other.
//!
//! ```text
//! cargo bench --bench load -- [--base-url http://127.0.0.1:6167] [--users 20] [--rooms 100]
//!     [--messages 20] [--probes 200] [--password PW] [--registration-token TOKEN] [--pushes] [--search]
//!     [--fill N [--redact N]] [--big-room N]
//! ```
//!
//! `--fill N` registers the users, creates the rooms, sends N messages in all
//! (chat lines of about 60 characters, every user at once) and stops: a large
//! database made reproducibly, to measure its size, start-up and memory
//! (`benches/startup.rs`); with `--redact M`, the senders then redact M of
//! those messages (their own first ones, every user at once): what
//! redactions cost. `--big-room N` puts N users in one room and
//! reports `--probes` sequential sends there.
//!
//! Without `--base-url` it starts this server in-process on 127.0.0.1 (fresh
//! temporary database, open registration) and loads it. Plain HTTP only (put
//! the tool next to the server, or behind the server's own plain listener).
//!
//! What it does and reports:
//! 1. registers `users` accounts (names with a random suffix, so reruns against
//!    the same server do not collide); the first creates `rooms` public rooms
//!    and everyone joins every room;
//! 2. **send**: every user, concurrently, sends `messages` messages spread over
//!    the rooms: messages per second, p50/p99 send latency;
//! 3. **initial sync** of one user (in every room);
//! 4. **incremental sync**: `probes` times, one new message then `/sync?since=`
//!    with `timeout=0` by another user: p50/p99 latency;
//! 5. **delivery**: `probes` times, a user waits in a long-polling `/sync`, another
//!    sends; the delay from the start of the send until the waiting sync returns it.
//! 6. with `--pushes`: every user sets an http pusher to a push gateway the tool
//!    runs on 127.0.0.1 (the server must allow private gateways; the in-process
//!    server does). **Push latency**: `probes` times one message, then the time
//!    until the gateway has the push for every other member; **push throughput**:
//!    every user sends `messages` messages at once, then the time until the
//!    gateway has all their pushes.
//! 7. with `--search`: `POST /search` by a member of every room, for a word in
//!    every message sent so far and for a word in none: p50/p99 latency.
//!
//! Latencies are observed by the client (loopback HTTP included).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

mod support;
use support::{enc, random_suffix, report, Account, Connection, Result, Target};

struct Options {
    base_url: Option<String>,
    users: usize,
    rooms: usize,
    messages: usize,
    probes: usize,
    password: String,
    registration_token: Option<String>,
    pushes: bool,
    search: bool,
    /// Send this many messages in all, report, and stop (a database to measure).
    fill: usize,
    /// After the fill, redact this many of its messages.
    redact: usize,
    /// Members of the one room of the big-room run (0: no such run).
    big_room: usize,
}

fn parse_options() -> Result<Options> {
    let mut options = Options {
        base_url: None,
        users: 20,
        rooms: 100,
        messages: 20,
        probes: 200,
        password: "load-tool-password".to_owned(),
        pushes: false,
        search: false,
        registration_token: None,
        fill: 0,
        redact: 0,
        big_room: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let number = |text: String| text.parse::<usize>().map_err(|_| format!("not a number: {text}"));
        match arg.as_str() {
            "--base-url" => options.base_url = Some(value()?),
            "--users" => options.users = number(value()?)?.max(2),
            "--rooms" => options.rooms = number(value()?)?.max(1),
            "--messages" => options.messages = number(value()?)?,
            "--probes" => options.probes = number(value()?)?.max(1),
            "--password" => options.password = value()?,
            "--registration-token" => options.registration_token = Some(value()?),
            "--pushes" => options.pushes = true,
            "--search" => options.search = true,
            "--fill" => options.fill = number(value()?)?,
            "--redact" => options.redact = number(value()?)?,
            "--big-room" => options.big_room = number(value()?)?.max(2),
            // `cargo bench` passes `--bench`; filters and other harness flags are ignored.
            _ => {}
        }
    }
    Ok(options)
}

/// Sends a text message; its event id.
async fn send_message(connection: &mut Connection, room: &str, txn: &str, body: &str) -> Result<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
    let reply = connection.ok("PUT", &path, Some(&json!({ "msgtype": "m.text", "body": body }))).await?;
    Ok(reply["event_id"].as_str().ok_or("no event_id in the answer")?.to_owned())
}

fn sync_path(since: Option<&str>, timeout_ms: u64) -> String {
    // Small timelines, as clients ask after the first sync.
    let filter = enc(r#"{"room":{"timeline":{"limit":10}}}"#);
    match since {
        Some(since) => format!("/_matrix/client/v3/sync?filter={filter}&timeout={timeout_ms}&since={}", enc(since)),
        None => format!("/_matrix/client/v3/sync?filter={filter}&timeout=0"),
    }
}

fn contains_body(sync: &Value, body: &str) -> bool {
    sync["rooms"]["join"]
        .as_object()
        .is_some_and(|rooms| rooms.values().any(|room| room["timeline"]["events"].to_string().contains(body)))
}

async fn run(target: Target, options: Options) -> Result<()> {
    let options = Arc::new(options);
    let suffix = random_suffix();
    if options.big_room > 0 {
        return big_room(&target, &options, &suffix).await;
    }
    let accounts = register_accounts(&target, &options, &suffix, options.users).await?;
    let rooms = create_rooms(&target, &accounts, options.rooms).await?;
    if options.fill > 0 {
        print_reader(&suffix, &options);
        let sent = fill(&target, &accounts, &rooms, options.fill, options.redact).await?;
        return redact_all(&target, &accounts, sent).await;
    }

    // Phase 2: concurrent sends.
    let started = Instant::now();
    let mut senders = Vec::new();
    for (u, account) in accounts.iter().enumerate() {
        let mut connection = target.connect(Some(account)).await?;
        let rooms = Arc::clone(&rooms);
        let messages = options.messages;
        senders.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(messages);
            for m in 0..messages {
                let room = &rooms[(u * 7 + m) % rooms.len()];
                let sent = Instant::now();
                send_message(&mut connection, room, &format!("load-{u}-{m}"), &format!("message {m} from {u}")).await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut send_latencies = Vec::new();
    for sender in senders {
        send_latencies.extend(sender.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed();
    println!(
        "sent {} messages from {} concurrent clients in {:.2} s: {:.0} messages/s",
        send_latencies.len(),
        accounts.len(),
        elapsed.as_secs_f64(),
        send_latencies.len() as f64 / elapsed.as_secs_f64()
    );
    report("send", send_latencies);

    // Phase 3: initial sync of a member of every room.
    let reader = &accounts[1];
    let writer = &accounts[0];
    let mut reader_connection = target.connect(Some(reader)).await?;
    let mut writer_connection = target.connect(Some(writer)).await?;
    let mut initial = Vec::new();
    let mut token = String::new();
    for _ in 0..5 {
        let sent = Instant::now();
        let body = reader_connection.ok("GET", &sync_path(None, 0), None).await?;
        initial.push(sent.elapsed());
        token = body["next_batch"].as_str().ok_or("no next_batch")?.to_owned();
    }
    report(&format!("initial sync ({} rooms)", rooms.len()), initial);

    // Phase 4: incremental sync with one new event.
    let mut incremental = Vec::new();
    for probe in 0..options.probes {
        let room = &rooms[probe % rooms.len()];
        send_message(&mut writer_connection, room, &format!("inc-{suffix}-{probe}"), &format!("probe {probe}")).await?;
        let sent = Instant::now();
        let body = reader_connection.ok("GET", &sync_path(Some(&token), 0), None).await?;
        incremental.push(sent.elapsed());
        if !contains_body(&body, &format!("probe {probe}")) {
            return Err(format!("incremental sync missed probe {probe}"));
        }
        token = body["next_batch"].as_str().ok_or("no next_batch")?.to_owned();
    }
    report("incremental sync, one new event", incremental);

    // Phase 5: send → waiting sync of another user.
    let mut delivery = Vec::new();
    let mut delivery_after_ack = Vec::new();
    for probe in 0..options.probes {
        let room = rooms[probe % rooms.len()].clone();
        let marker = format!("deliver {suffix} {probe}");
        let path = sync_path(Some(&token), 30_000);
        let expected = marker.clone();
        let waiting = tokio::spawn(async move {
            let mut connection = reader_connection;
            let mut since_path = path;
            loop {
                let body = connection.ok("GET", &since_path, None).await?;
                let arrived = Instant::now();
                let next = body["next_batch"].as_str().ok_or("no next_batch")?.to_owned();
                if contains_body(&body, &expected) {
                    return Ok::<_, String>((connection, arrived, next));
                }
                since_path = sync_path(Some(&next), 30_000);
            }
        });
        // Let the sync reach the server and park.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = Instant::now();
        send_message(&mut writer_connection, &room, &format!("del-{suffix}-{probe}"), &marker).await?;
        let acknowledged = Instant::now();
        let (connection, arrived, next) = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .map_err(|_| format!("the waiting sync never returned probe {probe}"))?
            .map_err(|e| e.to_string())??;
        reader_connection = connection;
        token = next;
        delivery.push(arrived.saturating_duration_since(sent));
        delivery_after_ack.push(arrived.saturating_duration_since(acknowledged));
    }
    report("send start → waiting sync returns", delivery);
    report("send acknowledged → sync returns", delivery_after_ack);
    if options.pushes {
        push_phase(&target, &accounts, &rooms, &options, &suffix).await?;
    }
    if options.search {
        search_phase(&target, &accounts[1], &options).await?;
    }
    Ok(())
}

/// Phase 1: `count` accounts, registered concurrently.
async fn register_accounts(
    target: &Target,
    options: &Arc<Options>,
    suffix: &str,
    count: usize,
) -> Result<Vec<Account>> {
    let started = Instant::now();
    let mut accounts = Vec::new();
    // At most 64 registrations in flight.
    for chunk in (0..count).collect::<Vec<_>>().chunks(64) {
        let mut registrations = Vec::new();
        for i in chunk {
            let name = format!("load{suffix}u{i}");
            let target = Target { addr: target.addr, host: target.host.clone() };
            let options = Arc::clone(options);
            registrations.push(tokio::spawn(async move {
                support::register(&target, &name, &options.password, options.registration_token.as_deref()).await
            }));
        }
        for registration in registrations {
            accounts.push(registration.await.map_err(|e| e.to_string())??);
        }
    }
    println!("registered {} users in {:.1} s", accounts.len(), started.elapsed().as_secs_f64());
    Ok(accounts)
}

/// The first account creates `count` public rooms; everyone joins every room.
async fn create_rooms(target: &Target, accounts: &[Account], count: usize) -> Result<Arc<Vec<String>>> {
    let started = Instant::now();
    let mut creator = target.connect(Some(&accounts[0])).await?;
    let mut rooms = Vec::new();
    for r in 0..count {
        let body = json!({ "preset": "public_chat", "name": format!("Load room {r}") });
        let reply = creator.ok("POST", "/_matrix/client/v3/createRoom", Some(&body)).await?;
        rooms.push(reply["room_id"].as_str().ok_or("no room_id")?.to_owned());
    }
    let rooms = Arc::new(rooms);
    let mut joins = Vec::new();
    for account in accounts.iter().skip(1) {
        let mut connection = target.connect(Some(account)).await?;
        let rooms = Arc::clone(&rooms);
        joins.push(tokio::spawn(async move {
            for room in rooms.iter() {
                connection.ok("POST", &format!("/_matrix/client/v3/join/{}", enc(room)), Some(&json!({}))).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for join in joins {
        join.await.map_err(|e| e.to_string())??;
    }
    println!(
        "created {} rooms, {} members each, in {:.1} s",
        rooms.len(),
        accounts.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(rooms)
}

/// Words of the fill's messages: a chat line of about 60 characters each.
const FILL_WORDS: &[&str] = &[
    "réunion",
    "demain",
    "dossier",
    "merci",
    "budget",
    "projet",
    "rapport",
    "équipe",
    "préfecture",
    "ministère",
    "note",
    "version",
    "relire",
    "avant",
    "jeudi",
    "agents",
    "service",
    "compte",
    "rendu",
    "validé",
    "planning",
    "question",
    "réponse",
    "document",
    "annexe",
    "circulaire",
    "décret",
    "point",
    "suivi",
    "urgent",
];

/// A chat line of about 60 characters, different for each (sender, number).
fn fill_line(sender: usize, number: usize) -> String {
    let mut line = String::new();
    let mut seed =
        (sender as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (number as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    while line.len() < 60 {
        seed ^= seed >> 31;
        seed = seed.wrapping_mul(0x94D0_49BB_1331_11EB);
        line.push_str(FILL_WORDS[(seed % FILL_WORDS.len() as u64) as usize]);
        line.push(' ');
    }
    line.push_str(&number.to_string());
    line
}

/// `--fill N`: every user sends its share of `total` messages (chat lines
/// of about 60 characters) as fast as the server takes them, with progress
/// every 10 seconds; then the tool stops, leaving the database to measure.
/// Returns, for each user, (room, event id) of its first messages, as many
/// as its share of `to_redact`.
async fn fill(
    target: &Target,
    accounts: &[Account],
    rooms: &Arc<Vec<String>>,
    total: usize,
    to_redact: usize,
) -> Result<Vec<Vec<(String, String)>>> {
    let started = Instant::now();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for (u, account) in accounts.iter().enumerate() {
        let share = total / accounts.len() + usize::from(u < total % accounts.len());
        let redact_share = to_redact / accounts.len() + usize::from(u < to_redact % accounts.len());
        let mut connection = target.connect(Some(account)).await?;
        let (rooms, sent) = (Arc::clone(rooms), Arc::clone(&sent));
        senders.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            for m in 0..share {
                let room = &rooms[(u * 7 + m) % rooms.len()];
                let event_id = send_message(&mut connection, room, &format!("fill-{u}-{m}"), &fill_line(u, m)).await?;
                if m < redact_share {
                    kept.push((room.clone(), event_id));
                }
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<_, String>(kept)
        }));
    }
    let progress = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            every.tick().await;
            loop {
                every.tick().await;
                let done = sent.load(std::sync::atomic::Ordering::Relaxed);
                println!("  {done} messages after {:.0} s", started.elapsed().as_secs_f64());
            }
        })
    };
    let mut to_redact = Vec::new();
    for sender in senders {
        to_redact.push(sender.await.map_err(|e| e.to_string())??);
    }
    progress.abort();
    let elapsed = started.elapsed().as_secs_f64();
    println!("filled {total} messages in {elapsed:.1} s: {:.0} messages/s", total as f64 / elapsed);
    Ok(to_redact)
}

/// `--redact M` after a fill: every user redacts its listed messages, all
/// users at once.
async fn redact_all(target: &Target, accounts: &[Account], events: Vec<Vec<(String, String)>>) -> Result<()> {
    let total: usize = events.iter().map(Vec::len).sum();
    if total == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let mut redactors = Vec::new();
    for (u, (account, events)) in accounts.iter().zip(events).enumerate() {
        let mut connection = target.connect(Some(account)).await?;
        redactors.push(tokio::spawn(async move {
            for (n, (room, event_id)) in events.iter().enumerate() {
                let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/redact-{u}-{n}", enc(room), enc(event_id));
                connection.ok("PUT", &path, Some(&json!({ "reason": "load tool" }))).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for redactor in redactors {
        redactor.await.map_err(|e| e.to_string())??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("redacted {total} messages in {elapsed:.1} s: {:.0} redactions/s", total as f64 / elapsed);
    Ok(())
}

/// The localpart of the fill's reader (the second user, who joined every
/// room and read nothing), for `benches/startup.rs --user`.
fn print_reader(suffix: &str, options: &Options) {
    println!("reader: load{suffix}u1 (password {:?})", options.password);
}

/// `--big-room N`: N users in one public room, then sequential sends by one
/// of them (each acknowledged before the next): the cost of a message that
/// N local members hear of.
async fn big_room(target: &Target, options: &Arc<Options>, suffix: &str) -> Result<()> {
    let accounts = register_accounts(target, options, suffix, options.big_room).await?;
    let started = Instant::now();
    let mut creator = target.connect(Some(&accounts[0])).await?;
    let body = json!({ "preset": "public_chat", "name": "Big room" });
    let reply = creator.ok("POST", "/_matrix/client/v3/createRoom", Some(&body)).await?;
    let room = Arc::new(reply["room_id"].as_str().ok_or("no room_id")?.to_owned());
    // Joins from 8 connections at once.
    let mut joins = Vec::new();
    for lane in 0..8 {
        let members: Vec<Account> = accounts.iter().skip(1 + lane).step_by(8).cloned().collect();
        let (target, room) = (Target { addr: target.addr, host: target.host.clone() }, Arc::clone(&room));
        joins.push(tokio::spawn(async move {
            for member in members {
                let mut connection = target.connect(Some(&member)).await?;
                connection.ok("POST", &format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&json!({}))).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for join in joins {
        join.await.map_err(|e| e.to_string())??;
    }
    println!("{} members joined one room in {:.1} s", accounts.len(), started.elapsed().as_secs_f64());
    // A fresh connection: the first one may have outlived the keep-alive timeout.
    let mut creator = target.connect(Some(&accounts[0])).await?;
    let mut latencies = Vec::new();
    for m in 0..options.probes {
        let sent = Instant::now();
        send_message(&mut creator, &room, &format!("big-{suffix}-{m}"), &fill_line(0, m)).await?;
        latencies.push(sent.elapsed());
    }
    report(&format!("send in a room of {} local members", accounts.len()), latencies);
    Ok(())
}

/// Phase 7: message search latency, for a word every message has and one none has.
async fn search_phase(target: &Target, reader: &Account, options: &Options) -> Result<()> {
    let mut connection = target.connect(Some(reader)).await?;
    for (label, term) in [("common word", "message"), ("absent word", "zyzzyva")] {
        let body = json!({ "search_categories": { "room_events": { "search_term": term } } });
        let mut latencies = Vec::new();
        let mut count = 0;
        for _ in 0..options.probes.min(50) {
            let sent = Instant::now();
            let reply = connection.ok("POST", "/_matrix/client/v3/search", Some(&body)).await?;
            latencies.push(sent.elapsed());
            count = reply["search_categories"]["room_events"]["count"].as_u64().unwrap_or(0);
        }
        report(&format!("search, {label} ({count} matches)"), latencies);
    }
    Ok(())
}

/// A push gateway on 127.0.0.1: the arrival time of every push, by event id.
#[derive(Clone, Default)]
struct Gateway {
    arrivals: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<Instant>>>>,
}

impl Gateway {
    async fn start(&self) -> Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let gateway = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let gateway = gateway.clone();
                        async move {
                            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let push: Value = serde_json::from_slice(&body).unwrap_or_default();
                            if let Some(event_id) = push["notification"]["event_id"].as_str() {
                                let mut arrivals = gateway.arrivals.lock().unwrap_or_else(|p| p.into_inner());
                                arrivals.entry(event_id.to_owned()).or_default().push(Instant::now());
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                                br#"{"rejected":[]}"#,
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(addr)
    }

    fn count(&self, event_id: &str) -> usize {
        self.arrivals.lock().unwrap_or_else(|p| p.into_inner()).get(event_id).map_or(0, Vec::len)
    }

    fn last_arrival(&self, event_id: &str) -> Option<Instant> {
        self.arrivals.lock().unwrap_or_else(|p| p.into_inner()).get(event_id).and_then(|a| a.iter().max().copied())
    }

    /// Waits until `event_id` has `expected` pushes (30 s at most).
    async fn wait_for(&self, event_id: &str, expected: usize) -> Result<Instant> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count(event_id) < expected {
            if Instant::now() > deadline {
                return Err(format!("{event_id}: {} of {expected} pushes arrived", self.count(event_id)));
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        self.last_arrival(event_id).ok_or_else(|| "no arrival".to_owned())
    }
}

async fn send_event(connection: &mut Connection, room: &str, txn: &str, body: &str) -> Result<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
    let reply = connection.ok("PUT", &path, Some(&json!({ "msgtype": "m.text", "body": body }))).await?;
    Ok(reply["event_id"].as_str().ok_or("no event_id")?.to_owned())
}

/// Phase 6: push latency and throughput through a local gateway.
async fn push_phase(
    target: &Target,
    accounts: &[Account],
    rooms: &Arc<Vec<String>>,
    options: &Options,
    suffix: &str,
) -> Result<()> {
    let gateway = Gateway::default();
    let addr = gateway.start().await?;
    for (i, account) in accounts.iter().enumerate() {
        let mut connection = target.connect(Some(account)).await?;
        let pusher = json!({
            "kind": "http", "app_id": "load.tool", "pushkey": format!("key-{suffix}-{i}"),
            "app_display_name": "load", "device_display_name": "load", "lang": "en",
            "data": { "url": format!("http://{addr}/_matrix/push/v1/notify") },
        });
        connection.ok("POST", "/_matrix/client/v3/pushers/set", Some(&pusher)).await?;
    }
    let others = accounts.len() - 1;
    let mut writer = target.connect(Some(&accounts[0])).await?;
    let mut latencies = Vec::new();
    for probe in 0..options.probes {
        let room = &rooms[probe % rooms.len()];
        let sent = Instant::now();
        let event_id = send_event(&mut writer, room, &format!("push-{suffix}-{probe}"), "push probe").await?;
        let last = gateway.wait_for(&event_id, others).await?;
        latencies.push(last.saturating_duration_since(sent));
    }
    report(&format!("send start → last of {others} pushes at the gateway"), latencies);

    let started = Instant::now();
    let mut senders = Vec::new();
    for (u, account) in accounts.iter().enumerate() {
        let mut connection = target.connect(Some(account)).await?;
        let rooms = Arc::clone(rooms);
        let (messages, suffix) = (options.messages, suffix.to_owned());
        senders.push(tokio::spawn(async move {
            let mut events = Vec::with_capacity(messages);
            for m in 0..messages {
                let room = &rooms[(u * 11 + m) % rooms.len()];
                events.push(send_event(&mut connection, room, &format!("pushburst-{suffix}-{u}-{m}"), "burst").await?);
            }
            Ok::<_, String>(events)
        }));
    }
    let mut events = Vec::new();
    for sender in senders {
        events.extend(sender.await.map_err(|e| e.to_string())??);
    }
    let sent = started.elapsed();
    for event_id in &events {
        gateway.wait_for(event_id, others).await?;
    }
    let elapsed = started.elapsed();
    let pushes = events.len() * others;
    println!(
        "push burst: {} messages sent in {:.2} s; all {pushes} pushes at the gateway after {:.2} s: {:.0} pushes/s",
        events.len(),
        sent.as_secs_f64(),
        elapsed.as_secs_f64(),
        pushes as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("load: {error}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let outcome = runtime.block_on(async {
        match options.base_url.clone() {
            Some(base_url) => {
                println!("load against {base_url}");
                run(Target::from_base_url(&base_url)?, options).await
            }
            None => {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let text = format!(
                    "server_name = \"load.local\"\ndatabase_path = {:?}\nregistration = \"open\"\n[push]\nallow_private_gateways = true\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\n",
                    dir.path().join("db").display().to_string()
                );
                let config = conduit::config::Config::from_toml_with_env(&text, Vec::new()).map_err(|e| e.to_string())?;
                let services = conduit::services::Services::open(config).map_err(|e| e.to_string())?;
                let server = conduit::http::start(services).await.map_err(|e| e.to_string())?;
                let addr = server.local_addrs[0];
                println!("load against an in-process conduit at {addr} (temporary database)");
                run(Target { addr, host: "load.local".to_owned() }, options).await
            }
        }
    });
    if let Err(error) = outcome {
        eprintln!("load: {error}");
        std::process::exit(1);
    }
}
