//! The server's TLS: a certificate and key in the data directory, made
//! self-signed (rcgen, ECDSA P-256) on first start when missing; TLS 1.3
//! only, ring provider. Users pin the certificate's SHA-256 fingerprint.

use anyhow::{anyhow, Context};
use ibephone::pkg_client::seal::write_secret_file;
use ibephone::pkg_client::tls::{cert_fingerprint, provider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

/// A loaded certificate: the rustls configuration and the fingerprint.
pub struct Tls {
    /// TLS 1.3-only server configuration.
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the end-entity certificate (DER).
    pub fingerprint: [u8; 32],
}

/// Creates a self-signed certificate for `names` unless `cert` exists.
/// Returns true when one was made.
pub fn ensure_cert(cert: &Path, key: &Path, names: &[String]) -> anyhow::Result<bool> {
    if cert.exists() {
        return Ok(false);
    }
    let ck =
        rcgen::generate_simple_self_signed(names.to_vec()).context("generating certificate")?;
    let key_pem = zeroize::Zeroizing::new(ck.key_pair.serialize_pem());
    write_secret_file(key, key_pem.as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    std::fs::write(cert, ck.cert.pem()).with_context(|| format!("writing {}", cert.display()))?;
    Ok(true)
}

/// Loads the certificate and key.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Tls> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let first = certs
        .first()
        .ok_or_else(|| anyhow!("{} holds no certificate", cert.display()))?;
    let fingerprint = cert_fingerprint(first);
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Tls {
        config: Arc::new(config),
        fingerprint,
    })
}

/// Names for a new certificate: the PKG URL's host plus loopback names.
pub fn cert_names(pkg_url: Option<&str>) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(host) = pkg_url
        .and_then(|u| u.strip_prefix("https://"))
        .and_then(|r| r.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
    {
        names.insert(0, host.to_string());
    }
    names
}
