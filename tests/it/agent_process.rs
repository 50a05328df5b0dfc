//! `ibephone agent` processes provisioning their keys from a real
//! `pkg-server`: login, params and three periods of keys, trust on first
//! use recorded in the key store (0600), restart on the stored keys while
//! the PKG is down, and the refusals that must never fall back (wrong pin,
//! wrong password, nothing stored).

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use support::process::Agent;
use support::provider::*;

const ALICE_PW: &str = "alice secret 1";

#[test]
fn agent_logs_in_pins_on_first_use_and_restarts_on_stored_keys() {
    let pkg = Provider::new(&[("alice", ALICE_PW), ("bob", "bob secret 22")]);
    let mut server = pkg.start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = agent_config(
        dir.path(),
        &server,
        Spec {
            pin: false,
            ..Spec::new("alice", ALICE_PW, server.sip)
        },
    );
    let mut alice = Agent::start("alice", &cfg);
    alice.register();
    let err = alice.stderr.lock().unwrap().clone();
    assert!(err.contains("keys fetched from the PKG"), "{err}");
    assert!(
        err.contains(&format!(
            "trusted on first use, pinned from now on: {}",
            server.fingerprint
        )),
        "{err}"
    );
    // The previous, current and next period.
    assert!(err.contains(&period_window().join(", ")), "{err}");
    alice.quit();
    for f in ["keys.sealed", "store.key"] {
        let p = dir.path().join("alice.keystore").join(f);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", p.display());
    }
    // The sealed store does not contain the key material in clear.
    let sealed = std::fs::read_to_string(dir.path().join("alice.keystore/keys.sealed")).unwrap();
    assert!(!sealed.contains("d_enc") && !sealed.contains("alice@"));

    // Second start: the recorded pin is used (no TOFU any more).
    let mut alice = Agent::start("alice", &cfg);
    alice.register();
    let err = alice.stderr.lock().unwrap().clone();
    assert!(
        err.contains(&format!("pinned: {}", server.fingerprint)),
        "{err}"
    );
    assert!(!err.contains("trusted on first use"), "{err}");
    alice.quit();

    // PKG down: the agent starts on its stored keys and can seal a call.
    server.stop();
    let mut alice = Agent::start("alice", &cfg);
    alice.send(serde_json::json!({"cmd": "call", "to": "bob"}));
    alice.expect("calling", Duration::from_secs(10));
    let err = alice.stderr.lock().unwrap().clone();
    assert!(err.contains("from the key store (PKG unreachable"), "{err}");
    alice.quit();
}

#[test]
fn refusals_do_not_fall_back_to_stored_keys() {
    let pkg = Provider::new(&[("alice", ALICE_PW)]);
    let mut server = pkg.start();
    let dir = tempfile::tempdir().unwrap();
    // A wrong pin: refused, the agent exits with the reason.
    let cfg = agent_config(
        dir.path(),
        &server,
        Spec::new("alice", ALICE_PW, server.sip),
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace(&server.fingerprint, &"ab".repeat(32))).unwrap();
    let mut a = Agent::start("alice", &cfg);
    assert_eq!(a.wait_exit(Duration::from_secs(10)), Some(2));
    let err = a.stderr.lock().unwrap().clone();
    assert!(err.contains("does not match the pinned"), "{err}");

    // The right pin but a wrong password: refused (401), no fallback.
    let cfg = agent_config(
        dir.path(),
        &server,
        Spec::new("alice", "not alice's password", server.sip),
    );
    let mut a = Agent::start("alice", &cfg);
    assert_eq!(a.wait_exit(Duration::from_secs(10)), Some(2));
    let err = a.stderr.lock().unwrap().clone();
    assert!(err.contains("PKG refused (401"), "{err}");

    // PKG down and nothing stored: refused, naming the missing period.
    server.stop();
    let mut a = Agent::start("alice", &cfg);
    assert_eq!(a.wait_exit(Duration::from_secs(10)), Some(2));
    let err = a.stderr.lock().unwrap().clone();
    assert!(
        err.contains("unreachable") && err.contains(&period_now()),
        "{err}"
    );
}
