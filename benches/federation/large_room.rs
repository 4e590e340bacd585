//! Joining a big room of another server (`--large-room N`): N users of
//! server m01 in one public room; a user of m02, whose server has never
//! been in it, joins it. Measured: the time `/join` takes, the time from
//! `/join` to the first message a resident sends after it shown by the
//! joiner's `/sync` (partial-state join: the members come later), and the
//! time until the joiner's server holds the whole state (its
//! `/joined_members` names every member). Ends with one line:
//! `large room join: members=… join_ms=… first_message_ms=… full_state_ms=… max_rss_mb=…`.

use std::{net::SocketAddr, path::Path, time::Instant};

use serde_json::{json, Value};

use super::network::{concurrently, create_room, join_all, peak_rss_mb, register_member, start_network, Member};
use crate::{
    support::{enc, random_suffix, Result},
    Certificates,
};

async fn register_on(client: SocketAddr, server: usize, names: Vec<String>) -> Result<Vec<Member>> {
    concurrently(names, move |name| register_member(server, client, name)).await
}

/// Syncs as `member` from `since` until the room's timeline shows `body`.
async fn wait_for_body(member: &Member, room: &str, mut since: String, body: &str) -> Result<()> {
    let mut connection = member.connect().await?;
    loop {
        let path = format!("/_matrix/client/v3/sync?timeout=10000&since={since}");
        let sync = connection.ok("GET", &path, None).await?;
        since = sync["next_batch"].as_str().ok_or("no next_batch")?.to_owned();
        let events = sync["rooms"]["join"][room]["timeline"]["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|event| event["content"]["body"] == body) {
            return Ok(());
        }
    }
}

async fn joined_count(member: &Member, room: &str) -> Result<usize> {
    let path = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room));
    let reply: Value = member.connect().await?.ok("GET", &path, None).await?;
    Ok(reply["joined"].as_object().map_or(0, |joined| joined.len()))
}

pub async fn run(binary: &Path, members: usize, cache_mb: u64) -> Result<()> {
    let names = vec!["m01.gouv.test".to_owned(), "m02.gouv.test".to_owned()];
    let certs = Certificates::for_names(&names)?;
    let (servers, _links) = start_network(binary, &certs, &names, cache_mb).await?;
    let setup = Instant::now();
    let run = random_suffix();
    let residents = register_on(servers[0].client, 0, (0..members).map(|n| format!("r{n}x{run}")).collect()).await?;
    let joiner = register_on(servers[1].client, 1, vec![format!("newcomer{run}")]).await?.remove(0);
    println!("large room: {members} users registered in {:.1} s", setup.elapsed().as_secs_f64());
    let room = create_room(&residents[0], json!({ "preset": "public_chat", "name": "Grand forum" })).await?;
    join_all(&room, &servers[0].name, residents[1..].to_vec()).await?;
    println!("large room: {members} members joined in {:.1} s", setup.elapsed().as_secs_f64());

    let mut connection = joiner.connect().await?;
    let first = connection.ok("GET", "/_matrix/client/v3/sync?timeout=0", None).await?;
    let since = first["next_batch"].as_str().ok_or("no next_batch")?.to_owned();
    let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(&servers[0].name));
    let started = Instant::now();
    connection.ok("POST", &path, Some(&json!({}))).await?;
    let join_ms = started.elapsed().as_secs_f64() * 1000.0;
    let body = format!("bienvenue {run}");
    let resident = residents[1].clone();
    let send = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/first-{run}", enc(&room));
    let message = json!({ "msgtype": "m.text", "body": body });
    resident.connect().await?.ok("PUT", &send, Some(&message)).await?;
    wait_for_body(&joiner, &room, since, &body).await?;
    let first_message_ms = started.elapsed().as_secs_f64() * 1000.0;
    // `/joined_members` waits for the whole state (30 s at most a call).
    while joined_count(&joiner, &room).await? < members + 1 {}
    let full_state_ms = started.elapsed().as_secs_f64() * 1000.0;
    let max_rss_mb = servers.iter().map(|server| peak_rss_mb(server.pid())).fold(0.0, f64::max);
    println!(
        "large room join: members={members} join_ms={join_ms:.0} first_message_ms={first_message_ms:.0} \
         full_state_ms={full_state_ms:.0} max_rss_mb={max_rss_mb:.1}"
    );
    Ok(())
}
