//! `[email]` (the SMTP server mail goes out through) and `[email_identity]`
//! (users known by their work email address: registration domains, the
//! email → server map, the password policy), with their validation.

use std::{fmt, path::PathBuf};

use serde::Deserialize;

use super::{check_readable_file, invalid, ConfigError};

/// `[email]`: how mail goes out. Absent: the server sends no mail, and the
/// flows that need one (validating an address, email invites) are refused.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://host:port` (plain), `smtp+starttls://host:port` (STARTTLS
    /// required), `smtps://host:port` (TLS from the first byte); a user and
    /// password may come in the URL (`smtps://user:password@host`).
    pub smtp_url: String,
    /// The SMTP password when it is not in the URL (or `smtp_password_file`).
    #[serde(default)]
    pub smtp_password: Option<String>,
    /// The `From` of every mail: `Name <address>` or a bare address.
    pub from: String,
    /// Certificates (PEM) trusted for the SMTP server besides the system's
    /// roots, such as the administration's own certificate authority.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The language of mails when the request gives none the server has
    /// (`Accept-Language`): `fr` or `en`.
    #[serde(default)]
    pub default_language: MailLanguage,
    /// Where the links in mails point: this server's client API as users
    /// reach it. Default: `well_known.client`, else `https://<server_name>`.
    #[serde(default)]
    pub link_base_url: Option<String>,
    /// How long one attempt to hand a mail to the SMTP server may take.
    #[serde(default = "default_smtp_timeout_secs")]
    pub timeout_secs: u64,
}

impl fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailConfig")
            .field("smtp_url", &self.smtp_server().map(|server| server.without_secrets()).unwrap_or_default())
            .field("smtp_password", &self.smtp_password.as_ref().map(|_| "<hidden>"))
            .field("from", &self.from)
            .field("ca_file", &self.ca_file)
            .field("default_language", &self.default_language)
            .field("link_base_url", &self.link_base_url)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

fn default_smtp_timeout_secs() -> u64 {
    30
}

/// The languages mails are written in.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MailLanguage {
    #[default]
    En,
    Fr,
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// No TLS (a relay on the same host or network).
    Plain,
    /// STARTTLS, required: a server that does not offer it is not used.
    StartTls,
    /// TLS from the first byte (port 465).
    ImplicitTls,
}

/// The SMTP server named by `smtp_url`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SmtpServer {
    pub security: Option<SmtpSecurity>,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl SmtpServer {
    /// The URL with the password hidden, for logs.
    pub fn without_secrets(&self) -> String {
        let scheme = match self.security {
            Some(SmtpSecurity::Plain) | None => "smtp",
            Some(SmtpSecurity::StartTls) => "smtp+starttls",
            Some(SmtpSecurity::ImplicitTls) => "smtps",
        };
        let user = self.user.as_ref().map(|user| format!("{user}:<hidden>@")).unwrap_or_default();
        format!("{scheme}://{user}{}:{}", self.host, self.port)
    }
}

impl fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.without_secrets())
    }
}

impl EmailConfig {
    /// Parses `smtp_url` (the password from the URL, else `smtp_password`).
    pub fn smtp_server(&self) -> Result<SmtpServer, ConfigError> {
        let url = url::Url::parse(&self.smtp_url).map_err(|e| invalid("email.smtp_url", e))?;
        let (security, default_port) = match url.scheme() {
            "smtp" => (SmtpSecurity::Plain, 25),
            "smtp+starttls" => (SmtpSecurity::StartTls, 587),
            "smtps" => (SmtpSecurity::ImplicitTls, 465),
            other => {
                return Err(invalid(
                    "email.smtp_url",
                    format!("unknown scheme {other:?}: use smtp://, smtp+starttls:// or smtps://"),
                ))
            }
        };
        let host = url.host_str().filter(|host| !host.is_empty());
        let host = host.ok_or_else(|| invalid("email.smtp_url", "no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(invalid("email.smtp_url", "only a scheme, a user, a password, a host and a port are read"));
        }
        let decode = |part: &str| crate::http::request::percent_decode(part, false);
        let user = Some(decode(url.username())).filter(|user| !user.is_empty());
        let password = url.password().map(decode);
        if password.is_some() && self.smtp_password.is_some() {
            return Err(invalid("email.smtp_password", "the password is in smtp_url already"));
        }
        let password = password.or_else(|| self.smtp_password.clone());
        if password.is_some() && user.is_none() {
            return Err(invalid("email.smtp_url", "a password without a user"));
        }
        Ok(SmtpServer { security: Some(security), host, port: url.port().unwrap_or(default_port), user, password })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.smtp_server()?;
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid("email.from", format!("{:?} is not a mail address", self.from)));
        }
        if let Some(ca_file) = &self.ca_file {
            check_readable_file("email.ca_file", ca_file)?;
            let pem = std::fs::read(ca_file).map_err(|e| invalid("email.ca_file", e))?;
            let certificates = lettre::transport::smtp::client::Certificate::from_pem(&pem);
            if certificates.is_err() || !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid("email.ca_file", format!("{} holds no PEM certificate", ca_file.display())));
            }
        }
        if let Some(base) = &self.link_base_url {
            if !(base.starts_with("https://") || base.starts_with("http://")) {
                return Err(invalid("email.link_base_url", "must be an http(s) URL"));
            }
        }
        if self.timeout_secs == 0 {
            return Err(invalid("email.timeout_secs", "must be at least 1"));
        }
        Ok(())
    }
}

