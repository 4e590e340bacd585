//! Named keys of the tables whose layout predates the composite-key rule of
//! [`super::codec`]: inside one key part, some fields are joined by a NUL or
//! a newline. Each type here has typed fields and encodes to exactly the
//! bytes earlier versions wrote (the tests below pin them), so existing
//! databases need no migration; nothing outside `storage` builds or splits
//! these strings.
//!
//! Decoding splits each part at the first separator of each field: every
//! field but the last of a part is one that cannot contain its separator
//! (localparts, device ids, user and room ids, app ids and backup versions
//! are checked where they come in); the last field of a part takes the rest.

use super::{
    codec::{prefix_of, text_record, KeyCodec, TextRecord, SEPARATOR},
    StorageError,
};

const NUL: u8 = 0;
const NEWLINE: u8 = b'\n';

/// Builds a key field by field.
struct KeyWriter(Vec<u8>);

impl KeyWriter {
    fn new() -> Self {
        Self(Vec::new())
    }

    /// A string field ended by `separator`.
    fn field(mut self, text: &str, separator: u8) -> Self {
        self.0.extend_from_slice(text.as_bytes());
        self.0.push(separator);
        self
    }

    /// A counter: 8 big-endian bytes.
    fn count(mut self, count: u64) -> Self {
        self.0.extend_from_slice(&count.to_be_bytes());
        self
    }

    /// The last field, which takes the rest of the key.
    fn last(mut self, text: &str) -> Vec<u8> {
        self.0.extend_from_slice(text.as_bytes());
        self.0
    }

    fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads a key field by field; every malformation is an error naming `what`.
struct KeyReader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> KeyReader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { rest: bytes, what }
    }

    fn corrupt(&self, problem: &str) -> StorageError {
        StorageError::corrupt(format!("{}: {problem}", self.what))
    }

    fn text(&self, bytes: &[u8]) -> Result<String, StorageError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("a field is not UTF-8"))
    }

    /// The string field up to `separator` (which is skipped).
    fn field(&mut self, separator: u8) -> Result<String, StorageError> {
        let at = self.rest.iter().position(|b| *b == separator).ok_or_else(|| self.corrupt("a field is missing"))?;
        let (field, rest) = self.rest.split_at(at);
        self.rest = &rest[1..];
        self.text(field)
    }

    fn count(&mut self) -> Result<u64, StorageError> {
        let (count, rest) =
            self.rest.split_first_chunk::<8>().ok_or_else(|| self.corrupt("the counter is cut short"))?;
        self.rest = rest;
        Ok(u64::from_be_bytes(*count))
    }

    /// The last field: the rest of the key.
    fn last(self) -> Result<String, StorageError> {
        self.text(self.rest)
    }

    /// Checks that the whole key was read.
    fn end(self) -> Result<(), StorageError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.corrupt("trailing bytes"))
        }
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// A client transaction of the room endpoints (`txnid_eventid`): which
/// request of which device it was. Bytes: localpart 0xFF device id `\n`
/// endpoint `\n` each path parameter and `\n`, then the transaction id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxnKey {
    pub localpart: String,
    pub device_id: String,
    pub request: TxnRequest,
    pub txn_id: String,
}

/// The request a transaction id was given to, with its path parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TxnRequest {
    /// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`.
    Send { room_id: String, event_type: String },
    /// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.
    Redact { room_id: String, event_id: String },
    /// `PUT /sendToDevice/{eventType}/{txnId}` as earlier versions recorded
    /// it in this table; to-device transactions have their own table now
    /// (`Tables::to_device_txns`), so this is only ever read.
    SendToDevice { event_type: String },
}

