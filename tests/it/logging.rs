//! The diagnostic log (`src/agent/logging.rs`) holds no secret: two
//! `ibephone agent` processes with the file log on at `trace` log in to a
//! real `pkg-server`, register with their device SIP credentials, call
//! each other and exchange a secure message; then their log files are
//! searched for the account passwords, the SIP credential passwords, the
//! key store's key file, the private key bytes of every period (hex and
//! base64) and the message text. The files must exist, be 0600 in a
//! 0700 directory, and say what happened (registration, the call's end).

use crate::support;

use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::process::Agent;
use support::provider::*;

const ALICE_PW: &str = "alice log secret 1";
const BOB_PW: &str = "bob log secret 22";
const TEXT: &str = "the meeting code is 90210-4711";
const T: Duration = Duration::from_secs(20);

fn agent(name: &str, cfg: &Path, logs: &Path) -> Agent {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ibephone"));
    cmd.args(["agent", "--no-audio", "--log-level", "trace", "--config"])
        .arg(cfg)
        .env("IBEPHONE_LOG_DIR", logs);
    let mut a = Agent::spawn(name, cmd);
    a.register();
    a
}

/// Every form a secret could take in a log line.
fn forms(bytes: &[u8]) -> Vec<String> {
    use base64::Engine;
    let e = base64::engine::general_purpose::STANDARD;
    let u = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![
        hex::encode(bytes),
        hex::encode_upper(bytes),
        e.encode(bytes),
        u.encode(bytes),
        format!("{bytes:?}"),
    ]
}

fn secrets_of(dir: &Path, name: &str) -> Vec<(String, String)> {
    use ibephone::pkg_client::{KeyStore, Unlock};
    let store_dir = dir.join(format!("{name}.keystore"));
    let store = KeyStore::open(&store_dir, Unlock::KeyFile).unwrap();
    let mut out = Vec::new();
    let cred = store
        .sip_credential()
        .expect("the agent registered with a device credential");
    out.push((
        format!("{name} SIP password"),
        cred.password.expose().to_string(),
    ));
    let keys = store.keys().unwrap();
    assert_eq!(keys.len(), 3, "previous, current and next period");
    for k in &keys {
        for (what, bytes) in [("d_enc", k.d_enc_bytes()), ("d_sig", k.d_sig_bytes())] {
            for f in forms(&bytes[..]) {
                out.push((format!("{name} {what}"), f));
            }
            // A prefix is enough to give a key away.
            out.push((format!("{name} {what} prefix"), hex::encode(&bytes[..12])));
        }
    }
    let store_key = std::fs::read(store_dir.join("store.key")).unwrap();
    for f in forms(&store_key) {
        out.push((format!("{name} store.key"), f));
    }
    out.push((
        format!("{name} store.key text"),
        String::from_utf8_lossy(&store_key).trim().to_string(),
    ));
    out
}

fn read_logs(dir: &Path) -> String {
    let mode = std::fs::metadata(dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
    let mut all = String::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", p.display());
        all.push_str(&std::fs::read_to_string(&p).unwrap());
    }
    all
}

#[test]
fn the_log_holds_no_password_key_or_message_text() {
    let pkg = Provider::new(&[("alice", ALICE_PW), ("bob", BOB_PW)]);
    let server = pkg.start();
    let dir = tempfile::tempdir().unwrap();
    let (alice_logs, bob_logs) = (dir.path().join("alice-logs"), dir.path().join("bob-logs"));
    let cfg_a = agent_config(
        dir.path(),
        &server,
        Spec::new("alice", ALICE_PW, server.sip),
    );
    let cfg_b = agent_config(dir.path(), &server, Spec::new("bob", BOB_PW, server.sip));
    let mut alice = agent("alice", &cfg_a, &alice_logs);
    let mut bob = agent("bob", &cfg_b, &bob_logs);

    alice.send(json!({"cmd": "call", "to": "bob"}));
    let inc = bob.expect("incoming_call", T);
    let b = inc["call"].as_u64().unwrap();
    bob.send(json!({"cmd": "answer", "call": b}));
    let a = alice.expect("answered", T)["call"].as_u64().unwrap();
    bob.expect("answered", T);
    alice.send(json!({"cmd": "message", "to": "bob", "text": TEXT}));
    assert_eq!(bob.expect("message_received", T)["text"], TEXT);
    alice.send(json!({"cmd": "hangup", "call": a}));
    bob.expect("ended", T);
    alice.expect("ended", T);
    alice.quit();
    bob.quit();

    let mut needles = vec![
        ("alice password".to_string(), ALICE_PW.to_string()),
        ("bob password".to_string(), BOB_PW.to_string()),
        ("message text".to_string(), TEXT.to_string()),
        ("message text part".to_string(), "90210".to_string()),
    ];
    needles.extend(secrets_of(dir.path(), "alice"));
    needles.extend(secrets_of(dir.path(), "bob"));
    for (who, logs) in [("alice", &alice_logs), ("bob", &bob_logs)] {
        let text = read_logs(logs);
        // The log says what happened.
        for expected in ["log started", "registered", "call ended"] {
            assert!(text.contains(expected), "{who}: no {expected:?} in\n{text}");
        }
        for (what, secret) in &needles {
            assert!(secret.len() >= 5, "{what}: too short a needle");
            assert!(
                !text.contains(secret.as_str()),
                "{who}'s log holds the {what}"
            );
        }
        // No SIP message or SDP either.
        for marker in ["SIP/2.0", "v=0", "a=crypto", "m=audio"] {
            assert!(
                !text.contains(marker),
                "{who}'s log holds {marker:?}:\n{text}"
            );
        }
    }
}