/// `[email_identity]`: users known by their work email address.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EmailIdentityConfig {
    /// Registration needs a validated email address (the stage
    /// `m.login.email.identity`); off, an address is optional.
    #[serde(default)]
    pub require_email: bool,
    /// Email domains that may register here (a domain also allows its
    /// subdomains); empty: any. With an `info_map`, the address must also
    /// map to this server.
    #[serde(default)]
    pub registration_domains: Vec<String>,
    /// The email → server map, in order, first match wins: `{ pattern =
    /// "<regular expression on the whole address>", server = "<server>" }`,
    /// or `{ address = "<one address>", server = "<server>" }`.
    #[serde(default)]
    pub info_map: Vec<InfoMapEntry>,
    /// A user registering with an email gets the localpart and display name
    /// derived from it (`jean.dupont@interieur.gouv.fr` →
    /// `@jean.dupont-interieur.gouv.fr`, "Jean Dupont [Interieur]").
    #[serde(default = "crate::util::yes")]
    pub localpart_from_email: bool,
    /// How long a validation link or code sent by mail stays usable.
    #[serde(default = "default_validation_lifetime_secs")]
    pub validation_lifetime_secs: u64,
    #[serde(default)]
    pub password_policy: PasswordPolicyConfig,
}

impl Default for EmailIdentityConfig {
    fn default() -> Self {
        Self {
            require_email: false,
            registration_domains: Vec::new(),
            info_map: Vec::new(),
            localpart_from_email: true,
            validation_lifetime_secs: default_validation_lifetime_secs(),
            password_policy: PasswordPolicyConfig::default(),
        }
    }
}

fn default_validation_lifetime_secs() -> u64 {
    24 * 3600
}

/// One entry of the email → server map.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InfoMapEntry {
    /// A regular expression matched against the whole lowercased address.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Or one address exactly (an exception to the patterns after it).
    #[serde(default)]
    pub address: Option<String>,
    pub server: String,
}

/// What a password must contain (`GET /password_policy`); nothing by default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PasswordPolicyConfig {
    #[serde(default)]
    pub minimum_length: u32,
    #[serde(default)]
    pub require_digit: bool,
    #[serde(default)]
    pub require_symbol: bool,
    #[serde(default)]
    pub require_lowercase: bool,
    #[serde(default)]
    pub require_uppercase: bool,
}

impl EmailIdentityConfig {
    pub(super) fn validate(&self, email_configured: bool) -> Result<(), ConfigError> {
        if self.require_email && !email_configured {
            return Err(invalid("email_identity.require_email", "needs [email] to send the validation mails"));
        }
        for (i, domain) in self.registration_domains.iter().enumerate() {
            let valid = !domain.is_empty() && !domain.contains('@') && !domain.contains(char::is_whitespace);
            if !valid {
                return Err(invalid(&format!("email_identity.registration_domains[{i}]"), "is not a domain"));
            }
        }
        for (i, entry) in self.info_map.iter().enumerate() {
            match (&entry.pattern, &entry.address) {
                (Some(pattern), None) => {
                    if let Err(error) = regex::Regex::new(pattern) {
                        return Err(invalid(&format!("email_identity.info_map[{i}].pattern"), error));
                    }
                }
                (None, Some(address)) if address.contains('@') => {}
                (None, Some(_)) => {
                    return Err(invalid(&format!("email_identity.info_map[{i}].address"), "not an address"))
                }
                _ => return Err(invalid(&format!("email_identity.info_map[{i}]"), "give a pattern or an address")),
            }
            if ruma::ServerName::parse(&entry.server).is_err() {
                return Err(invalid(&format!("email_identity.info_map[{i}].server"), "is not a server name"));
            }
        }
        if self.validation_lifetime_secs < 60 {
            return Err(invalid("email_identity.validation_lifetime_secs", "must be at least 60"));
        }
        if self.password_policy.minimum_length > 512 {
            return Err(invalid("email_identity.password_policy.minimum_length", "must be at most 512"));
        }
        Ok(())
    }
}

