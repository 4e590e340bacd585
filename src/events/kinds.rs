//! The event types the server itself reads or writes, spelled once
//! (client-server API "Room Events", "Spaces"). Handlers and rooms name
//! these constants, never the string.

pub const CREATE: &str = "m.room.create";
pub const MEMBER: &str = "m.room.member";
pub const THIRD_PARTY_INVITE: &str = "m.room.third_party_invite";
pub const POWER_LEVELS: &str = "m.room.power_levels";
pub const JOIN_RULES: &str = "m.room.join_rules";
pub const HISTORY_VISIBILITY: &str = "m.room.history_visibility";
pub const GUEST_ACCESS: &str = "m.room.guest_access";
pub const CANONICAL_ALIAS: &str = "m.room.canonical_alias";
pub const NAME: &str = "m.room.name";
pub const TOPIC: &str = "m.room.topic";
pub const AVATAR: &str = "m.room.avatar";
pub const ENCRYPTION: &str = "m.room.encryption";
pub const SERVER_ACL: &str = "m.room.server_acl";
pub const TOMBSTONE: &str = "m.room.tombstone";
pub const MESSAGE: &str = "m.room.message";
pub const ENCRYPTED: &str = "m.room.encrypted";
pub const REDACTION: &str = "m.room.redaction";
pub const PINNED_EVENTS: &str = "m.room.pinned_events";
pub const SPACE_CHILD: &str = "m.space.child";