impl TxnRequest {
    fn endpoint(&self) -> &'static str {
        match self {
            Self::Send { .. } => "send",
            Self::Redact { .. } => "redact",
            Self::SendToDevice { .. } => "sendToDevice",
        }
    }

    fn params(&self) -> Vec<&str> {
        match self {
            Self::Send { room_id, event_type } => vec![room_id, event_type],
            Self::Redact { room_id, event_id } => vec![room_id, event_id],
            Self::SendToDevice { event_type } => vec![event_type],
        }
    }

    fn read(endpoint: &str, reader: &mut KeyReader<'_>) -> Result<Self, StorageError> {
        Ok(match endpoint {
            "send" => Self::Send { room_id: reader.field(NEWLINE)?, event_type: reader.field(NEWLINE)? },
            "redact" => Self::Redact { room_id: reader.field(NEWLINE)?, event_id: reader.field(NEWLINE)? },
            "sendToDevice" => Self::SendToDevice { event_type: reader.field(NEWLINE)? },
            _ => return Err(reader.corrupt("unknown endpoint")),
        })
    }
}

impl KeyCodec for TxnKey {
    fn encode(&self) -> Vec<u8> {
        let mut key = KeyWriter::new()
            .field(&self.localpart, SEPARATOR)
            .field(&self.device_id, NEWLINE)
            .field(self.request.endpoint(), NEWLINE);
        for param in self.request.params() {
            key = key.field(param, NEWLINE);
        }
        key.last(&self.txn_id)
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = KeyReader::new(bytes, "transaction key");
        let localpart = reader.field(SEPARATOR)?;
        let device_id = reader.field(NEWLINE)?;
        let endpoint = reader.field(NEWLINE)?;
        let request = TxnRequest::read(&endpoint, &mut reader)?;
        Ok(Self { localpart, device_id, request, txn_id: reader.last()? })
    }
}

/// An account data entry (`account_data`): global (`room_id` `None`) or of
/// a room. Bytes: localpart 0xFF room id (empty when global) `\n` type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountDataKey {
    pub localpart: String,
    pub room_id: Option<String>,
    pub kind: String,
}

impl AccountDataKey {
    /// An empty room id is the global scope, as it always was on disk.
    pub fn new(localpart: &str, room_id: Option<&str>, kind: &str) -> Self {
        Self {
            localpart: localpart.to_owned(),
            room_id: room_id.filter(|room| !room.is_empty()).map(str::to_owned),
            kind: kind.to_owned(),
        }
    }

    /// Every entry of a user.
    pub fn user_prefix(localpart: &str) -> Vec<u8> {
        prefix_of(localpart)
    }
}

impl KeyCodec for AccountDataKey {
    fn encode(&self) -> Vec<u8> {
        KeyWriter::new()
            .field(&self.localpart, SEPARATOR)
            .field(self.room_id.as_deref().unwrap_or_default(), NEWLINE)
            .last(&self.kind)
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = KeyReader::new(bytes, "account data key");
        let localpart = reader.field(SEPARATOR)?;
        let room_id = non_empty(reader.field(NEWLINE)?);
        Ok(Self { localpart, room_id, kind: reader.last()? })
    }
}

/// Whose receipt of which type, in which thread (`None`: unthreaded). Text:
/// user id `\n` receipt type `\n` thread id (empty when unthreaded); it is
/// the second part of a `receipts` key and the value of `receipt_positions`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReceiptId {
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: Option<String>,
}

impl ReceiptId {
    fn write(&self, key: KeyWriter) -> Vec<u8> {
        key.field(&self.user_id, NEWLINE)
            .field(&self.receipt_type, NEWLINE)
            .last(self.thread_id.as_deref().unwrap_or_default())
    }

    fn read(mut reader: KeyReader<'_>) -> Result<Self, StorageError> {
        let user_id = reader.field(NEWLINE)?;
        let receipt_type = reader.field(NEWLINE)?;
        Ok(Self { user_id, receipt_type, thread_id: non_empty(reader.last()?) })
    }
}

impl TextRecord for ReceiptId {
    fn to_text(&self) -> String {
        String::from_utf8_lossy(&self.write(KeyWriter::new())).into_owned()
    }

