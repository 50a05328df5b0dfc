//! Certificate pinning: the PKG's end-entity certificate is accepted when
//! its SHA-256 fingerprint is the pinned one (or, with trust on first use,
//! the first one seen, which is then recorded). There is no PKI to lean on
//! (spec `pkg-api.md`), so names and chains are not checked; the TLS 1.3
//! handshake signature is still verified with the certificate's key, so a
//! peer without the private key cannot pass.
//!
//! The one exception is the first contact (pkg-api.md "Discovery", item
//! 1): [`PinnedVerifier::platform`] accepts a certificate only when it
//! chains to the given trusted roots for the PKG's host name (webpki), and
//! then records it as the pin, so the phone can show the user the
//! parameter fingerprint instead of the certificate's.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

/// SHA-256 of a DER certificate: the pinned fingerprint.
pub fn cert_fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// A fingerprint as 64 lower-case hex digits (colons and spaces ignored
/// when parsing).
pub fn fingerprint_hex(fp: &[u8; 32]) -> String {
    hex::encode(fp)
}

/// Parses 64 hex digits, allowing `:` and spaces between them.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let clean: String = s.chars().filter(|c| *c != ':' && *c != ' ').collect();
    let bytes = hex::decode(clean).ok()?;
    bytes.try_into().ok()
}

/// What the verifier saw on the last handshake.
#[derive(Debug, Default)]
struct PinState {
    pinned: Option<[u8; 32]>,
    last_seen: Option<[u8; 32]>,
}

/// Told the fingerprint of each certificate a pinned verifier refused
/// (another than the pin): how a connection that fails the pin reaches
/// someone who can ask whether the provider renewed its certificate
/// (`ui::backend`'s re-check). Called during the handshake: it must not
/// block (send on a channel, set a flag).
#[derive(Clone)]
pub struct PinRefusals(Arc<dyn Fn([u8; 32]) + Send + Sync>);

impl PinRefusals {
    /// Calls `f` with each refused certificate's fingerprint.
    pub fn new(f: impl Fn([u8; 32]) + Send + Sync + 'static) -> Self {
        PinRefusals(Arc::new(f))
    }

    /// Reports one refused certificate.
    pub fn report(&self, presented: [u8; 32]) {
        (self.0)(presented)
    }
}

impl std::fmt::Debug for PinRefusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinRefusals")
    }
}

/// The pinning verifier; shared by all connections of one client.
#[derive(Debug)]
pub struct PinnedVerifier {
    state: Mutex<PinState>,
    provider: Arc<CryptoProvider>,
    /// Set by [`PinnedVerifier::platform`]: the chain to these roots for
    /// the server name decides instead of a pin.
    roots: Option<Arc<WebPkiServerVerifier>>,
    /// Set by [`PinnedVerifier::allowing_tls12`] (TURN only): TLS 1.2
    /// handshake signatures are checked instead of refused.
    tls12: bool,
    /// Set by [`PinnedVerifier::reporting`]: told each refused certificate.
    refusals: Option<PinRefusals>,
}

impl PinnedVerifier {
    /// A verifier for `pin`; `None` means trust on first use: the first
    /// certificate seen becomes the pin.
    pub fn new(pin: Option<[u8; 32]>, provider: Arc<CryptoProvider>) -> Self {
        PinnedVerifier {
            state: Mutex::new(PinState {
                pinned: pin,
                last_seen: None,
            }),
            provider,
            roots: None,
            tls12: false,
            refusals: None,
        }
    }

    /// This verifier, also checking the handshake signature of a TLS 1.2
    /// server (with the pinned certificate's key, as for TLS 1.3). For
    /// `turns:` only (ARCHITECTURE.md, "TLS versions"): the PKG and SIP
    /// clients never use it, and their configurations offer TLS 1.3 only.
    pub fn allowing_tls12(mut self) -> Self {
        self.tls12 = true;
        self
    }

    /// This verifier, telling `refusals` the fingerprint of every
    /// certificate it refuses for not being the pin (nothing else changes:
    /// the handshake still fails).
    pub fn reporting(mut self, refusals: Option<PinRefusals>) -> Self {
        self.refusals = refusals;
        self
    }

