//! The desktop app driven through its widgets (egui_kittest) against a
//! real PKG and registrar on 127.0.0.1: the wizard, later starts from the
//! stored keys, error sentences, and a call between two windows with the
//! verified badge and the security panel.
#![cfg(feature = "gui")]

use crate::ui_support;

use egui_kittest::kittest::Queryable;
use ibephone::ibe::Period;
use ibephone::media::audio::{read_wav, AudioSink, WavSink};
use ibephone::ui::app::Screen;
use ibephone::ui::ringer::Ringer;
use ibephone::ui::AppDirs;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use ui_support::*;

fn current() -> Period {
    Period::month_at(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
}

#[test]
fn wizard_sets_up_then_later_starts_are_ready_with_stored_keys() {
    let p = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let dirs = AppDirs::at(dir.path());
    {
        let mut h = phone(dirs.clone());
        assert_eq!(h.state().screen, Screen::Wizard);
        set_up(&mut h, &p, "alice", ALICE_PW);
        wait_for(&mut h, "Ready", 10);
        assert!(shows(&h, "sip:alice@atlanta.invalid"));
        // The status bar in plain words; the key periods in Settings.
        assert!(shows(&h, "Keys up to date"));
        assert!(!shows(&h, "valid until"));
        h.state_mut().tab = ibephone::ui::app::Tab::Settings;
        h.run_steps(2);
        assert!(shows(&h, &format!("Keys: {} (valid until", current())));
        assert!(shows(&h, "next period"), "next period shown");
        h.state_mut().tab = ibephone::ui::app::Tab::Dial;
        assert!(
            h.state().wizard.password.is_empty(),
            "password not kept in the window"
        );
    }
    // The sealed store and password are on disk, with mode 0600.
    use std::os::unix::fs::PermissionsExt;
    for f in [dirs.account(), dirs.keys().join("keys.sealed")] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is private", f.display());
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains(ALICE_PW), "password is sealed");
    }
    // Later start: straight to the phone, no wizard.
    let mut h = phone(dirs.clone());
    assert_eq!(h.state().screen, Screen::Starting);
    wait_for(&mut h, "Ready", 20);
    assert_eq!(h.state().screen, Screen::Phone);
    // A message lands sealed in the data directory, 0600.
    h.state_mut().apply(ibephone::ui::backend::Update::Agent(
        ibephone::agent::AgentEvent::MessageReceived {
            from: "sip:bob@atlanta.invalid".into(),
            text: "kept across restarts".into(),
            verified: None,
            tunneled: true,
        },
    ));
    h.run_steps(3);
    let mode = std::fs::metadata(dirs.messages())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "messages are private");
    let text = std::fs::read_to_string(dirs.messages()).unwrap();
    assert!(!text.contains("kept across"), "messages are sealed");
    // Log out wipes the keys and returns to the wizard.
    h.get_by_label("Settings").click();
    h.run_steps(3);
    h.get_by_label("Log out").click();
    h.run_steps(3);
    h.get_by_label("Yes, log out and wipe keys").click();
    wait_for(&mut h, "Set up ibephone", 10);
    assert!(!dirs.keys().exists() && !dirs.account().exists());
    assert!(!dirs.messages().exists(), "log out wipes the messages");
    assert!(h.state().conversations.is_empty());
}

/// The provider's SIP service over TLS (`sips:` under Advanced, as
/// discovery fills it in when the provider lists it first): the phone
/// registers on the TLS port, holding the certificate to the PKG's pin.
#[test]
fn wizard_sets_up_over_sip_tls_pinned_to_the_pkg() {
    let p = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let mut h = phone(AppDirs::at(dir.path()));
    type_into(&mut h, "Your address", &format!("alice@{DOMAIN}"));
    type_into(&mut h, "Password", ALICE_PW);
    h.state_mut().wizard.url = p.url.clone();
    h.state_mut().wizard.sip_proxy = format!("sips:{}", p.tls_proxy);
    h.get_by_label("Connect").click();
    wait_for(&mut h, "They match: log in", 20);
    h.get_by_label("They match: log in").click();
    wait_for(&mut h, "Your phone is ready", 30);
    wait_for(&mut h, "Ready", 10);
    assert_eq!(
        h.state().settings.sip_proxy,
        format!("sips:{}", p.tls_proxy)
    );
}

