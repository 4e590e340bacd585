//! Receipt step 3: "Passes hash checks, otherwise it is redacted before
//! being processed further." A content hash that does not match means the
//! content was changed after signing: the event is kept in its redacted
//! form (its id, taken over the redacted form, is the same).

use ruma::{room_version_rules::RoomVersionRules, signatures::Verified};

use super::Dropped;
use crate::events::Pdu;

pub fn redact_on_mismatch(pdu: Pdu, verified: Verified, rules: &RoomVersionRules) -> Result<Pdu, Dropped> {
    match verified {
        Verified::All => Ok(pdu),
        Verified::Signatures => {
            tracing::info!(event = %pdu.event_id(), "content hash mismatch: the event is stored redacted");
            pdu.redacted(rules).map_err(|error| Dropped(error.to_string()))
        }
    }
}
