//! The main job as a user runs it: `ibephone demo` starts `pkg-server`
//! (PKG + embedded registrar) and two `ibephone agent` processes that log
//! in to it, places a secured call with verified identities on loopback and
//! exits 0 (with tshark present it also captures the run and checks that
//! nothing leaked). `pkg-server` must be built beside `ibephone`
//! (`cargo test --workspace` does).

use std::process::Command;

#[test]
fn demo_places_a_secured_call() {
    let dir = std::env::temp_dir().join(format!("ibephone-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("demo.pcap");
    let out = Command::new(env!("CARGO_BIN_EXE_ibephone"))
        .args(["demo", "--hold", "0", "--pcap"])
        .arg(&pcap)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("bob saw the caller as:   sip:alice@example.invalid#"),
        "{stdout}"
    );
    assert!(
        stdout.contains("alice saw the callee as: sip:bob@example.invalid#"),
        "{stdout}"
    );
    // The real provider and phones, keys from the PKG.
    assert!(stdout.contains("provider: pkg-server"), "{stdout}");
    assert!(stdout.contains("keys fetched from the PKG"), "{stdout}");
    if std::env::var("IBEPHONE_TEST_TSHARK").as_deref() == Ok("1") {
        assert!(
            stdout.contains("verdict: nothing readable leaked"),
            "{stdout}"
        );
        assert!(stdout.contains("[TUNNELED]"), "{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
