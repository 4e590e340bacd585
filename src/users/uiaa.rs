//! User-interactive authentication (UIA).
//!
//! Spec: client-server API "User-Interactive Authentication API", with the
//! stages `m.login.dummy`, `m.login.password` and `m.login.registration_token`.
//!
//! A session is bound to one endpoint and (except at registration) one user,
//! persisted with an expiry, and deleted when a flow completes, so a completed
//! session cannot authorise a second request.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    config::RegistrationTokenConfig,
    crypto::tokens::random_alphanumeric,
    error::{Error, ErrorKind, Result},
    storage::records::{RegistrationTokenUsage, UiaaSessionRecord},
    util::now_ms,
};

use super::Users;

pub const DUMMY: &str = "m.login.dummy";
pub const PASSWORD: &str = "m.login.password";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";

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
}

#[derive(Debug, Deserialize)]
pub struct Identifier {
    #[serde(rename = "type")]
    pub kind: String,
    pub user: Option<String>,
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
        let sessions = &self.storage.tables.uiaa_sessions;
        let Some(auth) = auth else {
            let (id, session) = self.new_session(challenge, lifetime_secs);
            sessions.insert_if_absent(&id, &session)?;
            return Err(interactive(challenge, &id, &session, None));
        };
        let auth: AuthDict =
            serde_json::from_value(auth.clone()).map_err(|e| Error::bad_json(format!("Invalid `auth` object: {e}")))?;
        let (id, mut session) = match &auth.session {
            Some(id) => (id.clone(), self.existing_session(challenge, id)?),
            None => self.new_session(challenge, lifetime_secs),
        };
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
            Some(other) => Err(Error::forbidden(format!("Unsupported authentication stage {other}"))),
        };
        if let Err(error) = outcome {
            if matches!(error.kind, ErrorKind::LimitExceeded { .. } | ErrorKind::UserDeactivated) {
                return Err(error);
            }
            self.save_session(&id, &session).await?;
            return Err(interactive(challenge, &id, &session, Some(&error)));
        }
        let done =
            challenge.flows.iter().any(|flow| flow.iter().all(|stage| session.completed.iter().any(|c| c == stage)));
        if done {
            let mut batch = crate::storage::Batch::new();
            batch.remove(sessions, &id);
            self.storage.apply(batch)?;
            Ok(session)
        } else {
            self.save_session(&id, &session).await?;
            Err(interactive(challenge, &id, &session, None))
        }
    }

    fn new_session(&self, challenge: &Challenge<'_>, lifetime_secs: u64) -> (String, UiaaSessionRecord) {
        let session = UiaaSessionRecord {
            localpart: challenge.localpart.map(str::to_owned),
            endpoint: challenge.endpoint.to_owned(),
            completed: Vec::new(),
            expires_ts: now_ms() + lifetime_secs * 1000,
            registration_token: None,
        };
        (random_alphanumeric(24), session)
    }

    fn existing_session(&self, challenge: &Challenge<'_>, id: &str) -> Result<UiaaSessionRecord> {
        let session = self
            .storage
            .tables
            .uiaa_sessions
            .get(&id.to_owned())?
            .filter(|s| s.expires_ts > now_ms())
            .ok_or_else(|| Error::invalid_param("Unknown or expired authentication session"))?;
        if session.endpoint != challenge.endpoint || session.localpart.as_deref() != challenge.localpart {
            return Err(Error::forbidden("This authentication session belongs to another request"));
        }
        Ok(session)
    }

    async fn save_session(&self, id: &str, session: &UiaaSessionRecord) -> Result<()> {
        let mut batch = crate::storage::Batch::new();
        batch.insert(&self.storage.tables.uiaa_sessions, &id.to_owned(), session)?;
        self.storage.apply(batch)?;
        Ok(())
    }

    async fn password_stage(&self, challenge: &Challenge<'_>, auth: &AuthDict) -> Result<()> {
        let expected = challenge.localpart.ok_or_else(|| Error::forbidden("No user to authenticate"))?;
        let named = match (&auth.identifier, &auth.user) {
            (Some(Identifier { kind, user: Some(user) }), _) if kind == "m.id.user" => Some(user.as_str()),
            (Some(_), _) => return Err(Error::forbidden("Only m.id.user identifiers are supported")),
            (None, user) => user.as_deref(),
        };
        // Clients may omit the identifier: the session is already bound to the user.
        if let Some(named) = named {
            if self.localpart_from_identifier(named).as_deref() != Some(expected) {
                return Err(Error::forbidden("The identifier does not match the authenticated user"));
            }
        }
        let password = auth.password.as_deref().ok_or_else(|| Error::forbidden("No password given"))?;
        self.check_password(expected, password, challenge.client_ip).await.map(drop)
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
    let mut info = json!({ "flows": flows, "params": {}, "session": id });
    if !session.completed.is_empty() {
        info["completed"] = json!(session.completed);
    }
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
