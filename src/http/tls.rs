//! TLS termination with rustls (ring provider): PEM loading, ALPN (h2 and
//! http/1.1), and certificates that can be reloaded while connections stay open.
//!
//! A [`ReloadableCertificate`] is the certificate resolver of a listener's
//! rustls config; [`ReloadableCertificate::reload`] swaps in a newly read chain
//! and key for the handshakes that follow. Connections already established keep
//! the keys they negotiated, so nothing is dropped.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rustls::{
    crypto::ring::{default_provider, sign::any_supported_type},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// A certificate problem, naming the configuration key and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

pub struct ReloadableCertificate {
    /// `listeners[i].tls`, for messages.
    key_name: String,
    certificate_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadableCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCertificate").field("certificate", &self.certificate_path).finish()
    }
}

impl ReloadableCertificate {
    pub fn load(key_name: &str, config: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let certified = load_certified_key(key_name, &config.certificate, &config.key)?;
        Ok(Arc::new(Self {
            key_name: key_name.to_owned(),
            certificate_path: config.certificate.clone(),
            key_path: config.key.clone(),
            current: RwLock::new(Arc::new(certified)),
        }))
    }

    /// Reads the files again; on failure the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certified = load_certified_key(&self.key_name, &self.certificate_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
        Ok(())
    }

    /// The rustls configuration of a listener using this certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(format!("{}: {e}", self.key_name)))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadableCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner())))
    }
}

fn load_certified_key(key_name: &str, certificate: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{key_name}.certificate ({}): {e}", certificate.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!("{key_name}.certificate ({}): no certificate found", certificate.display())));
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError(format!("{key_name}.key ({}): {e}", key.display())))?;
    let signing_key = any_supported_type(&private_key)
        .map_err(|e| TlsError(format!("{key_name}.key ({}): unsupported key: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| TlsError(format!("{key_name}: the key does not match the certificate: {e}")))?;
    Ok(certified)
}