    fn from_text(text: &str) -> Result<Self, StorageError> {
        Self::read(KeyReader::new(text.as_bytes(), "receipt id"))
    }
}

text_record!(ReceiptId);

/// A receipt in a room (`receipts`). Bytes: room id 0xFF the [`ReceiptId`] text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReceiptKey {
    pub room_id: String,
    pub receipt: ReceiptId,
}

impl ReceiptKey {
    /// Every receipt in a room.
    pub fn room_prefix(room_id: &str) -> Vec<u8> {
        prefix_of(room_id)
    }

    /// Every receipt of a user in a room.
    pub fn user_prefix(room_id: &str, user_id: &str) -> Vec<u8> {
        KeyWriter::new().field(room_id, SEPARATOR).field(user_id, NEWLINE).finish()
    }
}

impl KeyCodec for ReceiptKey {
    fn encode(&self) -> Vec<u8> {
        self.receipt.write(KeyWriter::new().field(&self.room_id, SEPARATOR))
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = KeyReader::new(bytes, "receipt key");
        let room_id = reader.field(SEPARATOR)?;
        Ok(Self { room_id, receipt: ReceiptId::read(reader)? })
    }
}

/// A notification of a user in a room at an event's position
/// (`notifications`). Bytes: localpart NUL room id 0xFF count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NotificationKey {
    pub localpart: String,
    pub room_id: String,
    pub count: u64,
}

impl NotificationKey {
    pub fn new(localpart: &str, room_id: &str, count: u64) -> Self {
        Self { localpart: localpart.to_owned(), room_id: room_id.to_owned(), count }
    }
}

impl KeyCodec for NotificationKey {
    fn encode(&self) -> Vec<u8> {
        KeyWriter::new().field(&self.localpart, NUL).field(&self.room_id, SEPARATOR).count(self.count).finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = KeyReader::new(bytes, "notification key");
        let localpart = reader.field(NUL)?;
        let room_id = reader.field(SEPARATOR)?;
        let count = reader.count()?;
        reader.end()?;
        Ok(Self { localpart, room_id, count })
    }
}

/// The prefix of a device's entries in the key tables (`one_time_keys`,
/// `fallback_keys`): localpart 0xFF device id NUL.
fn device_keys_prefix(localpart: &str, device_id: &str) -> KeyWriter {
    KeyWriter::new().field(localpart, SEPARATOR).field(device_id, NUL)
}

/// A one-time key of a device (`one_time_keys`). Bytes: localpart 0xFF
/// device id NUL key id (`algorithm:id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OneTimeKeyKey {
    pub localpart: String,
    pub device_id: String,
    pub key_id: String,
}

impl OneTimeKeyKey {
    /// The algorithm part of the key id.
    pub fn algorithm(&self) -> &str {
        self.key_id.split_once(':').map_or(self.key_id.as_str(), |(algorithm, _)| algorithm)
    }

    /// Every one-time key of a device.
    pub fn device_prefix(localpart: &str, device_id: &str) -> Vec<u8> {
        device_keys_prefix(localpart, device_id).finish()
    }

    /// The one-time keys of a device for one algorithm.
    pub fn algorithm_prefix(localpart: &str, device_id: &str, algorithm: &str) -> Vec<u8> {
        device_keys_prefix(localpart, device_id).field(algorithm, b':').finish()
    }
}

impl KeyCodec for OneTimeKeyKey {
    fn encode(&self) -> Vec<u8> {
        device_keys_prefix(&self.localpart, &self.device_id).last(&self.key_id)
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = KeyReader::new(bytes, "one-time key key");
        let localpart = reader.field(SEPARATOR)?;
        let device_id = reader.field(NUL)?;
        Ok(Self { localpart, device_id, key_id: reader.last()? })
    }
}

/// The fallback key of a device for one algorithm (`fallback_keys`). Bytes:
/// localpart 0xFF device id NUL algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FallbackKeyKey {
    pub localpart: String,
    pub device_id: String,
    pub algorithm: String,
}

