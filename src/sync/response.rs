//! The `/sync` answer as types, written out once.
//!
//! Spec: `GET /sync` response (`data/api/client-server/old_sync.yaml`). The
//! parts that carry many events (a joined room's timeline and state) hold
//! them as [`ClientEvent`]s, whose content is copied as stored text; the
//! small parts (account data, presence, receipts, to-device messages) stay
//! JSON trees.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::rooms::ClientEvent;

#[derive(Serialize)]
pub struct SyncResponse {
    pub next_batch: String,
    pub rooms: RoomSections,
    pub account_data: Events<Value>,
    pub presence: Events<Value>,
    pub to_device: Events<Value>,
    pub device_lists: DeviceLists,
    pub device_one_time_keys_count: BTreeMap<String, u64>,
    pub device_unused_fallback_key_types: Vec<String>,
}

#[derive(Serialize)]
pub struct RoomSections {
    pub join: BTreeMap<String, JoinedRoom>,
    pub invite: Map<String, Value>,
    pub knock: Map<String, Value>,
    pub leave: Map<String, Value>,
}

#[derive(Serialize)]
pub struct DeviceLists {
    pub changed: Vec<String>,
    pub left: Vec<String>,
}

/// `{"events": [...]}`.
#[derive(Serialize)]
pub struct Events<E> {
    pub events: Vec<E>,
}

impl<E> Events<E> {
    pub fn new(events: Vec<E>) -> Self {
        Self { events }
    }
}

/// An event of a timeline or a state list: as the client format, or as a
/// JSON tree when the filter changed its shape (`event_fields`,
/// `event_format: federation`).
#[derive(Serialize)]
#[serde(untagged)]
pub enum SyncEvent {
    Client(ClientEvent),
    Json(Value),
}

#[derive(Serialize)]
pub struct Timeline {
    pub events: Vec<SyncEvent>,
    pub limited: bool,
    pub prev_batch: String,
}

/// A joined room's section.
#[derive(Serialize)]
pub struct JoinedRoom {
    pub timeline: Timeline,
    pub state: Events<SyncEvent>,
    pub ephemeral: Events<Value>,
    pub account_data: Events<Value>,
    pub summary: Value,
    pub unread_notifications: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_thread_notifications: Option<Value>,
}