#[test]
fn wizard_errors_are_sentences_with_what_to_do() {
    let p = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let mut h = phone(AppDirs::at(dir.path()));
    // Nobody listens on port 9 of the loopback.
    type_into(&mut h, "Your address", &format!("alice@{DOMAIN}"));
    type_into(&mut h, "Password", "whatever1");
    h.state_mut().wizard.url = "https://127.0.0.1:9".into();
    h.get_by_label("Connect").click();
    wait_for(
        &mut h,
        "The provider cannot be reached at https://127.0.0.1:9. Check the address",
        20,
    );
    // The right provider, the wrong password.
    h.state_mut().wizard.url = p.url.clone();
    h.state_mut().wizard.sip_proxy = p.proxy.to_string();
    h.run_steps(3);
    h.get_by_label("Connect").click();
    wait_for(&mut h, "They match: log in", 20);
    h.get_by_label("They match: log in").click();
    wait_for(&mut h, "Wrong user name or password", 20);
    assert!(
        !AppDirs::at(dir.path()).account().exists(),
        "nothing stored"
    );
}

#[test]
fn call_between_two_windows_shows_verified_badge_and_security_panel() {
    let p = Provider::start();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Alice debugs with a key log: the status bar warns, the file fills.
    let keylog = da.path().join("alice.keylog");
    let mut alice = window(
        ibephone::ui::PhoneApp::with_keylog(
            AppDirs::at(da.path()),
            egui::Context::default(),
            Some(keylog.clone()),
        )
        .unwrap(),
    );
    let mut bob = phone(AppDirs::at(db.path()));
    // Bob's ring tone goes to a WAV file instead of a speaker.
    let ring_wav = db.path().join("ring.wav");
    let path = ring_wav.clone();
    bob.state_mut()
        .set_ringer(Ringer::with_opener(Arc::new(move |_, _| {
            Ok(Box::new(WavSink::create(&path)?) as Box<dyn AudioSink>)
        })));
    set_up(&mut alice, &p, "alice", ALICE_PW);
    set_up(&mut bob, &p, "bob", BOB_PW);
    wait_for(&mut alice, "Ready", 10);
    wait_for(&mut bob, "Ready", 10);
    assert!(!bob.state().is_ringing());

    // A callee of a provider nobody serves here: a sentence, no call.
    type_into(&mut alice, "Call", "carol@chicago.invalid");
    alice.get_by_label("📞 Call").click();
    wait_for(&mut alice, "cannot be called securely", 10);

    alice.state_mut().dial.clear();
    alice.run_steps(3);
    type_into(&mut alice, "Call", "bob");
    alice.get_by_label("📞 Call").click();
    alice.run_steps(3);
    wait_for(&mut bob, "Incoming call from sip:alice@atlanta.invalid", 15);
    assert!(shows(&bob, "✔ verified: sip:alice@atlanta.invalid"));
    assert!(bob.state().is_ringing(), "bob's phone rings");
    assert!(!alice.state().is_ringing(), "the caller's does not");
    std::thread::sleep(std::time::Duration::from_millis(300));
    bob.get_by_label("Answer").click();
    wait_for(&mut bob, "In call", 10);
    wait_for(&mut alice, "In call", 10);
    assert!(!bob.state().is_ringing(), "answering stops the ring");
    assert!(shows(&alice, "Key log on"));
    assert!(!shows(&bob, "Key log on"));
    let logged = std::fs::read_to_string(&keylog).unwrap();
    assert!(logged.contains("IBESIP_KEK "), "{logged}");
    assert!(logged.contains("IBESIP_CEK "), "{logged}");
    let rang = (0..200)
        .find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            read_wav(&ring_wav).ok().filter(|s| !s.is_empty())
        })
        .expect("the ring tone was written");
    assert!(rang.iter().any(|&s| s.abs() > 10_000), "a loud tone rang");
    assert!(shows(&alice, "✔ verified: sip:bob@atlanta.invalid"));
    // The security panel.
    assert!(shows(&alice, "tunnel on (IBESIP-V01"));
    assert!(shows(&alice, "verified: sip:bob@atlanta.invalid"));
    assert!(shows(&alice, current().as_str()), "key period");
    let fp = alice
        .state()
        .ready
        .as_ref()
        .unwrap()
        .params_fingerprint
        .clone();
    // Its short form (the full one on hover).
    let short = ibephone::ui::fingerprint_view::short_of(&fp);
    assert_eq!(short.split(' ').count(), 5);
    assert!(shows(&alice, &short), "provider fingerprint");
    assert!(shows(&bob, "Caller identity"));

    alice.get_by_label("Hang up").click();
    alice.run_steps(3);
    wait_for(&mut bob, "Dial", 10);
    wait_for(&mut alice, "Dial", 10);
    alice.get_by_label("History").click();
    alice.run_steps(3);
    assert!(shows(&alice, "↗ out"));
    assert!(shows(&alice, "verified sip:bob@atlanta.invalid"));
    let rec = &alice.state().history.records()[0];
    assert!(rec.duration_secs.is_some());

    // A secure message, per contact.
    alice.get_by_label("Messages").click();
    alice.run_steps(3);
    type_into(&mut alice, "New conversation with", "bob");
    alice.get_by_label("Open").click();
    alice.run_steps(3);
    type_into(&mut alice, "Message", "hello bob, tunneled");
    alice.get_by_label("Send").click();
    wait_for(&mut alice, "✔ delivered", 10);
    bob.get_by_label("Messages").click();
    wait_for(&mut bob, "hello bob, tunneled", 10);
    assert!(shows(&bob, "✔ verified"));

    // Both keep the conversation across a restart.
    drop(alice);
    let mut alice = phone(AppDirs::at(da.path()));
    wait_for(&mut alice, "Ready", 20);
    alice.get_by_label("Messages").click();
    alice.run_steps(3);
    assert!(shows(&alice, "hello bob, tunneled"));
    assert!(shows(&alice, "✔ delivered"));
}

