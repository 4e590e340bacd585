//! The operator commands that open a stopped server's database directly:
//! `user renew`, `user expire` and `server rotate-key` (while the server runs
//! they are refused: the database is locked).

use std::sync::Arc;

use crate::{config::Config, storage::Storage, users::Users};

fn open_users(config: &Config) -> Result<(Arc<Storage>, Users), String> {
    let storage =
        Arc::new(Storage::open(&config.database_path, config.cache_capacity_bytes()).map_err(|e| e.to_string())?);
    let users = Users::new(Arc::clone(&storage), config);
    Ok((storage, users))
}

/// `server rotate-key`: a new signing key; the old one is kept under
/// `old_verify_keys` so what it signed still verifies for other servers.
pub fn rotate_key(config: Config) -> Result<(), String> {
    let storage = Storage::open(&config.database_path, config.cache_capacity_bytes()).map_err(|e| e.to_string())?;
    let (old, new) =
        crate::crypto::signing_key::ServerKey::rotate(&storage, crate::util::now_ms()).map_err(|e| e.to_string())?;
    storage.shutdown().map_err(|e| e.to_string())?;
    println!("rotated the server signing key: {old} -> {new} ({old} stays published under old_verify_keys)");
    Ok(())
}

/// `user renew` / `user expire`: when an account ends (`[account_validity]`).
pub async fn set_validity(config: Config, name: &str, days: Option<u64>, expire: bool) -> Result<(), String> {
    let (storage, users) = open_users(&config)?;
    if !users.validity.is_enabled() {
        return Err("accounts do not expire on this server: set [account_validity] period_days".to_owned());
    }
    let localpart = users.localpart_from_identifier(name).ok_or("not a user of this server")?;
    if users.get_active(&localpart).map_err(|e| e.message)?.is_none() {
        return Err(format!("no active user {name}"));
    }
    let now = crate::util::now_ms();
    let end = match (expire, days) {
        (true, _) => Some(now),
        (false, Some(days)) => Some(now.saturating_add(days.saturating_mul(24 * 3600 * 1000))),
        (false, None) => None,
    };
    let end = users.validity.set_expiry(&localpart, end).await.map_err(|e| e.message)?;
    storage.shutdown().map_err(|e| e.to_string())?;
    let (year, month, day) = crate::util::utc_date(end);
    if expire {
        println!("{localpart} has expired");
    } else {
        println!("{localpart} is valid until {year}-{month:02}-{day:02}");
    }
    Ok(())
}
