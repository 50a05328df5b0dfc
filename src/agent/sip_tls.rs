//! The phone's TLS towards its SIP proxy (`sips:` / `;transport=tls`):
//! whom it trusts and where its secrets go.
//!
//! Trust: with a pin (the PKG's certificate fingerprint, learned or
//! configured with the PKG, see `agent::keys`) the proxy must present
//! exactly that certificate, whatever its names or issuer: the provider's
//! SIP service uses the PKG's certificate. Without a pin, the platform's
//! trusted roots must vouch for the proxy's host name (pkg-api.md,
//! Discovery). Either way the TLS 1.3 handshake signature is checked with
//! the certificate's key, so a peer without that key cannot pass. TLS 1.3
//! only, ring provider, as the PKG client.

use crate::pkg_client::tls::{provider, PinnedVerifier};
use crate::sip::driver::TlsClient;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;

/// Why the TLS client cannot be set up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SipTlsError {
    /// No pin and the platform has no trusted roots to check the proxy by.
    #[error("no certificate pin for the SIP proxy and no trusted roots on this system: {0}")]
    NoRoots(String),
    /// The host is neither a DNS name nor an IP address.
    #[error("the SIP proxy's host {0:?} is not a valid TLS server name")]
    BadName(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The platform's trusted roots (the system certificate store); an error
/// when it holds none that parse. Also the roots of the phone's first
/// contact with a PKG (`pkg_client::first_contact`).
pub fn platform_roots() -> Result<RootCertStore, SipTlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), |e| e.to_string());
        return Err(SipTlsError::NoRoots(why));
    }
    Ok(roots)
}

/// The server name the proxy's certificate is checked against: `host`
/// (a DNS name or an IP address), else the proxy's IP address.
pub fn server_name(
    host: Option<&str>,
    proxy: SocketAddr,
) -> Result<ServerName<'static>, SipTlsError> {
    match host {
        Some(h) => {
            ServerName::try_from(h.to_string()).map_err(|_| SipTlsError::BadName(h.to_string()))
        }
        None => Ok(ServerName::IpAddress(proxy.ip().into())),
    }
}

/// The TLS client of a phone towards `proxy` (configured as `host`):
/// pinned to `pin` when given, else checked by the platform's roots for
/// `host`; every session's secrets go to `key_log` when given.
pub fn client(
    host: Option<&str>,
    proxy: SocketAddr,
    pin: Option<[u8; 32]>,
    key_log: Option<Arc<dyn rustls::KeyLog>>,
) -> Result<TlsClient, SipTlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut config = match pin {
        Some(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(Some(pin), provider())))
            .with_no_client_auth(),
        None => {
            let verifier = WebPkiServerVerifier::builder_with_provider(
                Arc::new(platform_roots()?),
                provider(),
            )
            .build()
            .map_err(|e| SipTlsError::NoRoots(e.to_string()))?;
            builder.with_webpki_verifier(verifier).with_no_client_auth()
        }
    };
    if let Some(k) = key_log {
        config.key_log = k;
    }
    Ok(TlsClient {
        config: Arc::new(config),
        server_name: server_name(host, proxy)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pkg_client::tls::{cert_fingerprint, fingerprint_hex};
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, UnixTime};

    #[test]
    fn only_the_pinned_certificate_passes() {
        let ours = CertificateDer::from(vec![1u8, 2, 3]);
        let attacker = CertificateDer::from(vec![1u8, 2, 4]);
        let v = PinnedVerifier::new(Some(cert_fingerprint(&ours)), provider());
        let name = ServerName::try_from("sip.atlanta.invalid").unwrap();
        assert!(v
            .verify_server_cert(&ours, &[], &name, &[], UnixTime::now())
            .is_ok());
        let err = v
            .verify_server_cert(&attacker, &[], &name, &[], UnixTime::now())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not the provider's pinned one"), "{err}");
        assert!(
            err.contains(&fingerprint_hex(&cert_fingerprint(&attacker))),
            "{err}"
        );
    }

    #[test]
    fn server_names_come_from_the_configured_host() {
        let proxy: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        assert!(matches!(
            server_name(None, proxy).unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(Some("sip.atlanta.invalid"), proxy).unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name(Some("bad name!"), proxy),
            Err(SipTlsError::BadName(_))
        ));
    }
}
