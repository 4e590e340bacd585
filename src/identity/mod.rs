//! Users found by their work email address: the email → server map
//! (`[email_identity] info_map`), which also decides who may register here,
//! the identity service tokens ([`tokens`]) its lookups take, and the
//! invites by email waiting for their address ([`invites`]).
//!
//! The reference deployment answers `GET /_matrix/identity/api/v1/info`
//! from such a map (see `../shared/guides/public-sector.md`, "Email →
//! homeserver mapping"); each pattern is a regular expression matched
//! against the whole lowercased address, in order, the first match winning.

pub mod invites;
pub mod tokens;

use regex::Regex;
use ruma::{OwnedServerName, ServerName};

use crate::{config::EmailIdentityConfig, users::threepids::email_domain};

/// How an entry of the map matches.
enum Matcher {
    Pattern(Regex),
    Address(String),
}

impl Matcher {
    fn matches(&self, address: &str) -> bool {
        match self {
            Matcher::Pattern(pattern) => pattern.is_match(address),
            Matcher::Address(exact) => exact == address,
        }
    }
}

pub struct EmailMap {
    entries: Vec<(Matcher, OwnedServerName)>,
    registration_domains: Vec<String>,
    own_server: OwnedServerName,
}

impl EmailMap {
    /// The map of `[email_identity]` (validated at load: an entry that
    /// would not compile is left out and logged).
    pub fn new(config: &EmailIdentityConfig, own_server: OwnedServerName) -> Self {
        let entries = config
            .info_map
            .iter()
            .filter_map(|entry| {
                let matcher = match (&entry.pattern, &entry.address) {
                    (Some(pattern), _) => Regex::new(&format!("^(?:{pattern})$")).ok().map(Matcher::Pattern),
                    (None, Some(address)) => Some(Matcher::Address(address.trim().to_lowercase())),
                    (None, None) => None,
                };
                match (matcher, ServerName::parse(&entry.server)) {
                    (Some(matcher), Ok(server)) => Some((matcher, server)),
                    _ => {
                        tracing::error!(server = %entry.server, "an info_map entry is unusable; left out");
                        None
                    }
                }
            })
            .collect();
        let registration_domains = config.registration_domains.iter().map(|d| d.trim().to_lowercase()).collect();
        Self { entries, registration_domains, own_server }
    }

    /// The server the map sends `address` (normalised) to, if any entry matches.
    pub fn server_for(&self, address: &str) -> Option<&ServerName> {
        self.entries.iter().find(|(matcher, _)| matcher.matches(address)).map(|(_, server)| server.as_ref())
    }

    /// Whether `address` may register an account here: its domain is one of
    /// `registration_domains` (or their subdomains) when any are listed, and
    /// the map, when there is one, sends it to this server.
    pub fn may_register_here(&self, address: &str) -> bool {
        let domain = email_domain(address);
        let domain_allowed = self.registration_domains.is_empty()
            || self.registration_domains.iter().any(|allowed| {
                domain == allowed || domain.strip_suffix(allowed.as_str()).is_some_and(|rest| rest.ends_with('.'))
            });
        let mapped_here = self.entries.is_empty() || self.server_for(address) == Some(self.own_server.as_ref());
        domain_allowed && mapped_here
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InfoMapEntry;

    fn map(domains: &[&str], entries: &[(&str, &str)]) -> EmailMap {
        let config = EmailIdentityConfig {
            registration_domains: domains.iter().map(|d| d.to_string()).collect(),
            info_map: entries
                .iter()
                .map(|(pattern, server)| match pattern.strip_prefix("=") {
                    Some(address) => {
                        InfoMapEntry { pattern: None, address: Some(address.to_string()), server: server.to_string() }
                    }
                    None => {
                        InfoMapEntry { pattern: Some(pattern.to_string()), address: None, server: server.to_string() }
                    }
                })
                .collect(),
            ..Default::default()
        };
        EmailMap::new(&config, ServerName::parse("agents.example").unwrap())
    }

    #[test]
    fn the_first_matching_pattern_names_the_server() {
        let map = map(
            &[],
            &[
                ("=Prefet@Culture.gouv.fr", "agents.example"),
                (r".*@interieur\.gouv\.fr", "agents.example"),
                (r".*@.*\.gouv\.fr", "other.example"),
                (".*", "externes.example"),
            ],
        );
        assert_eq!(map.server_for("a@interieur.gouv.fr").map(|s| s.as_str()), Some("agents.example"));
        assert_eq!(map.server_for("prefet@culture.gouv.fr").map(|s| s.as_str()), Some("agents.example"), "exact first");
        assert_eq!(map.server_for("a@culture.gouv.fr").map(|s| s.as_str()), Some("other.example"));
        assert_eq!(map.server_for("a@gmail.com").map(|s| s.as_str()), Some("externes.example"));
        assert!(map.may_register_here("a@interieur.gouv.fr"));
        assert!(!map.may_register_here("a@culture.gouv.fr"), "mapped to another server");
        let anchored = self::map(&[], &[(r"a@x\.fr", "agents.example")]);
        assert!(anchored.server_for("ba@x.fr.evil").is_none(), "patterns match the whole address");
    }

    #[test]
    fn registration_domains_allow_their_subdomains_only() {
        let map = map(&["gouv.fr"], &[]);
        assert!(map.may_register_here("a@gouv.fr") && map.may_register_here("a@interieur.gouv.fr"));
        assert!(!map.may_register_here("a@notgouv.fr") && !map.may_register_here("a@gouv.fr.evil.com"));
        assert!(self::map(&[], &[]).may_register_here("anyone@anywhere.org"));
    }
}
