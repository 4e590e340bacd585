//! The body of `POST /_matrix/push/v1/notify` (push gateway API,
//! "Notification"), for one pusher.
//!
//! Full format: the event's id, room, type, sender (and display name),
//! content, room name and alias, `user_is_target` for member events about
//! the user, priority, counts and the device with its tweaks. With
//! `data.format: "event_id_only"` only the ids, counts, priority and device
//! go out, so the gateway (and the phone platform behind it) never sees the
//! message. Counts of zero are left out, as the spec asks. The full format
//! also carries the event id as `id`, its name before the spec, as Synapse
//! sends it.

use crate::events::kinds;
use ruma::UserId;
use serde_json::{json, Map, Value};

use super::PusherId;
use crate::rooms::notifications::PushContext;

/// The pusher's `data` as sent to its gateway: without the URL.
fn gateway_data(settings: &Value) -> Map<String, Value> {
    let mut data = settings["data"].as_object().cloned().unwrap_or_default();
    data.remove("url");
    data
}

/// A badge update: the unread count only, no event. Sent even when zero (a
/// phone clears its badge on it), which the spec's advice to omit zero
/// counts does not foresee; Synapse does the same.
pub fn build_badge(pusher: &PusherId, settings: &Value, unread: u64) -> Value {
    let device = json!({ "app_id": pusher.app_id, "pushkey": pusher.pushkey, "data": gateway_data(settings) });
    json!({ "notification": { "counts": { "unread": unread }, "devices": [device], "prio": "low" } })
}

/// `{"notification": {...}}` for `pusher` (`settings` as the client set it).
pub fn build(user_id: &UserId, pusher: &PusherId, settings: &Value, context: &PushContext, unread: u64) -> Value {
    let actions: Vec<Value> = serde_json::from_str(&context.actions).unwrap_or_default();
    let tweaks = tweaks_of(&actions);
    let event = &context.event;
    let data = gateway_data(settings);
    let event_id_only = data.get("format").and_then(Value::as_str) == Some("event_id_only");
    let mut device = json!({ "app_id": pusher.app_id, "pushkey": pusher.pushkey, "data": data });
    if !tweaks.is_empty() {
        device["tweaks"] = Value::Object(tweaks.clone());
    }
    let mut counts = Map::new();
    if unread > 0 {
        counts.insert("unread".to_owned(), json!(unread));
    }
    let mut notification = json!({
        "event_id": event["event_id"],
        "room_id": event["room_id"],
        "counts": counts,
        "devices": [device],
        "prio": priority(event, context.highlight, &tweaks),
    });
    if let (false, Some(fields)) = (event_id_only, notification.as_object_mut()) {
        // `id`: the event id under its pre-spec name, for older gateways.
        // Harmless in the full format only (which shows the event anyway),
        // as Synapse sends it; Sygnal reads `event_id` alone.
        fields.insert("id".to_owned(), event["event_id"].clone());
        for name in ["type", "sender", "content"] {
            fields.insert(name.to_owned(), event[name].clone());
        }
        let optional = [
            ("sender_display_name", &context.sender_display_name),
            ("room_name", &context.room_name),
            ("room_alias", &context.room_alias),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                fields.insert(name.to_owned(), json!(value));
            }
        }
        if event["type"] == kinds::MEMBER {
            fields.insert("user_is_target".to_owned(), json!(event["state_key"] == user_id.as_str()));
        }
    }
    json!({ "notification": notification })
}

/// The `set_tweak` actions as a map (`highlight` without a value means true).
fn tweaks_of(actions: &[Value]) -> Map<String, Value> {
    let mut tweaks = Map::new();
    for action in actions {
        let Some(name) = action.get("set_tweak").and_then(Value::as_str) else { continue };
        tweaks.insert(name.to_owned(), action.get("value").cloned().unwrap_or(Value::Bool(true)));
    }
    tweaks
}

