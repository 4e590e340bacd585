//! Pure cryptography: the server signing key, canonical JSON signing, tokens.
//!
//! Spec: server-server API "Retrieving server keys" and "Signing JSON"
//! (appendices, "Signing details"). Nothing here does I/O except through the
//! storage handle passed to [`signing_key::ServerKey::load_or_generate`].

pub mod json_signatures;
pub mod signing_key;
pub mod tokens;
