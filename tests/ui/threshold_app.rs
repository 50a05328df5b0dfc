//! The desktop app against a 2-of-3 threshold provider (pkg-api.md
//! "Threshold provider", issue 16): the wizard logs in to the key servers
//! with a secret per server, combines two good key shares, names a server
//! that is down or lies, says which servers it used (result and Settings),
//! and with one server alone says why it has no keys and stores nothing.
#![cfg(feature = "gui")]

use crate::ui_support::threshold::ThresholdProvider;
use crate::ui_support::*;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use ibephone::pkg_client::{KeyStore, Unlock};
use ibephone::ui::{AppDirs, PhoneApp};

/// A UDP port on the loopback where nothing answers: the SIP proxy of a
/// test that stops at the keys (registration is not what it checks).
fn silent_proxy() -> String {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().to_string()
}

/// Runs the wizard as alice against server 1's URL up to the confirmed
/// fingerprint (server 1's certificate); the caller waits for the result.
fn start_set_up(h: &mut Harness<'_, PhoneApp>, p: &ThresholdProvider) {
    start_set_up_via(h, p, &silent_proxy());
}

/// [`start_set_up`] with `proxy` as the SIP proxy.
fn start_set_up_via(h: &mut Harness<'_, PhoneApp>, p: &ThresholdProvider, proxy: &str) {
    start_set_up_as(h, p, proxy, ("alice", ALICE_PW));
}

/// [`start_set_up_via`] as `user` with password `pw`.
fn start_set_up_as(
    h: &mut Harness<'_, PhoneApp>,
    p: &ThresholdProvider,
    proxy: &str,
    (user, pw): (&str, &str),
) {
    type_into(h, "Your address", &format!("{user}@{DOMAIN}"));
    type_into(h, "Password", pw);
    h.state_mut().wizard.url = p.urls[0].clone();
    h.state_mut().wizard.sip_proxy = proxy.to_string();
    h.get_by_label("Connect").click();
    wait_for(h, "They match: log in", 20);
    let fp = p.fingerprints[0].expect("server 1 runs");
    assert!(shows(h, &ibephone::ibe::fingerprint::short(&fp)));
    h.get_by_label("They match: log in").click();
}

/// A new phone in a fresh data folder (kept alive by the returned
/// directory), the wizard run up to the confirmed fingerprint.
fn set_up_phone(p: &ThresholdProvider) -> (tempfile::TempDir, AppDirs, Harness<'static, PhoneApp>) {
    let dir = tempfile::tempdir().unwrap();
    let dirs = AppDirs::at(dir.path());
    let mut h = phone(dirs.clone());
    start_set_up(&mut h, p);
    (dir, dirs, h)
}

/// The wizard's sentence on which key servers' shares were used.
fn key_servers_note(h: &Harness<'_, PhoneApp>) -> String {
    h.state()
        .ready
        .as_ref()
        .and_then(|r| r.key_servers.clone())
        .expect("the result names the key servers")
}

#[test]
fn threshold_wizard_combines_two_of_three_and_shows_the_servers_in_settings() {
    let mut p = ThresholdProvider::deal();
    for i in 1..=3 {
        p.start(i);
    }
    let (_dir, dirs, mut h) = set_up_phone(&p);
    wait_for(&mut h, "Keys saved", 60);
    // The result says, in plain words, which servers' shares were used.
    wait_for(&mut h, "of 3 (2 needed)", 5);
    let note = key_servers_note(&h);
    assert!(note.contains("Your keys were put together from"), "{note}");
    assert_eq!(stored_periods(&dirs).len(), 3, "three periods stored");
    // The login secrets are kept for renewal; the password goes to none
    // of the servers as it is (each gets its own secret).
    let store = KeyStore::open(&dirs.keys(), Unlock::KeyFile).unwrap();
    let kept = store.login_secrets(DOMAIN, "alice").unwrap();
    assert!(kept.len() >= 2, "{}", kept.len());
    // Settings says the same, outside the security panel.
    h.get_by_label("Continue to the phone").click();
    h.run_steps(3);
    h.get_by_label("Settings").click();
    h.run_steps(3);
    assert!(shows(&h, "Key servers:"), "Settings names the key servers");
    assert!(shows(&h, "of 3 (2 needed)"));
    // After a restart from the stored keys Settings still says it.
    drop(h);
    let mut h = phone(dirs.clone());
    wait_for(&mut h, "Dial", 30);
    h.get_by_label("Settings").click();
    h.run_steps(3);
    assert!(shows(&h, "of 3 (2 needed)"), "kept across restarts");
}

