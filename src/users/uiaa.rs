//! User-interactive authentication (UIA).
//!
//! Spec: client-server API "User-Interactive Authentication API", with the
//! stages `m.login.dummy`, `m.login.password`, `m.login.registration_token`
//! and `m.login.email.identity` (an address validated by mail, see
//! [`super::threepids`]: registering with it, resetting the password of the
//! account it belongs to, adding it to an account).
//!
//! A session is bound to one endpoint and (except at registration) one user.
//! It is persisted, with an expiry, only once a stage has completed; when a
//! flow completes it is marked consumed, so the same session cannot authorise
//! a second request. Bare challenges store nothing, so clients that
//! never authenticate cost no disk — except at registration, where the
//! first request's parameters are remembered for the later stages (the
//! spec's "Registration"; rate-limited per address, and expiring).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    config::RegistrationTokenConfig,
    crypto::tokens::random_alphanumeric,
    error::{Error, ErrorKind, Result},
    storage::{
        records::{RegistrationTokenUsage, UiaaSessionRecord},
        Batch,
    },
    util::now_ms,
};

use super::Users;
use crate::email::ValidationPurpose;

pub const DUMMY: &str = "m.login.dummy";
pub const PASSWORD: &str = "m.login.password";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";
pub const EMAIL_IDENTITY: &str = "m.login.email.identity";

const SESSION_ID_LENGTH: usize = 24;

/// What an endpoint asks for.
pub struct Challenge<'a> {
    /// Method and path, binding the session to this endpoint.
    pub endpoint: &'a str,
    /// The user who must authenticate; `None` while registering.
    pub localpart: Option<&'a str>,
    /// Each flow is a list of stages; completing any one flow suffices.
    pub flows: &'a [&'a [&'a str]],
    pub client_ip: &'a str,
}

/// The `auth` object a client submits.
#[derive(Debug, Deserialize)]
struct AuthDict {
    #[serde(rename = "type")]
    kind: Option<String>,
    session: Option<String>,
    password: Option<String>,
    identifier: Option<Identifier>,
    /// Legacy way of naming the user for `m.login.password`.
    user: Option<String>,
    token: Option<String>,
    threepid_creds: Option<ThreepidCreds>,
    /// The older spelling, which Element sends beside the other.
    #[serde(rename = "threepidCreds")]
    threepid_creds_legacy: Option<ThreepidCreds>,
}

/// Which address validation an `m.login.email.identity` stage presents.
#[derive(Debug, Deserialize)]
pub struct ThreepidCreds {
    pub sid: String,
    pub client_secret: String,
}

impl ThreepidCreds {
    /// The credentials in a request's `auth` object, if any.
    pub fn in_auth(auth: Option<&Value>) -> Option<Self> {
        let creds = auth?.get("threepid_creds").or_else(|| auth?.get("threepidCreds"))?;
        serde_json::from_value(creds.clone()).ok()
    }
}

