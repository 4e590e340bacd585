//! The mails the server writes, in French and English, each naming the
//! server: a subject, a plain-text body and the same body in HTML.

use crate::config::MailLanguage;

/// Why an address is being validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationPurpose {
    /// Registering an account with the address.
    Registration,
    /// Adding the address to an existing account.
    AddAddress,
    /// Resetting the password of the account the address belongs to.
    PasswordReset,
}

/// A mail's words, before addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The mail asking a user to confirm their address: a link to follow, and
/// the same token as a code for clients that ask for one.
pub fn validation(
    language: MailLanguage,
    server_name: &str,
    purpose: ValidationPurpose,
    link: &str,
    code: &str,
) -> Written {
    let (subject, intro, action, ignore) = match (language, purpose) {
        (MailLanguage::Fr, ValidationPurpose::Registration) => (
            format!("Validez votre adresse pour créer votre compte sur {server_name}"),
            format!("Vous avez demandé à créer un compte sur {server_name} avec cette adresse."),
            "Pour confirmer l'adresse, suivez ce lien",
            "Si vous n'êtes pas à l'origine de cette demande, ignorez ce message.",
        ),
        (MailLanguage::Fr, ValidationPurpose::AddAddress) => (
            format!("Validez votre adresse sur {server_name}"),
            format!("Vous avez demandé à ajouter cette adresse à votre compte sur {server_name}."),
            "Pour confirmer l'adresse, suivez ce lien",
            "Si vous n'êtes pas à l'origine de cette demande, ignorez ce message.",
        ),
        (MailLanguage::Fr, ValidationPurpose::PasswordReset) => (
            format!("Réinitialisation de votre mot de passe sur {server_name}"),
            format!("Vous avez demandé à changer le mot de passe de votre compte sur {server_name}."),
            "Pour le confirmer, suivez ce lien",
            "Si vous n'êtes pas à l'origine de cette demande, ignorez ce message : votre mot de passe reste inchangé.",
        ),
        (MailLanguage::En, ValidationPurpose::Registration) => (
            format!("Confirm your address to create your account on {server_name}"),
            format!("You asked to create an account on {server_name} with this address."),
            "To confirm the address, follow this link",
            "If you did not ask for this, ignore this message.",
        ),
        (MailLanguage::En, ValidationPurpose::AddAddress) => (
            format!("Confirm your address on {server_name}"),
            format!("You asked to add this address to your account on {server_name}."),
            "To confirm the address, follow this link",
            "If you did not ask for this, ignore this message.",
        ),
        (MailLanguage::En, ValidationPurpose::PasswordReset) => (
            format!("Resetting your password on {server_name}"),
            format!("You asked to change the password of your account on {server_name}."),
            "To confirm, follow this link",
            "If you did not ask for this, ignore this message: your password stays as it is.",
        ),
    };
    let code_line = match language {
        MailLanguage::Fr => format!("Ou saisissez ce code dans votre application : {code}"),
        MailLanguage::En => format!("Or type this code into your app: {code}"),
    };
    assemble(subject, &intro, action, link, &[&code_line, ignore], server_name)
}

/// The mail telling someone they are invited to a room by their address.
pub fn invitation(language: MailLanguage, server_name: &str, inviter: &str, room: &str, link: &str) -> Written {
    let (subject, intro, action) = match language {
        MailLanguage::Fr => (
            format!("{inviter} vous invite à rejoindre {room}"),
            format!("{inviter} vous invite à rejoindre le salon {room} sur {server_name}."),
            format!("Créez votre compte sur {server_name} avec cette adresse pour y accéder"),
        ),
        MailLanguage::En => (
            format!("{inviter} invites you to join {room}"),
            format!("{inviter} invites you to join the room {room} on {server_name}."),
            format!("Create your account on {server_name} with this address to enter it"),
        ),
    };
    assemble(subject, &intro, &action, link, &[], server_name)
}

/// The mail asking a user to renew their account before it ends.
pub fn renewal(language: MailLanguage, server_name: &str, expires_ts: u64, link: &str) -> Written {
    let (year, month, day) = crate::util::utc_date(expires_ts);
    let (subject, intro, action) = match language {
        MailLanguage::Fr => (
            format!("Renouvelez votre compte sur {server_name} avant le {day:02}/{month:02}/{year}"),
            format!("Votre compte sur {server_name} expire le {day:02}/{month:02}/{year}. Sans renouvellement, vous ne pourrez plus l'utiliser."),
            "Pour le renouveler, suivez ce lien",
        ),
        MailLanguage::En => (
            format!("Renew your account on {server_name} before {year}-{month:02}-{day:02}"),
            format!("Your account on {server_name} expires on {year}-{month:02}-{day:02}. Unless it is renewed, you will not be able to use it."),
            "To renew it, follow this link",
        ),
    };
    assemble(subject, &intro, action, link, &[], server_name)
}