/// Issue 16: the wizard's set-up at a threshold provider stores the
/// device SIP credential of the home server (server 1, the one it was
/// set up with) and registers at that server's registrar with it; the
/// account password, which that registrar refuses, never goes to SIP.
#[test]
fn threshold_wizard_stores_the_home_servers_device_credential_and_registers_with_it() {
    let mut p = ThresholdProvider::deal();
    let registrar = p.start_with_sip(1);
    p.start(2);
    p.start(3);
    let dir = tempfile::tempdir().unwrap();
    let dirs = AppDirs::at(dir.path());
    let mut h = phone(dirs.clone());
    start_set_up_via(&mut h, &p, &registrar.to_string());
    // Registered at once (a silent proxy would leave "Keys saved" shown).
    wait_for(&mut h, "Your phone is ready", 60);
    let store = KeyStore::open(&dirs.keys(), Unlock::KeyFile).unwrap();
    let c = store
        .sip_credential()
        .cloned()
        .expect("a device credential stored");
    assert_eq!(c.username, "alice");
    assert!(c.device.starts_with("desktop-"), "{}", c.device);
    assert_ne!(c.password.expose(), ALICE_PW);
    drop(store);
    wait_registered(&mut h, "with the device credential");
    // A phone set up before the home server issued device credentials
    // (none stored) asks for one at start and registers with it.
    drop(h);
    forget_device_credential(&dirs);
    let mut h = phone(dirs.clone());
    wait_registered(&mut h, "with the device credential");
    let store = KeyStore::open(&dirs.keys(), Unlock::KeyFile).unwrap();
    let again = store.sip_credential().cloned().expect("a new credential");
    assert_ne!(again.device, c.device);
    assert_eq!(again.username, "alice");
}

#[test]
fn threshold_wizard_works_with_one_server_down_and_names_it() {
    let mut p = ThresholdProvider::deal();
    p.start(1);
    p.start(2);
    // Server 3 never starts: its port refuses connections.
    let (_dir, dirs, mut h) = set_up_phone(&p);
    wait_for(&mut h, "Keys saved", 60);
    wait_for(&mut h, "key servers 1 and 2 of 3", 5);
    wait_for(&mut h, "Server 3 was not used", 30);
    assert_eq!(stored_periods(&dirs).len(), 3);
}

#[test]
fn threshold_wizard_names_a_server_that_sends_a_wrong_share() {
    let mut honest = ThresholdProvider::deal();
    let mut rogue = ThresholdProvider::rogue_third(&honest);
    honest.start(1);
    honest.start(2);
    // Its certificate is honest server 3's: it passes the pin, so what
    // is named below is its share, not its certificate.
    rogue.start(3);
    let (_dir, dirs, mut h) = set_up_phone(&honest);
    wait_for(&mut h, "Keys saved", 60);
    // Its share fails the check against its P_pub_i: named, never used
    // (heard within the grace, or later and then reported).
    wait_for(&mut h, "Server 3 was not used", 30);
    wait_for(&mut h, "is wrong", 5);
    let note = key_servers_note(&h);
    assert!(note.contains("key servers 1 and 2 of 3"), "{note}");
    assert_eq!(stored_periods(&dirs).len(), 3);
}

