//! A PDU: the signed JSON of an event, plus the fields the server reads often.
//!
//! Spec: server-server API "PDUs" and the event format and event id sections
//! of each room version. A [`Pdu`] is only ever made from JSON that passed the
//! format checks of its room version, and its event id is computed (never
//! trusted) for versions 3 and later: `$` + the reference hash, in standard
//! base64 for version 3 and URL-safe base64 from version 4.

use ruma::{
    canonical_json::{redact, CanonicalJsonObject, CanonicalJsonValue},
    events::TimelineEventType,
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion, RoomVersionRules},
    signatures::reference_hash,
    state_res::{self, Event},
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
};
use serde_json::value::RawValue as RawJsonValue;

use crate::error::{Error, ErrorKind};

/// Largest PDU, in canonical JSON bytes (spec: "Size limits").
pub const MAX_PDU_BYTES: usize = 65_536;

/// Why JSON is not a valid PDU of its room version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PduError {
    TooLarge,
    /// A format rule of the room version is broken.
    Format(String),
    /// The room version cannot be used for this operation.
    UnsupportedVersion(String),
}

impl std::fmt::Display for PduError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge => write!(f, "the event is larger than {MAX_PDU_BYTES} bytes"),
            Self::Format(reason) => write!(f, "invalid event: {reason}"),
            Self::UnsupportedVersion(reason) => write!(f, "unsupported room version: {reason}"),
        }
    }
}

impl std::error::Error for PduError {}

impl From<PduError> for Error {
    fn from(error: PduError) -> Self {
        let kind = match error {
            PduError::TooLarge => ErrorKind::TooLarge,
            PduError::Format(_) => ErrorKind::BadJson,
            PduError::UnsupportedVersion(_) => ErrorKind::UnsupportedRoomVersion,
        };
        Error::new(kind, error.to_string())
    }
}

fn format_error(reason: impl Into<String>) -> PduError {
    PduError::Format(reason.into())
}

/// A parsed PDU; cheap to clone (state resolution and the auth checks fetch
/// events by value many times).
#[derive(Debug, Clone)]
pub struct Pdu(std::sync::Arc<PduFields>);

/// The fields of a [`Pdu`], read through it.
#[derive(Debug)]
pub struct PduFields {
    event_id: OwnedEventId,
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    kind: TimelineEventType,
    state_key: Option<String>,
    content: Box<RawJsonValue>,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    depth: u64,
    /// The signed PDU as canonical JSON text.
    json: Box<str>,
    /// The same as a tree, parsed from `json` when first asked for: an
    /// event read back from storage (most of the event cache) is only ever
    /// read through its fields and its text, and the tree took several
    /// times the text's memory.
    object: std::sync::OnceLock<CanonicalJsonObject>,
}

impl std::ops::Deref for Pdu {
    type Target = PduFields;

    fn deref(&self) -> &PduFields {
        &self.0
    }
}

impl Pdu {
    /// Parses PDU JSON text of a room with the given rules.
    pub fn from_json(json: &str, rules: &RoomVersionRules) -> Result<Self, PduError> {
        if json.len() > MAX_PDU_BYTES {
            return Err(PduError::TooLarge);
        }
        let object: CanonicalJsonObject =
            serde_json::from_str(json).map_err(|e| format_error(format!("not canonical JSON: {e}")))?;
        Self::from_object(object, rules)
    }

    /// Validates a PDU object against its room version and computes its event id.
    pub fn from_object(mut object: CanonicalJsonObject, rules: &RoomVersionRules) -> Result<Self, PduError> {
        // Fields outside the signed part are not ours to keep.
        object.remove("unsigned");
        state_res::check_pdu_format(&object, &rules.event_format).map_err(|reason| {
            if reason.contains("larger than") {
                PduError::TooLarge
            } else {
                PduError::Format(reason)
            }
        })?;
        let event_id = compute_event_id(&object, rules)?;
        Self::with_fields(object, event_id, rules, None)
    }

