//! Every table of the database: its tree name, key type and record type.
//!
//! Tree names follow `key_value`. Changing a name, a key layout or a record in
//! a way that is not a defaulted new field at its end needs a migration. Keys are tuples
//! ([`super::codec`]) or the named key types of [`super::keys`]; each table
//! names the one module that owns it: other modules go through that module.

use super::{
    keys::{
        AccountDataKey, BackupKeyKey, FallbackKeyKey, NotificationKey, OneTimeKeyKey, PushJobKey, PusherId, ReceiptId,
        ReceiptKey, ToDeviceKey, TxnKey,
    },
    records::{
        AccountDataRecord, AliasRecord, BackupVersionRecord, CachedThumbnail, DeviceRecord, EmailInviteRecord,
        EmailValidationRecord, FallbackKeyRecord, IdentityTokenRecord, MailRecord, MediaRecord, NotificationRecord,
        OpenIdTokenRecord, PartialStateRecord, PushJobRecord, PushRecord, PusherRecord, ReceiptRecord,
        RegistrationTokenUsage, RelationRecord, RemoteDeviceListRecord, RemoteInviteRecord, ReportRecord, RoomRecord,
        SearchBlock, SearchEntry, ServerKeysRecord, StateSnapshotRecord, StoredPdu, ToDeviceRecord, TokenHash,
        TokenRecord, TxnAnswerRecord, UiaaSessionRecord, UserRecord, ValidityRecord,
    },
    StorageError, Table, TableOpener,
};

