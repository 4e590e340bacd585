//! Random identifiers: access and refresh tokens (256 bits), device ids,
//! session ids; and the digest under which tokens are stored.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::{
    digest,
    rand::{SecureRandom, SystemRandom},
};

use crate::storage::records::TokenHash;

/// Fills a buffer from the operating system's CSPRNG.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The system generator only fails if the OS has no entropy source at all,
    // which would make every secret we hand out guessable: stop rather than go on.
    SystemRandom::new().fill(&mut bytes).expect("the operating system's random generator failed");
    bytes
}

/// A new access token: 256 random bits, URL-safe base64, with a prefix that
/// makes leaked tokens easy to recognise in logs and secret scanners.
pub fn new_access_token() -> String {
    format!("cdt_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// A new refresh token, 256 random bits.
pub fn new_refresh_token() -> String {
    format!("cdr_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// A random string of `len` uppercase letters (device ids, as other servers make them).
pub fn random_uppercase(len: usize) -> String {
    random_from_alphabet(len, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
}

/// A random string of `len` letters and digits (session ids and the like).
pub fn random_alphanumeric(len: usize) -> String {
    random_from_alphabet(len, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
}

fn random_from_alphabet(len: usize, alphabet: &[u8]) -> String {
    // Rejection sampling keeps the distribution uniform.
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for byte in random_bytes::<32>() {
            if (byte as usize) < limit && out.len() < len {
                out.push(char::from(alphabet[byte as usize % alphabet.len()]));
            }
        }
    }
    out
}

/// Compares two secrets in a time that does not depend on where they differ.
pub fn same_secret(expected: &str, given: &str) -> bool {
    let (expected, given) = (expected.as_bytes(), given.as_bytes());
    expected.len() == given.len() && expected.iter().zip(given).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

/// The digest tokens are stored and looked up under.
pub fn token_hash(token: &str) -> TokenHash {
    let digest = digest::digest(&digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_unique_and_url_safe() {
        let a = new_access_token();
        let b = new_access_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 43);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn random_strings_use_their_alphabet() {
        let id = random_uppercase(10);
        assert_eq!(id.len(), 10);
        assert!(id.bytes().all(|c| c.is_ascii_uppercase()));
        assert!(random_alphanumeric(32).bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
