//! Push rules: `GET /pushrules/`, `GET /pushrules/global/`, and per rule
//! `GET`/`PUT`/`DELETE /pushrules/global/{kind}/{ruleId}` with its
//! `/enabled` and `/actions`.
//!
//! Spec: client-server API "Push Notifications" → "Push Rules"
//! (`push_rules.yaml`). A user's rules are the spec's server-default rules
//! (built by ruma's `Ruleset::server_default`) until they change one; the
//! changed set is stored as the `m.push_rules` global account data, which is
//! also how clients such as Element receive it through `/sync`. Rule
//! placement (`before`/`after`), reserved ids and defaults that may not be
//! deleted follow ruma's `Ruleset` rules.

use ruma::push::{
    Action, AnyPushRuleRef, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule, NewPushRule,
    NewSimplePushRule, PushCondition, RemovePushRuleError, RuleKind, Ruleset,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::{Error, ErrorKind, Result},
    http::{Request, Response},
    services::Services,
    users::Identity,
};

use crate::rooms::notifications::PUSH_RULES;

/// The user's rules: the stored set, else the server defaults.
fn ruleset_of(s: &Services, who: &Identity) -> Result<Ruleset> {
    Ok(Ruleset::clone(s.rooms.push_rules_of(&who.user_id)?.as_ref()))
}

async fn store(s: &Services, who: &Identity, ruleset: &Ruleset) -> Result<()> {
    let global = serde_json::to_value(ruleset).map_err(|e| Error::internal("serialising push rules", e))?;
    s.users.store_account_data(&who.localpart, None, PUSH_RULES, &json!({ "global": global })).await
}

fn to_json(value: impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::internal("serialising push rules", e))
}

/// `GET /pushrules/`: every scope (only `global` exists).
pub fn all(s: &Services, who: &Identity) -> Result<Response> {
    Ok(Response::json(&json!({ "global": to_json(ruleset_of(s, who)?)? })))
}

/// `GET /pushrules/global/`.
pub fn global(s: &Services, who: &Identity) -> Result<Response> {
    Ok(Response::json(&to_json(ruleset_of(s, who)?)?))
}

/// The `{scope}/{kind}/{ruleId}` path parameters.
/// A malformed one (no scope, unknown scope or kind, missing or empty rule
/// id) is 400 `M_INVALID_PARAM`, as Synapse answers, rather than a 404.
fn rule_path(request: &Request) -> Result<(RuleKind, String)> {
    let kind = kind_path(request)?;
    // (Absent on the path of a kind, `/pushrules/global/content`.)
    let rule_id = request.optional_param("rule_id").unwrap_or_default();
    if rule_id.is_empty() {
        return Err(Error::invalid_param("The push rule path has no rule id"));
    }
    Ok((kind, rule_id.to_owned()))
}

/// The scope and kind of a `/pushrules/{scope}/{kind}` path.
fn kind_path(request: &Request) -> Result<RuleKind> {
    match request.param("scope")? {
        "global" => {}
        "" => return Err(Error::invalid_param("The push rule path has no scope")),
        _ => return Err(Error::invalid_param("Only the `global` scope exists")),
    }
    let kind = match request.param("kind")? {
        "override" => RuleKind::Override,
        "underride" => RuleKind::Underride,
        "sender" => RuleKind::Sender,
        "room" => RuleKind::Room,
        "content" => RuleKind::Content,
        other => return Err(Error::invalid_param(format!("Unknown push rule kind {other:?}"))),
    };
    Ok(kind)
}

/// `GET /pushrules/global/{kind}`: the rules of one kind, in order (as
/// Synapse answers; the spec defines the ruleset and single rules).
pub fn get_kind(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let kind = kind_path(request)?;
    let ruleset = to_json(ruleset_of(s, who)?)?;
    Ok(Response::json(&ruleset.get(kind.as_str()).cloned().unwrap_or_else(|| json!([]))))
}