#[test]
fn threshold_wizard_with_one_server_reachable_says_why_and_stores_nothing() {
    let mut p = ThresholdProvider::deal();
    p.start(1);
    let (_dir, dirs, mut h) = set_up_phone(&p);
    wait_for(&mut h, "only 1 of the 3 key servers", 60);
    let e = h.state().wizard.error.clone().unwrap();
    assert!(e.contains("2 are needed"), "{e}");
    assert!(e.contains("server 2") && e.contains("server 3"), "{e}");
    assert!(!dirs.account().exists(), "no password stored");
    assert!(
        !dirs
            .keys()
            .join(ibephone::pkg_client::store::STORE_FILE)
            .exists(),
        "no keys stored"
    );
    assert!(h.state().ready.is_none());
}

#[test]
fn threshold_wizard_asks_each_key_servers_own_one_time_code() {
    let mut p = ThresholdProvider::deal();
    // Each server has its own seed (pkg-api.md): three entries in the
    // user's authenticator app.
    let seeds: Vec<_> = (1..=3).map(|i| p.enrol_otp(i, "alice")).collect();
    for i in 1..=3 {
        p.start(i);
    }
    let (_dir, dirs, mut h) = set_up_phone(&p);
    wait_for(&mut h, "Code for key server 3", 60);
    assert_eq!(h.state().wizard.otp_servers, [1, 2, 3]);
    assert!(!dirs.account().exists(), "nothing stored before the codes");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Server 1's code typed for every server: the others refuse it, so
    // fewer than 2 servers log in; a sentence, nothing stored.
    let one = seeds[0].code_at(now).unwrap();
    for i in 1..=3 {
        type_into(&mut h, &format!("Code for key server {i}"), &one);
    }
    h.get_by_label("Log in with the code").click();
    wait_for(&mut h, "Wrong password or one-time code", 60);
    assert!(!dirs.account().exists(), "nothing stored");
    // Again, each server's own code (of the next step: server 1's code
    // of this step is used up).
    h.get_by_label("Connect").click();
    wait_for(&mut h, "They match: log in", 20);
    h.get_by_label("They match: log in").click();
    wait_for(&mut h, "Code for key server 3", 60);
    for (i, seed) in seeds.iter().enumerate() {
        type_into(
            &mut h,
            &format!("Code for key server {}", i + 1),
            &seed.code_at(now + 30).unwrap(),
        );
    }
    h.get_by_label("Log in with the code").click();
    wait_for(&mut h, "Keys saved", 60);
    assert!(
        h.state().wizard.server_otps.iter().all(|c| c.is_empty()),
        "codes not kept"
    );
    assert_eq!(stored_periods(&dirs).len(), 3);
}

#[test]
fn threshold_renewal_in_the_background_works_with_the_first_server_down() {
    let mut p = ThresholdProvider::deal();
    for i in 1..=3 {
        p.start(i);
    }
    let (_dir, dirs, mut h) = set_up_phone(&p);
    wait_for(&mut h, "Keys saved", 60);
    drop(h);
    // Server 1, whose URL the phone was set up with, is down; next
    // month's key is not held yet: the renewer asks servers 2 and 3 with
    // the confirmed (stored) parameters and the kept login secrets.
    p.stop(1);
    let next = ibephone::ibe::Period::month_at(ibephone::agent::keys::now_unix())
        .next_month()
        .unwrap();
    forget_periods(&dirs, std::slice::from_ref(&next));
    assert!(!stored_periods(&dirs).contains(&next.as_str().to_string()));
    let mut h = phone(dirs.clone());
    wait_for(&mut h, "Dial", 30);
    h.get_by_label("Settings").click();
    let next = next.as_str().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !h
        .state()
        .ready
        .as_ref()
        .is_some_and(|r| r.periods.contains(&next))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "next month's key not renewed"
        );
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(stored_periods(&dirs).contains(&next));
    // Settings now names the servers of this renewal.
    h.run_steps(3);
    assert!(shows(&h, "key servers 2 and 3 of 3"));
}

