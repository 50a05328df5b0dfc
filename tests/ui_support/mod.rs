//! Shared by the desktop-app tests: a real PKG (the `pkg-server` library,
//! in-process on 127.0.0.1 with a free port, users alice and bob) with the
//! embedded SIP registrar/proxy of its domain (phones register with the
//! device credentials it issues), and helpers that drive a [`PhoneApp`]
//! through egui_kittest by the labels a user sees.
#![allow(dead_code)]

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use ibephone::pkg_client::api::SecretString;
use ibephone::ui::{AppDirs, PhoneApp};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub const DOMAIN: &str = "atlanta.invalid";
pub const ALICE_PW: &str = "alice secret 1";
pub const BOB_PW: &str = "bob secret 22";

/// A PKG and the domain's registrar/proxy, running until dropped.
pub struct Provider {
    pub url: String,
    pub fingerprint: [u8; 32],
    pub proxy: SocketAddr,
    /// The same registrar/proxy over TLS, with the PKG's certificate.
    pub tls_proxy: SocketAddr,
    /// The embedded relay's allocation counts ([`Provider::with_relay`]).
    pub relay: Option<pkg_server::turn::policy::Quotas>,
    config: pkg_server::config::Config,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
    pub rt: tokio::runtime::Runtime,
}

impl Provider {
    pub fn start() -> Provider {
        Provider::build("", None, DOMAIN)
    }

    /// As [`Provider::start`], for the users of `domain` instead of
    /// [`DOMAIN`] (a resolver never asks DNS about `.invalid` names, RFC
    /// 6761: a provider found by DNS needs another reserved name).
    pub fn start_for(domain: &str) -> Provider {
        Provider::build("", None, domain)
    }

    /// As [`Provider::start`], serving the certificate chain and key
    /// `(cert_pem, key_pem)` instead of the self-signed one `pkg-admin
    /// init` makes.
    pub fn start_with_cert(tls: Option<(String, String)>) -> Provider {
        Provider::build("", tls, DOMAIN)
    }

    /// A provider that also runs the embedded STUN/TURN relay on the
    /// loopback (relaying between loopback peers allowed) and announces
    /// it as its STUN server (`services.stun`).
    pub fn with_relay() -> Provider {
        // A free port for the relay, so that services.stun can name it.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Provider::start_with(&format!(
            "[services]\nstun = [\"stun:127.0.0.1:{port}\"]\n[turn]\nlisten = \"127.0.0.1:{port}\"\nallowed_peer_ips = [\"127.0.0.1\"]\n"
        ))
    }

    /// A provider whose `pkg.toml` also has `extra` (sections).
    pub fn start_with(extra: &str) -> Provider {
        Provider::build(extra, None, DOMAIN)
    }

    /// A provider of `domain` with `extra` in its `pkg.toml` and, when
    /// given, the certificate chain and key `tls` instead of the
    /// self-signed one.
    fn build(extra: &str, tls: Option<(String, String)>, domain: &str) -> Provider {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pkg.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[argon2]\nm_kib = 1024\nt = 1\np = 1\n[sip]\ntls = true\n{extra}",
                dir.path().display()
            ),
        )
        .unwrap();
        let config = pkg_server::config::Config::load(&path).unwrap();
        let (started, proxy, tls_proxy) = rt.block_on(async {
            pkg_server::admin::init(&config, domain, Some("https://127.0.0.1:8443"))
                .await
                .unwrap();
            if let Some((cert, key)) = &tls {
                std::fs::write(config.cert_path(), cert).unwrap();
                std::fs::write(config.key_path(), key).unwrap();
            }
            let store = pkg_server::admin::open_store(&config).await.unwrap();
            let vault = pkg_server::vault::Vault::unlock(&config, &store)
                .await
                .unwrap();
            let store = store.with_ha1_key(vault.ha1_key());
            for (user, pw) in [("alice", ALICE_PW), ("bob", BOB_PW)] {
                let rec =
                    pkg_server::password::hash_password(user, domain, pw, &config.argon2).unwrap();
                store.user_add(user, &rec, 0).await.unwrap();
            }
            let started =
                pkg_server::serve::start(config.clone(), None, Some("127.0.0.1:0".into()))
                    .await
                    .unwrap();
            let proxy = started.sip.as_ref().map(|s| s.addr).unwrap();
            let tls_proxy = started.sip.as_ref().and_then(|s| s.tls_addr).unwrap();
            (started, proxy, tls_proxy)
        });
        let relay = started.turn.as_ref().map(|t| t.quotas.clone());
        let url = format!("https://{}", started.addr);
        let fingerprint = started.fingerprint;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(started.serve(async move {
            let _ = stopped.await;
        }));
        Provider {
            url,
            fingerprint,
            proxy,
            tls_proxy,
            relay,
            config,
            _dir: dir,
            _stop: stop,
            rt,
        }
    }
}

