//! The phone's first contact with a PKG whose certificate chains to the
//! trusted roots (pkg-api.md "Discovery", item 1): a test CA stands in for
//! the platform's roots. The certificate is accepted by the roots only for
//! the PKG's own host name; then the wizard shows the parameter
//! fingerprint. A certificate of the same CA for another name is not
//! vouched for: the phone falls back to the certificate fingerprint.
#![cfg(feature = "gui")]

use crate::ui_support::*;
use ibephone::ibe::fingerprint;
use ibephone::pkg_client::first_contact::{first_contact, FirstTrust};
use ibephone::pkg_client::{PkgClient, PkgClientError};
use ibephone::ui::backend::Request;
use ibephone::ui::AppDirs;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use std::net::IpAddr;
use std::sync::Arc;

/// A test CA: its certificate and key.
struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "ibephone test CA");
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        TestCa {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    /// The roots holding this CA alone.
    fn roots(&self) -> Arc<RootCertStore> {
        let mut r = RootCertStore::empty();
        r.add(self.cert.der().clone()).unwrap();
        Arc::new(r)
    }

    /// A server certificate for `name` (a DNS name or an IP address)
    /// signed by this CA: (chain PEM, key PEM).
    fn issue(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The PKG's URL under `host`, at the test provider's port.
fn url_as(p: &Provider, host: &str) -> String {
    let port = p.url.rsplit_once(':').unwrap().1;
    format!("https://{host}:{port}")
}

const LOOPBACK: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)];

#[test]
fn first_contact_trusts_roots_only_for_the_pkgs_host_name() {
    let ca = TestCa::new();
    let p = Provider::start_with_cert(Some(ca.issue("pkg.atlanta.invalid")));
    let url = url_as(&p, "pkg.atlanta.invalid");
    p.rt.block_on(async {
        let c = first_contact(&url, &LOOPBACK, Some(ca.roots()))
            .await
            .unwrap();
        assert_eq!(c.trust, FirstTrust::PlatformRoots);
        assert_eq!(
            c.cert_fingerprint, p.fingerprint,
            "the certificate seen is the pin"
        );
        assert_eq!(c.params.domain(), DOMAIN);
        // Without roots (or with roots that do not hold the CA) the same
        // server is a certificate to confirm.
        let c = first_contact(&url, &LOOPBACK, None).await.unwrap();
        assert_eq!(c.trust, FirstTrust::Certificate);
        let other = TestCa::new();
        let c = first_contact(&url, &LOOPBACK, Some(other.roots()))
            .await
            .unwrap();
        assert_eq!(c.trust, FirstTrust::Certificate);
        assert_eq!(c.cert_fingerprint, p.fingerprint);
    });
}

/// The attack: a certificate the same CA issued for another host name
/// (the attacker's own) is served for pkg.atlanta.invalid. The roots do
/// not vouch for it, so the phone never skips the certificate's
/// fingerprint for it.
#[test]
fn a_certificate_of_the_same_ca_for_another_name_is_refused() {
    let ca = TestCa::new();
    let p = Provider::start_with_cert(Some(ca.issue("pkg.evil.invalid")));
    let url = url_as(&p, "pkg.atlanta.invalid");
    p.rt.block_on(async {
        let client = PkgClient::with_roots(&url, ca.roots())
            .unwrap()
            .with_addresses(&LOOPBACK);
        let e = client.params().await.unwrap_err();
        assert!(
            matches!(&e, PkgClientError::Tls(why) if why.contains("not valid for name")),
            "{e:?}"
        );
        assert_eq!(client.pinned_fingerprint(), None, "nothing was pinned");
        let c = first_contact(&url, &LOOPBACK, Some(ca.roots()))
            .await
            .unwrap();
        assert_eq!(c.trust, FirstTrust::Certificate);
        // Under its own name the same certificate passes: the refusal
        // above is the name's.
        let evil = url_as(&p, "pkg.evil.invalid");
        let c = first_contact(&evil, &LOOPBACK, Some(ca.roots()))
            .await
            .unwrap();
        assert_eq!(c.trust, FirstTrust::PlatformRoots);
    });
}

/// The wizard against a PKG certified for its address (127.0.0.1, the
/// test has no DNS): the parameter fingerprint's short form is what the
/// user compares, never the certificate's; setup then completes with the
/// certificate seen as the pin.
#[test]
fn wizard_shows_the_parameter_fingerprint_for_a_certified_pkg() {
    let ca = TestCa::new();
    let p = Provider::start_with_cert(Some(ca.issue("127.0.0.1")));
    let params =
        p.rt.block_on(
            PkgClient::new(&p.url, Some(p.fingerprint))
                .unwrap()
                .params(),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut h = phone(AppDirs::at(dir.path()));
    h.state_mut().request(Request::UseTrustRoots(ca.roots()));
    type_into(&mut h, "Your address", &format!("alice@{DOMAIN}"));
    type_into(&mut h, "Password", ALICE_PW);
    h.state_mut().wizard.url = p.url.clone();
    h.state_mut().wizard.sip_proxy = p.proxy.to_string();
    use egui_kittest::kittest::Queryable;
    h.get_by_label("Connect").click();
    wait_for(&mut h, "They match: log in", 20);
    assert!(shows(&h, &format!("Your provider {DOMAIN}'s keys:")));
    assert!(shows(&h, &params.fingerprint_short()));
    assert!(
        !shows(&h, &fingerprint::short(&p.fingerprint)),
        "the certificate's fingerprint is not asked for"
    );
    h.get_by_label("They match: log in").click();
    wait_for(&mut h, "Your phone is ready", 30);
    let stored = ibephone::pkg_client::KeyStore::open(
        &AppDirs::at(dir.path()).keys(),
        ibephone::pkg_client::Unlock::KeyFile,
    )
    .unwrap()
    .pkg_pin();
    assert_eq!(
        stored,
        Some(p.fingerprint),
        "the certificate seen is pinned"
    );
}

/// A loopback TCP port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The wizard tries the provider's SIP services in their order
/// (`services.sip`, RFC 3263) and falls back to the next when one does
/// not answer, as the phone's own start does: the first entry names a
/// port nothing listens on, the second the provider's TLS proxy. Before,
/// the wizard wrote the first one into the settings and the phone never
/// registered.
#[test]
fn wizard_takes_the_next_sip_target_when_the_first_does_not_answer() {
    let (dead, tls) = (dead_port(), dead_port());
    let p = Provider::start_with(&format!(
        "tls_listen = \"127.0.0.1:{tls}\"\n[services]\nsip = [\"sips:127.0.0.1:{dead}\", \"sips:127.0.0.1:{tls}\"]\n"
    ));
    assert_eq!(p.tls_proxy.port(), tls);
    let dir = tempfile::tempdir().unwrap();
    let mut h = phone(AppDirs::at(dir.path()));
    type_into(&mut h, "Your address", &format!("alice@{DOMAIN}"));
    type_into(&mut h, "Password", ALICE_PW);
    h.state_mut().wizard.url = p.url.clone();
    assert_eq!(h.state().wizard.sip_proxy, "", "left to discovery");
    use egui_kittest::kittest::Queryable;
    h.get_by_label("Connect").click();
    wait_for(&mut h, "They match: log in", 20);
    assert_eq!(h.state().wizard.sip_proxy, format!("sips:127.0.0.1:{tls}"));
    h.get_by_label("They match: log in").click();
    wait_for(&mut h, "Your phone is ready", 30);
}
