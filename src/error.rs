//! The one error type of the server and its mapping to Matrix error responses.
//!
//! Spec: client-server API, "API Standards" → "Standard error response",
//! "Common error codes", "Other error codes" and "Rate limiting".
//!
//! Every fallible operation in the server returns [`Error`]. The HTTP layer turns
//! it into a status code and a `{"errcode", "error"}` body in exactly one place,
//! [`Error::status`] and [`Error::errcode`], so that no handler picks status codes
//! by hand. Internal failures (storage, I/O) are logged with their cause and shown
//! to clients as a generic `M_UNKNOWN` 500 without internal details.

use std::fmt;

/// What went wrong, in the vocabulary of the Matrix error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400 `M_BAD_JSON`: valid JSON of the wrong shape.
    BadJson,
    /// 400 `M_NOT_JSON`: the body is not JSON at all.
    NotJson,
    /// 403 `M_FORBIDDEN`.
    Forbidden,
    /// 401 `M_MISSING_TOKEN`.
    MissingToken,
    /// 401 `M_UNKNOWN_TOKEN`; `soft_logout` tells the client whether it may keep
    /// its local state (expired refreshable access tokens).
    UnknownToken { soft_logout: bool },
    /// 404 `M_NOT_FOUND`.
    NotFound,
    /// 404 `M_UNRECOGNIZED`: no such endpoint.
    UnrecognizedEndpoint,
    /// 405 `M_UNRECOGNIZED`: known endpoint, wrong method.
    MethodNotAllowed,
    /// 400 `M_UNRECOGNIZED`: a known endpoint asked for something it does not
    /// have (a push rule's unknown attribute).
    Unrecognized,
    /// 413 `M_TOO_LARGE`.
    TooLarge,
    /// 502 `M_TOO_LARGE`: another server's media is larger than this one serves.
    RemoteTooLarge,
    /// 429 `M_LIMIT_EXCEEDED` with the time the client should wait.
    LimitExceeded { retry_after_ms: u64 },
    /// 400 `M_INVALID_USERNAME`.
    InvalidUsername,
    /// 400 `M_USER_IN_USE`.
    UserInUse,
    /// 400 `M_INVALID_PARAM`.
    InvalidParam,
    /// 400 `M_MISSING_PARAM`.
    MissingParam,
    /// 400 `M_INVALID_SIGNATURE`: a cross-signing key not signed as it must be.
    InvalidSignature,
    /// 409 `M_UNKNOWN`: the resource exists already (a room alias).
    Conflict,
    /// 400 `M_ROOM_IN_USE`: the alias asked for at room creation is taken.
    RoomInUse,
    /// 400 `M_BAD_ALIAS`: a canonical alias does not point to the room.
    BadAlias,
    /// 405 `M_BAD_JSON`: account data the server controls.
    ServerControlled,
    /// 400 `M_UNKNOWN`: a bad request the spec gives no code for.
    BadRequest,
    /// 400 `M_BAD_STATE`: the change cannot apply to the current state.
    BadState,
    /// 400 `M_UNSUPPORTED_ROOM_VERSION`.
    UnsupportedRoomVersion,
    /// 400 `M_INCOMPATIBLE_ROOM_VERSION`: a server joining a room of a
    /// version it did not say it supports; the room's version is named.
    IncompatibleRoomVersion { room_version: String },
    /// 403 `M_WRONG_ROOM_KEYS_VERSION`: keys sent to a backup that is not the
    /// current one, which is named.
    WrongRoomKeysVersion { current_version: Option<String> },
    /// 409 `M_CANNOT_OVERWRITE_MEDIA`: the media already has content.
    CannotOverwriteMedia,
    /// 504 `M_NOT_YET_UPLOADED`: the media was created but has no content yet.
    NotYetUploaded,
    /// 403 `M_USER_DEACTIVATED`.
    UserDeactivated,
    /// 403 `M_GUEST_ACCESS_FORBIDDEN`.
    GuestAccessForbidden,
    /// 401 `M_UNAUTHORIZED`.
    Unauthorized,
    /// 401 with a user-interactive authentication body (flows, session,
    /// completed stages, and `errcode`/`error` when a stage failed).
    UserInteractive(Box<serde_json::Value>),
    /// 408 `M_UNKNOWN`: the client was too slow to send its request.
    RequestTimeout,
    /// 502 `M_UNKNOWN`: another server this request needed failed (as
    /// Synapse answers a remote media fetch that failed).
    BadGateway,
    /// 503 `M_UNKNOWN`: the server is shutting down or overloaded.
    Unavailable,
    /// 500 `M_UNKNOWN`: a fault on our side; details are only logged.
    Internal,
    /// 400 `M_THREEPID_MEDIUM_NOT_SUPPORTED`: no mail can go out from here.
    ThreepidMediumNotSupported,
    /// 403 `M_THREEPID_DENIED`: the address may not be used here.
    ThreepidDenied,
    /// 400 `M_THREEPID_IN_USE`: the address belongs to an account already.
    ThreepidInUse,
    /// 400 `M_THREEPID_NOT_FOUND`: no account has the address.
    ThreepidNotFound,
    /// 400 `M_THREEPID_AUTH_FAILED`: the address was not validated.
    ThreepidAuthFailed,
    /// 403 `ORG_MATRIX_EXPIRED_ACCOUNT`: the account's validity ended (Synapse's code).
    ExpiredAccount,
    /// 400 `M_INVALID_PEPPER`: an identity lookup with another pepper.
    InvalidPepper,
    /// 400 with the code of the password policy rule a password breaks
    /// (`M_PASSWORD_TOO_SHORT`, `M_PASSWORD_NO_DIGIT`, …; Synapse's codes).
    PasswordPolicy(&'static str),
}