    /// Reads back a PDU this server stored after checking it: the format
    /// checks and the event id (a hash of the whole event) are not redone.
    /// Only for storage's own records; anything from outside goes through
    /// [`Pdu::from_json`].
    pub fn from_stored_json(json: &str, event_id: OwnedEventId, rules: &RoomVersionRules) -> Result<Self, PduError> {
        let object: CanonicalJsonObject =
            serde_json::from_str(json).map_err(|e| format_error(format!("not canonical JSON: {e}")))?;
        // Stored text is the canonical form: kept as it is, the tree dropped.
        Self::with_fields(object, event_id, rules, Some(json))
    }

    /// A PDU from its object; `stored_json` is its canonical text when the
    /// object was just parsed from it (the tree is then not kept).
    fn with_fields(
        object: CanonicalJsonObject,
        event_id: OwnedEventId,
        rules: &RoomVersionRules,
        stored_json: Option<&str>,
    ) -> Result<Self, PduError> {
        let room_id = optional_string(&object, "room_id")?
            .map(|id| OwnedRoomId::try_from(id).map_err(|e| format_error(format!("room_id: {e}"))))
            .transpose()?;
        let sender = required_string(&object, "sender")?;
        let sender = OwnedUserId::try_from(sender).map_err(|e| format_error(format!("sender: {e}")))?;
        let kind = TimelineEventType::from(required_string(&object, "type")?);
        let state_key = optional_string(&object, "state_key")?.map(str::to_owned);
        let content_value = object.get("content").ok_or_else(|| format_error("missing content"))?;
        if !matches!(content_value, CanonicalJsonValue::Object(_)) {
            return Err(format_error("content must be an object"));
        }
        let content = serde_json::value::to_raw_value(content_value).map_err(|e| format_error(e.to_string()))?;
        let origin_server_ts = MilliSecondsSinceUnixEpoch(required_uint(&object, "origin_server_ts")?);
        let depth = u64::from(required_uint(&object, "depth")?);
        let prev_events = event_references(&object, "prev_events", rules)?;
        let auth_events = event_references(&object, "auth_events", rules)?;
        let redacts = redacts_field(&object, rules)?;
        let (json, object) = match stored_json {
            Some(json) => (json.into(), std::sync::OnceLock::new()),
            None => {
                // Canonical JSON is serde_json's compact form of the sorted
                // object (what `CanonicalJsonValue`'s `Display` writes), without
                // copying the tree first.
                let json = serde_json::to_string(&object).map_err(|e| format_error(e.to_string()))?;
                (json.into(), std::sync::OnceLock::from(object))
            }
        };
        Ok(Self(std::sync::Arc::new(PduFields {
            event_id,
            room_id,
            sender,
            kind,
            state_key,
            content,
            origin_server_ts,
            prev_events,
            auth_events,
            redacts,
            depth,
            json,
            object,
        })))
    }

    pub fn event_id(&self) -> &OwnedEventId {
        &self.event_id
    }

    /// The room id: from the event, or for a version 12 create event (which
    /// has none) derived from its event id.
    pub fn room_id_or_derived(&self) -> OwnedRoomId {
        self.room_id.clone().unwrap_or_else(|| {
            OwnedRoomId::try_from(format!("!{}", &self.event_id.as_str()[1..]))
                .expect("an event id without its sigil is a valid room id localpart")
        })
    }

    pub fn sender_str(&self) -> &str {
        self.sender.as_str()
    }

    /// The content as JSON text.
    pub fn content_json(&self) -> &str {
        self.content.get()
    }

    pub fn origin_server_ts_millis(&self) -> u64 {
        u64::from(self.origin_server_ts.0)
    }

