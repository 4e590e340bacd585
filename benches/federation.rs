//! Federation figures, measured from the outside on release binaries over
//! loopback TLS (a test CA made here, certificate checks on):
//!
//! - **cross-server delivery**: a user of server A sends a message; how long
//!   until a user of server B, waiting in `/sync`, gets it (p50/p99), for
//!   conduit → conduit, and with `--synapse` conduit → Synapse and
//!   Synapse → conduit (the pinned Synapse of the tests, from
//!   `target/synapse-venv`, installed on first use);
//! - **ingest**: messages sent as fast as 20 clients can on server A, into one
//!   room and spread over 100 rooms, until B's user has seen them all: the
//!   events per second B accepted through `/send` (A's sending included).
//!
//! `cargo bench --bench federation -- [--rounds 200] [--messages 2000] [--synapse] [--binary PATH]`
//!
//! With `--servers N`, the reference network instead ([`network`]):
//! `cargo bench --bench federation -- --servers 17 --users 10000 [--seconds 30] [--rate 20] [--partition] [--cache-mb 16]`
//!
//! With `--large-room N`, a user of another server joins a room of N
//! members ([`large_room`]): `cargo bench --bench federation -- --large-room 10000`

#[path = "federation/large_room.rs"]
mod large_room;
#[path = "federation/network.rs"]
mod network;
mod support;
#[allow(dead_code)]
#[path = "../tests/it/synapse.rs"]
mod synapse;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
use serde_json::{json, Value};
use support::{enc, random_suffix, register, report, Account, Connection, Result, Target};

struct Options {
    rounds: usize,
    messages: usize,
    synapse: bool,
    binary: Option<PathBuf>,
    network: Option<network::NetworkOptions>,
    /// `--large-room N`: the partial-state join of an N-member room ([`large_room`]).
    large_room: Option<usize>,
}

fn parse_options() -> Result<Options> {
    let mut options =
        Options { rounds: 200, messages: 2000, synapse: false, binary: None, network: None, large_room: None };
    let mut network =
        network::NetworkOptions { servers: 17, users: 10_000, seconds: 30, rate: 20.0, partition: false, cache_mb: 16 };
    let mut network_asked = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        let number = |text: String| text.parse::<u64>().map_err(|e| format!("{arg}: {e}"));
        match arg.as_str() {
            "--rounds" => options.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--messages" => options.messages = value()?.parse().map_err(|e| format!("--messages: {e}"))?,
            "--synapse" => options.synapse = true,
            "--binary" => options.binary = Some(PathBuf::from(value()?)),
            "--servers" => (network.servers, network_asked) = (number(value()?)? as usize, true),
            "--users" => network.users = number(value()?)? as usize,
            "--seconds" => network.seconds = number(value()?)?,
            "--rate" => network.rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--cache-mb" => network.cache_mb = number(value()?)?,
            "--partition" => network.partition = true,
            "--large-room" => options.large_room = Some(number(value()?)? as usize),
            "--bench" => {}
            other => return Err(format!("unknown option {other}")),
        }
    }
    if network.servers < 2 {
        return Err("--servers needs at least 2".into());
    }
    if network_asked {
        options.network = Some(network);
    }
    Ok(options)
}

/// A CA and a certificate it signed (for `localhost`, or for the network's
/// server names), as files in a directory.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn new() -> Result<Self> {
        Self::for_names(&["localhost".to_owned()])
    }

    /// One leaf certificate for every name (`leaf.pem`, `leaf.key`; also
    /// `localhost.pem`/`.key`, the same files).
    fn for_names(names: &[String]) -> Result<Self> {
        let failed = |e: rcgen::Error| e.to_string();
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "conduit bench CA");
        let ca_key = KeyPair::generate().map_err(failed)?;
        let ca = params.self_signed(&ca_key).map_err(failed)?;
        let key = KeyPair::generate().map_err(failed)?;
        let leaf =
            CertificateParams::new(names.to_vec()).map_err(failed)?.signed_by(&key, &ca, &ca_key).map_err(failed)?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).map_err(|e| e.to_string());
        write("ca.pem", ca.pem())?;
        for name in ["localhost", "leaf"] {
            write(&format!("{name}.pem"), leaf.pem())?;
            write(&format!("{name}.key"), key.serialize_pem())?;
        }
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A conduit binary (killed when dropped): clients on plain HTTP, federation on TLS.
struct Conduit {
    _process: support::Process,
    client: SocketAddr,
    server_name: String,
}