impl FallbackKeyKey {
    /// Every fallback key of a device.
    pub fn device_prefix(localpart: &str, device_id: &str) -> Vec<u8> {
        device_keys_prefix(localpart, device_id).finish()
    }
}

impl KeyCodec for FallbackKeyKey {
    fn encode(&self) -> Vec<u8> {
        device_keys_prefix(&self.localpart, &self.device_id).last(&self.algorithm)
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = KeyReader::new(bytes, "fallback key key");
        let localpart = reader.field(SEPARATOR)?;
        let device_id = reader.field(NUL)?;
        Ok(Self { localpart, device_id, algorithm: reader.last()? })
    }
}

/// A to-device message waiting for a device, at its position (`to_device`).
/// Bytes: localpart NUL device id 0xFF count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ToDeviceKey {
    pub localpart: String,
    pub device_id: String,
    pub count: u64,
}

impl ToDeviceKey {
    pub fn new(localpart: &str, device_id: &str, count: u64) -> Self {
        Self { localpart: localpart.to_owned(), device_id: device_id.to_owned(), count }
    }

    /// Every message waiting for a device.
    pub fn device_prefix(localpart: &str, device_id: &str) -> Vec<u8> {
        KeyWriter::new().field(localpart, NUL).field(device_id, SEPARATOR).finish()
    }
}

impl KeyCodec for ToDeviceKey {
    fn encode(&self) -> Vec<u8> {
        KeyWriter::new().field(&self.localpart, NUL).field(&self.device_id, SEPARATOR).count(self.count).finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = KeyReader::new(bytes, "to-device key");
        let localpart = reader.field(NUL)?;
        let device_id = reader.field(SEPARATOR)?;
        let count = reader.count()?;
        reader.end()?;
        Ok(Self { localpart, device_id, count })
    }
}

/// A backed-up room key (`backup_keys`). Bytes: localpart 0xFF version (20
/// decimal digits, so versions sort numerically) NUL room id NUL session id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackupKeyKey {
    pub localpart: String,
    pub version: u64,
    pub room_id: String,
    pub session_id: String,
}

impl BackupKeyKey {
    fn version_field(localpart: &str, version: u64) -> KeyWriter {
        KeyWriter::new().field(localpart, SEPARATOR).field(&format!("{version:020}"), NUL)
    }

    /// Every key of a backup version.
    pub fn version_prefix(localpart: &str, version: u64) -> Vec<u8> {
        Self::version_field(localpart, version).finish()
    }

    /// The keys of one room in a backup version.
    pub fn room_prefix(localpart: &str, version: u64, room_id: &str) -> Vec<u8> {
        Self::version_field(localpart, version).field(room_id, NUL).finish()
    }
}

impl KeyCodec for BackupKeyKey {
    fn encode(&self) -> Vec<u8> {
        Self::version_field(&self.localpart, self.version).field(&self.room_id, NUL).last(&self.session_id)
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = KeyReader::new(bytes, "backup key key");
        let localpart = reader.field(SEPARATOR)?;
        let digits = reader.field(NUL)?;
        let version = (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
            .ok_or_else(|| reader.corrupt("the version is not 20 digits"))?;
        let room_id = reader.field(NUL)?;
        Ok(Self { localpart, version, room_id, session_id: reader.last()? })
    }
}

/// One pusher of one user: the key of `pushers`, and the pusher a
/// `push_queue` job goes to. Bytes (`pushers`): localpart 0xFF app id NUL
/// pushkey. App ids and pushkeys never contain NUL (refused when set).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PusherId {
    pub localpart: String,
    pub app_id: String,
    pub pushkey: String,
}

impl PusherId {
    pub fn new(localpart: &str, app_id: &str, pushkey: &str) -> Self {
        Self { localpart: localpart.to_owned(), app_id: app_id.to_owned(), pushkey: pushkey.to_owned() }
    }

