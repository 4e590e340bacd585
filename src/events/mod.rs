//! Matrix events as PDUs: room versions, parsing and ids, building and
//! signing, redaction. Pure: no I/O, no storage.
//!
//! Spec: room versions (`rooms/v1.md` … `v12.md`: event format, event ids,
//! redaction), server-server API "PDUs", "Calculating the reference hash",
//! "Signing events", appendices "Canonical JSON" and "Cryptographic Test
//! Vectors". The per-version rules come from ruma's `RoomVersionRules`; the
//! hashing, signing and redaction algorithms from ruma-signatures and
//! ruma-common, signed with our ring key ([`crate::crypto::signing_key`]).
//!
//! This is the first slice of the rooms work: the event pipeline (auth rules,
//! state storage, client endpoints) builds on it.

pub mod builder;
pub mod kinds;
pub mod pdu;
pub mod room_version;

pub use builder::{build_and_sign, countersign, mint_event_id, reference_hash_of, unsigned_object, NewEvent, V1Ids};
pub use pdu::{Pdu, PduError};
