//! A real SMTP server for the tests: `aiosmtpd` (pinned on PyPI), installed
//! into a venv under the target directory on first use, like Synapse, and
//! run by `smtp_server.py`, which writes each mail it accepts as JSON
//! (envelope, subject, decoded text and HTML) for the test to read.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tempfile::TempDir;

/// The aiosmtpd release the tests send mail to.
pub const AIOSMTPD_VERSION: &str = "1.4.6";

/// How the test server protects its connections.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plain,
    StartTls,
    ImplicitTls,
}

/// What the test server asks of the client, and how it misbehaves.
pub struct Options {
    pub security: Security,
    /// `(user, password)` required to send.
    pub auth: Option<(&'static str, &'static str)>,
    /// Mails answered "451 try again later" before the first accepted.
    pub fail_first: u32,
    /// A port to listen on (0: any free one).
    pub port: u16,
}

impl Default for Options {
    fn default() -> Self {
        Self { security: Security::Plain, auth: None, fail_first: 0, port: 0 }
    }
}

/// A running SMTP server, stopped when dropped.
pub struct SmtpServer {
    pub port: u16,
    /// The certificate (PEM file) the server presents for `localhost`, when TLS.
    pub certificate: Option<PathBuf>,
    security: Security,
    auth: Option<(&'static str, &'static str)>,
    dir: TempDir,
    child: Child,
}

impl SmtpServer {
    pub async fn start(options: Options) -> Self {
        let venv = tokio::task::spawn_blocking(|| {
            crate::synapse::python_venv("smtp-venv", &[&format!("aiosmtpd=={AIOSMTPD_VERSION}")])
        })
        .await
        .expect("install aiosmtpd");
        let dir = tempfile::tempdir().expect("temporary directory");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/smtp_server.py");
        let mut command = Command::new(venv.join("bin/python"));
        command.arg(script).arg(dir.path().join("mails"));
        std::fs::create_dir_all(dir.path().join("mails")).expect("mail directory");
        let certificate = (options.security != Security::Plain).then(|| {
            let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
            let (cert, key) = (dir.path().join("smtp.pem"), dir.path().join("smtp.key"));
            std::fs::write(&cert, generated.cert.pem()).expect("write the certificate");
            std::fs::write(&key, generated.key_pair.serialize_pem()).expect("write the key");
            let mode = if options.security == Security::StartTls { "starttls" } else { "implicit" };
            command.args(["--tls", mode, "--cert"]).arg(&cert).arg("--key").arg(&key);
            cert
        });
        if let Some((user, password)) = options.auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        command.arg("--fail-first").arg(options.fail_first.to_string());
        command.arg("--port").arg(options.port.to_string());
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start the SMTP server from {}: {e}", venv.display()));
        let stdout = child.stdout.take().expect("the server's output");
        let port = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).expect("read the server's port");
            line.trim().strip_prefix("PORT ").and_then(|port| port.parse::<u16>().ok())
        })
        .await
        .expect("read the port")
        .expect("the SMTP server did not start");
        Self { port, certificate, security: options.security, auth: options.auth, dir, child }
    }

    /// The `[email]` section that sends mail here.
    pub fn email_config(&self) -> String {
        email_config(self.security, self.auth, self.port, self.certificate.as_ref())
    }

    /// Where the accepted mails are written (one JSON file each, in order).
    pub fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mails")
    }

    /// Every mail accepted so far, in order.
    pub fn mails(&self) -> Vec<Value> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("mails"))
            .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.retain(|path| path.extension().is_some_and(|ext| ext == "json"));
        paths.sort();
        paths
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .filter_map(|text| serde_json::from_str(&text).ok())
            .collect()
    }

    /// Waits (up to a minute) until `count` mails have arrived; returns them all.
    pub async fn wait_for_mails(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mails = self.mails();
            if mails.len() >= count {
                return mails;
            }
            assert!(Instant::now() < deadline, "{} mails of {count} arrived", mails.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // the script stops when its input closes
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `[email]` section that sends mail to a test server on `port`
/// (running or not), links pointing at `http://localhost`.
pub fn email_config(
    security: Security,
    auth: Option<(&str, &str)>,
    port: u16,
    certificate: Option<&PathBuf>,
) -> String {
    let scheme = match security {
        Security::Plain => "smtp",
        Security::StartTls => "smtp+starttls",
        Security::ImplicitTls => "smtps",
    };
    let credentials = auth.map(|(user, password)| format!("{user}:{password}@")).unwrap_or_default();
    let ca = certificate.map(|cert| format!("ca_file = {:?}\n", cert.display().to_string()));
    format!(
        "[email]\nsmtp_url = \"{scheme}://{credentials}localhost:{port}\"\nfrom = \"Conduit <noreply@example.org>\"\n\
         link_base_url = \"http://localhost\"\ntimeout_secs = 10\n{}",
        ca.unwrap_or_default()
    )
}

/// The validation token in a mail (the `token=` of its link).
pub fn token_in(mail: &Value) -> String {
    let text = mail["text"].as_str().unwrap_or_default();
    let start = text.find("token=").map(|at| at + "token=".len()).unwrap_or_else(|| panic!("no link in {text}"));
    text[start..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect()
}

/// The validation link in a mail.
pub fn link_in(mail: &Value) -> String {
    let text = mail["text"].as_str().unwrap_or_default();
    let start = text.find("http").unwrap_or_else(|| panic!("no link in {text}"));
    text[start..].split_whitespace().next().unwrap_or_default().to_owned()
}