impl Provider {
    /// Enrols `user` in the second factor (as `pkg-admin user otp` does)
    /// and returns the TOTP seed its authenticator app would hold.
    pub fn enrol_otp(&self, user: &str) -> pkg_server::otp::Seed {
        self.rt.block_on(async {
            let store = pkg_server::admin::open_store(&self.config).await.unwrap();
            let vault = pkg_server::vault::Vault::unlock(&self.config, &store)
                .await
                .unwrap();
            let store = store.with_otp_key(vault.otp_key());
            let seed = pkg_server::otp::Seed::generate().unwrap();
            store.otp_set(user, &seed).await.unwrap();
            seed
        })
    }
}

/// A phone window on a fresh (or given) data directory.
pub fn phone(dirs: AppDirs) -> Harness<'static, PhoneApp> {
    window(PhoneApp::new(dirs, egui::Context::default()).unwrap())
}

/// A phone window already set up and registered as bob (no backend
/// behind it): the main screen as a user sees it after start.
pub fn ready_phone(dir: &std::path::Path) -> Harness<'static, PhoneApp> {
    use ibephone::agent::AgentEvent;
    use ibephone::ui::app::Screen;
    use ibephone::ui::backend::{ReadyInfo, Update};
    let mut h = phone(AppDirs::at(dir));
    let app = h.state_mut();
    app.screen = Screen::Phone;
    app.apply(Update::Ready(ReadyInfo {
        aor: "sip:bob@atlanta.invalid".into(),
        domain: "atlanta.invalid".into(),
        periods: vec!["2026-12".into()],
        params_fingerprint: "abcd 0123".into(),
        pkg_fingerprint: None,
        local: "127.0.0.1:5099".parse().unwrap(),
        key_servers: None,
    }));
    app.apply(Update::Agent(AgentEvent::Registered { expires: 600 }));
    h.run_steps(3);
    h
}

/// A window around an app made by the test.
pub fn window(app: PhoneApp) -> Harness<'static, PhoneApp> {
    let mut h = Harness::builder()
        .with_size(egui::vec2(900.0, 800.0))
        .build_state(|ctx, app: &mut PhoneApp| app.show(ctx), app);
    h.step();
    h
}