async fn start_conduit(binary: &Path, certs: &Certificates) -> Result<Conduit> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (client_port, federation_port) = (support::free_port()?, support::free_port()?);
    let server_name = format!("localhost:{federation_port}");
    let config = format!(
        "server_name = \"{server_name}\"\ndatabase_path = {:?}\nregistration = \"open\"\nlog = \"warn\"\n\
         [[listeners]]\naddress = \"127.0.0.1:{client_port}\"\n\
         [[listeners]]\naddress = \"127.0.0.1:{federation_port}\"\ntls = {{ certificate = {:?}, key = {:?} }}\n\
         [federation]\nca_file = {:?}\nallow_private_addresses = true\n",
        dir.path().join("db").display().to_string(),
        certs.path("localhost.pem").display().to_string(),
        certs.path("localhost.key").display().to_string(),
        certs.path("ca.pem").display().to_string(),
    );
    let process = support::spawn_conduit(binary, &config, dir)?;
    let client = SocketAddr::from(([127, 0, 0, 1], client_port));
    let conduit = Conduit { _process: process, client, server_name };
    support::wait_listening(client).await?;
    support::wait_listening(SocketAddr::from(([127, 0, 0, 1], federation_port))).await?;
    Ok(conduit)
}

/// A user of one server, with the server's client address.
struct User {
    target: Target,
    account: Account,
}

impl User {
    async fn register(client: SocketAddr, name: &str) -> Result<Self> {
        let target = Target { addr: client, host: "localhost".to_owned() };
        let account = register(&target, &format!("{name}{}", random_suffix()), "bench-password-1", None).await?;
        Ok(Self { target, account })
    }

    async fn connect(&self) -> Result<Connection> {
        self.target.connect(Some(&self.account)).await
    }
}

/// A public room of `owner`, joined by `guest` through the owner's server.
async fn shared_room(owner: &User, guest: &User, owner_server: &str) -> Result<String> {
    let mut connection = owner.connect().await?;
    let room =
        connection.ok("POST", "/_matrix/client/v3/createRoom", Some(&json!({ "preset": "public_chat" }))).await?;
    let room = room["room_id"].as_str().ok_or("no room id")?.to_owned();
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(owner_server));
    guest.connect().await?.ok("POST", &path, Some(&json!({}))).await?;
    Ok(room)
}

/// The `next_batch` of a sync from now on.
async fn sync_token(connection: &mut Connection) -> Result<String> {
    let filter = enc(&json!({ "room": { "timeline": { "limit": 1 } } }).to_string());
    let sync = connection.ok("GET", &format!("/_matrix/client/v3/sync?filter={filter}"), None).await?;
    sync["next_batch"].as_str().map(str::to_owned).ok_or_else(|| "no next_batch".to_owned())
}

/// Message bodies of every joined room's timeline in a sync answer.
fn bodies(sync: &Value) -> Vec<String> {
    let rooms = sync["rooms"]["join"].as_object().cloned().unwrap_or_default();
    rooms
        .values()
        .flat_map(|room| room["timeline"]["events"].as_array().cloned().unwrap_or_default())
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Long-polls as `receiver` until `wanted` bodies with `prefix` arrived;
/// when the last one did.
async fn wait_for(receiver: &mut Connection, since: &mut String, prefix: &str, wanted: usize) -> Result<Instant> {
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    // A timeline long enough that no message is left out of a sync answer.
    let filter = enc(&json!({ "room": { "timeline": { "limit": 1000 } } }).to_string());
    while Instant::now() < deadline {
        let path = format!("/_matrix/client/v3/sync?since={since}&timeout=10000&filter={filter}");
        let sync = receiver.ok("GET", &path, None).await?;
        let arrived = Instant::now();
        *since = sync["next_batch"].as_str().ok_or("no next_batch")?.to_owned();
        seen += bodies(&sync).iter().filter(|body| body.starts_with(prefix)).count();
        if sync["rooms"]["join"].as_object().into_iter().flatten().any(|(_, room)| room["timeline"]["limited"] == true)
        {
            return Err("a sync answer left messages out (limited timeline)".into());
        }
        if seen >= wanted {
            return Ok(arrived);
        }
    }
    Err(format!("only {seen} of {wanted} messages arrived"))
}

async fn send(connection: &mut Connection, room: &str, txn: &str, body: &str) -> Result<()> {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
    connection.ok("PUT", &path, Some(&json!({ "msgtype": "m.text", "body": body }))).await.map(|_| ())
}

/// Send-to-sync latency of `rounds` messages, one at a time.
async fn delivery(sender: &User, receiver: &User, room: &str, rounds: usize) -> Result<Vec<Duration>> {
    let mut sending = sender.connect().await?;
    let mut receiving = receiver.connect().await?;
    let mut since = sync_token(&mut receiving).await?;
    let run = random_suffix();
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let prefix = format!("d{run}-{round}");
        let mut token = since.clone();
        let waiting = tokio::spawn(async move {
            let arrived = wait_for(&mut receiving, &mut token, &prefix, 1).await;
            (receiving, token, arrived)
        });
        // The receiver's long poll is waiting before the message goes out.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = Instant::now();
        send(&mut sending, room, &format!("d{run}-{round}"), &format!("d{run}-{round}")).await?;
        let (connection, token, arrived) = waiting.await.map_err(|e| e.to_string())?;
        samples.push(arrived?.duration_since(sent));
        receiving = connection;
        since = token;
    }
    Ok(samples)
}