fn not_found() -> Error {
    Error::not_found("Unknown push rule")
}

fn rule_json(rule: AnyPushRuleRef<'_>) -> Result<Value> {
    match rule {
        AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r) => to_json(r),
        AnyPushRuleRef::Content(r) => to_json(r),
        AnyPushRuleRef::Room(r) => to_json(r),
        AnyPushRuleRef::Sender(r) => to_json(r),
        _ => Err(Error::invalid_param("Unsupported push rule kind")),
    }
}

/// `GET /pushrules/global/{kind}/{ruleId}`.
pub fn get_rule(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let (kind, rule_id) = rule_path(request)?;
    let ruleset = ruleset_of(s, who)?;
    let rule = ruleset.get(kind, &rule_id).ok_or_else(not_found)?;
    Ok(Response::json(&rule_json(rule)?))
}

#[derive(Debug, Deserialize)]
struct NewRuleBody {
    actions: Vec<Action>,
    #[serde(default)]
    conditions: Vec<PushCondition>,
    pattern: Option<String>,
}

/// `PUT /pushrules/global/{kind}/{ruleId}?before=&after=`.
pub async fn put_rule(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let (kind, rule_id) = rule_path(request)?;
    let body: NewRuleBody = request.json()?;
    let rule = match kind {
        RuleKind::Override => {
            NewPushRule::Override(NewConditionalPushRule::new(rule_id, body.conditions, body.actions))
        }
        RuleKind::Underride => {
            NewPushRule::Underride(NewConditionalPushRule::new(rule_id, body.conditions, body.actions))
        }
        RuleKind::Content => {
            let pattern = body.pattern.ok_or_else(|| Error::bad_json("A content rule needs a `pattern`"))?;
            NewPushRule::Content(NewPatternedPushRule::new(rule_id, pattern, body.actions))
        }
        RuleKind::Room => {
            let room_id = rule_id.try_into().map_err(|_| Error::invalid_param("A room rule's id is a room id"))?;
            NewPushRule::Room(NewSimplePushRule::new(room_id, body.actions))
        }
        RuleKind::Sender => {
            let user_id = rule_id.try_into().map_err(|_| Error::invalid_param("A sender rule's id is a user id"))?;
            NewPushRule::Sender(NewSimplePushRule::new(user_id, body.actions))
        }
        _ => return Err(Error::invalid_param("Unsupported push rule kind")),
    };
    // Read, changed and stored under the user's lock: concurrent edits all count.
    let _edit = s.users.lock_account_data(&who.localpart).await;
    let mut ruleset = ruleset_of(s, who)?;
    ruleset.insert(rule, request.query("after"), request.query("before")).map_err(|error| match error {
        InsertPushRuleError::UnknownRuleId => Error::not_found("The `before` or `after` rule does not exist"),
        other => Error::invalid_param(other.to_string()),
    })?;
    store(s, who, &ruleset).await?;
    Ok(Response::empty_object())
}

/// `DELETE /pushrules/global/{kind}/{ruleId}`.
pub async fn delete_rule(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let (kind, rule_id) = rule_path(request)?;
    // Read, changed and stored under the user's lock: concurrent edits all count.
    let _edit = s.users.lock_account_data(&who.localpart).await;
    let mut ruleset = ruleset_of(s, who)?;
    ruleset.remove(kind, &rule_id).map_err(|error| match error {
        RemovePushRuleError::ServerDefault => Error::invalid_param("Server-default rules cannot be deleted"),
        _ => not_found(),
    })?;
    store(s, who, &ruleset).await?;
    Ok(Response::empty_object())
}

enum Attribute {
    Enabled,
    Actions,
}

/// The last path segment: `enabled` or `actions`.
fn attribute(request: &Request) -> Result<Attribute> {
    match request.param("attribute")? {
        "enabled" => Ok(Attribute::Enabled),
        "actions" => Ok(Attribute::Actions),
        other => Err(Error::new(ErrorKind::Unrecognized, format!("Push rules have no attribute {other:?}"))),
    }
}