    /// Every pusher of a user.
    pub fn user_prefix(localpart: &str) -> Vec<u8> {
        prefix_of(localpart)
    }

    /// Whether an app id and pushkey fit the key layout: neither contains
    /// the NUL that separates them.
    pub fn can_hold(app_id: &str, pushkey: &str) -> bool {
        !app_id.contains('\0') && !pushkey.contains('\0')
    }

    /// The same app id and pushkey (another user's pusher, say).
    pub fn same_pusher(&self, other: &PusherId) -> bool {
        self.app_id == other.app_id && self.pushkey == other.pushkey
    }
}

impl KeyCodec for PusherId {
    fn encode(&self) -> Vec<u8> {
        KeyWriter::new().field(&self.localpart, SEPARATOR).field(&self.app_id, NUL).last(&self.pushkey)
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = KeyReader::new(bytes, "pusher key");
        let localpart = reader.field(SEPARATOR)?;
        let app_id = reader.field(NUL)?;
        Ok(Self { localpart, app_id, pushkey: reader.last()? })
    }
}

/// A push waiting to be sent (`push_queue`), in event order. Bytes: count,
/// then localpart NUL app id NUL pushkey.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PushJobKey {
    pub count: u64,
    pub pusher: PusherId,
}

impl KeyCodec for PushJobKey {
    fn encode(&self) -> Vec<u8> {
        let PusherId { localpart, app_id, pushkey } = &self.pusher;
        KeyWriter::new().count(self.count).field(localpart, NUL).field(app_id, NUL).last(pushkey)
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut reader = KeyReader::new(bytes, "push job key");
        let count = reader.count()?;
        let localpart = reader.field(NUL)?;
        let app_id = reader.field(NUL)?;
        Ok(Self { count, pusher: PusherId { localpart, app_id, pushkey: reader.last()? } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::codec::{decode_record, encode_record};

    fn s(text: &str) -> String {
        text.to_owned()
    }

    /// Encodes `key`, compares with the bytes earlier versions wrote, and
    /// decodes those bytes back to `key`.
    fn assert_legacy<K: KeyCodec + PartialEq + std::fmt::Debug>(key: K, legacy: &[u8]) {
        assert_eq!(key.encode(), legacy, "{key:?} must keep its bytes on disk (a change needs a migration)");
        assert_eq!(K::decode(legacy).unwrap(), key);
    }

    /// How earlier versions built a `(String, String)` key, byte by byte.
    fn pair(first: &str, second: &str) -> Vec<u8> {
        [first.as_bytes(), &[0xFF], second.as_bytes()].concat()
    }

    /// How earlier versions built a `(String, u64)` key, byte by byte.
    fn string_count(first: &str, count: u64) -> Vec<u8> {
        [first.as_bytes(), &[0xFF], &count.to_be_bytes()].concat()
    }

    /// How earlier versions built a `(u64, String)` key, byte by byte.
    fn count_string(count: u64, second: &str) -> Vec<u8> {
        [&count.to_be_bytes()[..], second.as_bytes()].concat()
    }

    fn send_txn() -> TxnKey {
        TxnKey {
            localpart: s("alice"),
            device_id: s("DEV"),
            request: TxnRequest::Send { room_id: s("!r:x"), event_type: s("m.room.message") },
            txn_id: s("t1"),
        }
    }

    #[test]
    fn every_named_key_keeps_the_bytes_of_earlier_versions() {
        assert_legacy(send_txn(), &pair("alice", "DEV\nsend\n!r:x\nm.room.message\nt1"));
        let redact = TxnKey { request: TxnRequest::Redact { room_id: s("!r:x"), event_id: s("$e") }, ..send_txn() };
        assert_legacy(redact, &pair("alice", "DEV\nredact\n!r:x\n$e\nt1"));
        let to_device = TxnKey { request: TxnRequest::SendToDevice { event_type: s("m.x") }, ..send_txn() };
        assert_legacy(to_device, &pair("alice", "DEV\nsendToDevice\nm.x\nt1"));

        assert_legacy(AccountDataKey::new("alice", None, "m.push_rules"), &pair("alice", "\nm.push_rules"));
        assert_legacy(AccountDataKey::new("alice", Some("!r:x"), "m.tag"), &pair("alice", "!r:x\nm.tag"));

        let receipt = ReceiptId { user_id: s("@b:x"), receipt_type: s("m.read"), thread_id: None };
        assert_legacy(ReceiptKey { room_id: s("!r:x"), receipt: receipt.clone() }, &pair("!r:x", "@b:x\nm.read\n"));
        let threaded = ReceiptId { thread_id: Some(s("$root")), ..receipt.clone() };
        assert_legacy(ReceiptKey { room_id: s("!r:x"), receipt: threaded }, &pair("!r:x", "@b:x\nm.read\n$root"));
        assert_eq!(encode_record(&receipt).unwrap(), encode_record(&s("@b:x\nm.read\n")).unwrap());

        assert_legacy(NotificationKey::new("alice", "!r:x", 7), &string_count("alice\0!r:x", 7));
        let one_time = OneTimeKeyKey { localpart: s("alice"), device_id: s("DEV"), key_id: s("signed_curve25519:AAA") };
        assert_legacy(one_time, &pair("alice", "DEV\0signed_curve25519:AAA"));
        let fallback = FallbackKeyKey { localpart: s("alice"), device_id: s("DEV"), algorithm: s("signed_curve25519") };
        assert_legacy(fallback, &pair("alice", "DEV\0signed_curve25519"));
        assert_legacy(ToDeviceKey::new("alice", "DEV", 9), &string_count("alice\0DEV", 9));
        let backup = BackupKeyKey { localpart: s("alice"), version: 3, room_id: s("!r:x"), session_id: s("sess") };
        assert_legacy(backup, &pair("alice", "00000000000000000003\0!r:x\0sess"));
        assert_legacy(PusherId::new("alice", "im.app", "key"), &pair("alice", "im.app\0key"));
        let job = PushJobKey { count: 5, pusher: PusherId::new("alice", "im.app", "key") };
        assert_legacy(job, &count_string(5, "alice\0im.app\0key"));
    }

    #[test]
    fn prefixes_are_those_earlier_versions_scanned() {
        assert_eq!(AccountDataKey::user_prefix("alice"), prefix_of("alice"));
        assert_eq!(ReceiptKey::room_prefix("!r:x"), prefix_of("!r:x"));
        assert_eq!(ReceiptKey::user_prefix("!r:x", "@b:x"), pair("!r:x", "@b:x\n"));
        assert_eq!(OneTimeKeyKey::device_prefix("alice", "DEV"), pair("alice", "DEV\0"));
        assert_eq!(OneTimeKeyKey::algorithm_prefix("alice", "DEV", "curve"), pair("alice", "DEV\0curve:"));
        assert_eq!(FallbackKeyKey::device_prefix("alice", "DEV"), pair("alice", "DEV\0"));
        assert_eq!(ToDeviceKey::device_prefix("alice", "DEV"), prefix_of("alice\0DEV"));
        assert_eq!(BackupKeyKey::version_prefix("alice", 12), pair("alice", "00000000000000000012\0"));
        assert_eq!(BackupKeyKey::room_prefix("alice", 12, "!r:x"), pair("alice", "00000000000000000012\0!r:x\0"));
        assert_eq!(PusherId::user_prefix("alice"), prefix_of("alice"));
    }

    #[test]
    fn prefixes_select_their_keys_only() {
        let key = OneTimeKeyKey { localpart: s("alice"), device_id: s("DEV"), key_id: s("curve:1") };
        assert!(key.encode().starts_with(&OneTimeKeyKey::algorithm_prefix("alice", "DEV", "curve")));
        assert!(!key.encode().starts_with(&OneTimeKeyKey::algorithm_prefix("alice", "DEV", "cur")));
        assert!(!key.encode().starts_with(&OneTimeKeyKey::device_prefix("alice", "DE")));
        assert_eq!(key.algorithm(), "curve");
        let message = ToDeviceKey::new("alice", "DEV", u64::MAX);
        assert!(message.encode().starts_with(&ToDeviceKey::device_prefix("alice", "DEV")));
        assert!(!message.encode().starts_with(&ToDeviceKey::device_prefix("alice", "DEVX")));
        let backup = BackupKeyKey { localpart: s("a"), version: 10, room_id: s("!r"), session_id: s("s") };
        assert!(backup.encode().starts_with(&BackupKeyKey::room_prefix("a", 10, "!r")));
        assert!(!backup.encode().starts_with(&BackupKeyKey::version_prefix("a", 1)));
    }

    #[test]
    fn counters_in_named_keys_sort_numerically() {
        let keys: Vec<Vec<u8>> = [300, 2].map(|count| NotificationKey::new("a", "!r", count).encode()).to_vec();
        assert!(keys[1] < keys[0]);
        let versions: Vec<Vec<u8>> = [10, 9].map(|version| BackupKeyKey::version_prefix("a", version)).to_vec();
        assert!(versions[1] < versions[0]);
    }

    #[test]
    fn malformed_named_keys_are_errors_not_panics() {
        assert!(TxnKey::decode(&pair("alice", "DEV\nunknown\nx\nt")).is_err());
        assert!(TxnKey::decode(&pair("alice", "DEV\nsend\n!r:x")).is_err());
        assert!(TxnKey::decode(b"no separator").is_err());
        assert!(AccountDataKey::decode(&pair("alice", "no newline")).is_err());
        assert!(ReceiptKey::decode(&pair("!r:x", "@b:x")).is_err());
        assert!(NotificationKey::decode(&string_count("no nul", 1)).is_err());
        assert!(NotificationKey::decode(b"a\0!r\xFF\0\0").is_err(), "a short counter");
        assert!(ToDeviceKey::decode(&[string_count("a\0D", 1), vec![0]].concat()).is_err(), "trailing bytes");
        assert!(OneTimeKeyKey::decode(&pair("alice", "DEV")).is_err());
        assert!(FallbackKeyKey::decode(b"alice").is_err());
        assert!(BackupKeyKey::decode(&pair("alice", "3\0!r\0s")).is_err(), "a version of 1 digit");
        assert!(BackupKeyKey::decode(&pair("alice", "0000000000000000000x\0!r\0s")).is_err());
        assert!(BackupKeyKey::decode(&pair("alice", "99999999999999999999\0!r\0s")).is_err(), "past u64");
        assert!(PusherId::decode(&pair("alice", "no nul")).is_err());
        assert!(PushJobKey::decode(&[1, 2, 3]).is_err());
        assert!(PushJobKey::decode(&count_string(1, "alice\0only-app")).is_err());
        assert!(decode_record::<ReceiptId>(&encode_record(&s("no newline")).unwrap()).is_err());
        assert!(AccountDataKey::decode(&pair("alice", "\n\u{0}\u{1}")).is_ok());
        assert!(AccountDataKey::decode(b"alice\xFF\n\xC0").is_err(), "not UTF-8");
        for length in 0..24 {
            let bytes = vec![0xFF; length];
            let _ = (TxnKey::decode(&bytes), PushJobKey::decode(&bytes), NotificationKey::decode(&bytes));
        }
    }

    #[test]
    fn the_last_field_takes_the_rest() {
        let job = PushJobKey::decode(&count_string(1, "alice\0im.app\0key\0with nul")).unwrap();
        assert_eq!(job.pusher, PusherId::new("alice", "im.app", "key\0with nul"));
        let data = AccountDataKey::decode(&pair("alice", "!r:x\na\nb")).unwrap();
        assert_eq!((data.room_id.as_deref(), data.kind.as_str()), (Some("!r:x"), "a\nb"));
    }
}
