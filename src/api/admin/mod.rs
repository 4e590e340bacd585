//! The administration API: a Synapse-compatible subset under
//! `/_synapse/admin/`, so that the tools operators already use
//! (`register_new_matrix_user`, the synapse-admin web UI, scripts written for
//! Synapse) work unchanged. `docs/admin-api.md` lists each endpoint, the
//! fields supported and the differences.
//!
//! Every endpoint but shared-secret registration and the server version is
//! for server admins only (`Access::Admins`, decided in [`super::dispatch`]:
//! 403 `M_FORBIDDEN` for anyone else).

pub mod backup;
pub mod media;
pub mod notices;
pub mod operations;
pub mod register;
pub mod reports;
pub mod rooms;
pub mod users;

use serde_json::json;

use crate::{
    error::{Error, Result},
    http::{Request, Response},
    services::Services,
};

/// `GET /_synapse/admin/v1/server_version`.
pub fn server_version() -> Response {
    Response::json(&json!({ "server_version": format!("conduit {}", env!("CARGO_PKG_VERSION")) }))
}

/// `GET /_conduit/health`: 200 `OK` while the database answers.
pub fn health(s: &Services) -> Result<Response> {
    s.storage.current_count().map_err(|error| Error::internal("health check", error))?;
    Ok(Response::bytes(b"OK".to_vec(), "text/plain; charset=utf-8".to_owned()))
}

/// Where a paged list starts and how long it is (`from`, `limit`; Synapse's
/// defaults: 0 and 100).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paging {
    pub from: usize,
    pub limit: usize,
}

impl Paging {
    pub fn of(request: &Request) -> Result<Self> {
        let number = |name: &str, default: usize| -> Result<usize> {
            request.query(name).map_or(Ok(default), |value| {
                value.parse().map_err(|_| Error::invalid_param(format!("{name} must be a number, not {value:?}")))
            })
        };
        Ok(Self { from: number("from", 0)?, limit: number("limit", 100)? })
    }

    /// The items of this page.
    pub fn page<'a, T>(&self, items: &'a [T]) -> impl Iterator<Item = &'a T> {
        items.iter().skip(self.from).take(self.limit)
    }

    /// Where the next page starts, when there is one after this page of `total` items.
    pub fn next(&self, total: usize) -> Option<usize> {
        let next = self.from.saturating_add(self.limit);
        (next < total).then_some(next)
    }
}

/// The local user a path's `:user_id` names, as a localpart.
pub(crate) fn local_user(s: &Services, request: &Request) -> Result<String> {
    let user_id = request.param("user_id")?;
    let user =
        ruma::UserId::parse(user_id).map_err(|_| Error::invalid_param(format!("{user_id:?} is not a user id")))?;
    if user.server_name() != s.config.server_name {
        return Err(Error::invalid_param("Only local users can be administered here"));
    }
    Ok(user.localpart().to_owned())
}
