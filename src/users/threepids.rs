//! Email addresses of accounts (third-party identifiers, medium `email`):
//! validating that a user holds an address, binding it to one account, and
//! the localpart and display name an address gives a new account.
//!
//! Spec: client-server API "Adding Account Administrative Contact
//! Information" (`requestToken`, `client_secret`, `send_attempt`, `sid`),
//! "User-Interactive Authentication API" (`m.login.email.identity`), and the
//! identity service API's `submitToken`, which this server answers itself.
//!
//! A validation session's id is derived from its purpose, client secret and
//! address, so asking again with the same secret finds the same session: a
//! `send_attempt` not above the last one sends no new mail (spec). A session
//! is void after [`MAX_FAILED_SUBMISSIONS`] wrong tokens.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::digest;

use super::Users;
use crate::{
    crypto::tokens::{random_alphanumeric, same_secret},
    email::ValidationPurpose,
    error::{Error, ErrorKind, Result},
    storage::{records::EmailValidationRecord, Batch},
    util::now_ms,
};

/// Wrong tokens after which a validation session is void.
pub const MAX_FAILED_SUBMISSIONS: u32 = 5;
/// Characters of the token sent by mail.
const TOKEN_LENGTH: usize = 24;
/// Longest address accepted (RFC 5321's path limit).
const MAX_ADDRESS_BYTES: usize = 254;

/// The address in the form it is stored and compared in: trimmed and
/// lowercased (as Synapse does), or `M_INVALID_PARAM` when it is not one.
pub fn normalize_email(address: &str) -> Result<String> {
    let address = address.trim().to_lowercase();
    let invalid = || Error::invalid_param(format!("{address:?} is not an email address"));
    let (local, domain) = address.rsplit_once('@').ok_or_else(invalid)?;
    let well_formed = !local.is_empty()
        && !domain.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && address.len() <= MAX_ADDRESS_BYTES
        && !local.contains('@')
        && !address.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'));
    if well_formed {
        Ok(address)
    } else {
        Err(invalid())
    }
}

/// The domain of a normalised address.
pub fn email_domain(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, domain)| domain)
}

/// The spec's grammar for `client_secret` and `sid`: `[0-9a-zA-Z.=_-]`, 1 to 255.
pub fn check_client_secret(secret: &str) -> Result<()> {
    let valid = (1..=255).contains(&secret.len())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'=' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_param("Invalid client_secret: 1 to 255 characters among 0-9 a-z A-Z . = _ -"))
    }
}

fn purpose_name(purpose: ValidationPurpose) -> &'static str {
    match purpose {
        ValidationPurpose::Registration => "register",
        ValidationPurpose::AddAddress => "add",
        ValidationPurpose::PasswordReset => "password_reset",
    }
}

/// The validation session of (purpose, client secret, address).
fn session_id(purpose: ValidationPurpose, client_secret: &str, address: &str) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in [purpose_name(purpose), client_secret, address] {
        // Each part after its length: no two triples hash alike.
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    URL_SAFE_NO_PAD.encode(&context.finish().as_ref()[..18])
}

/// `meta` key of the pepper of identity lookups.
const LOOKUP_PEPPER_KEY: &str = "identity.lookup_pepper";

/// The identity service's hash of an address (spec, identity service API
/// "Lookup": unpadded URL-safe base64 of SHA-256 of `address medium pepper`).
pub fn lookup_hash(address: &str, pepper: &str) -> String {
    let digest = digest::digest(&digest::SHA256, format!("{address} email {pepper}").as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// A new validation: its session id and, unless the client already had a
/// mail for this attempt, the token to send.
pub struct ValidationStarted {
    pub sid: String,
    pub token_to_send: Option<String>,
}

/// The localpart an address gives a new account: the address with `@` as
/// `-` (`jean.dupont@interieur.gouv.fr` → `jean.dupont-interieur.gouv.fr`),
/// other characters the grammar refuses as `=xx` (their UTF-8 bytes in hex).
pub fn localpart_from_email(address: &str) -> String {
    let mut localpart = String::with_capacity(address.len());
    for c in address.to_lowercase().replace('@', "-").chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/') {
            localpart.push(c);
        } else {
            let mut bytes = [0u8; 4];
            for byte in c.encode_utf8(&mut bytes).bytes() {
                localpart.push_str(&format!("={byte:02x}"));
            }
        }
    }
    localpart
}