/// The relay credentials kept in `dirs`' key store, unexpired now.
fn kept_turn(dirs: &AppDirs) -> Option<ibephone::pkg_client::TurnCredentials> {
    KeyStore::open(&dirs.keys(), Unlock::KeyFile)
        .unwrap()
        .turn_credentials(std::time::SystemTime::now())
}

/// Alice calls bob; while bob's phone rings alice must hold an
/// allocation on the home server's relay (her call gathered a relayed
/// candidate); bob declines.
fn alice_rings_bob_with_a_relayed_candidate(
    p: &ThresholdProvider,
    alice: &mut Harness<'_, PhoneApp>,
    bob: &mut Harness<'_, PhoneApp>,
) {
    let relay = p.relay.clone().expect("server 1 runs a relay");
    ring_with_a_relayed_candidate(&relay, alice, bob);
    bob.get_by_label("Reject").click();
    bob.run_steps(3);
    wait_for(alice, "Dial", 10);
    until(alice, bob, 10, "the allocation given back", |_, _| {
        relay.allocations_of("alice") == 0
    });
}

/// Issue 16 follow-up: the app set up at a threshold provider keeps the
/// relay credentials its home server issued with the keys; started again
/// from its store it uses them (no login: the kept ones are unchanged)
/// and its calls gather a relayed candidate. Stored credentials past
/// their expiry are not used: the relay task renews them at once at the
/// home server (with that server's login secret) and keeps the new ones.
#[test]
fn threshold_app_restarted_gathers_a_relayed_candidate_from_stored_relay_credentials() {
    let mut p = ThresholdProvider::deal_with_relay();
    let registrar = p.start_with_sip(1).to_string();
    p.start(2);
    p.start(3);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice_dirs, bob_dirs) = (AppDirs::at(da.path()), AppDirs::at(db.path()));
    let mut alice = phone(alice_dirs.clone());
    start_set_up_via(&mut alice, &p, &registrar);
    wait_for(&mut alice, "Your phone is ready", 60);
    let mut bob = phone(bob_dirs.clone());
    start_set_up_as(&mut bob, &p, &registrar, ("bob", BOB_PW));
    wait_for(&mut bob, "Your phone is ready", 60);
    wait_registered(&mut bob, "with the device credential");
    let at_setup = kept_turn(&alice_dirs).expect("relay credentials kept at set-up");
    assert!(
        at_setup.username.ends_with(":alice"),
        "{}",
        at_setup.username
    );

    // Started again from the store: the kept credentials, no new ones.
    drop(alice);
    let mut alice = phone(alice_dirs.clone());
    wait_registered(&mut alice, "from the stored keys");
    // The relay task hands them to the RTP ports just after the start.
    std::thread::sleep(std::time::Duration::from_secs(2));
    alice_rings_bob_with_a_relayed_candidate(&p, &mut alice, &mut bob);
    let now = kept_turn(&alice_dirs).expect("still kept");
    assert_eq!(now.username, at_setup.username, "no new credentials asked");

    // Kept credentials that have expired are not used: new ones from the
    // home server at once, kept in their place.
    drop(alice);
    let mut expired = at_setup.clone();
    expired.username = format!("1:{}", at_setup.username.split_once(':').unwrap().1);
    expired.expires_at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
    KeyStore::open(&alice_dirs.keys(), Unlock::KeyFile)
        .unwrap()
        .set_turn_credentials(&expired)
        .unwrap();
    assert!(kept_turn(&alice_dirs).is_none(), "expired: not handed out");
    let mut alice = phone(alice_dirs.clone());
    wait_registered(&mut alice, "from the stored keys");
    until(
        &mut alice,
        &mut bob,
        30,
        "fresh relay credentials kept",
        |_, _| kept_turn(&alice_dirs).is_some(),
    );
    let fresh = kept_turn(&alice_dirs).unwrap();
    assert_ne!(fresh.username, at_setup.username);
    alice_rings_bob_with_a_relayed_candidate(&p, &mut alice, &mut bob);
}