/// High for what a person should see now (a highlight, a sound, an
/// encrypted message whose content is unknown, an invitation); low otherwise.
fn priority(event: &Value, highlight: bool, tweaks: &Map<String, Value>) -> &'static str {
    let invite = event["type"] == kinds::MEMBER && event["content"]["membership"] == "invite";
    let urgent = highlight
        || tweaks.contains_key("sound")
        || event["type"] == kinds::ENCRYPTED
        || invite
        || tweaks.get("highlight").is_some_and(|value| value != &Value::Bool(false));
    if urgent {
        "high"
    } else {
        "low"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(event: Value, actions: &str) -> PushContext {
        PushContext {
            event,
            room_name: Some("Forum RH".to_owned()),
            room_alias: None,
            sender_display_name: Some("Hélène".to_owned()),
            actions: actions.to_owned(),
            highlight: false,
            already_read: false,
        }
    }

    fn pusher() -> PusherId {
        PusherId { localpart: "bob".to_owned(), app_id: "fr.gouv.tchap".to_owned(), pushkey: "key1".to_owned() }
    }

    #[test]
    fn full_format_describes_the_event_and_strips_the_url() {
        let user = ruma::user_id!("@bob:example.org");
        let event = json!({"event_id": "$e", "room_id": "!r:example.org", "type": "m.room.message",
            "sender": "@helene:example.org", "content": {"body": "bonjour", "msgtype": "m.text"}});
        let settings =
            json!({"kind": "http", "data": {"url": "https://push.example/_matrix/push/v1/notify", "extra": 1}});
        let actions = r#"["notify",{"set_tweak":"sound","value":"default"}]"#;
        let body = build(user, &pusher(), &settings, &context(event, actions), 3);
        let notification = &body["notification"];
        assert_eq!((&notification["event_id"], &notification["id"]), (&json!("$e"), &json!("$e")));
        assert_eq!(notification["content"]["body"], "bonjour");
        assert_eq!(notification["sender_display_name"], "Hélène");
        assert_eq!(notification["room_name"], "Forum RH");
        assert!(notification.get("room_alias").is_none());
        assert!(notification.get("user_is_target").is_none());
        assert_eq!(notification["counts"], json!({"unread": 3}));
        assert_eq!(notification["prio"], "high");
        let device = &notification["devices"][0];
        assert_eq!(device["pushkey"], "key1");
        assert_eq!(device["data"], json!({"extra": 1}));
        assert_eq!(device["tweaks"], json!({"sound": "default"}));
    }

    #[test]
    fn event_id_only_leaves_the_content_out() {
        let user = ruma::user_id!("@bob:example.org");
        let event = json!({"event_id": "$e", "room_id": "!r:example.org", "type": "m.room.message",
            "sender": "@helene:example.org", "content": {"body": "secret"}});
        let settings = json!({"data": {"url": "https://p/_matrix/push/v1/notify", "format": "event_id_only"}});
        let context = context(event, r#"["notify"]"#);
        let body = build(user, &pusher(), &settings, &context, 0);
        let notification = body["notification"].as_object().unwrap();
        let mut names: Vec<&str> = notification.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["counts", "devices", "event_id", "prio", "room_id"]);
        assert_eq!(notification["counts"], json!({}));
        assert_eq!(notification["prio"], "low");
        assert!(!body.to_string().contains("secret"));
    }

    #[test]
    fn invites_target_the_user() {
        let user = ruma::user_id!("@bob:example.org");
        let event = json!({"event_id": "$i", "room_id": "!r:example.org", "type": "m.room.member",
            "sender": "@helene:example.org", "state_key": "@bob:example.org", "content": {"membership": "invite"}});
        let body = build(user, &pusher(), &json!({"data": {}}), &context(event, r#"["notify"]"#), 1);
        assert_eq!(body["notification"]["user_is_target"], true);
        assert_eq!(body["notification"]["prio"], "high");
    }
}