/// The display name an address gives a new account: the words of the part
/// before `@`, capitalised, and the first label of the domain in brackets
/// (`jean.dupont@interieur.gouv.fr` → "Jean Dupont [Interieur]").
pub fn display_name_from_email(address: &str) -> String {
    let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
    let name = local.split(['.', '_']).filter(|word| !word.is_empty()).map(capitalize_words).collect::<Vec<_>>();
    let organisation = domain.split('.').next().filter(|label| !label.is_empty()).map(capitalize_words);
    match organisation {
        Some(organisation) => format!("{} [{organisation}]", name.join(" ")),
        None => name.join(" "),
    }
}

/// "jean-pierre" → "Jean-Pierre".
fn capitalize_words(word: &str) -> String {
    word.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

impl Users {
    /// The local account `address` (normalised) belongs to.
    pub fn email_owner(&self, address: &str) -> Result<Option<String>> {
        Ok(self.storage.tables.email_owners.get(&address.to_owned())?)
    }

    /// The pepper clients hash addresses with for a lookup (made once).
    pub fn lookup_pepper(&self) -> Result<String> {
        if let Some(pepper) = self.storage.meta_get::<String>(LOOKUP_PEPPER_KEY)? {
            return Ok(pepper);
        }
        let fresh = random_alphanumeric(16);
        Ok(self.storage.meta_insert_if_absent(LOOKUP_PEPPER_KEY, &fresh)?)
    }

    /// The bound address whose lookup hash is `hash`, and its account.
    pub fn email_by_lookup_hash(&self, hash: &str) -> Result<Option<(String, String)>> {
        let Some(address) = self.storage.tables.email_lookup_hashes.get(&hash.to_owned())? else { return Ok(None) };
        Ok(self.email_owner(&address)?.map(|localpart| (address, localpart)))
    }

    /// A user's addresses, with when each was added (ms).
    pub fn emails_of(&self, localpart: &str) -> Result<Vec<(String, u64)>> {
        let bound = self.storage.tables.user_emails.scan_leading((localpart,))?;
        Ok(bound.into_iter().map(|((_, address), added)| (address, added)).collect())
    }

    /// Starts (or finds again) the validation of `address` for `purpose`.
    pub async fn start_email_validation(
        &self,
        purpose: ValidationPurpose,
        client_secret: &str,
        address: &str,
        send_attempt: u64,
        lifetime_secs: u64,
    ) -> Result<ValidationStarted> {
        check_client_secret(client_secret)?;
        let sid = session_id(purpose, client_secret, address);
        // Two identical requests at once send one mail, with one token.
        let _in_use = self.email_validations_in_use.lock(&sid).await;
        let table = &self.storage.tables.email_validations;
        let now = now_ms();
        if let Some(known) = table.get(&sid)?.filter(|known| known.expires_ts > now) {
            if send_attempt <= known.send_attempt {
                return Ok(ValidationStarted { sid, token_to_send: None });
            }
            // A new attempt: a new mail, with the same token if still valid.
            let again = EmailValidationRecord { send_attempt, ..known };
            let token = again.token.clone();
            self.store_validation(&sid, &again).await?;
            return Ok(ValidationStarted { sid, token_to_send: Some(token) });
        }
        let record = EmailValidationRecord {
            client_secret: client_secret.to_owned(),
            address: address.to_owned(),
            purpose: purpose_name(purpose).to_owned(),
            token: random_alphanumeric(TOKEN_LENGTH),
            send_attempt,
            expires_ts: now + lifetime_secs * 1000,
            validated_ts: None,
            failed_submissions: 0,
        };
        let token = record.token.clone();
        self.store_validation(&sid, &record).await?;
        Ok(ValidationStarted { sid, token_to_send: Some(token) })
    }

    async fn store_validation(&self, sid: &str, record: &EmailValidationRecord) -> Result<()> {
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.email_validations, &sid.to_owned(), record)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// The token of a validation came back (the link was followed, or the
    /// code typed): the address is validated.
    pub async fn submit_email_token(&self, sid: &str, client_secret: &str, token: &str) -> Result<()> {
        let failed = || Error::new(ErrorKind::ThreepidAuthFailed, "Unknown, expired or wrong validation token");
        // Every wrong guess counts, and none writes back a validation from
        // before a right one.
        let _in_use = self.email_validations_in_use.lock(sid).await;
        let Some(mut record) = self.live_validation(sid, client_secret)? else { return Err(failed()) };
        if record.failed_submissions >= MAX_FAILED_SUBMISSIONS {
            return Err(failed());
        }
        if !same_secret(&record.token, token) {
            record.failed_submissions += 1;
            self.store_validation(sid, &record).await?;
            return Err(failed());
        }
        if record.validated_ts.is_none() {
            record.validated_ts = Some(now_ms());
            self.store_validation(sid, &record).await?;
            tracing::info!(address = %record.address, purpose = %record.purpose, "email address validated");
        }
        Ok(())
    }

    /// The unexpired validation `sid` if `client_secret` is its own.
    fn live_validation(&self, sid: &str, client_secret: &str) -> Result<Option<EmailValidationRecord>> {
        if check_client_secret(sid).is_err() {
            return Ok(None);
        }
        let record = self.storage.tables.email_validations.get(&sid.to_owned())?;
        Ok(record.filter(|record| record.expires_ts > now_ms() && record.client_secret == client_secret))
    }

    /// The address a finished validation proves, for `purpose`.
    pub fn validated_email(&self, sid: &str, client_secret: &str, purpose: ValidationPurpose) -> Result<String> {
        let record = self.live_validation(sid, client_secret)?.filter(|record| record.purpose == purpose_name(purpose));
        match record {
            Some(record) if record.validated_ts.is_some() => Ok(record.address),
            Some(_) => Err(Error::new(ErrorKind::ThreepidAuthFailed, "The email address has not been validated yet")),
            None => Err(Error::new(ErrorKind::ThreepidAuthFailed, "Unknown or expired validation session")),
        }
    }

    /// Binds `address` to `localpart`, refusing it if it is another's.
    pub async fn bind_email(&self, localpart: &str, address: &str) -> Result<()> {
        let owners = &self.storage.tables.email_owners;
        let claimed = owners.insert_if_absent(&address.to_owned(), &localpart.to_owned())?;
        if !claimed && self.email_owner(address)?.as_deref() != Some(localpart) {
            return Err(Error::new(ErrorKind::ThreepidInUse, "This email address belongs to another account"));
        }
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.user_emails, &(localpart.to_owned(), address.to_owned()), &now_ms())?;
        let hash = lookup_hash(address, &self.lookup_pepper()?);
        batch.insert(&self.storage.tables.email_lookup_hashes, &hash, &address.to_owned())?;
        self.storage.commit(batch).await?;
        self.refresh_directory_entry(localpart)?;
        tracing::info!(user = localpart, %address, "email address bound");
        Ok(())
    }

    /// Removes `address` from `localpart`'s account; whether it was there.
    pub async fn unbind_email(&self, localpart: &str, address: &str) -> Result<bool> {
        if self.email_owner(address)?.as_deref() != Some(localpart) {
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.remove(&self.storage.tables.email_owners, &address.to_owned());
        batch.remove(&self.storage.tables.user_emails, &(localpart.to_owned(), address.to_owned()));
        batch.remove(&self.storage.tables.email_lookup_hashes, &lookup_hash(address, &self.lookup_pepper()?));
        self.storage.commit(batch).await?;
        self.refresh_directory_entry(localpart)?;
        tracing::info!(user = localpart, %address, "email address removed");
        Ok(true)
    }

    /// Removes expired validation sessions; returns how many.
    pub fn purge_expired_email_validations(&self) -> Result<usize> {
        let now = now_ms();
        let mut batch = Batch::new();
        for (sid, record) in self.storage.tables.email_validations.all()? {
            if record.expires_ts <= now {
                batch.remove(&self.storage.tables.email_validations, &sid);
            }
        }
        let removed = batch.len();
        self.storage.apply(batch)?;
        Ok(removed)
    }

    /// Adds to `batch` the removal of every address of `localpart` (the
    /// account is deactivated: the addresses may serve another).
    pub(super) fn unbind_all_emails(&self, batch: &mut Batch, localpart: &str) -> Result<()> {
        let pepper = self.lookup_pepper()?;
        for (address, _) in self.emails_of(localpart)? {
            batch.remove(&self.storage.tables.email_lookup_hashes, &lookup_hash(&address, &pepper));
            batch.remove(&self.storage.tables.email_owners, &address);
            batch.remove(&self.storage.tables.user_emails, &(localpart.to_owned(), address));
        }
        Ok(())
    }

    /// Ends a validation once it has served (a registration or a reset).
    pub fn forget_email_validation(&self, sid: &str) -> Result<()> {
        let mut batch = Batch::new();
        batch.remove(&self.storage.tables.email_validations, &sid.to_owned());
        Ok(self.storage.apply(batch)?)
    }

    /// A free localpart for an account registering with `address`: the
    /// derived one, or it with a number when that is taken.
    pub fn localpart_for_email(&self, address: &str) -> Result<String> {
        let base = localpart_from_email(address);
        let base = self.localpart_for_registration(&base)?;
        if self.is_available(&base)? {
            return Ok(base);
        }
        for n in 2..100 {
            let candidate = format!("{base}-{n}");
            if self.is_available(&candidate)? {
                return Ok(candidate);
            }
        }
        Err(Error::new(ErrorKind::UserInUse, "Every user id this address gives is taken"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::test_users;

    #[test]
    fn addresses_give_the_guides_localpart_and_display_name() {
        assert_eq!(localpart_from_email("jean.dupont@interieur.gouv.fr"), "jean.dupont-interieur.gouv.fr");
        assert_eq!(display_name_from_email("jean.dupont@interieur.gouv.fr"), "Jean Dupont [Interieur]");
        assert_eq!(display_name_from_email("marie-anne.le_goff@culture.gouv.fr"), "Marie-Anne Le Goff [Culture]");
        assert_eq!(localpart_from_email("a+tag@x.fr"), "a=2btag-x.fr");
        assert_eq!(localpart_from_email("élise@x.fr"), "=c3=a9lise-x.fr");
    }

    #[test]
    fn addresses_are_normalised_or_refused() {
        assert_eq!(normalize_email("  Jean.Dupont@Interieur.GOUV.fr ").unwrap(), "jean.dupont@interieur.gouv.fr");
        for bad in ["", "nobody", "a@b", "@x.fr", "a@.fr", "a b@x.fr", "a@x.fr>", "a@@x.fr"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        assert!(check_client_secret("abc.DEF=_-1").is_ok());
        assert!(check_client_secret("").is_err() && check_client_secret("a b").is_err());
    }

    #[tokio::test]
    async fn a_validation_is_found_again_resent_on_a_new_attempt_and_void_after_wrong_tokens() {
        let (_dir, users) = test_users();
        let purpose = ValidationPurpose::Registration;
        let first = users.start_email_validation(purpose, "secret", "a@x.fr", 1, 600).await.unwrap();
        let token = first.token_to_send.clone().unwrap();
        let same = users.start_email_validation(purpose, "secret", "a@x.fr", 1, 600).await.unwrap();
        assert_eq!((same.sid.as_str(), same.token_to_send), (first.sid.as_str(), None), "same attempt: no mail");
        let again = users.start_email_validation(purpose, "secret", "a@x.fr", 2, 600).await.unwrap();
        assert_eq!(again.token_to_send.as_deref(), Some(token.as_str()), "a new attempt: the mail again");

        assert!(users.validated_email(&first.sid, "secret", purpose).is_err(), "not yet validated");
        assert!(users.submit_email_token(&first.sid, "other secret", &token).await.is_err());
        users.submit_email_token(&first.sid, "secret", &token).await.unwrap();
        assert_eq!(users.validated_email(&first.sid, "secret", purpose).unwrap(), "a@x.fr");
        assert!(users.validated_email(&first.sid, "secret", ValidationPurpose::PasswordReset).is_err());

        let other = users.start_email_validation(purpose, "s2", "b@x.fr", 1, 600).await.unwrap();
        let right = other.token_to_send.unwrap();
        for _ in 0..MAX_FAILED_SUBMISSIONS {
            assert!(users.submit_email_token(&other.sid, "s2", "wrong").await.is_err());
        }
        assert!(users.submit_email_token(&other.sid, "s2", &right).await.is_err(), "void after wrong tokens");
    }

    #[tokio::test]
    async fn an_address_belongs_to_one_account() {
        let (_dir, users) = test_users();
        users.bind_email("alice", "a@x.fr").await.unwrap();
        users.bind_email("alice", "a@x.fr").await.unwrap();
        let error = users.bind_email("bob", "a@x.fr").await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::ThreepidInUse);
        assert_eq!(users.emails_of("alice").unwrap().len(), 1);
        assert!(!users.unbind_email("bob", "a@x.fr").await.unwrap());
        assert!(users.unbind_email("alice", "a@x.fr").await.unwrap());
        assert_eq!(users.email_owner("a@x.fr").unwrap(), None);
    }
}
