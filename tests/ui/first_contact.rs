//! The phone's first contact with a PKG whose certificate chains to the
//! trusted roots (pkg-api.md "Discovery", item 1): a test CA stands in for
//! the platform's roots. The certificate is accepted by the roots only for
//! the PKG's own host name; then the wizard shows the parameter
//! fingerprint. A certificate of the same CA for another name is not
//! vouched for: the phone falls back to the certificate fingerprint.
#![cfg(feature = "gui")]

use crate::ui_support::*;
use egui_kittest::kittest::Queryable;
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
    connect_with_roots(&mut h, ca.roots(), &p.url, &p.proxy.to_string());
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
    h.get_by_label("Connect").click();
    wait_for(&mut h, "They match: log in", 20);
    assert_eq!(h.state().wizard.sip_proxy, format!("sips:127.0.0.1:{tls}"));
    h.get_by_label("They match: log in").click();
    wait_for(&mut h, "Your phone is ready", 30);
}

/// The pin the tests below pretend was the provider's old certificate.
const OLD_PIN: [u8; 32] = [7; 32];

/// Replaces the stored pin (as if the provider's certificate had been
/// another one when the phone was set up).
fn set_stored_pin(dir: &std::path::Path, pin: [u8; 32]) {
    let mut s = ibephone::pkg_client::KeyStore::open(
        &AppDirs::at(dir).keys(),
        ibephone::pkg_client::Unlock::KeyFile,
    )
    .unwrap();
    s.set_pkg_pin(pin).unwrap();
}

fn stored_pin(dir: &std::path::Path) -> Option<[u8; 32]> {
    ibephone::pkg_client::KeyStore::open(
        &AppDirs::at(dir).keys(),
        ibephone::pkg_client::Unlock::KeyFile,
    )
    .unwrap()
    .pkg_pin()
}

/// The parameter fingerprint the PKG at `url` (on loopback) serves, its
/// certificate pinned to `pin`.
async fn params_fingerprint(url: &str, pin: [u8; 32]) -> [u8; 32] {
    PkgClient::new(url, Some(pin))
        .unwrap()
        .with_addresses(&LOOPBACK)
        .params()
        .await
        .unwrap()
        .fingerprint()
}

