//! Regression tests for defects found by trying the server from the outside
//! (issue "Hardening"): each failed before its fix.

use serde_json::json;

use crate::harness::TestServer;

#[tokio::test]
async fn concurrent_room_creations_all_yield_distinct_rooms() {
    let server = TestServer::start().await;
    let mut users = Vec::new();
    for name in ["ann", "ben", "cat", "dan"] {
        users.push(server.client().register(name).await);
    }
    // 8 parallel clients (two per user), 100 creations in all.
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let session = users[worker % users.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut rooms = Vec::new();
            for _ in 0..13 {
                let reply = session.client.post("/_matrix/client/v3/createRoom", json!({})).await;
                rooms.push((reply.status, reply.body["room_id"].as_str().unwrap_or_default().to_owned()));
            }
            rooms
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for task in tasks {
        for (status, room_id) in task.await.expect("worker") {
            assert_eq!(status, 200, "every creation succeeds");
            ids.insert(room_id);
            created += 1;
        }
    }
    assert_eq!(ids.len(), created, "every creation yields its own room");
}