/// `[account_validity]`: accounts that expire unless renewed by a link sent
/// by mail before the end. Off unless `period_days` is set.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccountValidityConfig {
    /// How long an account stays valid after registration or a renewal; 0: for ever.
    #[serde(default)]
    pub period_days: u64,
    /// When renewal mails go out, in days before the end.
    #[serde(default = "default_renew_before_days")]
    pub renew_before_days: Vec<u64>,
    /// Days after the end at which an account not renewed is deactivated; 0: never.
    #[serde(default)]
    pub deactivate_after_days: u64,
}

impl Default for AccountValidityConfig {
    fn default() -> Self {
        Self { period_days: 0, renew_before_days: default_renew_before_days(), deactivate_after_days: 0 }
    }
}

fn default_renew_before_days() -> Vec<u64> {
    vec![28, 7, 1]
}

impl AccountValidityConfig {
    pub(super) fn validate(&self, email_configured: bool) -> Result<(), ConfigError> {
        if self.period_days == 0 {
            return Ok(());
        }
        if !email_configured {
            return Err(invalid("account_validity.period_days", "needs [email] to send the renewal mails"));
        }
        if let Some(late) = self.renew_before_days.iter().find(|days| **days == 0 || **days >= self.period_days) {
            return Err(invalid(
                "account_validity.renew_before_days",
                format!("{late} is not between 1 and period_days - 1"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(url: &str) -> EmailConfig {
        EmailConfig {
            smtp_url: url.to_owned(),
            smtp_password: None,
            from: "Conduit <noreply@example.org>".to_owned(),
            ca_file: None,
            default_language: MailLanguage::En,
            link_base_url: None,
            timeout_secs: 30,
        }
    }

    #[test]
    fn smtp_urls_name_the_security_the_port_and_the_credentials() {
        let server = email("smtp+starttls://mailer:p%40ss@mail.example.org").smtp_server().unwrap();
        assert_eq!(server.security, Some(SmtpSecurity::StartTls));
        assert_eq!((server.host.as_str(), server.port), ("mail.example.org", 587));
        assert_eq!((server.user.as_deref(), server.password.as_deref()), (Some("mailer"), Some("p@ss")));
        assert!(!format!("{server:?}").contains("p@ss"), "the password never shows");
        let server = email("smtps://[::1]:2465").smtp_server().unwrap();
        assert_eq!(
            (server.security, server.host.as_str(), server.port),
            (Some(SmtpSecurity::ImplicitTls), "::1", 2465)
        );
        assert_eq!(email("smtp://relay").smtp_server().unwrap().port, 25);
    }

    #[test]
    fn unusable_smtp_settings_are_refused_naming_the_key() {
        for bad in ["http://mail.example.org", "smtp://", "not a url", "smtp://relay/path", "smtp://:pw@relay"] {
            let error = email(bad).validate().unwrap_err();
            assert!(error.0.contains("email.smtp_url"), "{bad}: {error}");
        }
        let bad_from = EmailConfig { from: "nobody".into(), ..email("smtp://relay") };
        assert!(bad_from.validate().unwrap_err().0.contains("email.from"));
        let twice = EmailConfig { smtp_password: Some("x".into()), ..email("smtp://u:p@relay") };
        assert!(twice.validate().unwrap_err().0.contains("email.smtp_password"));
    }

    #[test]
    fn identity_settings_are_checked() {
        let bad_pattern = EmailIdentityConfig {
            info_map: vec![InfoMapEntry { pattern: Some("(".into()), address: None, server: "a.b".into() }],
            ..Default::default()
        };
        assert!(bad_pattern.validate(true).unwrap_err().0.contains("info_map[0].pattern"));
        let both = InfoMapEntry { pattern: Some(".*".into()), address: Some("a@b.fr".into()), server: "a.b".into() };
        let both = EmailIdentityConfig { info_map: vec![both], ..Default::default() };
        assert!(both.validate(true).unwrap_err().0.contains("info_map[0]"));
        let required = EmailIdentityConfig { require_email: true, ..Default::default() };
        assert!(required.validate(false).unwrap_err().0.contains("require_email"));
        assert!(required.validate(true).is_ok());
    }
}