pub struct Tables {
    /// localpart → account. Owner: `users`.
    pub users: Table<String, UserRecord>,
    /// user id → when (ms) the account was erased on deactivation. Owner: `users::erased`.
    pub erased_users: Table<String, u64>,
    /// (localpart, device id) → device. Owner: `users::sessions`.
    pub devices: Table<(String, String), DeviceRecord>,
    /// SHA-256(access token) → owner. Owner: `users::sessions`.
    pub access_tokens: Table<TokenHash, TokenRecord>,
    /// SHA-256(refresh token) → owner. Owner: `users::sessions`.
    pub refresh_tokens: Table<TokenHash, TokenRecord>,
    /// session id → user-interactive auth progress. Owner: `users::uiaa`.
    pub uiaa_sessions: Table<String, UiaaSessionRecord>,
    /// registration token → completed registrations. Owner: `users::uiaa`.
    pub registration_token_uses: Table<String, RegistrationTokenUsage>,
    /// event id → short id, and back. Owner: `rooms` (as are all the room
    /// tables below, up to `thread_roots`, and `receipts`,
    /// `receipt_positions`, `published_rooms`, `event_push`, `push_exceptions`,
    /// `search_index`, `shortid_authchain`).
    pub eventid_shortid: Table<String, u64>,
    pub shortid_eventid: Table<u64, String>,
    /// (event type, state key) → short id, and back.
    pub statekey_shortid: Table<(String, String), u64>,
    pub shortid_statekey: Table<u64, (String, String)>,
    /// event id → the event and its place.
    pub eventid_pdu: Table<String, StoredPdu>,
    /// room id → version, current state, extremities.
    pub roomid_room: Table<String, RoomRecord>,
    /// (short room id, count) → event id: each room's timeline in order.
    pub room_timeline: Table<(u64, u64), String>,
    /// snapshot id → state snapshot (full or diff).
    pub snapshot_state: Table<u64, StateSnapshotRecord>,
    /// client transaction of a room endpoint → event id, in two generations
    /// that take turns (`rooms::transactions`). Owner: `rooms`.
    pub txnid_eventid: Table<TxnKey, String>,
    pub txnid_eventid_b: Table<TxnKey, String>,
    /// (localpart, room id) → membership of a local user (join, invite, leave, ban, knock).
    pub localpart_roomid_membership: Table<(String, String), String>,
    /// local room alias → room.
    pub alias_room: Table<String, AliasRecord>,
    /// (room id, alias) → creator: the local aliases of each room.
    pub roomid_alias: Table<(String, String), String>,
    /// (localpart, room id) → forgotten-at count: rooms a user has forgotten.
    pub localpart_roomid_forgotten: Table<(String, String), u64>,
    /// count → report of a room or an event.
    pub reports: Table<u64, ReportRecord>,
    /// (parent event id, child count) → the relation: children in order.
    pub relations: Table<(String, u64), RelationRecord>,
    /// (room id, thread root event id) → count of the thread's latest event.
    pub thread_roots: Table<(String, String), u64>,
    /// account data entry → its content. Owner: `users::account_data`.
    pub account_data: Table<AccountDataKey, AccountDataRecord>,
    /// receipt of a user in a room → receipt.
    pub receipts: Table<ReceiptKey, ReceiptRecord>,
    /// (room id, count at which it was set) → which receipt (as in `receipts`):
    /// receipts in the order they changed, for incremental sync.
    pub receipt_positions: Table<(String, u64), ReceiptId>,
    /// (short room id, event count) → what the event's push rules did for
    /// the members on the default rules, with the room's running totals
    /// (unread counts are differences of totals).
    pub event_push: Table<(u64, u64), PushRecord>,
    /// (localpart, short room id, event count) → a local member's exception
    /// to the event's default outcome, with their running differences.
    pub push_exceptions: Table<(String, u64, u64), PushRecord>,
    /// Schema 2's per-member notification records: read only by the
    /// migration to schema 3, which empties it.
    pub legacy_notifications: Table<NotificationKey, NotificationRecord>,
    /// (localpart, device id) → the device's signed keys (JSON). Owner: `e2ee`
    /// (as are all the key tables below, up to `dehydrated_devices`).
    pub device_keys: Table<(String, String), String>,
    /// one-time key of a device → the key (JSON).
    pub one_time_keys: Table<OneTimeKeyKey, String>,
    /// (device, algorithm) → the device's fallback key.
    pub fallback_keys: Table<FallbackKeyKey, FallbackKeyRecord>,
    /// (localpart, "master" | "self_signing" | "user_signing") → cross-signing key (JSON).
    pub cross_signing_keys: Table<(String, String), String>,
    /// count → user id whose device list or keys changed then.
    pub key_changes: Table<u64, String>,
    /// (localpart, count) → user id whose keys changed then in a way only
    /// that local user sees (their own user-signing key, their signature
    /// of another user's master key). Owner: `e2ee`.
    pub private_key_changes: Table<(String, u64), String>,
    /// (device, count) → a to-device message waiting for the device.
    pub to_device: Table<ToDeviceKey, ToDeviceRecord>,
    /// (localpart, device id, event type, transaction id) → when (ms) that
    /// `sendToDevice` transaction was handled: retries are not queued again.
    /// Owner: `e2ee::to_device`.
    pub to_device_txns: Table<(String, String, String, String), u64>,
    /// (localpart, backup version) → the backup's description and counters.
    pub backup_versions: Table<(String, u64), BackupVersionRecord>,
    /// (user, backup version, room, session) → backed-up key (JSON).
    pub backup_keys: Table<BackupKeyKey, String>,
    /// localpart → the user's dehydrated device: `{"device_id", "device_data"}` (JSON).
    pub dehydrated_devices: Table<String, String>,
    /// room id → when it was published in the public room directory (ms).
    pub published_rooms: Table<String, u64>,
    /// media id → the media's metadata (its content is a file named by hash).
    /// Owner: `media` (also of `thumbnails`).
    pub media: Table<String, MediaRecord>,
    /// (media id, "WxH-method") → the file and content type of a cached
    /// thumbnail; media of other servers as "server/media id" (a local media
    /// id has no `/`).
    pub thumbnails: Table<(String, String), CachedThumbnail>,
    /// (server name, media id) → another server's media fetched and cached
    /// here (uploader empty, `created_ts` when fetched). Owner: `media`.
    pub remote_media: Table<(String, String), MediaRecord>,
    /// pusher → the pusher and the device that set it. Owner: `users::pushers`.
    pub pushers: Table<PusherId, PusherRecord>,
    /// Schema 2's hourly (time, position) checkpoints: emptied by the
    /// migration to schema 3.
    pub legacy_position_checkpoints: Table<u64, u64>,
    /// (event count, pusher) → a push waiting to be sent to that pusher's
    /// gateway, in event order. Owner: `push::queue`.
    pub push_queue: Table<PushJobKey, PushJobRecord>,
    /// (folded word, event count) → where the word is: the message search
    /// index as it was written until blocks (still read). Owner: `rooms::search`.
    pub search_index: Table<(String, u64), SearchEntry>,
    /// (folded word, first position) → the events of a batch with that
    /// word: the message search index. Owner: `rooms::search_queue`.
    pub search_blocks: Table<(String, u64), SearchBlock>,
    /// "indexed_upto" → the position up to which every timeline event's
    /// words are in the index. Owner: `rooms::search_queue`.
    pub search_progress: Table<String, u64>,
    /// position of a redacted event → its words, still in the blocks until
    /// the next block write removes them. Owner: `rooms::search_queue`.
    pub search_unindex: Table<u64, Vec<String>>,
    /// (localpart, filter id) → the filter's JSON. Owner: `users::filters`.
    pub filters: Table<(String, String), String>,
    /// short event id → the short ids of its whole auth chain, sorted.
    pub shortid_authchain: Table<u64, Vec<u64>>,
    /// localpart → when (ms) a profile change began whose member events may
    /// not all be written yet (replayed at start-up). Owner: `users`.
    pub profile_propagations: Table<String, u64>,
    /// server name → the last verified key document of that server (its
    /// own, self-signed `/_matrix/key/v2/server` answer). Owner: `federation`.
    pub server_keys: Table<String, ServerKeysRecord>,
    /// user id → another server's user's device list, cached while the user
    /// shares a room with a local user. Owner: `federation::device_lists`.
    pub remote_device_lists: Table<String, RemoteDeviceListRecord>,
    /// room id → a room joined with partial state, until it is completed.
    /// Owner: `rooms::partial_state`.
    pub partial_state_rooms: Table<String, PartialStateRecord>,
    /// (destination server, event position) → (room id, event id): a local
    /// event that server has not acknowledged yet, written in the event's own
    /// batch. Owner: `rooms::outbox`.
    pub outbox: Table<(String, u64), (String, String)>,
    /// (origin server, transaction id) → the answer given: a transaction
    /// sent again within a day gets the same answer. Owner: `federation::receive`.
    pub federation_txns: Table<(String, String), TxnAnswerRecord>,
    /// (localpart, room id) → an invite to a room of another server this
    /// server is not in. Owner: `rooms::invites`.
    pub remote_invites: Table<(String, String), RemoteInviteRecord>,
    /// validation session id → an email address being validated. Owner: `users::threepids`.
    pub email_validations: Table<String, EmailValidationRecord>,
    /// email address → the local account it belongs to. Owner: `users::threepids`.
    pub email_owners: Table<String, String>,
    /// (localpart, email address) → when (ms) it was added. Owner: `users::threepids`.
    pub user_emails: Table<(String, String), u64>,
    /// SHA-256(address medium pepper) of each bound address → the address:
    /// the identity lookup's index. Owner: `users::threepids`.
    pub email_lookup_hashes: Table<String, String>,
    /// SHA-256(OpenID token) → its user and expiry. Owner: `users::openid`.
    pub openid_tokens: Table<TokenHash, OpenIdTokenRecord>,
    /// SHA-256(identity service token) → its user. Owner: `identity`.
    pub identity_tokens: Table<TokenHash, IdentityTokenRecord>,
    /// (email address, token) → an invite waiting for the address to be
    /// bound. Owner: `identity::invites`.
    pub email_invites: Table<(String, String), EmailInviteRecord>,
    /// room id → when an operator blocked it (no local user joins it again).
    /// Owner: `rooms::admin`.
    pub blocked_rooms: Table<String, u64>,
    /// localpart → when the account ends. Owner: `users::validity`.
    pub account_validity: Table<String, ValidityRecord>,
    /// queue position → a mail not yet accepted by the SMTP server. Owner: `email`.
    pub mail_outbox: Table<u64, MailRecord>,
}

