//! The stored records: the on-disk format, kept apart from domain types.
//!
//! Users are keyed by localpart (the server name is fixed for a database).
//! Secrets are never stored in the clear: passwords as argon2id PHC strings,
//! access and refresh tokens as SHA-256 digests ([`TokenHash`]).

use serde::{Deserialize, Serialize};

use super::{
    codec::{text_record, Record, TextRecord},
    StorageError,
};

/// SHA-256 of an access or refresh token.
pub type TokenHash = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// argon2id PHC string; `None` for accounts that cannot log in by password.
    pub password_hash: Option<String>,
    pub created_ts: u64,
    pub is_admin: bool,
    pub is_guest: bool,
    #[serde(default)]
    pub deactivated: bool,
    #[serde(default)]
    pub displayname: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// Left out of the user directory (`im.vector.hide_profile`).
    #[serde(default)]
    pub hidden_from_directory: bool,
}

impl UserRecord {
    pub fn new(password_hash: Option<String>, created_ts: u64, is_admin: bool, is_guest: bool) -> Self {
        Self {
            password_hash,
            created_ts,
            is_admin,
            is_guest,
            deactivated: false,
            displayname: None,
            avatar_url: None,
            hidden_from_directory: false,
        }
    }
}

impl Record for UserRecord {
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub display_name: Option<String>,
    pub created_ts: u64,
    pub last_seen_ts: Option<u64>,
    pub last_seen_ip: Option<String>,
    /// Every live access and refresh token of the device, so that deleting the
    /// device (or logging in again with its id) revokes them all.
    #[serde(default)]
    pub token_hashes: Vec<TokenHash>,
}

impl Record for DeviceRecord {
    const VERSION: u8 = 1;
}

/// Who a token belongs to. Shared shape of access and refresh tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub localpart: String,
    pub device_id: String,
    /// Milliseconds since the epoch; `None` never expires. Refresh tokens never do.
    pub expires_ts: Option<u64>,
    /// Set on tokens made by `/refresh`: the refresh token they replace, which
    /// stays valid until this token is first used (spec: "Refreshing access tokens").
    #[serde(default)]
    pub replaces_refresh_token: Option<TokenHash>,
    /// On an access token, the refresh token issued with it; on a refresh
    /// token, the access token issued with it.
    #[serde(default)]
    pub paired_token: Option<TokenHash>,
}

impl Record for TokenRecord {
    const VERSION: u8 = 1;
}

/// A user-interactive authentication session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiaaSessionRecord {
    /// The user the session authenticates; `None` during registration.
    pub localpart: Option<String>,
    /// Method and path of the request the session belongs to.
    pub endpoint: String,
    pub completed: Vec<String>,
    pub expires_ts: u64,
    /// During registration: the token validated by `m.login.registration_token`.
    #[serde(default)]
    pub registration_token: Option<String>,
    /// A flow completed with this session; it cannot be used again.
    #[serde(default)]
    pub consumed: bool,
    /// The address `m.login.email.identity` proved the user holds.
    #[serde(default)]
    pub validated_email: Option<String>,
    /// The parameters of the session's first request (JSON, `auth` left
    /// out), for later requests that send only `auth` (registration).
    #[serde(default)]
    pub params: Option<String>,
    /// The account a registration session created: repeating the request
    /// logs it in again rather than failing.
    #[serde(default)]
    pub registered: Option<String>,
}

impl Record for UiaaSessionRecord {
    const VERSION: u8 = 1;
}

/// How many registrations a registration token has completed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationTokenUsage {
    pub completed: u32,
}

impl Record for RegistrationTokenUsage {
    const VERSION: u8 = 1;
}

/// The server's ed25519 signing key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    /// The part after `ed25519:` in the key id.
    pub version: String,
    /// The key pair as PKCS#8 v2 DER, as ring produces it.
    pub pkcs8: Vec<u8>,
    /// Keys this server signed with before (`conduit server rotate-key`),
    /// still published as `old_verify_keys` so their signatures verify.
    #[serde(default)]
    pub old_keys: Vec<OldSigningKey>,
}

/// A retired signing key: its public half and when it stopped being used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldSigningKey {
    pub version: String,
    /// Unpadded base64.
    pub public_key: String,
    pub expired_ts: u64,
}

impl Record for SigningKeyRecord {
    const VERSION: u8 = 1;
}