/// The recheck after a pin mismatch offers a new certificate only when it
/// chains to the roots for the PKG's host name and the parameters are the
/// confirmed ones; the same certificate is "unchanged".
#[test]
fn recheck_offers_only_a_vouched_certificate_with_the_same_parameters() {
    use ibephone::pkg_client::first_contact::{recheck_certificate, CertificateCheck};
    let ca = TestCa::new();
    let p = Provider::start_with_cert(Some(ca.issue("pkg.atlanta.invalid")));
    let url = url_as(&p, "pkg.atlanta.invalid");
    p.rt.block_on(async {
        let params = params_fingerprint(&url, p.fingerprint).await;
        let check = |roots, pin, params| recheck_certificate(&url, &LOOPBACK, roots, pin, params);
        match check(Some(ca.roots()), OLD_PIN, params).await.unwrap() {
            CertificateCheck::Renewed(r) => {
                assert_eq!((r.old, r.new), (OLD_PIN, p.fingerprint));
                assert_eq!(r.host, "pkg.atlanta.invalid");
                assert!(r
                    .reason
                    .contains("certificate authority this computer trusts"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            check(Some(ca.roots()), p.fingerprint, params)
                .await
                .unwrap(),
            CertificateCheck::Unchanged
        );
        // Other parameters: not a renewal, whatever the certificate.
        assert!(matches!(
            check(Some(ca.roots()), OLD_PIN, [1; 32]).await.unwrap(),
            CertificateCheck::Refused(why) if why.contains("parameters")
        ));
        // Roots that do not hold the issuer, or none: refused.
        assert!(matches!(
            check(Some(TestCa::new().roots()), OLD_PIN, params)
                .await
                .unwrap(),
            CertificateCheck::Refused(_)
        ));
        assert!(matches!(
            check(None, OLD_PIN, params).await.unwrap(),
            CertificateCheck::Refused(_)
        ));
    });
    // The same CA's certificate for another name: refused.
    let evil = Provider::start_with_cert(Some(ca.issue("pkg.evil.invalid")));
    let url = url_as(&evil, "pkg.atlanta.invalid");
    evil.rt.block_on(async {
        let params = params_fingerprint(&url, evil.fingerprint).await;
        let got = recheck_certificate(&url, &LOOPBACK, Some(ca.roots()), OLD_PIN, params)
            .await
            .unwrap();
        assert!(
            matches!(&got, CertificateCheck::Refused(why) if why.contains("not valid for name")),
            "{got:?}"
        );
    });
}

/// A CA renewal: the phone shows old and new fingerprint and the reason;
/// Refuse keeps the old pin, Accept pins the new certificate and the phone
/// starts again with it.
#[test]
fn a_renewed_certificate_is_pinned_only_with_consent() {
    use ibephone::ui::certificate_view::{ACCEPT, REFUSE, TITLE};
    let ca = TestCa::new();
    let p = Provider::start_with_cert(Some(ca.issue("127.0.0.1")));
    let dir = tempfile::tempdir().unwrap();
    let mut h = phone(AppDirs::at(dir.path()));
    connect_with_roots(&mut h, ca.roots(), &p.url, &p.proxy.to_string());
    h.get_by_label("They match: log in").click();
    wait_for(&mut h, "Your phone is ready", 30);
    assert_eq!(stored_pin(dir.path()), Some(p.fingerprint));
    set_stored_pin(dir.path(), OLD_PIN);
    // What the backend does on a pin mismatch.
    h.state_mut().request(Request::RecheckCertificate);
    wait_for(&mut h, TITLE, 20);
    assert!(
        shows(&h, &fingerprint::short(&OLD_PIN)),
        "the old fingerprint"
    );
    assert!(
        shows(&h, &fingerprint::short(&p.fingerprint)),
        "the new fingerprint"
    );
    assert!(shows(&h, "certificate authority this computer trusts"));
    h.get_by_label(REFUSE).click_accesskit();
    h.run_steps(2);
    assert!(
        h.state().certificate_renewal.is_none(),
        "{:?}",
        h.state().banners
    );
    assert!(!shows(&h, TITLE));
    assert!(shows(&h, "You refused the provider's new certificate"));
    assert_eq!(stored_pin(dir.path()), Some(OLD_PIN), "refused: unchanged");
    h.state_mut().request(Request::RecheckCertificate);
    wait_for(&mut h, TITLE, 20);
    h.run_steps(3);
    // The accessibility click (as a screen reader would): the window
    // fades in over several frames before it takes pointer clicks.
    h.get_by_label(ACCEPT).click_accesskit();
    wait_for(&mut h, "new certificate is pinned", 20);
    assert_eq!(
        stored_pin(dir.path()),
        Some(p.fingerprint),
        "accepted: pinned"
    );
    wait_for(&mut h, "Ready", 30);
}

/// The refusal of today stands for a changed certificate the roots do not
/// vouch for (here a self-signed one): no question, the pin unchanged.
#[test]
fn a_changed_certificate_the_roots_do_not_vouch_for_stays_refused() {
    use ibephone::ui::certificate_view::TITLE;
    let ca = TestCa::new();
    let p = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let mut h = phone(AppDirs::at(dir.path()));
    set_up(&mut h, &p, "alice", ALICE_PW);
    set_stored_pin(dir.path(), OLD_PIN);
    h.state_mut().request(Request::UseTrustRoots(ca.roots()));
    h.state_mut().request(Request::RecheckCertificate);
    wait_for(
        &mut h,
        "shows a different certificate than the one you confirmed",
        20,
    );
    assert!(!shows(&h, TITLE));
    assert!(h.state().certificate_renewal.is_none());
    assert_eq!(stored_pin(dir.path()), Some(OLD_PIN));
}

/// Runs the wizard as alice against `url` and `sip_proxy` with `roots` as
/// the trusted roots, up to the fingerprint to confirm.
fn connect_with_roots(
    h: &mut egui_kittest::Harness<'static, ibephone::ui::PhoneApp>,
    roots: Arc<RootCertStore>,
    url: &str,
    sip_proxy: &str,
) {
    h.state_mut().request(Request::UseTrustRoots(roots));
    type_into(h, "Your address", &format!("alice@{DOMAIN}"));
    type_into(h, "Password", ALICE_PW);
    h.state_mut().wizard.url = url.to_string();
    h.state_mut().wizard.sip_proxy = sip_proxy.to_string();
    h.get_by_label("Connect").click();
    wait_for(h, "They match: log in", 20);
}

/// Sets up alice over SIP TLS (`sips:`, the proxy showing the PKG's
/// certificate), stops the phone, replaces the stored pin by
/// [`OLD_PIN`] (the provider renewed its certificate meanwhile) and
/// starts it again with `roots` as the trusted roots: the window of that
/// second start. The keys of this and next month are held, so the start
/// asks the PKG nothing: the SIP proxy's TLS connection is the first to
/// meet the new certificate.
fn restarted_over_sip_tls(
    p: &Provider,
    dir: &std::path::Path,
    roots: Arc<RootCertStore>,
) -> egui_kittest::Harness<'static, ibephone::ui::PhoneApp> {
    {
        let mut h = phone(AppDirs::at(dir));
        connect_with_roots(
            &mut h,
            roots.clone(),
            &p.url,
            &format!("sips:{}", p.tls_proxy),
        );
        h.get_by_label("They match: log in").click();
        wait_for(&mut h, "Your phone is ready", 30);
        wait_for(&mut h, "Ready", 10);
    }
    set_stored_pin(dir, OLD_PIN);
    let mut h = phone(AppDirs::at(dir));
    h.state_mut().request(Request::UseTrustRoots(roots));
    h
}

/// The provider renewed its certificate (a CA's, for its host name, same
/// parameters): the SIP proxy's TLS connection fails the pin, and the
/// window offers the same re-check as key fetch does; accepted, the
/// phone registers over TLS with the new pin.
#[test]
fn a_sip_proxy_failing_the_pin_offers_the_renewed_certificate() {
    use ibephone::ui::certificate_view::{ACCEPT, TITLE};
    let ca = TestCa::new();
    let p = Provider::start_with_cert(Some(ca.issue("127.0.0.1")));
    let dir = tempfile::tempdir().unwrap();
    let mut h = restarted_over_sip_tls(&p, dir.path(), ca.roots());
    wait_for(&mut h, TITLE, 30);
    assert!(
        shows(&h, &fingerprint::short(&OLD_PIN)),
        "the old fingerprint"
    );
    assert!(
        shows(&h, &fingerprint::short(&p.fingerprint)),
        "the new fingerprint"
    );
    assert_eq!(stored_pin(dir.path()), Some(OLD_PIN), "nothing pinned yet");
    h.run_steps(3);
    h.get_by_label(ACCEPT).click_accesskit();
    wait_for(&mut h, "new certificate is pinned", 20);
    assert_eq!(stored_pin(dir.path()), Some(p.fingerprint));
    wait_registered(&mut h, "over TLS with the new pin");
}

/// The attack: a SIP proxy showing a certificate the trusted roots do not
/// vouch for (self-signed) is not offered; the refusal is said in the
/// window instead of only failing the registration, and the pin stands.
#[test]
fn a_sip_proxy_with_a_certificate_the_roots_do_not_vouch_for_stays_refused() {
    use ibephone::ui::certificate_view::TITLE;
    let ca = TestCa::new();
    let p = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let mut h = restarted_over_sip_tls(&p, dir.path(), ca.roots());
    wait_for(
        &mut h,
        "shows a different certificate than the one you confirmed",
        30,
    );
    assert!(!shows(&h, TITLE));
    assert!(h.state().certificate_renewal.is_none());
    assert_eq!(stored_pin(dir.path()), Some(OLD_PIN));
}