impl Tables {
    pub(super) fn open(db: &TableOpener<'_>) -> Result<Self, StorageError> {
        Ok(Self {
            users: Table::open(db, "localpart_user")?,
            erased_users: Table::open(db, "userid_erasedts")?,
            devices: Table::open(db, "localpart_deviceid_device")?,
            access_tokens: Table::open(db, "accesstokenhash_owner")?,
            refresh_tokens: Table::open(db, "refreshtokenhash_owner")?,
            uiaa_sessions: Table::open(db, "session_uiaa")?,
            registration_token_uses: Table::open(db, "registrationtoken_usage")?,
            eventid_shortid: Table::open(db, "eventid_shortid")?,
            shortid_eventid: Table::open(db, "shortid_eventid")?,
            statekey_shortid: Table::open(db, "statekey_shortid")?,
            shortid_statekey: Table::open(db, "shortid_statekey")?,
            eventid_pdu: Table::open(db, "eventid_pdu")?,
            roomid_room: Table::open(db, "roomid_room")?,
            room_timeline: Table::open(db, "roomshortid_count_eventid")?,
            snapshot_state: Table::open(db, "snapshotid_state")?,
            txnid_eventid: Table::open(db, "localpart_txn_eventid")?,
            txnid_eventid_b: Table::open(db, "localpart_txn_eventid_b")?,
            localpart_roomid_membership: Table::open(db, "localpart_roomid_membership")?,
            alias_room: Table::open(db, "alias_room")?,
            roomid_alias: Table::open(db, "roomid_alias")?,
            localpart_roomid_forgotten: Table::open(db, "localpart_roomid_forgotten")?,
            reports: Table::open(db, "count_report")?,
            relations: Table::open(db, "parent_count_relation")?,
            thread_roots: Table::open(db, "roomid_threadroot_latest")?,
            shortid_authchain: Table::open(db, "shortid_authchain")?,
            filters: Table::open(db, "localpart_filterid_filter")?,
            account_data: Table::open(db, "localpart_scope_accountdata")?,
            receipts: Table::open(db, "roomid_user_type_thread_receipt")?,
            receipt_positions: Table::open(db, "roomid_count_receiptkey")?,
            device_keys: Table::open(db, "localpart_deviceid_devicekeys")?,
            one_time_keys: Table::open(db, "localpart_device_keyid_onetimekey")?,
            fallback_keys: Table::open(db, "localpart_device_algorithm_fallbackkey")?,
            cross_signing_keys: Table::open(db, "localpart_usage_crosssigningkey")?,
            key_changes: Table::open(db, "count_keychange")?,
            private_key_changes: Table::open(db, "localpart_count_privatekeychange")?,
            to_device: Table::open(db, "device_count_todevice")?,
            to_device_txns: Table::open(db, "localpart_device_type_txn_handledts")?,
            backup_versions: Table::open(db, "localpart_version_backup")?,
            backup_keys: Table::open(db, "localpart_version_room_session_backupkey")?,
            dehydrated_devices: Table::open(db, "localpart_dehydrateddevice")?,
            published_rooms: Table::open(db, "roomid_publishedts")?,
            media: Table::open(db, "mediaid_media")?,
            thumbnails: Table::open(db, "mediaid_size_thumbnail")?,
            remote_media: Table::open(db, "servername_mediaid_remotemedia")?,
            pushers: Table::open(db, "localpart_app_pushkey_pusher")?,
            push_queue: Table::open(db, "count_pusher_pushjob")?,
            legacy_position_checkpoints: Table::open(db, "time_count")?,
            search_index: Table::open(db, "word_count_roomfield")?,
            search_blocks: Table::open(db, "word_firstcount_searchblock")?,
            search_progress: Table::open(db, "searchprogress")?,
            search_unindex: Table::open(db, "position_searchunindex")?,
            legacy_notifications: Table::open(db, "userroom_count_notification")?,
            event_push: Table::open(db, "roomshort_count_eventpush")?,
            push_exceptions: Table::open(db, "localpart_roomshort_count_pushexception")?,
            profile_propagations: Table::open(db, "localpart_profilepropagation")?,
            server_keys: Table::open(db, "servername_serverkeys")?,
            outbox: Table::open(db, "destination_count_roomevent")?,
            remote_device_lists: Table::open(db, "userid_remotedevicelist")?,
            partial_state_rooms: Table::open(db, "roomid_partialstate")?,
            federation_txns: Table::open(db, "origin_txnid_answer")?,
            remote_invites: Table::open(db, "localpart_roomid_remoteinvite")?,
            mail_outbox: Table::open(db, "count_mail")?,
            email_validations: Table::open(db, "sid_emailvalidation")?,
            email_owners: Table::open(db, "email_localpart")?,
            user_emails: Table::open(db, "localpart_email_addedts")?,
            email_lookup_hashes: Table::open(db, "lookuphash_email")?,
            openid_tokens: Table::open(db, "openidtokenhash_user")?,
            identity_tokens: Table::open(db, "identitytokenhash_user")?,
            account_validity: Table::open(db, "localpart_validity")?,
            blocked_rooms: Table::open(db, "roomid_blockedts")?,
            email_invites: Table::open(db, "email_token_invite")?,
        })
    }
}