/// A stored event: its signed canonical JSON (ruma's raw JSON values cannot go
/// through MessagePack) and where it sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPdu {
    pub json: String,
    pub room_id: String,
    /// The room's version (needed to parse the JSON back).
    pub room_version: String,
    /// Position in the timeline (the global order); 0 for an event outside
    /// the timeline (an outlier, a rejected event).
    pub count: u64,
    /// State snapshot before the event; none for an outlier (its state is
    /// not known).
    pub state_before: Option<u64>,
    /// The event was redacted (its JSON is the redacted form).
    #[serde(default)]
    pub redacted: bool,
    /// The redaction that did it (served as `unsigned.redacted_because`;
    /// absent for events redacted before this field existed).
    #[serde(default)]
    pub redacted_by: Option<String>,
    /// The short id state snapshots and auth chains use for the event
    /// (absent in records written when it was always the position).
    #[serde(default)]
    pub short: Option<u64>,
    /// What the authorisation checks decided.
    #[serde(default)]
    pub status: EventStatus,
    /// The sending device and its transaction id, for an event a local
    /// client sent with one (served to that device as `unsigned.transaction_id`).
    #[serde(default)]
    pub transaction: Option<(String, String)>,
}

impl StoredPdu {
    /// The event's short id (state maps, auth chains).
    pub fn short_id(&self) -> u64 {
        self.short.unwrap_or(self.count)
    }

    /// The snapshot of the state before the event; an outlier has none.
    pub fn snapshot_before(&self) -> Result<u64, super::StorageError> {
        self.state_before.ok_or_else(|| super::StorageError::corrupt("an event outside the timeline has no state"))
    }

    /// The event's position in the timeline, if it has one.
    pub fn position(&self) -> Option<u64> {
        (self.count > 0).then_some(self.count)
    }
}

/// What the authorisation checks of the server-server API ("Checks performed
/// on receipt of a PDU") made of an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventStatus {
    /// Passed every check: part of the room.
    #[default]
    Accepted,
    /// Allowed by the state before it but not by the current state: kept,
    /// but neither served to clients nor used as a forward extremity.
    SoftFailed,
    /// Refused by the auth rules: kept only so that it is not fetched again.
    Rejected,
}

impl Record for StoredPdu {
    const VERSION: u8 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    pub version: String,
    pub short_id: u64,
    /// Snapshot of the current state.
    pub current_state: u64,
    pub forward_extremities: Vec<String>,
    pub max_depth: u64,
    /// For a room joined through another server: the positions above this
    /// one and below the join are kept for the history fetched from peers
    /// (`/backfill`); 0 for a room whose whole history is here.
    #[serde(default)]
    pub backfill_floor: u64,
}

impl Record for RoomRecord {
    const VERSION: u8 = 1;
}

/// A state snapshot: a full map (no parent) or changes over its parent.
/// Entries are (short state key, short event id), sorted by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSnapshotRecord {
    pub parent: Option<u64>,
    /// 0 for a full snapshot, parent's layer + 1 for a diff.
    pub layer: u32,
    pub entries: Vec<(u64, u64)>,
}

impl Record for StateSnapshotRecord {
    const VERSION: u8 = 1;
}

/// A local room alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub room_id: String,
    /// Who created it (may delete it).
    pub creator: String,
}

impl Record for AliasRecord {
    const VERSION: u8 = 1;
}

/// A report of a room or an event, kept for the server's admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRecord {
    pub reporter: String,
    /// The room reported, or the event's room (absent for a user report;
    /// records written before user reports always have one).
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    /// The user reported.
    #[serde(default)]
    pub user_id: Option<String>,
    pub reason: Option<String>,
    pub ts: u64,
}

impl Record for ReportRecord {
    const VERSION: u8 = 1;
}

/// A child event's relation to its parent (`m.relates_to`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationRecord {
    pub child: String,
    pub rel_type: String,
    /// The child's event type.
    pub kind: String,
    pub sender: String,
}

impl Record for RelationRecord {
    const VERSION: u8 = 1;
}

/// One piece of account data (global or per room).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDataRecord {
    /// The content, as JSON text.
    pub content: String,
    /// Counter value of the last change (for `/sync`).
    pub count: u64,
}

impl Record for AccountDataRecord {
    const VERSION: u8 = 1;
}

/// A read receipt (or private read receipt) of a user in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    pub event_id: String,
    pub ts: u64,
    /// Counter value of this receipt (for `/sync`).
    pub count: u64,
    pub thread_id: Option<String>,
    /// Timeline position of the event read (absent in receipts written
    /// when an event's short id was its position).
    #[serde(default)]
    pub event_position: Option<u64>,
}

