//! Server ACLs (`m.room.server_acl`): which servers may take part in a room
//! at the federation level. Spec: client-server API "Server Access Control
//! Lists (ACLs) for rooms", the event's schema (the order of the checks),
//! server-server API "Server Access Control Lists (ACLs)" (which requests
//! they protect: enforced by the federation endpoints and per PDU in `/send`).

use ruma::{RoomId, ServerName};
use serde_json::Value;

use super::{kinds, Rooms};
use crate::error::{Error, Result};

/// Whether the ACL content allows `server` (its port is not considered):
/// IP literals denied when `allow_ip_literals` is `false`, then `deny`,
/// then `allow`, else denied. Globs are case-insensitive.
pub fn acl_allows(content: &Value, server: &ServerName) -> bool {
    let host = server.host().to_ascii_lowercase();
    let is_ip_literal = host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok();
    if is_ip_literal && content.get("allow_ip_literals").and_then(Value::as_bool) == Some(false) {
        return false;
    }
    let matches_any = |field: &str| {
        content
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|pattern| glob_matches(&pattern.to_ascii_lowercase(), &host))
    };
    !matches_any("deny") && matches_any("allow")
}

/// Glob-style matching (appendices "Glob-style matching"): `*` any run of
/// characters, `?` exactly one.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

impl Rooms {
    /// Refuses `server` (`M_FORBIDDEN`) when the room's current ACL denies it.
    pub fn check_server_acl(&self, room_id: &RoomId, server: &ServerName) -> Result<()> {
        let Some(room) = self.room(room_id)? else { return Ok(()) };
        let state = self.current_state(&room)?;
        let Some(acl) = self.state_event_in(&state, kinds::SERVER_ACL, "")? else { return Ok(()) };
        let content: Value = serde_json::from_str(acl.content_json()).unwrap_or_default();
        if acl_allows(&content, server) {
            return Ok(());
        }
        tracing::info!(room = %room_id, %server, "refused by the room's server ACL");
        Err(Error::forbidden(format!("The room's server ACL denies {server}")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn allows(content: Value, server: &str) -> bool {
        acl_allows(&content, <&ServerName>::try_from(server).unwrap())
    }

    #[test]
    fn acls_apply_in_the_spec_order() {
        let acl = json!({ "allow": ["*"], "deny": ["evil.com", "*.evil.com"], "allow_ip_literals": false });
        assert!(allows(acl.clone(), "good.example"));
        assert!(!allows(acl.clone(), "evil.com"));
        assert!(!allows(acl.clone(), "evil.com:8448"), "the port is not considered");
        assert!(!allows(acl.clone(), "EVIL.com"), "case-insensitive");
        assert!(!allows(acl.clone(), "sub.evil.com"));
        assert!(allows(acl.clone(), "notevil.com"));
        assert!(!allows(acl.clone(), "1.2.3.4"), "IP literals denied");
        assert!(!allows(acl, "[::1]:8448"));
        assert!(allows(json!({ "allow": ["*"] }), "1.2.3.4"), "IP literals allowed by default");
        assert!(!allows(json!({ "deny": [] }), "good.example"), "no allow rule denies everyone");
        assert!(allows(json!({ "allow": ["*.gouv.fr"] }), "interieur.gouv.fr"));
        assert!(!allows(json!({ "allow": ["*.gouv.fr"] }), "gouv.fr.evil"));
    }

    #[test]
    fn globs_match_stars_and_question_marks() {
        assert!(glob_matches("a*b?c", "axxbyc"));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("a?", "a"));
        assert!(glob_matches("**a", "bba"));
        assert!(!glob_matches("*a", "ab"));
    }
}