/// The page a browser shows after following a renewal link.
pub fn renewal_followed(language: MailLanguage, server_name: &str, renewed_until: Option<u64>) -> String {
    let message = match (language, renewed_until.map(crate::util::utc_date)) {
        (MailLanguage::Fr, Some((year, month, day))) => {
            format!("Votre compte est renouvelé jusqu'au {day:02}/{month:02}/{year}.")
        }
        (MailLanguage::En, Some((year, month, day))) => {
            format!("Your account is renewed until {year}-{month:02}-{day:02}.")
        }
        (MailLanguage::Fr, None) => "Ce lien de renouvellement est inconnu ou a déjà servi.".to_owned(),
        (MailLanguage::En, None) => "This renewal link is unknown or was used already.".to_owned(),
    };
    page(language, server_name, &message)
}

/// The page a browser shows after following a validation link.
pub fn link_followed(language: MailLanguage, server_name: &str, validated: bool) -> String {
    let message = match (language, validated) {
        (MailLanguage::Fr, true) => "Votre adresse est validée. Vous pouvez revenir à votre application.",
        (MailLanguage::Fr, false) => {
            "Ce lien est inconnu, expiré ou déjà invalide. Redemandez un message depuis votre application."
        }
        (MailLanguage::En, true) => "Your address is validated. You can go back to your app.",
        (MailLanguage::En, false) => {
            "This link is unknown, expired or no longer valid. Ask your app for a new message."
        }
    };
    page(language, server_name, message)
}

/// A one-paragraph HTML page.
fn page(language: MailLanguage, server_name: &str, message: &str) -> String {
    let lang = match language {
        MailLanguage::Fr => "fr",
        MailLanguage::En => "en",
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body><p>{}</p></body></html>\n",
        escape(server_name),
        escape(message)
    )
}

/// The language for a request's `Accept-Language` (the first language the
/// server writes in, by the client's order), else `default`.
pub fn language_for(accept_language: Option<&str>, default: MailLanguage) -> MailLanguage {
    let Some(header) = accept_language else { return default };
    let mut ranked: Vec<(f32, &str)> = header
        .split(',')
        .filter_map(|item| {
            let mut parts = item.trim().split(';');
            let tag = parts.next()?.trim();
            let quality = parts
                .find_map(|param| param.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            Some((quality, tag))
        })
        .filter(|(quality, _)| *quality > 0.0)
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0)); // stable: equal weights keep the client's order
    ranked
        .into_iter()
        .find_map(|(_, tag)| match tag.split('-').next().map(str::to_ascii_lowercase).as_deref() {
            Some("fr") => Some(MailLanguage::Fr),
            Some("en") => Some(MailLanguage::En),
            _ => None,
        })
        .unwrap_or(default)
}

/// A mail's plain and HTML bodies: the introduction, the action with its
/// link, the paragraphs `after` it, and the server's name as signature.
fn assemble(subject: String, intro: &str, action: &str, link: &str, after: &[&str], server_name: &str) -> Written {
    let mut text = format!("{intro}\n\n{action}:\n{link}\n\n");
    let mut html = format!(
        "<!DOCTYPE html>\n<html><body>\n<p>{}</p>\n<p>{}: <a href=\"{}\">{}</a></p>\n",
        escape(intro),
        escape(action),
        escape(link),
        escape(link)
    );
    for paragraph in after {
        text.push_str(&format!("{paragraph}\n\n"));
        html.push_str(&format!("<p>{}</p>\n", escape(paragraph)));
    }
    text.push_str(&format!("-- \n{server_name}\n"));
    html.push_str(&format!("<p>-- <br>{}</p>\n</body></html>\n", escape(server_name)));
    Written { subject, text, html }
}

/// Text made safe inside HTML.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_follows_the_clients_preference_among_those_written() {
        assert_eq!(language_for(Some("fr-FR,fr;q=0.9,en;q=0.8"), MailLanguage::En), MailLanguage::Fr);
        assert_eq!(language_for(Some("de-DE, en;q=0.5, fr;q=0.7"), MailLanguage::En), MailLanguage::Fr);
        assert_eq!(language_for(Some("de, it"), MailLanguage::Fr), MailLanguage::Fr, "none written: the default");
        assert_eq!(language_for(Some("fr;q=0, en"), MailLanguage::Fr), MailLanguage::En, "q=0 means not wanted");
        assert_eq!(language_for(None, MailLanguage::En), MailLanguage::En);
    }

    #[test]
    fn mails_name_the_server_and_carry_the_link_and_code_escaped_in_html() {
        let mail = validation(
            MailLanguage::Fr,
            "interieur.example",
            ValidationPurpose::Registration,
            "https://m.example/v?a=1&b=2",
            "XYZ",
        );
        assert!(mail.subject.contains("interieur.example"));
        assert!(mail.text.contains("https://m.example/v?a=1&b=2") && mail.text.contains("XYZ"));
        assert!(mail.html.contains("https://m.example/v?a=1&amp;b=2"), "{}", mail.html);
        let english = validation(MailLanguage::En, "s", ValidationPurpose::PasswordReset, "l", "c");
        assert!(english.subject.starts_with("Resetting your password"));
        assert_eq!(
            english.text,
            "You asked to change the password of your account on s.\n\nTo confirm, follow this link:\nl\n\n\
             Or type this code into your app: c\n\nIf you did not ask for this, ignore this message: your password \
             stays as it is.\n\n-- \ns\n"
        );
    }
}