/// Whether some widget's label contains `text`.
pub fn shows(h: &Harness<'_, PhoneApp>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

/// Steps the window until the phone is registered, at most 30 s; `how`
/// names the registration expected (in the failure).
pub fn wait_registered(h: &mut Harness<'_, PhoneApp>, how: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(
        h.state().registration,
        ibephone::ui::state::Registration::Registered { .. }
    ) {
        assert!(
            Instant::now() < deadline,
            "not registered {how}: {:?}",
            h.state().registration
        );
        h.step();
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Steps the window (the backend works meanwhile) until `text` shows.
pub fn wait_for(h: &mut Harness<'_, PhoneApp>, text: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        h.step();
        if shows(h, text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{text:?} did not show within {secs} s; banners {:?}, wizard {:?} {:?}",
            h.state().banners,
            h.state().wizard.step,
            h.state().wizard.error
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Steps both windows until `cond` holds (at most `secs`).
pub fn until(
    a: &mut Harness<'_, PhoneApp>,
    b: &mut Harness<'_, PhoneApp>,
    secs: u64,
    what: &str,
    mut cond: impl FnMut(&Harness<'_, PhoneApp>, &Harness<'_, PhoneApp>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        a.step();
        b.step();
        if cond(a, b) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Alice dials bob until bob's window rings; asserts that `relay` held no
/// allocation of alice's before and holds one now (her call gathered a
/// relayed candidate).
pub fn ring_with_a_relayed_candidate(
    relay: &pkg_server::turn::policy::Quotas,
    alice: &mut Harness<'_, PhoneApp>,
    bob: &mut Harness<'_, PhoneApp>,
) {
    assert_eq!(relay.allocations_of("alice"), 0);
    alice.state_mut().dial.clear();
    alice.run_steps(2);
    type_into(alice, "Call", "bob");
    alice.get_by_label("📞 Call").click();
    alice.run_steps(3);
    wait_for(bob, "Incoming call from sip:alice@atlanta.invalid", 15);
    assert_eq!(
        relay.allocations_of("alice"),
        1,
        "the caller's candidates include a relayed one"
    );
}

/// Clicks the text field labelled `label` and types `text`.
pub fn type_into(h: &mut Harness<'_, PhoneApp>, label: &str, text: &str) {
    h.get_by_label(label).click();
    h.run_steps(2);
    h.get_by_label(label).type_text(text);
    h.run_steps(2);
}

/// Runs the wizard as a user would: account, fingerprints, confirm; until
/// the phone says it is ready.
pub fn set_up(h: &mut Harness<'_, PhoneApp>, p: &Provider, user: &str, pw: &str) {
    type_into(h, "Your address", &format!("{user}@{DOMAIN}"));
    type_into(h, "Password", pw);
    // The test's provider has no DNS records: its PKG and SIP proxy are
    // given under "Advanced" (free ports on the loopback).
    h.state_mut().wizard.url = p.url.clone();
    h.state_mut().wizard.sip_proxy = p.proxy.to_string();
    h.get_by_label("Connect").click();
    wait_for(h, "They match: log in", 20);
    let shown = ibephone::ibe::fingerprint::short(&p.fingerprint);
    assert!(
        shows(h, &shown),
        "the certificate fingerprint's short form is shown"
    );
    h.get_by_label("They match: log in").click();
    wait_for(h, "Your phone is ready", 30);
}

/// The periods of the keys stored in `dirs`' key store, sorted.
pub fn stored_periods(dirs: &AppDirs) -> Vec<String> {
    use ibephone::pkg_client::{KeyStore, Unlock};
    let s = KeyStore::open(&dirs.keys(), Unlock::KeyFile).unwrap();
    let mut v: Vec<String> = s
        .keys()
        .unwrap()
        .iter()
        .map(|k| k.identity().period().as_str().to_string())
        .collect();
    v.sort();
    v
}

/// Rewrites `dirs`' key store without the keys of `periods`, everything
/// else (parameters, pin, device credential, kept login secrets) as it
/// was: a renewal is then due when the phone starts.
pub fn forget_periods(dirs: &AppDirs, periods: &[ibephone::ibe::Period]) {
    rewrite_store(dirs, periods, true);
}

/// Rewrites `dirs`' key store without its device SIP credential,
/// everything else as it was: a phone set up before its provider issued
/// device credentials.
pub fn forget_device_credential(dirs: &AppDirs) {
    rewrite_store(dirs, &[], false);
}

/// Rewrites `dirs`' key store without the keys of `periods`, and without
/// the device credential unless `keep_sip`.
fn rewrite_store(dirs: &AppDirs, periods: &[ibephone::ibe::Period], keep_sip: bool) {
    use ibephone::pkg_client::{store::STORE_FILE, KeyStore, Unlock};
    let s = KeyStore::open(&dirs.keys(), Unlock::KeyFile).unwrap();
    let params = s.params().unwrap().unwrap();
    let keys: Vec<_> = s
        .keys()
        .unwrap()
        .into_iter()
        .filter(|k| !periods.contains(k.identity().period()))
        .collect();
    let user = keys[0].identity().aor().user().to_string();
    let pin = s.pkg_pin().unwrap();
    let sip = s.sip_credential().cloned().filter(|_| keep_sip);
    let kept = s.login_secrets(params.domain(), &user).cloned();
    drop(s);
    std::fs::remove_file(dirs.keys().join(STORE_FILE)).unwrap();
    let mut s = KeyStore::open(&dirs.keys(), Unlock::KeyFile).unwrap();
    s.put_keys(&params, &keys).unwrap();
    s.set_pkg_pin(pin).unwrap();
    if let Some(c) = sip {
        s.device_name(Some(&c.device)).unwrap();
        s.set_sip_credential(c).unwrap();
    }
    if let Some(k) = kept {
        s.set_login_secrets(params.domain(), &user, k).unwrap();
    }
}

pub fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

/// The CPU renderer of the snapshot tests.
pub mod soft_render;

/// A 2-of-3 threshold provider, server by server.
pub mod threshold;
/// The first start to the first secured call, every input counted.
pub mod zero_effort;