/// An error with a human-readable message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadJson, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParam, message)
    }

    /// An internal fault: logged here with its cause, hidden from the client.
    pub fn internal(context: &str, cause: impl fmt::Display) -> Self {
        tracing::error!(%cause, "{context}");
        Self::new(ErrorKind::Internal, "Internal server error")
    }

    /// The HTTP status code the spec pairs with this error.
    pub fn status(&self) -> u16 {
        use ErrorKind::*;
        match self.kind {
            BadJson
            | Unrecognized
            | NotJson
            | InvalidUsername
            | UserInUse
            | InvalidParam
            | MissingParam
            | InvalidSignature
            | UnsupportedRoomVersion
            | IncompatibleRoomVersion { .. }
            | BadState
            | RoomInUse
            | BadAlias
            | BadRequest
            | ThreepidMediumNotSupported
            | ThreepidInUse
            | ThreepidNotFound
            | ThreepidAuthFailed
            | InvalidPepper
            | PasswordPolicy(_) => 400,
            MissingToken | UnknownToken { .. } | Unauthorized | UserInteractive(_) => 401,
            Forbidden
            | UserDeactivated
            | GuestAccessForbidden
            | WrongRoomKeysVersion { .. }
            | ThreepidDenied
            | ExpiredAccount => 403,
            NotFound | UnrecognizedEndpoint => 404,
            MethodNotAllowed | ServerControlled => 405,
            Conflict | CannotOverwriteMedia => 409,
            NotYetUploaded => 504,
            RequestTimeout => 408,
            TooLarge => 413,
            RemoteTooLarge | BadGateway => 502,
            LimitExceeded { .. } => 429,
            Internal => 500,
            Unavailable => 503,
        }
    }

    /// The Matrix `errcode`.
    pub fn errcode(&self) -> &'static str {
        use ErrorKind::*;
        match self.kind {
            BadJson | ServerControlled => "M_BAD_JSON",
            NotJson => "M_NOT_JSON",
            Forbidden => "M_FORBIDDEN",
            MissingToken => "M_MISSING_TOKEN",
            UnknownToken { .. } => "M_UNKNOWN_TOKEN",
            NotFound => "M_NOT_FOUND",
            UnrecognizedEndpoint | MethodNotAllowed | Unrecognized => "M_UNRECOGNIZED",
            TooLarge | RemoteTooLarge => "M_TOO_LARGE",
            LimitExceeded { .. } => "M_LIMIT_EXCEEDED",
            InvalidUsername => "M_INVALID_USERNAME",
            UserInUse => "M_USER_IN_USE",
            InvalidParam => "M_INVALID_PARAM",
            MissingParam => "M_MISSING_PARAM",
            InvalidSignature => "M_INVALID_SIGNATURE",
            UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            IncompatibleRoomVersion { .. } => "M_INCOMPATIBLE_ROOM_VERSION",
            BadState => "M_BAD_STATE",
            RoomInUse => "M_ROOM_IN_USE",
            BadAlias => "M_BAD_ALIAS",
            UserDeactivated => "M_USER_DEACTIVATED",
            WrongRoomKeysVersion { .. } => "M_WRONG_ROOM_KEYS_VERSION",
            CannotOverwriteMedia => "M_CANNOT_OVERWRITE_MEDIA",
            NotYetUploaded => "M_NOT_YET_UPLOADED",
            GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            Unauthorized => "M_UNAUTHORIZED",
            UserInteractive(_) => "M_FORBIDDEN",
            ThreepidMediumNotSupported => "M_THREEPID_MEDIUM_NOT_SUPPORTED",
            ThreepidDenied => "M_THREEPID_DENIED",
            ThreepidInUse => "M_THREEPID_IN_USE",
            ThreepidNotFound => "M_THREEPID_NOT_FOUND",
            ThreepidAuthFailed => "M_THREEPID_AUTH_FAILED",
            InvalidPepper => "M_INVALID_PEPPER",
            ExpiredAccount => "ORG_MATRIX_EXPIRED_ACCOUNT",
            PasswordPolicy(code) => code,
            RequestTimeout | Unavailable | Internal | Conflict | BadRequest | BadGateway => "M_UNKNOWN",
        }
    }

    /// The standard error body, with the extra keys some codes define.
    pub fn to_json(&self) -> serde_json::Value {
        if let ErrorKind::UserInteractive(info) = &self.kind {
            return (**info).clone();
        }
        let mut body = serde_json::json!({
            "errcode": self.errcode(),
            "error": self.message,
        });
        match &self.kind {
            ErrorKind::LimitExceeded { retry_after_ms } => {
                body["retry_after_ms"] = (*retry_after_ms).into();
            }
            ErrorKind::WrongRoomKeysVersion { current_version } => {
                body["current_version"] = current_version.clone().into();
            }
            ErrorKind::UnknownToken { soft_logout } => {
                body["soft_logout"] = (*soft_logout).into();
            }
            ErrorKind::IncompatibleRoomVersion { room_version } => {
                body["room_version"] = room_version.clone().into();
            }
            _ => {}
        }
        body
    }

    /// Seconds for a `Retry-After` header, when the error carries one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self.kind {
            ErrorKind::LimitExceeded { retry_after_ms } => Some(retry_after_ms.div_ceil(1000)),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.errcode(), self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_a_spec_status_and_code() {
        let cases = [
            (ErrorKind::BadJson, 400, "M_BAD_JSON"),
            (ErrorKind::NotJson, 400, "M_NOT_JSON"),
            (ErrorKind::MissingToken, 401, "M_MISSING_TOKEN"),
            (ErrorKind::UnknownToken { soft_logout: false }, 401, "M_UNKNOWN_TOKEN"),
            (ErrorKind::UnrecognizedEndpoint, 404, "M_UNRECOGNIZED"),
            (ErrorKind::MethodNotAllowed, 405, "M_UNRECOGNIZED"),
            (ErrorKind::Unrecognized, 400, "M_UNRECOGNIZED"),
            (ErrorKind::TooLarge, 413, "M_TOO_LARGE"),
            (ErrorKind::RemoteTooLarge, 502, "M_TOO_LARGE"),
            (ErrorKind::LimitExceeded { retry_after_ms: 1500 }, 429, "M_LIMIT_EXCEEDED"),
            (ErrorKind::Internal, 500, "M_UNKNOWN"),
        ];
        for (kind, status, code) in cases {
            let error = Error::new(kind, "x");
            assert_eq!((error.status(), error.errcode()), (status, code));
        }
    }

    #[test]
    fn rate_limit_body_and_header_carry_the_wait() {
        let error = Error::new(ErrorKind::LimitExceeded { retry_after_ms: 1500 }, "slow down");
        assert_eq!(error.to_json()["retry_after_ms"], 1500);
        assert_eq!(error.retry_after_secs(), Some(2));
    }
}
