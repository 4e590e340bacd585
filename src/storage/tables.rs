//! Every table of the database: its tree name, key type and record type.
//!
//! Tree names follow `key_value`. Changing a name, a key layout or a record in
//! a way that is not a defaulted new field needs a migration.

use super::{
    records::{DeviceRecord, RegistrationTokenUsage, TokenHash, TokenRecord, UiaaSessionRecord, UserRecord},
    StorageError, Table,
};

pub struct Tables {
    /// localpart → account.
    pub users: Table<String, UserRecord>,
    /// (localpart, device id) → device.
    pub devices: Table<(String, String), DeviceRecord>,
    /// SHA-256(access token) → owner.
    pub access_tokens: Table<TokenHash, TokenRecord>,
    /// SHA-256(refresh token) → owner.
    pub refresh_tokens: Table<TokenHash, TokenRecord>,
    /// session id → user-interactive auth progress.
    pub uiaa_sessions: Table<String, UiaaSessionRecord>,
    /// registration token → completed registrations.
    pub registration_token_uses: Table<String, RegistrationTokenUsage>,
}

impl Tables {
    pub(super) fn open(db: &sled::Db) -> Result<Self, StorageError> {
        Ok(Self {
            users: Table::open(db, "localpart_user")?,
            devices: Table::open(db, "localpart_deviceid_device")?,
            access_tokens: Table::open(db, "accesstokenhash_owner")?,
            refresh_tokens: Table::open(db, "refreshtokenhash_owner")?,
            uiaa_sessions: Table::open(db, "session_uiaa")?,
            registration_token_uses: Table::open(db, "registrationtoken_usage")?,
        })
    }
}