impl Record for ReceiptRecord {
    const VERSION: u8 = 1;
}

/// Another server's signing keys, as that server published them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerKeysRecord {
    /// The verified `/_matrix/key/v2/server` document (JSON, with its signatures).
    pub document: String,
    /// When it was fetched (ms).
    pub fetched_ts: u64,
}

impl Record for ServerKeysRecord {
    const VERSION: u8 = 1;
}

/// Another server's user's device list as last known here: from its
/// server's `/user/devices` answer, then kept up to date by its
/// `m.device_list_update` and `m.signing_key_update` EDUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteDeviceListRecord {
    /// The server's stream id for the user's list, as of this copy.
    pub stream_id: u64,
    /// An update could not be applied (a gap in `prev_id`): asked again
    /// before it is used.
    pub stale: bool,
    /// device id → its signed keys, with `unsigned.device_display_name` (JSON object).
    pub devices: String,
    pub master_key: Option<String>,
    pub self_signing_key: Option<String>,
    /// When it was last fetched whole (ms).
    pub fetched_ts: u64,
}

impl Record for RemoteDeviceListRecord {
    const VERSION: u8 = 1;
}

/// A room joined with partial state (`/send_join` answered without the
/// member events): what completing it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialStateRecord {
    /// This server's join, whose state before is completed.
    pub join_event_id: String,
    /// The server that answered the join (asked first for the full state).
    pub resident: String,
    /// The servers in the room before the join, as the resident said
    /// (`servers_in_room`): sent this server's events until the state is whole.
    pub servers_in_room: Vec<String>,
    /// When the join was stored (ms).
    pub joined_ts: u64,
}

impl Record for PartialStateRecord {
    const VERSION: u8 = 1;
}

/// The answer given to another server's transaction (`/send`), kept a day
/// so that a transaction sent again is answered the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnAnswerRecord {
    /// The answer (JSON).
    pub answer: String,
    /// When the transaction was received (ms).
    pub received_ts: u64,
}

impl Record for TxnAnswerRecord {
    const VERSION: u8 = 1;
}

/// Which of the two client-transaction tables takes new transactions, and
/// since when (`rooms::transactions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnGenerationRecord {
    /// 0: `txnid_eventid`, 1: `txnid_eventid_b`.
    pub current: u8,
    /// When that table started taking new transactions (ms).
    pub started_ts: u64,
}

impl Record for TxnGenerationRecord {
    const VERSION: u8 = 1;
}

/// An invite of a local user to a room of another server this server is
/// not in (or a rejection of one), or the user's knock on such a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteInviteRecord {
    /// The invite event as signed by both servers (JSON).
    pub event: String,
    /// The room's stripped state the inviting server sent (a JSON array).
    pub stripped_state: String,
    /// The position the invite (or its rejection) took: syncs after it see it.
    pub position: u64,
    /// The rejection (`leave`) event, once the user declined (JSON).
    #[serde(default)]
    pub rejection: Option<String>,
    /// A knock of the local user (`event` is the knock) rather than an invite.
    #[serde(default)]
    pub knock: bool,
}

impl Record for RemoteInviteRecord {
    const VERSION: u8 = 1;
}

/// A device's fallback key for one algorithm (spec: "One-time and fallback keys").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackKeyRecord {
    /// `algorithm:key id`.
    pub key_id: String,
    /// The key, as JSON text.
    pub key: String,
    /// Handed out by `/keys/claim` since it was uploaded.
    pub used: bool,
}

impl Record for FallbackKeyRecord {
    const VERSION: u8 = 1;
}

/// A to-device message waiting for its device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToDeviceRecord {
    pub sender: String,
    pub event_type: String,
    /// The content, as JSON text.
    pub content: String,
}

impl Record for ToDeviceRecord {
    const VERSION: u8 = 1;
}

/// A server-side key backup version (spec: "Server-side key backups").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupVersionRecord {
    pub algorithm: String,
    /// `auth_data`, as JSON text.
    pub auth_data: String,
    /// Keys stored in this version.
    pub count: u64,
    /// Changes whenever the stored keys change.
    pub etag: u64,
    /// Deleted versions are kept (marked) so their numbers are never reused.
    pub deleted: bool,
}

impl Record for BackupVersionRecord {
    const VERSION: u8 = 1;
}