    pub fn state_key_str(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    pub fn depth(&self) -> u64 {
        self.depth
    }

    pub fn kind(&self) -> &TimelineEventType {
        &self.kind
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// The signed PDU as canonical JSON text.
    pub fn to_canonical_json(&self) -> String {
        self.json.to_string()
    }

    /// The signed PDU as a tree (parsed from its text on first use).
    pub fn as_object(&self) -> &CanonicalJsonObject {
        // The text was made from (or parsed into) a valid object when the
        // PDU was: it parses again.
        self.object.get_or_init(|| serde_json::from_str(&self.json).unwrap_or_default())
    }

    /// The PDU after redaction under `rules` (its event id does not change:
    /// the reference hash is taken over the redacted form).
    pub fn redacted(&self, rules: &RoomVersionRules) -> Result<Self, PduError> {
        let redacted =
            redact(self.as_object().clone(), &rules.redaction, None).map_err(|e| format_error(e.to_string()))?;
        Self::from_object(redacted, rules)
    }
}

/// The event id of a PDU under its room version's rules.
pub fn compute_event_id(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<OwnedEventId, PduError> {
    let id = match rules.event_id_format {
        EventIdFormatVersion::V1 => required_string(object, "event_id")?.to_owned(),
        _ => {
            let hash = reference_hash(object, rules).map_err(|e| match e {
                ruma::signatures::JsonError::PduTooLarge => PduError::TooLarge,
                other => format_error(other.to_string()),
            })?;
            format!("${hash}")
        }
    };
    OwnedEventId::try_from(id).map_err(|e| format_error(format!("event id: {e}")))
}

fn required_string<'a>(object: &'a CanonicalJsonObject, field: &str) -> Result<&'a str, PduError> {
    optional_string(object, field)?.ok_or_else(|| format_error(format!("missing {field}")))
}

fn optional_string<'a>(object: &'a CanonicalJsonObject, field: &str) -> Result<Option<&'a str>, PduError> {
    match object.get(field) {
        None => Ok(None),
        Some(CanonicalJsonValue::String(value)) => Ok(Some(value)),
        Some(_) => Err(format_error(format!("{field} must be a string"))),
    }
}

fn required_uint(object: &CanonicalJsonObject, field: &str) -> Result<UInt, PduError> {
    match object.get(field) {
        Some(CanonicalJsonValue::Integer(value)) => {
            UInt::try_from(i64::from(*value)).map_err(|_| format_error(format!("{field} must not be negative")))
        }
        _ => Err(format_error(format!("{field} must be an integer"))),
    }
}

fn parse_event_id(value: &CanonicalJsonValue, field: &str) -> Result<OwnedEventId, PduError> {
    match value {
        CanonicalJsonValue::String(id) => {
            OwnedEventId::try_from(id.as_str()).map_err(|e| format_error(format!("{field}: {e}")))
        }
        _ => Err(format_error(format!("{field} must hold event ids"))),
    }
}

/// `prev_events` / `auth_events`: ids, or `[id, hashes]` pairs in versions 1 and 2.
fn event_references(
    object: &CanonicalJsonObject,
    field: &str,
    rules: &RoomVersionRules,
) -> Result<Vec<OwnedEventId>, PduError> {
    let Some(CanonicalJsonValue::Array(items)) = object.get(field) else {
        return Err(format_error(format!("{field} must be an array")));
    };
    items
        .iter()
        .map(|item| match (rules.events_reference_format, item) {
            (EventsReferenceFormatVersion::V1, CanonicalJsonValue::Array(pair)) => {
                parse_event_id(pair.first().ok_or_else(|| format_error(format!("empty {field} pair")))?, field)
            }
            (EventsReferenceFormatVersion::V1, _) => Err(format_error(format!("{field} must hold [id, hashes] pairs"))),
            (_, item) => parse_event_id(item, field),
        })
        .collect()
}

/// The redacted event of an `m.room.redaction`: top level until version 10,
/// in the content from version 11.
fn redacts_field(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<Option<OwnedEventId>, PduError> {
    let value = if rules.redaction.keep_room_redaction_redacts {
        match object.get("content") {
            Some(CanonicalJsonValue::Object(content)) => content.get("redacts"),
            _ => None,
        }
    } else {
        object.get("redacts")
    };
    value.map(|v| parse_event_id(v, "redacts")).transpose()
}

impl Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawJsonValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        false
    }
}