/// What an address validated for `endpoint` must have been validated for.
fn email_purpose(endpoint: &str) -> Option<ValidationPurpose> {
    match endpoint {
        "POST /register" => Some(ValidationPurpose::Registration),
        "POST /account/password" => Some(ValidationPurpose::PasswordReset),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
pub struct Identifier {
    #[serde(rename = "type")]
    pub kind: String,
    /// `m.id.user`'s user id or localpart.
    pub user: Option<String>,
    /// `m.id.thirdparty`'s medium (only `email` here) and address.
    pub medium: Option<String>,
    pub address: Option<String>,
}

impl Identifier {
    /// The local user an identifier names, if any: `m.id.user` (a
    /// localpart or a user id of this server) or `m.id.thirdparty` (an
    /// email address bound to an account). `M_BAD_JSON` when a field is
    /// missing, `M_FORBIDDEN` for a kind not supported here.
    pub fn localpart(&self, users: &Users) -> Result<Option<String>> {
        match self.kind.as_str() {
            "m.id.user" => {
                let user =
                    self.user.as_deref().ok_or_else(|| Error::bad_json("Invalid field `identifier.user`: missing"))?;
                Ok(users.localpart_from_identifier(user))
            }
            "m.id.thirdparty" => {
                let (Some(medium), Some(address)) = (&self.medium, &self.address) else {
                    return Err(Error::bad_json("m.id.thirdparty needs `medium` and `address`"));
                };
                if medium != "email" {
                    return Err(Error::forbidden(format!(
                        "Third-party identifiers of medium {medium:?} are not supported"
                    )));
                }
                let Ok(address) = super::threepids::normalize_email(address) else { return Ok(None) };
                users.email_owner(&address)
            }
            other => Err(Error::forbidden(format!("Identifiers of type {other:?} are not supported"))),
        }
    }
}

impl Users {
    /// Runs one step of user-interactive authentication. Returns the completed
    /// session when a flow is done; otherwise the 401 the client must answer.
    pub async fn user_interactive_auth(
        &self,
        challenge: &Challenge<'_>,
        auth: Option<&Value>,
        lifetime_secs: u64,
    ) -> Result<UiaaSessionRecord> {
        let Some(auth) = auth else {
            // Nothing is stored here until a stage completes (registration
            // remembers its parameters itself, see `remember_uiaa_params`).
            let (id, session) = self.new_session(challenge, lifetime_secs, None);
            return Err(interactive(challenge, &id, &session, None));
        };
        let auth: AuthDict =
            serde_json::from_value(auth.clone()).map_err(|e| Error::bad_json(format!("Invalid `auth` object: {e}")))?;
        // Loaded, advanced and stored by one request at a time: two requests
        // completing the same session cannot both be authorised.
        let _in_use = match auth.session.as_deref() {
            Some(id) => Some(self.uiaa_sessions_in_use.lock(id).await),
            None => None,
        };
        let (id, mut session) = self.load_session(challenge, auth.session.as_deref(), lifetime_secs)?;
        if auth.kind.as_deref() == Some(PASSWORD) && self.names_another_user(challenge, &auth)? {
            // Not a failed stage the client may retry: a different user (403, as Synapse).
            return Err(Error::forbidden("The identifier does not match the authenticated user"));
        }
        let outcome = match auth.kind.as_deref() {
            None => Ok(()), // the client only asks whether the session is complete
            Some(stage) if !challenge.flows.iter().any(|flow| flow.contains(&stage)) => {
                Err(Error::forbidden(format!("Authentication stage {stage} is not offered here")))
            }
            Some(stage) if session.completed.iter().any(|done| done == stage) => Ok(()),
            Some(DUMMY) => {
                session.completed.push(DUMMY.to_owned());
                Ok(())
            }
            Some(PASSWORD) => self.password_stage(challenge, &auth).await.map(|()| {
                session.completed.push(PASSWORD.to_owned());
            }),
            Some(REGISTRATION_TOKEN) => self.registration_token_stage(&auth).map(|token| {
                session.completed.push(REGISTRATION_TOKEN.to_owned());
                session.registration_token = Some(token);
            }),
            Some(EMAIL_IDENTITY) => self.email_identity_stage(challenge, &auth).map(|address| {
                session.completed.push(EMAIL_IDENTITY.to_owned());
                session.validated_email = Some(address);
            }),
            Some(other) => Err(Error::forbidden(format!("Unsupported authentication stage {other}"))),
        };
        if let Err(error) = outcome {
            if matches!(error.kind, ErrorKind::LimitExceeded { .. } | ErrorKind::UserDeactivated) {
                return Err(error);
            }
            self.store_session(&id, &session)?;
            return Err(interactive(challenge, &id, &session, Some(&error)));
        }
        let done =
            challenge.flows.iter().any(|flow| flow.iter().all(|stage| session.completed.iter().any(|c| c == stage)));
        if done {
            // Single use: kept as consumed until it expires, so the same id
            // cannot authorise another request.
            let consumed = UiaaSessionRecord { consumed: true, ..session.clone() };
            self.store_session(&id, &consumed)?;
            Ok(session)
        } else {
            self.store_session(&id, &session)?;
            Err(interactive(challenge, &id, &session, None))
        }
    }

    fn new_session(
        &self,
        challenge: &Challenge<'_>,
        lifetime_secs: u64,
        id: Option<&str>,
    ) -> (String, UiaaSessionRecord) {
        let session = UiaaSessionRecord {
            localpart: challenge.localpart.map(str::to_owned),
            endpoint: challenge.endpoint.to_owned(),
            completed: Vec::new(),
            expires_ts: now_ms() + lifetime_secs * 1000,
            registration_token: None,
            consumed: false,
            validated_email: None,
            params: None,
            registered: None,
        };
        (id.map_or_else(|| random_alphanumeric(SESSION_ID_LENGTH), str::to_owned), session)
    }

    /// The stored session `id`, or a fresh one under that id when none is
    /// stored (a challenge we handed out, or one that expired: nothing had
    /// been completed in it, or nothing that still counts).
    fn load_session(
        &self,
        challenge: &Challenge<'_>,
        id: Option<&str>,
        lifetime_secs: u64,
    ) -> Result<(String, UiaaSessionRecord)> {
        let Some(id) = id else { return Ok(self.new_session(challenge, lifetime_secs, None)) };
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::invalid_param("Invalid authentication session id"));
        }
        let Some(session) = self.stored_session(id)? else {
            return Ok(self.new_session(challenge, lifetime_secs, Some(id)));
        };
        if session.consumed {
            return Err(Error::forbidden("This authentication session has already been used"));
        }
        if session.endpoint != challenge.endpoint || session.localpart.as_deref() != challenge.localpart {
            return Err(Error::forbidden("This authentication session belongs to another request"));
        }
        Ok((id.to_owned(), session))
    }

    /// The stored session `id` (not expired), if any.
    fn stored_session(&self, id: &str) -> Result<Option<UiaaSessionRecord>> {
        Ok(self.storage.tables.uiaa_sessions.get(&id.to_owned())?.filter(|s| s.expires_ts > now_ms()))
    }

    /// The parameters remembered with session `id` ([`Users::remember_uiaa_params`]).
    pub fn uiaa_params(&self, id: &str) -> Result<Option<Value>> {
        let params = self.stored_session(id)?.and_then(|session| session.params);
        Ok(params.and_then(|text| serde_json::from_str(&text).ok()))
    }

    /// Keeps the parameters of the request that opened session `id` (its
    /// first, unauthenticated request: the session is new). Registration
    /// only: each such request is rate-limited per address, and the session
    /// expires.
    pub fn remember_uiaa_params(
        &self,
        id: &str,
        challenge: &Challenge<'_>,
        params: &Value,
        lifetime_secs: u64,
    ) -> Result<()> {
        let (_, mut session) = self.new_session(challenge, lifetime_secs, Some(id));
        session.params = Some(params.to_string());
        self.put_session(id, &session)
    }

    /// The account session `id` registered, with the parameters of the
    /// request that did it ([`Users::note_registered`]), if it did.
    pub fn registered_with(&self, id: &str) -> Result<Option<(String, Value)>> {
        let Some(session) = self.stored_session(id)? else { return Ok(None) };
        let params = session.params.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or(Value::Null);
        Ok(session.registered.map(|localpart| (localpart, params)))
    }

    /// Notes that session `id` registered `localpart` with a request of
    /// these `params` (no password in them).
    pub fn note_registered(&self, id: &str, localpart: &str, params: &Value) -> Result<()> {
        let Some(mut session) = self.stored_session(id)? else { return Ok(()) };
        session.registered = Some(localpart.to_owned());
        session.params = Some(params.to_string());
        self.put_session(id, &session)
    }

    /// Persists a session once it holds progress worth keeping.
    fn store_session(&self, id: &str, session: &UiaaSessionRecord) -> Result<()> {
        if session.completed.is_empty() {
            return Ok(());
        }
        self.put_session(id, session)
    }

    fn put_session(&self, id: &str, session: &UiaaSessionRecord) -> Result<()> {
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.uiaa_sessions, &id.to_owned(), session)?;
        Ok(self.storage.apply(batch)?)
    }

    /// Removes expired sessions; returns how many.
    pub fn purge_expired_uiaa_sessions(&self) -> Result<usize> {
        let now = now_ms();
        let mut batch = Batch::new();
        for (id, session) in self.storage.tables.uiaa_sessions.all()? {
            if session.expires_ts <= now {
                batch.remove(&self.storage.tables.uiaa_sessions, &id);
            }
        }
        let removed = batch.len();
        self.storage.apply(batch)?;
        Ok(removed)
    }

    /// Whether the password stage names a user other than the one who must
    /// authenticate (clients may omit the identifier: the session is bound
    /// to the user already).
    fn names_another_user(&self, challenge: &Challenge<'_>, auth: &AuthDict) -> Result<bool> {
        let Some(expected) = challenge.localpart else { return Ok(false) };
        let named = match (&auth.identifier, &auth.user) {
            (Some(identifier), _) => Some(identifier.localpart(self)?),
            (None, Some(user)) => Some(self.localpart_from_identifier(user)),
            (None, None) => None,
        };
        Ok(named.is_some_and(|named| named.as_deref() != Some(expected)))
    }

    async fn password_stage(&self, challenge: &Challenge<'_>, auth: &AuthDict) -> Result<()> {
        let expected = challenge.localpart.ok_or_else(|| Error::forbidden("No user to authenticate"))?;
        let password = auth.password.as_deref().ok_or_else(|| Error::forbidden("No password given"))?;
        self.check_password(expected, password, challenge.client_ip).await.map(drop)
    }

    /// The address the presented validation proves; for a signed-in user,
    /// it must be theirs.
    fn email_identity_stage(&self, challenge: &Challenge<'_>, auth: &AuthDict) -> Result<String> {
        let creds = auth.threepid_creds.as_ref().or(auth.threepid_creds_legacy.as_ref()).ok_or_else(|| {
            Error::new(ErrorKind::MissingParam, "threepid_creds is required for m.login.email.identity")
        })?;
        let purpose = email_purpose(challenge.endpoint)
            .ok_or_else(|| Error::forbidden("An email validation cannot authorise this request"))?;
        let address = self.validated_email(&creds.sid, &creds.client_secret, purpose)?;
        if let Some(localpart) = challenge.localpart {
            if self.email_owner(&address)?.as_deref() != Some(localpart) {
                return Err(Error::new(ErrorKind::ThreepidAuthFailed, "This email address is not yours"));
            }
        }
        Ok(address)
    }

    fn registration_token_stage(&self, auth: &AuthDict) -> Result<String> {
        let token = auth.token.as_deref().ok_or_else(|| Error::new(ErrorKind::Unauthorized, "No token given"))?;
        if self.registration_token_is_valid(token)? {
            Ok(token.to_owned())
        } else {
            Err(Error::new(ErrorKind::Unauthorized, "Invalid registration token"))
        }
    }

    fn registration_token_config(&self, token: &str) -> Option<&RegistrationTokenConfig> {
        self.registration_tokens.iter().find(|t| t.token == token)
    }

    /// Whether `token` would allow a registration now (spec: `/validity`).
    pub fn registration_token_is_valid(&self, token: &str) -> Result<bool> {
        let Some(config) = self.registration_token_config(token) else { return Ok(false) };
        if config.expiry_time.is_some_and(|expiry| expiry <= now_ms()) {
            return Ok(false);
        }
        let used = self.storage.tables.registration_token_uses.get(&token.to_owned())?.unwrap_or_default();
        Ok(config.uses_allowed.is_none_or(|allowed| used.completed < allowed))
    }

    /// Counts a completed registration against `token`, refusing if its uses ran out.
    pub fn consume_registration_token(&self, token: &str) -> Result<()> {
        let config =
            self.registration_token_config(token).ok_or_else(|| Error::forbidden("Invalid registration token"))?;
        let allowed = config.uses_allowed.unwrap_or(u32::MAX);
        let consumed = std::cell::Cell::new(false);
        self.storage.tables.registration_token_uses.update_and_fetch(&token.to_owned(), |usage| {
            let usage = usage.unwrap_or_default();
            consumed.set(usage.completed < allowed);
            Some(RegistrationTokenUsage { completed: usage.completed + u32::from(consumed.get()) })
        })?;
        if consumed.get() {
            Ok(())
        } else {
            Err(Error::forbidden("The registration token has been used up"))
        }
    }
}

