//! Which room versions exist, which can be created here, and their rules.
//!
//! Spec: "Room Versions" (`rooms/_index.md`). Versions 1 to 12 are known (their
//! events can be parsed, checked and built) and rooms of all of them can be
//! joined (`can_join`) and taken part in; rooms can be created in 3 to 12
//! only (`can_create`): versions 1 and 2 are the spec's legacy versions (state
//! resolution v1 in version 1, `rooms::resolution_v1`; server-minted event
//! ids in both).

use ruma::{room_version_rules::RoomVersionRules, RoomVersionId};

use crate::error::{Error, ErrorKind, Result};

/// The version new rooms get unless configured or asked otherwise.
pub const DEFAULT_ROOM_VERSION: RoomVersionId = RoomVersionId::V12;

/// Every room version this server understands, oldest first.
pub const KNOWN: [RoomVersionId; 12] = [
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// The rules of a known room version.
pub fn rules(version: &RoomVersionId) -> Result<RoomVersionRules> {
    version.rules().filter(|_| KNOWN.contains(version)).ok_or_else(|| {
        Error::new(ErrorKind::UnsupportedRoomVersion, format!("Room version {version} is not supported"))
    })
}

/// Whether rooms of this version can be joined here (every known version).
pub fn can_join(version: &RoomVersionId) -> bool {
    KNOWN.contains(version)
}

/// Whether rooms of this version can be created here (not 1 and 2).
pub fn can_create(version: &RoomVersionId) -> bool {
    KNOWN.contains(version) && !matches!(version, RoomVersionId::V1 | RoomVersionId::V2)
}

/// Parses a version a client asked for, refusing those that cannot be created
/// with `M_UNSUPPORTED_ROOM_VERSION`.
pub fn parse_creatable(version: &str) -> Result<RoomVersionId> {
    let unsupported =
        || Error::new(ErrorKind::UnsupportedRoomVersion, format!("Room version {version:?} is not supported"));
    let parsed = RoomVersionId::try_from(version).map_err(|_| unsupported())?;
    if can_create(&parsed) {
        Ok(parsed)
    } else {
        Err(unsupported())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_three_to_twelve_can_be_created() {
        for version in ["3", "4", "10", "11", "12"] {
            assert!(parse_creatable(version).is_ok(), "{version}");
        }
        for version in ["1", "2", "13", "org.example.custom", ""] {
            let error = parse_creatable(version).unwrap_err();
            assert_eq!(error.errcode(), "M_UNSUPPORTED_ROOM_VERSION", "{version}");
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn every_known_version_has_rules() {
        for version in KNOWN {
            assert!(rules(&version).is_ok(), "{version}");
        }
        assert!(rules(&RoomVersionId::try_from("org.example.custom").unwrap()).is_err());
        assert_eq!(DEFAULT_ROOM_VERSION.as_str(), "12");
    }
}