/// An uploaded (or created, still empty) media item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// SHA-256 of the content (hex), naming its file; `None` until uploaded.
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: u64,
    pub uploader: String,
    pub created_ts: u64,
    /// The admin who quarantined it: downloads then answer 404, and a
    /// remote item is not fetched again.
    #[serde(default)]
    pub quarantined_by: Option<String>,
}

impl Record for MediaRecord {
    const VERSION: u8 = 1;
}

/// A notification of a user about an event (push rules said `notify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub highlight: bool,
    /// The thread root, or empty for the main timeline.
    pub thread: String,
    /// The push rule actions, as JSON text.
    pub actions: String,
}

impl Record for NotificationRecord {
    const VERSION: u8 = 1;
}

/// Notifications and highlights counted together; signed, since a user's
/// exceptions count down from what an event's default outcome counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTally {
    pub notifications: i64,
    pub highlights: i64,
}

impl std::ops::Add for PushTally {
    type Output = PushTally;

    fn add(self, other: PushTally) -> PushTally {
        PushTally {
            notifications: self.notifications + other.notifications,
            highlights: self.highlights + other.highlights,
        }
    }
}

impl std::ops::Sub for PushTally {
    type Output = PushTally;

    fn sub(self, other: PushTally) -> PushTally {
        PushTally {
            notifications: self.notifications - other.notifications,
            highlights: self.highlights - other.highlights,
        }
    }
}

/// What an event's push rules did, with running sums up to and including
/// the event (all, and main timeline). Two tables hold it:
/// - `event_push`: for the local members on the server's default rules
///   (written only when that notifies); the sums are the room's totals;
/// - `push_exceptions`: for a local user for whom the event did otherwise
///   (their own event, a mention, their own rules); the sums are that user's
///   differences from the defaults in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRecord {
    /// The push rule actions, as JSON text (empty: no notification).
    pub actions: String,
    pub highlight: bool,
    /// The thread root, or empty for the main timeline.
    pub thread: String,
    pub all: PushTally,
    pub main: PushTally,
}

impl Record for PushRecord {
    const VERSION: u8 = 1;
}

/// A pusher as its device set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PusherRecord {
    /// The pusher's JSON, as the client set it (what `GET /pushers` shows).
    pub pusher: String,
    /// The device that set it (empty for pushers stored before this was
    /// kept): logging that device out removes the pusher.
    pub device_id: String,
}

impl Record for PusherRecord {
    const VERSION: u8 = 2;

    /// Version 1 was the pusher's JSON alone.
    fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StorageError> {
        if version != 1 {
            return Err(StorageError::corrupt(format!("no upgrade of a pusher from record version {version}")));
        }
        let pusher: String = rmp_serde::from_slice(bytes).map_err(|e| StorageError::corrupt(format!("decode: {e}")))?;
        Ok(Self { pusher, device_id: String::new() })
    }
}

/// A push waiting for its gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushJobRecord {
    pub room_id: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Only the unread count changed (the user read a room): no event.
    #[serde(default)]
    pub badge_only: bool,
}

impl Record for PushJobRecord {
    const VERSION: u8 = 1;
}

/// What the message search index keeps per (word, event position): the
/// room, the field the word is in and the state snapshot before the event
/// (absent in entries written before it was kept).
///
/// Stored as the text `#short room id \n field code \n snapshot` (about
/// 12 bytes, a field code being the field's initial: `b`ody, `n`ame,
/// `t`opic); entries of earlier versions, `room id \n field \n snapshot`
/// (about 65 bytes), are still read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchEntry {
    pub room: SearchRoom,
    pub field: String,
    pub state_before: Option<u64>,
}

/// The room of a search index entry: its short id, or (entries of earlier
/// versions) its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchRoom {
    Short(u64),
    Id(String),
}

/// One event in a block of the message search index: its position, its
/// room's short id, the field the word is in (0 `content.body`, 1
/// `content.name`, 2 `content.topic`) and the state snapshot before it (who
/// may see it). A MessagePack array of four integers, about 15 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchPosting {
    pub position: u64,
    pub room_short: u64,
    pub field: u8,
    pub state_before: u64,
}

/// The events of one word indexed together, in position order: one stored
/// entry for a word in a whole batch of messages, instead of one per
/// message and word.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchBlock {
    pub postings: Vec<SearchPosting>,
}

impl Record for SearchBlock {
    const VERSION: u8 = 1;
}

/// The searchable fields and their codes in compact entries.
const SEARCH_FIELD_CODES: [(&str, &str); 3] = [("content.body", "b"), ("content.name", "n"), ("content.topic", "t")];

