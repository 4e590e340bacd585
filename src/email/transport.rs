//! Handing a mail to the SMTP server `[email] smtp_url` names (through
//! `lettre`): plain, STARTTLS (required) or TLS from the first byte, trusting
//! the system's roots and `[email] ca_file`, with the URL's credentials.

use std::time::Duration;

use lettre::{
    message::{header::ContentType, Mailbox, MultiPart, SinglePart},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
        extension::ClientId,
        AsyncSmtpTransport,
    },
    AsyncTransport, Message, Tokio1Executor,
};

use crate::{
    config::{EmailConfig, SmtpSecurity},
    storage::records::MailRecord,
};

/// Why a mail was not handed over.
#[derive(Debug)]
pub enum SendError {
    /// Worth another attempt later (the server is down, busy, or said 4xx).
    Transient(String),
    /// Never going through (the address or the mail was refused with 5xx).
    Permanent(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transient(why) => write!(f, "{why} (will retry)"),
            Self::Permanent(why) => write!(f, "{why} (given up)"),
        }
    }
}

/// The SMTP server and the `From` of every mail.
pub struct SmtpTransport {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpTransport {
    /// Builds the transport; the configuration was validated at load, so an
    /// error here is a CA file that changed since, or no usable TLS.
    pub fn new(config: &EmailConfig, server_name: &str) -> Result<Self, String> {
        let server = config.smtp_server().map_err(|e| e.to_string())?;
        let from: Mailbox = config.from.parse().map_err(|e| format!("email.from: {e}"))?;
        let tls_parameters = || -> Result<TlsParameters, String> {
            let mut builder = TlsParameters::builder(server.host.clone());
            if let Some(ca_file) = &config.ca_file {
                let pem = std::fs::read(ca_file).map_err(|e| format!("email.ca_file {}: {e}", ca_file.display()))?;
                let certificate = Certificate::from_pem(&pem).map_err(|e| format!("email.ca_file: {e}"))?;
                builder = builder.add_root_certificate(certificate);
            }
            builder.build_rustls().map_err(|e| format!("TLS for the SMTP server: {e}"))
        };
        let tls = match server.security {
            Some(SmtpSecurity::Plain) | None => Tls::None,
            Some(SmtpSecurity::StartTls) => Tls::Required(tls_parameters()?),
            Some(SmtpSecurity::ImplicitTls) => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.host.as_str())
            .port(server.port)
            .tls(tls)
            .hello_name(ClientId::Domain(server_name.to_owned()))
            .timeout(Some(Duration::from_secs(config.timeout_secs)));
        if let (Some(user), Some(password)) = (server.user, server.password) {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Self { transport: builder.build(), from })
    }

    /// Hands one queued mail to the SMTP server.
    pub async fn send(&self, mail: &MailRecord) -> Result<(), SendError> {
        let to: Mailbox =
            mail.to.parse().map_err(|e| SendError::Permanent(format!("the address {:?}: {e}", mail.to)))?;
        let body = MultiPart::alternative()
            .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(mail.text.clone()))
            .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(mail.html.clone()));
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .multipart(body)
            .map_err(|e| SendError::Permanent(format!("writing the mail: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_permanent() => Err(SendError::Permanent(error.to_string())),
            Err(error) => Err(SendError::Transient(error.to_string())),
        }
    }
}