/// `GET /pushrules/global/{kind}/{ruleId}/enabled` and `/actions`.
pub fn get_attribute(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let (kind, rule_id) = rule_path(request)?;
    let attribute = attribute(request)?;
    let ruleset = ruleset_of(s, who)?;
    let rule = ruleset.get(kind, &rule_id).ok_or_else(not_found)?;
    Ok(Response::json(&match attribute {
        Attribute::Enabled => json!({ "enabled": rule.enabled() }),
        Attribute::Actions => json!({ "actions": to_json(rule.actions())? }),
    }))
}

#[derive(Debug, Deserialize)]
struct EnabledBody {
    enabled: bool,
}

#[derive(Debug, Deserialize)]
struct ActionsBody {
    actions: Vec<Action>,
}

/// `PUT /pushrules/global/{kind}/{ruleId}/enabled` and `/actions`.
pub async fn put_attribute(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let (kind, rule_id) = rule_path(request)?;
    // Read, changed and stored under the user's lock: concurrent edits all count.
    let _edit = s.users.lock_account_data(&who.localpart).await;
    let mut ruleset = ruleset_of(s, who)?;
    let changed = match attribute(request)? {
        Attribute::Enabled => ruleset.set_enabled(kind, &rule_id, request.json::<EnabledBody>()?.enabled),
        Attribute::Actions => ruleset.set_actions(kind, &rule_id, request.json::<ActionsBody>()?.actions),
    };
    changed.map_err(|_| not_found())?;
    store(s, who, &ruleset).await?;
    Ok(Response::empty_object())
}

/// `GET /notifications?from=&limit=&only=highlight`: the caller's
/// notifications, newest first, with whether each is read.
pub fn notifications(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let limit = match request.query("limit") {
        Some(limit) => limit.parse::<usize>().map_err(|_| Error::invalid_param("Invalid `limit`"))?.clamp(1, 100),
        None => 20,
    };
    let before = match request.query("from") {
        Some(from) => from.parse::<u64>().map_err(|_| Error::invalid_param("Invalid `from` token"))?,
        None => u64::MAX,
    };
    let only_highlight = request.query("only") == Some("highlight");
    let (entries, next_token) = s.rooms.notifications_of(&who.user_id, before, limit, only_highlight)?;
    let mut notifications = Vec::new();
    for entry in entries {
        let actions: Value = serde_json::from_str(&entry.actions).unwrap_or_else(|_| json!([]));
        let ts = u64::from(ruma::state_res::Event::origin_server_ts(&entry.pdu).get());
        notifications.push(json!({
            "actions": actions,
            "event": s.rooms.serve_event(&entry.pdu, &entry.stored, &who.user_id, &who.device_id)?,
            // Rules have no profile tags here; Synapse sends the key as null too.
            "profile_tag": null,
            "read": entry.read,
            "room_id": entry.room_id,
            "ts": ts,
        }));
    }
    let mut body = json!({ "notifications": notifications });
    if let Some(next) = next_token {
        body["next_token"] = json!(next.to_string());
    }
    Ok(Response::json(&body))
}

/// `GET /pushers`.
pub fn pushers(s: &Services, who: &Identity) -> Result<Response> {
    Ok(Response::json(&json!({ "pushers": s.users.pushers(&who.localpart)? })))
}

/// `POST /pushers/set`.
pub async fn set_pusher(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let body: serde_json::Map<String, Value> = request.json()?;
    if body.get("kind").and_then(Value::as_str) == Some("http") {
        if let Some(url) = body.get("data").and_then(|data| data.get("url")).and_then(Value::as_str) {
            s.push.check_gateway_url(url).await?;
        }
    }
    s.users.set_pusher(&who.localpart, &who.device_id, body).await?;
    Ok(Response::empty_object())
}
