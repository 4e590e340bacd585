//! Password hashing with argon2id (OWASP parameters: 19 MiB, 2 passes).
//!
//! Hashing is deliberately slow, so it runs on tokio's blocking pool and never
//! stalls the request threads.

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};

use crate::error::{Error, Result};

/// Longest password accepted (argon2 itself would take more, but nobody needs it).
pub const MAX_PASSWORD_BYTES: usize = 512;

pub async fn hash(password: &str) -> Result<String> {
    if password.is_empty() {
        return Err(Error::invalid_param("The password must not be empty"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid_param(format!("The password must be at most {MAX_PASSWORD_BYTES} bytes")));
    }
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await
    .map_err(|e| Error::internal("password hashing task", e))?
    .map_err(|e| Error::internal("password hashing", e))
}

/// True when `password` matches the stored PHC string.
pub async fn verify(password: &str, stored: &str) -> Result<bool> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Ok(false);
    }
    let password = password.to_owned();
    let stored = stored.to_owned();
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&stored).map_err(|e| Error::internal("stored password hash", e))?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(|e| Error::internal("password verification task", e))?
}

/// Runs a verification against a fixed hash, for unknown accounts.
pub async fn verify_against_dummy(password: &str) -> Result<bool> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = match DUMMY.get() {
        Some(dummy) => dummy.clone(),
        None => {
            let hashed = hash("conduit dummy password").await?;
            DUMMY.get_or_init(|| hashed).clone()
        }
    };
    verify(password, &dummy).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_are_salted() {
        let first = hash("correct horse").await.unwrap();
        let second = hash("correct horse").await.unwrap();
        assert!(first.starts_with("$argon2id$"));
        assert_ne!(first, second, "each hash has its own salt");
        assert!(verify("correct horse", &first).await.unwrap());
        assert!(!verify("wrong horse", &first).await.unwrap());
    }

    #[tokio::test]
    async fn empty_and_oversized_passwords_are_refused() {
        assert!(hash("").await.is_err());
        assert!(hash(&"x".repeat(MAX_PASSWORD_BYTES + 1)).await.is_err());
    }
}
