//! Asking another server who holds an OpenID token it gave one of its users
//! (server-server API "OpenID": `GET /openid/userinfo`), for the identity
//! service this server also is.

use ruma::{OwnedUserId, UserId};

use super::{Federation, FederationError};
use crate::http::request::percent_encode;

impl Federation {
    /// The user `server` gave `token` to, if it says so (and the user is its own).
    pub async fn openid_userinfo(
        &self,
        server: &ruma::ServerName,
        token: &str,
    ) -> Result<OwnedUserId, FederationError> {
        self.check_federates_with(server.as_str())?;
        let path = format!("/_matrix/federation/v1/openid/userinfo?access_token={}", percent_encode(token));
        let answer = self.get_unsigned(server.as_str(), &path).await?;
        let user = answer["sub"].as_str().and_then(|sub| UserId::parse(sub).ok());
        match user {
            Some(user) if user.server_name() == server => Ok(user),
            _ => Err(FederationError::BadAnswer(format!("{server} named no user of its own for the token"))),
        }
    }
}