    /// A verifier that accepts only a certificate chaining to `roots` for
    /// the server name of the connection (the PKG's host name; webpki:
    /// chain, validity, name), then records it as the pin
    /// ([`PinnedVerifier::pinned`]). Nothing is trusted on first use.
    pub fn platform(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, rustls::Error> {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("trusted roots: {e}")))?;
        Ok(PinnedVerifier {
            state: Mutex::new(PinState::default()),
            provider,
            roots: Some(webpki),
            tls12: false,
            refusals: None,
        })
    }

    /// Whether this verifier checks chains to trusted roots
    /// ([`PinnedVerifier::platform`]) rather than a pin.
    pub fn checks_roots(&self) -> bool {
        self.roots.is_some()
    }

    /// The pin in force (after trust on first use, the recorded one).
    pub fn pinned(&self) -> Option<[u8; 32]> {
        self.state.lock().map(|s| s.pinned).unwrap_or(None)
    }

    /// The fingerprint presented on the last handshake (even a refused one).
    pub fn last_seen(&self) -> Option<[u8; 32]> {
        self.state.lock().map(|s| s.last_seen).unwrap_or(None)
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = cert_fingerprint(end_entity);
        let mut st = self
            .state
            .lock()
            .map_err(|_| rustls::Error::General("pin state poisoned".into()))?;
        st.last_seen = Some(seen);
        if let Some(webpki) = &self.roots {
            let ok = webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            )?;
            st.pinned = Some(seen);
            return Ok(ok);
        }
        let pinned = st.pinned;
        match pinned {
            Some(pin) if bool::from(pin.ct_eq(&seen)) => Ok(ServerCertVerified::assertion()),
            Some(pin) => {
                // The lock is not held while the refusal is told.
                drop(st);
                if let Some(r) = &self.refusals {
                    r.report(seen);
                }
                Err(rustls::Error::General(format!(
                    "the certificate (SHA-256 {}) does not match the pinned {}: \
                     it is not the provider's pinned one, refusing it",
                    fingerprint_hex(&seen),
                    fingerprint_hex(&pin)
                )))
            }
            None => {
                st.pinned = Some(seen);
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if !self.tls12 {
            return Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls13RequiredForQuic,
            ));
        }
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS 1.3-only client configuration (ring provider) that trusts exactly
/// what `verifier` accepts.
pub fn client_config(verifier: Arc<PinnedVerifier>) -> Result<ClientConfig, rustls::Error> {
    let provider = verifier.provider.clone();
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The ring crypto provider used by both sides.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_parsing() {
        let fp = [0xabu8; 32];
        let hex = fingerprint_hex(&fp);
        assert_eq!(parse_fingerprint(&hex), Some(fp));
        let colons: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_fingerprint(&colons.join(":")), Some(fp));
        assert_eq!(parse_fingerprint("abcd"), None);
        assert_eq!(parse_fingerprint("zz"), None);
    }

    /// A CA's certificate and a leaf it signed for `name`.
    fn ca_and_leaf(name: &str) -> (CertificateDer<'static>, CertificateDer<'static>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = p.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        (ca.der().clone(), leaf.der().clone())
    }

    #[test]
    fn roots_accept_only_their_chain_for_the_name_and_pin_nothing_else() {
        let (ca, leaf) = ca_and_leaf("pkg.atlanta.invalid");
        let mut roots = RootCertStore::empty();
        roots.add(ca).unwrap();
        let roots = Arc::new(roots);
        let name = ServerName::try_from("pkg.atlanta.invalid").unwrap();
        let other = ServerName::try_from("pkg.evil.invalid").unwrap();
        // Another name than the certificate's: refused, nothing pinned.
        let v = PinnedVerifier::platform(roots.clone(), provider()).unwrap();
        assert!(v.checks_roots());
        assert!(v
            .verify_server_cert(&leaf, &[], &other, &[], UnixTime::now())
            .is_err());
        assert_eq!(v.pinned(), None);
        assert_eq!(v.last_seen(), Some(cert_fingerprint(&leaf)));
        // A certificate of another CA for the right name: refused.
        let (_, stranger) = ca_and_leaf("pkg.atlanta.invalid");
        assert!(v
            .verify_server_cert(&stranger, &[], &name, &[], UnixTime::now())
            .is_err());
        assert_eq!(v.pinned(), None);
        // The chain for its own name: accepted and pinned.
        assert!(v
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .is_ok());
        assert_eq!(v.pinned(), Some(cert_fingerprint(&leaf)));
    }

    #[test]
    fn pin_is_enforced_and_tofu_records() {
        let der = CertificateDer::from(vec![1u8, 2, 3]);
        let other = CertificateDer::from(vec![4u8]);
        let name = ServerName::try_from("pkg.invalid").unwrap();
        let v = PinnedVerifier::new(None, provider());
        assert!(v
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
            .is_ok());
        assert_eq!(v.pinned(), Some(cert_fingerprint(&der)));
        assert!(v
            .verify_server_cert(&other, &[], &name, &[], UnixTime::now())
            .is_err());
        assert_eq!(v.last_seen(), Some(cert_fingerprint(&other)));
    }
}