/// The 401 response that asks the client for (more) authentication.
fn interactive(challenge: &Challenge<'_>, id: &str, session: &UiaaSessionRecord, error: Option<&Error>) -> Error {
    let flows: Vec<Value> = challenge.flows.iter().map(|stages| json!({ "stages": stages })).collect();
    // `completed` always, empty or not, as clients and Synapse expect.
    let mut info = json!({ "flows": flows, "params": {}, "session": id, "completed": session.completed });
    let message = match error {
        Some(error) => {
            info["errcode"] = json!(error.errcode());
            info["error"] = json!(error.message);
            error.message.clone()
        }
        None => "Additional authentication is required".to_owned(),
    };
    Error::new(ErrorKind::UserInteractive(Box::new(info)), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::test_users as users;

    const TWO_STAGES: &[&[&str]] = &[&[DUMMY, PASSWORD]];

    #[tokio::test]
    async fn bare_challenges_store_nothing_and_progress_is_kept() {
        let (_dir, users) = users();
        let challenge = Challenge { endpoint: "POST /x", localpart: Some("a"), flows: TWO_STAGES, client_ip: "::1" };
        for _ in 0..10 {
            let error = users.user_interactive_auth(&challenge, None, 60).await.unwrap_err();
            assert!(matches!(error.kind, ErrorKind::UserInteractive(_)));
        }
        assert!(users.storage.tables.uiaa_sessions.is_empty(), "challenges cost no storage");

        let auth = serde_json::json!({ "type": DUMMY, "session": "abc" });
        let error = users.user_interactive_auth(&challenge, Some(&auth), 60).await.unwrap_err();
        let ErrorKind::UserInteractive(info) = error.kind else { panic!("{error}") };
        assert_eq!(info["completed"], serde_json::json!([DUMMY]));
        assert_eq!(users.storage.tables.uiaa_sessions.len(), 1, "progress is stored");
    }

    #[tokio::test]
    async fn expired_sessions_are_purged() {
        let (_dir, users) = users();
        let challenge = Challenge { endpoint: "POST /x", localpart: Some("a"), flows: TWO_STAGES, client_ip: "::1" };
        let auth = serde_json::json!({ "type": DUMMY, "session": "old" });
        let _ = users.user_interactive_auth(&challenge, Some(&auth), 0).await;
        let auth = serde_json::json!({ "type": DUMMY, "session": "fresh" });
        let _ = users.user_interactive_auth(&challenge, Some(&auth), 600).await;
        assert_eq!(users.storage.tables.uiaa_sessions.len(), 2);
        assert_eq!(users.purge_expired_uiaa_sessions().unwrap(), 1);
        assert!(users.storage.tables.uiaa_sessions.contains(&"fresh".to_owned()).unwrap());
    }

    #[tokio::test]
    async fn sessions_with_progress_stay_bound_to_their_endpoint_and_user() {
        let (_dir, users) = users();
        let challenge = Challenge { endpoint: "POST /x", localpart: Some("a"), flows: TWO_STAGES, client_ip: "::1" };
        let auth = serde_json::json!({ "type": DUMMY, "session": "progress" });
        let _ = users.user_interactive_auth(&challenge, Some(&auth), 60).await;
        let other_endpoint = Challenge { endpoint: "POST /y", ..challenge };
        let other_user = Challenge { localpart: Some("b"), ..challenge };
        for wrong in [other_endpoint, other_user] {
            let error = users.user_interactive_auth(&wrong, Some(&auth), 60).await.unwrap_err();
            assert_eq!(error.kind, ErrorKind::Forbidden, "{error}");
        }
    }
}
