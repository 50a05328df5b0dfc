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

use crate::pkg_client::tls::{provider, PinRefusals, PinnedVerifier};
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
/// `host`; every session's secrets go to `key_log` when given; each
/// certificate refused for not being the pin is told to `refusals`.
pub fn client(
    host: Option<&str>,
    proxy: SocketAddr,
    pin: Option<[u8; 32]>,
    key_log: Option<Arc<dyn rustls::KeyLog>>,
    refusals: Option<PinRefusals>,
) -> Result<TlsClient, SipTlsError> {
    build(host, proxy, pin, key_log, refusals, false)
}

/// The TLS client of a phone towards a TURN relay (`turns:`, configured
/// as `host`): the trust of [`client`], TLS 1.3 preferred and TLS 1.2
/// accepted (see the module doc for why TURN alone).
pub fn turn_client(
    host: Option<&str>,
    relay: SocketAddr,
    pin: Option<[u8; 32]>,
    key_log: Option<Arc<dyn rustls::KeyLog>>,
    refusals: Option<PinRefusals>,
) -> Result<TlsClient, SipTlsError> {
    build(host, relay, pin, key_log, refusals, true)
}

fn build(
    host: Option<&str>,
    proxy: SocketAddr,
    pin: Option<[u8; 32]>,
    key_log: Option<Arc<dyn rustls::KeyLog>>,
    refusals: Option<PinRefusals>,
    tls12: bool,
) -> Result<TlsClient, SipTlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder =
        ClientConfig::builder_with_provider(provider()).with_protocol_versions(versions)?;
    let mut config = match pin {
        Some(pin) => {
            let verifier = PinnedVerifier::new(Some(pin), provider()).reporting(refusals);
            let verifier = if tls12 {
                verifier.allowing_tls12()
            } else {
                verifier
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
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

    /// A server offering only `version`, with a fresh self-signed
    /// certificate; its fingerprint is the pin.
    fn server_of(
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (Arc<rustls::ServerConfig>, [u8; 32]) {
        let cert =
            rcgen::generate_simple_self_signed(vec!["relay.atlanta.invalid".into()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        (Arc::new(config), cert_fingerprint(&der))
    }

    /// Runs a handshake in memory: the version agreed, or the error.
    fn handshake(
        client: Arc<rustls::ClientConfig>,
        server: Arc<rustls::ServerConfig>,
    ) -> Result<rustls::ProtocolVersion, rustls::Error> {
        let name = ServerName::try_from("relay.atlanta.invalid").unwrap();
        let mut c = rustls::ClientConnection::new(client, name).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
            }
            let server_state = s.process_new_packets();
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
            }
            c.process_new_packets()?;
            server_state?;
            if !c.is_handshaking() {
                return Ok(c.protocol_version().unwrap());
            }
        }
        Err(rustls::Error::General("the handshake did not end".into()))
    }

    /// Only TURN accepts a TLS 1.2 server; the SIP and PKG clients refuse
    /// it (no downgrade), and all accept TLS 1.3. The TURN client still
    /// refuses a TLS 1.2 server with another certificate than the pinned.
    #[test]
    fn tls12_for_turn_only_never_for_sip_or_the_pkg() {
        let addr: SocketAddr = "127.0.0.1:5349".parse().unwrap();
        let (tls12, pin12) = server_of(&rustls::version::TLS12);
        let (tls13, pin13) = server_of(&rustls::version::TLS13);
        let sip = |pin| client(None, addr, Some(pin), None, None).unwrap().config;
        let turn = |pin| {
            turn_client(None, addr, Some(pin), None, None)
                .unwrap()
                .config
        };
        let pkg = |pin| {
            Arc::new(
                crate::pkg_client::tls::client_config(Arc::new(PinnedVerifier::new(
                    Some(pin),
                    provider(),
                )))
                .unwrap(),
            )
        };
        assert_eq!(
            handshake(turn(pin12), tls12.clone()).unwrap(),
            rustls::ProtocolVersion::TLSv1_2
        );
        assert_eq!(
            handshake(turn(pin13), tls13.clone()).unwrap(),
            rustls::ProtocolVersion::TLSv1_3
        );
        for refusing in [sip(pin12), pkg(pin12)] {
            let err = handshake(refusing, tls12.clone()).unwrap_err();
            assert!(
                matches!(
                    err,
                    rustls::Error::AlertReceived(_) | rustls::Error::PeerIncompatible(_)
                ),
                "{err:?}"
            );
        }
        for accepting in [sip(pin13), pkg(pin13)] {
            assert_eq!(
                handshake(accepting, tls13.clone()).unwrap(),
                rustls::ProtocolVersion::TLSv1_3
            );
        }
        let err = handshake(turn(pin13), tls12).unwrap_err();
        assert!(err.to_string().contains("pinned"), "{err}");
    }

    /// A SIP proxy or `turns:` relay showing another certificate than the
    /// pin is refused as before, and the refusal (with the certificate
    /// seen) reaches whoever may re-check the provider; the pinned
    /// certificate is not reported.
    #[test]
    fn refused_certificates_are_reported_and_the_pinned_one_is_not() {
        let addr: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        let (server, served) = server_of(&rustls::version::TLS13);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let refusals = PinRefusals::new(move |fp| s.lock().unwrap().push(fp));
        let old = [7u8; 32];
        for tls in [
            client(None, addr, Some(old), None, Some(refusals.clone())).unwrap(),
            turn_client(None, addr, Some(old), None, Some(refusals.clone())).unwrap(),
        ] {
            let err = handshake(tls.config, server.clone()).unwrap_err();
            assert!(err.to_string().contains("pinned"), "{err}");
        }
        assert_eq!(*seen.lock().unwrap(), [served, served]);
        for tls in [
            client(None, addr, Some(served), None, Some(refusals.clone())).unwrap(),
            turn_client(None, addr, Some(served), None, Some(refusals)).unwrap(),
        ] {
            handshake(tls.config, server.clone()).unwrap();
        }
        assert_eq!(seen.lock().unwrap().len(), 2, "the pin passes unreported");
    }
}