impl TextRecord for SearchEntry {
    fn to_text(&self) -> String {
        let code = SEARCH_FIELD_CODES.iter().find(|(field, _)| *field == self.field).map(|(_, code)| *code);
        let (room, field) = match (&self.room, code) {
            (SearchRoom::Short(short), Some(code)) => (format!("#{short}"), code),
            (SearchRoom::Short(short), None) => (format!("#{short}"), self.field.as_str()),
            (SearchRoom::Id(id), _) => (id.clone(), self.field.as_str()),
        };
        match self.state_before {
            Some(snapshot) => format!("{room}\n{field}\n{snapshot}"),
            None => format!("{room}\n{field}"),
        }
    }

    fn from_text(text: &str) -> Result<Self, StorageError> {
        let mut parts = text.splitn(3, '\n');
        let (Some(room), Some(field)) = (parts.next(), parts.next()) else {
            return Err(StorageError::corrupt("search index entry without a field"));
        };
        let state_before = parts.next().and_then(|snapshot| snapshot.parse().ok());
        let (room, field) = match room.strip_prefix('#') {
            Some(short) => {
                let short = short.parse().map_err(|_| StorageError::corrupt("search index entry's room"))?;
                let field = SEARCH_FIELD_CODES.iter().find(|(_, code)| *code == field).map_or(field, |(name, _)| *name);
                (SearchRoom::Short(short), field)
            }
            None => (SearchRoom::Id(room.to_owned()), field),
        };
        Ok(Self { room, field: field.to_owned(), state_before })
    }
}

text_record!(SearchEntry);

/// A cached thumbnail: the file holding it (named by its SHA-256, hex) and
/// its content type. Stored as the text `sha256 \n content type` of earlier
/// versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedThumbnail {
    pub sha256: String,
    pub content_type: String,
}

impl TextRecord for CachedThumbnail {
    fn to_text(&self) -> String {
        format!("{}\n{}", self.sha256, self.content_type)
    }

    fn from_text(text: &str) -> Result<Self, StorageError> {
        let (sha256, content_type) =
            text.split_once('\n').ok_or_else(|| StorageError::corrupt("cached thumbnail without a content type"))?;
        Ok(Self { sha256: sha256.to_owned(), content_type: content_type.to_owned() })
    }
}

text_record!(CachedThumbnail);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::codec::{decode_record, encode_record};

    /// Values kept as text keep the bytes earlier versions wrote.
    #[test]
    fn text_values_keep_the_bytes_of_earlier_versions() {
        let entry =
            SearchEntry { room: SearchRoom::Id("!r:x".into()), field: "content.body".into(), state_before: Some(42) };
        let legacy = encode_record(&"!r:x\ncontent.body\n42".to_owned()).unwrap();
        assert_eq!(encode_record(&entry).unwrap(), legacy);
        assert_eq!(decode_record::<SearchEntry>(&legacy).unwrap(), entry);
        let older = encode_record(&"!r:x\ncontent.body".to_owned()).unwrap();
        let without_snapshot = SearchEntry { state_before: None, ..entry };
        assert_eq!(decode_record::<SearchEntry>(&older).unwrap(), without_snapshot);
        assert_eq!(encode_record(&without_snapshot).unwrap(), older);
        assert!(decode_record::<SearchEntry>(&encode_record(&"no field".to_owned()).unwrap()).is_err());
        // New entries name the room by its short id and the field by its code.
        let compact = SearchEntry { room: SearchRoom::Short(7), ..without_snapshot.clone() };
        let compact = SearchEntry { state_before: Some(42), ..compact };
        let bytes = encode_record(&compact).unwrap();
        assert_eq!(bytes, encode_record(&"#7\nb\n42".to_owned()).unwrap());
        assert_eq!(decode_record::<SearchEntry>(&bytes).unwrap(), compact);
        let topic = SearchEntry { field: "content.topic".into(), ..compact };
        assert_eq!(decode_record::<SearchEntry>(&encode_record(&topic).unwrap()).unwrap(), topic);
        assert!(decode_record::<SearchEntry>(&encode_record(&"#x\nb".to_owned()).unwrap()).is_err());

        let thumbnail = CachedThumbnail { sha256: "ab12".into(), content_type: "image/png".into() };
        let legacy = encode_record(&"ab12\nimage/png".to_owned()).unwrap();
        assert_eq!(encode_record(&thumbnail).unwrap(), legacy);
        assert_eq!(decode_record::<CachedThumbnail>(&legacy).unwrap(), thumbnail);
        assert!(decode_record::<CachedThumbnail>(&encode_record(&"ab12".to_owned()).unwrap()).is_err());
    }

    #[test]
    fn pushers_stored_as_bare_json_are_read_without_a_device() {
        let json = r#"{"kind":"http","app_id":"a","pushkey":"k"}"#.to_owned();
        let version_1 = encode_record(&json).unwrap();
        let record: PusherRecord = decode_record(&version_1).unwrap();
        assert_eq!(record, PusherRecord { pusher: json, device_id: String::new() });
        let current = PusherRecord { pusher: "{}".to_owned(), device_id: "PHONE".to_owned() };
        assert_eq!(decode_record::<PusherRecord>(&encode_record(&current).unwrap()).unwrap(), current);
    }

    /// Events stored before short ids and positions were separated: one
    /// number for both, a snapshot always, accepted.
    #[test]
    fn events_of_the_single_number_layout_read_as_accepted_timeline_events() {
        #[derive(Serialize, Deserialize)]
        struct OldStoredPdu {
            json: String,
            room_id: String,
            room_version: String,
            count: u64,
            state_before: u64,
            redacted: bool,
        }
        impl Record for OldStoredPdu {
            const VERSION: u8 = 1;
        }
        let old = OldStoredPdu {
            json: "{}".into(),
            room_id: "!r:x".into(),
            room_version: "10".into(),
            count: 42,
            state_before: 7,
            redacted: false,
        };
        let read: StoredPdu = decode_record(&encode_record(&old).unwrap()).unwrap();
        assert_eq!((read.short_id(), read.position(), read.state_before), (42, Some(42), Some(7)));
        assert_eq!(read.status, EventStatus::Accepted);
        assert_eq!(read.snapshot_before().unwrap(), 7);
        let outlier = StoredPdu { count: 0, state_before: None, short: Some(99), transaction: None, ..read };
        let outlier: StoredPdu = decode_record(&encode_record(&outlier).unwrap()).unwrap();
        assert_eq!((outlier.short_id(), outlier.position()), (99, None));
        assert!(outlier.snapshot_before().is_err());
    }
}