#[test]
fn wizard_asks_for_the_one_time_code_of_a_second_factor() {
    let p = Provider::start();
    let seed = p.enrol_otp("alice");
    let dir = tempfile::tempdir().unwrap();
    let dirs = AppDirs::at(dir.path());
    let mut h = phone(dirs.clone());
    let confirm = |h: &mut egui_kittest::Harness<'_, ibephone::ui::PhoneApp>| {
        h.get_by_label("Connect").click();
        wait_for(h, "They match: log in", 20);
        h.get_by_label("They match: log in").click();
        wait_for(h, "Enter the 6-digit code", 20);
    };
    type_into(&mut h, "Your address", &format!("alice@{DOMAIN}"));
    type_into(&mut h, "Password", ALICE_PW);
    // No DNS records for the test's provider: PKG and proxy as under
    // "Advanced".
    h.state_mut().wizard.url = p.url.clone();
    h.state_mut().wizard.sip_proxy = p.proxy.to_string();
    confirm(&mut h);
    assert!(!dirs.account().exists(), "nothing stored before the code");
    // A wrong code: a sentence naming the code, back to the start.
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let right = seed.code_at(now()).unwrap();
    let wrong = if right == "000000" {
        "000001"
    } else {
        "000000"
    };
    type_into(&mut h, "One-time code", wrong);
    h.get_by_label("Log in with the code").click();
    wait_for(&mut h, "Wrong password or one-time code", 20);
    assert!(!dirs.account().exists(), "nothing stored");
    // Again with the right code: the phone is set up.
    confirm(&mut h);
    type_into(&mut h, "One-time code", &seed.code_at(now()).unwrap());
    h.get_by_label("Log in with the code").click();
    wait_for(&mut h, "Your phone is ready", 30);
    assert!(h.state().wizard.otp.is_empty(), "code not kept");
    wait_for(&mut h, "Ready", 10);
}
