//! Push rules, read side: `GET /pushrules/` and `GET /pushrules/global/`.
//!
//! Spec: client-server API "Push Notifications" → "Push Rules" (`push_rules.yaml`).
//! Every user has the server-default rules of the spec (built by ruma's
//! `Ruleset::server_default`); clients such as matrix-js-sdk read them before
//! their first sync. Changing rules, evaluating them and pushers come with the
//! notifications work.

use serde_json::json;

use crate::{
    error::{Error, Result},
    http::{Request, Response},
    users::Identity,
};

fn default_rules(who: &Identity) -> Result<serde_json::Value> {
    serde_json::to_value(ruma::push::Ruleset::server_default(&who.user_id))
        .map_err(|e| Error::internal("serialising push rules", e))
}

/// `GET /pushrules/`: every scope (only `global` exists).
pub fn all(_request: &Request, who: &Identity) -> Result<Response> {
    Ok(Response::json(&json!({ "global": default_rules(who)? })))
}

/// `GET /pushrules/global/`.
pub fn global(_request: &Request, who: &Identity) -> Result<Response> {
    Ok(Response::json(&default_rules(who)?))
}