/// A mail waiting to be handed to the SMTP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailRecord {
    /// The recipient's address.
    pub to: String,
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The same body in HTML.
    pub html: String,
    pub queued_ts: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When (ms) the next attempt is due.
    pub next_attempt_ts: u64,
}

impl Record for MailRecord {
    const VERSION: u8 = 1;
}

/// An email address being validated (a link or code sent by mail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailValidationRecord {
    /// The client's secret: only the client that asked may use the result.
    pub client_secret: String,
    /// The address, normalised.
    pub address: String,
    /// `register`, `add` or `password_reset`.
    pub purpose: String,
    /// The token in the link (and the code).
    pub token: String,
    /// The highest `send_attempt` a mail was sent for.
    pub send_attempt: u64,
    pub expires_ts: u64,
    /// When the token came back; `None` until then.
    pub validated_ts: Option<u64>,
    /// Wrong tokens submitted; past a few the validation is void.
    pub failed_submissions: u32,
}

impl Record for EmailValidationRecord {
    const VERSION: u8 = 1;
}

/// An OpenID token a user asked for, to prove who they are to a third
/// party (`/user/{userId}/openid/request_token`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenIdTokenRecord {
    pub localpart: String,
    pub expires_ts: u64,
}

impl Record for OpenIdTokenRecord {
    const VERSION: u8 = 1;
}

/// An identity service access token (`/_matrix/identity/v2/account/register`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityTokenRecord {
    /// The user it was given to (of this server or another).
    pub user_id: String,
    pub created_ts: u64,
}

impl Record for IdentityTokenRecord {
    const VERSION: u8 = 1;
}

/// When an account ends (`[account_validity]`) and where its renewal stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidityRecord {
    pub expires_ts: u64,
    /// The token of the renewal link (it names the account).
    pub renewal_token: String,
    /// Renewal mails sent for this period.
    pub reminders_sent: u32,
    /// The account's end was seen by a pass (it left the user directory).
    pub expired_noted: bool,
}

impl Record for ValidityRecord {
    const VERSION: u8 = 1;
}

/// An invite by email address waiting for the address to be bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailInviteRecord {
    pub room_id: String,
    /// The user who invited (of this server or a peer).
    pub sender: String,
    /// The address as the room shows it.
    pub display_name: String,
    pub created_ts: u64,
}

impl Record for EmailInviteRecord {
    const VERSION: u8 = 1;
}
