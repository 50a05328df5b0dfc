//! The committed capture `tests/captures/tunnel-dialog.pcap` (the vector
//! dialog as UDP on loopback): it is current, the proof tool finds it
//! clean, no inner header value appears in its bytes, and tshark (with our
//! Lua post-dissector) reads it. The tshark part runs when
//! `IBEPHONE_TEST_TSHARK=1` (set by `scripts/test.sh` after installing it).

use ibephone::pcap::{verify_capture, Class};
use std::process::Command;

const CAPTURE: &[u8] = include_bytes!("../captures/tunnel-dialog.pcap");
const CAPTURE_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/captures/tunnel-dialog.pcap"
);
const LUA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/wireshark/ibesip.lua");

#[test]
fn capture_is_current() {
    assert!(
        ibephone::pcap::write::dialog_capture().unwrap() == CAPTURE,
        "stale: cargo run --example write-tunnel-capture > tests/captures/tunnel-dialog.pcap"
    );
}

#[test]
fn proof_tool_finds_only_tunneled_messages() {
    let report = verify_capture(CAPTURE).unwrap();
    assert_eq!(report.messages.len(), 6);
    assert!(
        report.messages.iter().all(|m| m.class == Class::Tunneled),
        "{report}"
    );
    assert!(report.clean(), "{report}");
}

#[test]
fn no_inner_value_appears_in_the_capture() {
    for secret in [
        "alice",
        "Alice",
        "\"Bob\"",
        "User-Agent",
        "ibephone/0.1",
        "v=0",
        "a=crypto",
        "ibesip-dh",
        "PCMU",
        "m=audio",
    ] {
        assert!(
            !CAPTURE
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "{secret} appears in the capture"
        );
    }
}

fn tshark(args: &[&str]) -> Option<String> {
    if std::env::var("IBEPHONE_TEST_TSHARK").as_deref() != Ok("1") {
        eprintln!("IBEPHONE_TEST_TSHARK is not 1: tshark checks skipped");
        return None;
    }
    let out = Command::new("tshark")
        .args(args)
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn tshark_dissects_the_cms_body() {
    let Some(verbose) = tshark(&["-r", CAPTURE_PATH, "-V"]) else {
        return;
    };
    // Stock dissectors: SIP with its body, the body as CMS ContentInfo of
    // type id-ct-authEnvelopedData (tshark 4.0 stops there: it has no
    // AuthEnvelopedData dissector; our post-dissector continues below).
    assert_eq!(verbose.matches("ContentInfo").count(), 6, "{verbose}");
    assert_eq!(
        verbose
            .matches("contentType: 1.2.840.113549.1.9.16.1.23")
            .count(),
        6
    );
    assert!(verbose.contains("application/pkcs7-mime"));
}

#[test]
fn lua_post_dissector_shows_session_and_sequence() {
    let Some(fields) = tshark(&[
        "-X",
        &format!("lua_script:{LUA}"),
        "-r",
        CAPTURE_PATH,
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "ibesip.key_transport",
        "-e",
        "ibesip.session_id",
        "-e",
        "ibesip.kek_id",
        "-e",
        "ibesip.direction",
        "-e",
        "ibesip.seq",
        "-e",
        "ibesip.outer_binding",
    ]) else {
        return;
    };
    let rows: Vec<Vec<&str>> = fields.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 6, "{fields}");
    assert!(rows[0][0].starts_with("IBE Boneh-Franklin"), "{fields}");
    let session = rows[0][1];
    assert_eq!(session.len(), 32);
    for row in &rows[1..] {
        assert!(row[0].starts_with("AES-256 key wrap"), "{fields}");
        assert_eq!(row[2], session, "kekri keyIdentifier is the session id");
    }
    let seqs: Vec<(&str, &str)> = rows.iter().map(|r| (r[3], r[4])).collect();
    assert_eq!(
        seqs,
        [
            ("0", "0"),
            ("1", "0"),
            ("1", "1"),
            ("0", "1"),
            ("0", "2"),
            ("1", "2")
        ]
    );
    assert!(rows.iter().all(|r| r[5].len() == 64));
}