/// Messages per second that reach the receiver: `messages` sent by 20
/// concurrent clients into `rooms` (round robin).
async fn ingest(sender: &User, receiver: &User, rooms: &[String], messages: usize) -> Result<f64> {
    let mut receiving = receiver.connect().await?;
    let mut since = sync_token(&mut receiving).await?;
    let run = random_suffix();
    let started = Instant::now();
    let mut senders = Vec::new();
    for client in 0..20 {
        let mut connection = sender.connect().await?;
        let rooms = rooms.to_vec();
        let run = run.clone();
        senders.push(tokio::spawn(async move {
            for n in (client..messages).step_by(20) {
                let body = format!("i{run}-{n}");
                send(&mut connection, &rooms[n % rooms.len()], &body, &body).await?;
            }
            Ok::<(), String>(())
        }));
    }
    let arrived = wait_for(&mut receiving, &mut since, &format!("i{run}-"), messages).await?;
    for task in senders {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(messages as f64 / arrived.duration_since(started).as_secs_f64())
}

async fn conduit_pair(binary: &Path, certs: &Certificates, options: &Options) -> Result<()> {
    let (a, b) = (start_conduit(binary, certs).await?, start_conduit(binary, certs).await?);
    let alice = User::register(a.client, "alice").await?;
    let bob = User::register(b.client, "bob").await?;
    let room = shared_room(&alice, &bob, &a.server_name).await?;
    report("conduit -> conduit delivery", delivery(&alice, &bob, &room, options.rounds).await?);
    report("conduit <- conduit delivery", delivery(&bob, &alice, &room, options.rounds).await?);
    let rate = ingest(&alice, &bob, std::slice::from_ref(&room), options.messages).await?;
    println!("conduit -> conduit ingest, 1 room      {rate:>8.0} events/s ({} messages)", options.messages);
    let mut rooms = Vec::new();
    for _ in 0..100 {
        rooms.push(shared_room(&alice, &bob, &a.server_name).await?);
    }
    let rate = ingest(&alice, &bob, &rooms, options.messages).await?;
    println!("conduit -> conduit ingest, 100 rooms   {rate:>8.0} events/s ({} messages)", options.messages);
    Ok(())
}

async fn synapse_pair(binary: &Path, certs: &Certificates, options: &Options) -> Result<()> {
    let conduit = start_conduit(binary, certs).await?;
    let peer =
        synapse::start_with(&certs.path("localhost.pem"), &certs.path("localhost.key"), &certs.path("ca.pem"), "")
            .await;
    let alice = User::register(conduit.client, "alice").await?;
    let sam = User::register(peer.client_addr(), "sam").await?;
    let room = shared_room(&alice, &sam, &conduit.server_name).await?;
    report("conduit -> Synapse delivery", delivery(&alice, &sam, &room, options.rounds).await?);
    report("Synapse -> conduit delivery", delivery(&sam, &alice, &room, options.rounds).await?);
    let rate = ingest(&sam, &alice, std::slice::from_ref(&room), options.messages).await?;
    println!("Synapse -> conduit ingest, 1 room      {rate:>8.0} events/s ({} messages)", options.messages);
    Ok(())
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("federation: {error}");
            std::process::exit(2);
        }
    };
    let binary = options.binary.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_conduit")));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let outcome = runtime.block_on(async {
        if let Some(members) = options.large_room {
            return large_room::run(&binary, members.max(2), 16).await;
        }
        if let Some(network) = &options.network {
            return network::run(&binary, network).await;
        }
        let certs = Certificates::new()?;
        conduit_pair(&binary, &certs, &options).await?;
        if options.synapse {
            synapse_pair(&binary, &certs, &options).await?;
        }
        Ok::<(), String>(())
    });
    if let Err(error) = outcome {
        eprintln!("federation: {error}");
        std::process::exit(1);
    }
}
