//! Every spec version `/versions` advertises is backed by the endpoints that
//! version introduced (from the changelogs under `shared/spec/content/`):
//! clients pick their API from that list (authenticated media from v1.11,
//! for instance), so a claim without its endpoints breaks them. Adding a
//! version to `/versions` without its row here, or advertising one whose
//! endpoints answer `M_UNRECOGNIZED`, fails this test.

use bytes::Bytes;
use serde_json::json;

use crate::harness::TestServer;

/// The endpoints each version added to the client-server API (method, a
/// concrete path). Optional ones (SSO, `login/get_token`, `auth_metadata`
/// for servers without OAuth, `.well-known/matrix/support`) and those of
/// application services are left out: the spec lets a server answer them
/// with 404.
const ENDPOINTS_BY_VERSION: &[(&str, &[(&str, &str)])] = &[
    ("r0.5.0", R0),
    ("r0.6.0", R0),
    ("r0.6.1", R0),
    (
        "v1.1",
        &[
            ("POST", "/_matrix/client/v3/room_keys/version"),
            ("GET", "/_matrix/client/v3/room_keys/keys"),
            ("POST", "/_matrix/client/v3/keys/device_signing/upload"),
            ("POST", "/_matrix/client/v3/keys/signatures/upload"),
            ("POST", "/_matrix/client/v3/knock/!room:test.local"),
        ],
    ),
    (
        "v1.2",
        &[
            ("GET", "/_matrix/client/v1/rooms/!room:test.local/hierarchy"),
            ("GET", "/_matrix/client/v1/register/m.login.registration_token/validity"),
        ],
    ),
    (
        "v1.3",
        &[("POST", "/_matrix/client/v3/refresh"), ("GET", "/_matrix/client/v1/rooms/!room:test.local/relations/$e")],
    ),
    ("v1.4", &[("GET", "/_matrix/client/v1/rooms/!room:test.local/threads")]),
    ("v1.5", &[]),
    ("v1.6", &[("GET", "/_matrix/client/v1/rooms/!room:test.local/timestamp_to_event")]),
    ("v1.7", &[("POST", "/_matrix/media/v1/create"), ("PUT", "/_matrix/media/v3/upload/test.local/abc")]),
    ("v1.8", &[]),
    ("v1.9", &[]),
    ("v1.10", &[]),
    (
        "v1.11",
        &[
            ("GET", "/_matrix/client/v1/media/config"),
            ("GET", "/_matrix/client/v1/media/download/test.local/abc"),
            ("GET", "/_matrix/client/v1/media/download/test.local/abc/name.png"),
            ("GET", "/_matrix/client/v1/media/thumbnail/test.local/abc"),
            ("GET", "/_matrix/client/v1/media/preview_url"),
        ],
    ),
    ("v1.12", &[]),
    ("v1.13", &[("POST", "/_matrix/client/v3/rooms/!room:test.local/report")]),
    ("v1.14", &[("POST", "/_matrix/client/v3/users/@someone:test.local/report")]),
    ("v1.15", &[("GET", "/_matrix/client/v1/room_summary/!room:test.local")]),
    (
        "v1.16",
        &[
            ("DELETE", "/_matrix/client/v3/profile/@someone:test.local/m.tz"),
            ("PUT", "/_matrix/client/v3/profile/@someone:test.local/m.tz"),
        ],
    ),
    (
        "v1.18",
        &[
            ("GET", "/_matrix/client/v1/admin/lock/@someone:test.local"),
            ("PUT", "/_matrix/client/v1/admin/suspend/@someone:test.local"),
        ],
    ),
    ("v1.19", &[("GET", "/_matrix/client/v1/mutual_rooms")]),
];

/// The r0 endpoints clients of every version use.
const R0: &[(&str, &str)] = &[
    ("GET", "/_matrix/client/v3/login"),
    ("POST", "/_matrix/client/v3/register"),
    ("GET", "/_matrix/client/v3/sync"),
    ("POST", "/_matrix/client/v3/createRoom"),
    ("PUT", "/_matrix/client/v3/rooms/!room:test.local/send/m.room.message/1"),
    ("GET", "/_matrix/client/v3/rooms/!room:test.local/messages"),
    ("POST", "/_matrix/client/v3/keys/upload"),
    ("POST", "/_matrix/client/v3/keys/query"),
    ("PUT", "/_matrix/client/v3/sendToDevice/m.test/1"),
    ("GET", "/_matrix/client/v3/pushrules/"),
    ("POST", "/_matrix/client/v3/search"),
    ("POST", "/_matrix/client/v3/user_directory/search"),
    ("GET", "/_matrix/client/v3/publicRooms"),
    ("POST", "/_matrix/media/v3/upload"),
];

#[tokio::test]
async fn every_advertised_version_has_its_endpoints() {
    let server = TestServer::start().await;
    let alice = server.client().register("alice").await;
    let versions = server.client().get("/_matrix/client/versions").await;
    let advertised: Vec<String> = versions.assert_ok()["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v.as_str().expect("a version string").to_owned())
        .collect();
    for version in &advertised {
        let Some((_, endpoints)) = ENDPOINTS_BY_VERSION.iter().find(|(v, _)| v == version) else {
            panic!("{version} is advertised but this test does not know its endpoints: add its row");
        };
        for (method, path) in *endpoints {
            let reply = alice.client.send(method, path, &[], Bytes::from(json!({}).to_string())).await;
            assert!(
                !(matches!(reply.status, 404 | 405) && reply.errcode() == "M_UNRECOGNIZED"),
                "{version} is advertised but {method} {path} is not served: {} {}",
                reply.status,
                reply.body
            );
        }
    }
    // No hole in the list: clients read the newest entry as the level reached.
    let v1: Vec<u32> =
        advertised.iter().filter_map(|v| v.strip_prefix("v1.")).map(|minor| minor.parse().expect("minor")).collect();
    assert_eq!(v1, (1..=v1.len() as u32).collect::<Vec<_>>(), "v1.x versions are contiguous");
}
