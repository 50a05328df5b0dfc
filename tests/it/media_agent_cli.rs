//! `ibephone agent --audio-in FILE.wav --audio-out FILE.wav`: two real
//! agent processes (JSON lines on stdin/stdout) and the embedded
//! registrar/proxy of this test over loopback. alice plays a WAV file
//! into the call, bob records it; the recording must match (clean-path
//! thresholds of `tests/media/agent_media.rs`: ρ >= 0.95, SNR >= 6 dB), both
//! print the same SAS.

use crate::support;

use ibephone::media::audio::read_wav;
use ibephone::media::g711::G711;
use ibephone::media::quality::{compare, test_signal};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::agents::TestDomain;
use support::audio::{clear_frames, holds_clear, write_wav};
use support::capture::Tshark;
use support::process::{key_file_config, listen_on, Agent};

const DOMAIN: &str = "biloxi.invalid";
/// The time limit of one wait for an agent's event.
const T: Duration = Duration::from_secs(30);

/// `ibephone agent` playing `audio_in` into its calls and recording to
/// `audio_out`, PCMA preferred, its key log next to its configuration;
/// an `error` event fails the test.
fn spawn(name: &str, config: &Path, audio_in: &Path, audio_out: &Path) -> Agent {
    let keylog = config.with_extension("keylog");
    let args = [
        "--audio-in".as_ref(),
        audio_in.as_os_str(),
        "--audio-out".as_ref(),
        audio_out.as_os_str(),
        "--codecs".as_ref(),
        "pcma,pcmu".as_ref(),
        "--keylog".as_ref(),
        keylog.as_os_str(),
    ];
    let mut agent = Agent::start_with(name, config, &args);
    agent.errors_fail = true;
    agent
}

/// The capture holds the call's SRTP (AEAD_AES_128_GCM: 12-byte RTP
/// header, 160 bytes of PCMA, 16-byte tag) and no datagram carries a
/// frame of the source in clear.
fn check_srtp_only(bytes: &[u8], signal: &[i16], keylog: &Path) {
    let segments = ibephone::pcap::capture::read_segments(bytes).unwrap();
    let clear = clear_frames(signal, G711::Alaw);
    let srtp = segments
        .iter()
        .filter(|s| {
            let p = &s.payload;
            p.len() == 12 + 160 + 16 && p[0] >> 6 == 2 && p[1] & 0x7f == 8
        })
        .count();
    assert!(srtp >= 100, "{srtp} SRTP packets captured");
    // The proof tool, without keys, judges every media flow SRTP.
    let report = ibephone::pcap::verify_capture(bytes).unwrap();
    assert!(report.clean(), "{report}");
    let judged = report
        .media
        .iter()
        .filter(|f| f.packets >= 100)
        .collect::<Vec<_>>();
    assert!(!judged.is_empty(), "{report}");
    for f in &judged {
        eprintln!("{f}");
    }
    // alice's key log (`IBESIP_SRTP` lines, both directions) opens
    // every SRTP packet of both flows.
    let log =
        ibephone::tunnel::keylog::KeyLog::parse(&std::fs::read_to_string(keylog).unwrap()).unwrap();
    assert!(log.srtp_keys().len() >= 2);
    let dec = ibephone::pcap::decrypt_capture(bytes, &log).unwrap();
    eprintln!("{}", dec.to_string().lines().last().unwrap_or_default());
    for f in dec.srtp.iter().filter(|f| f.packets >= 100) {
        eprintln!("{f}");
        assert_eq!(f.decrypted, f.packets, "{f}");
    }
    assert_eq!(dec.srtp.iter().filter(|f| f.packets >= 100).count(), 2);
    assert!(
        judged
            .iter()
            .all(|f| f.verdict == ibephone::pcap::MediaVerdict::Srtp),
        "{report}"
    );
    for s in &segments {
        assert!(
            !holds_clear(&s.payload, &clear),
            "frame {}: clear PCMA on the wire",
            s.frame
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_processes_play_and_record_wav_files() {
    let dir = tempfile::tempdir().unwrap();
    let domain = TestDomain::new(DOMAIN);
    let provider = domain.proxy(&["alice", "bob"]).await;
    let signal = test_signal(2.5);
    let (src, silence) = (dir.path().join("src.wav"), dir.path().join("silence.wav"));
    write_wav(&src, &signal);
    write_wav(&silence, &[]);
    let (a_out, b_out) = (
        dir.path().join("alice-out.wav"),
        dir.path().join("bob-out.wav"),
    );
    let ca = key_file_config(dir.path(), &domain, "alice", "alice-pw", provider.addr);
    let cb = key_file_config(dir.path(), &domain, "bob", "bob-pw", provider.addr);
    // Both agents on an address of their own: the capture holds this call
    // only, not the tests running beside it on 127.0.0.1.
    let own = std::net::Ipv4Addr::new(127, 0, 36, 1);
    listen_on(&ca, own);
    listen_on(&cb, own);
    let filter = format!("udp and host {own}");
    let capture = Tshark::start(&dir.path().join("call.pcap"), &filter, &["-F", "pcap"]);
    let mut alice = spawn("alice", &ca, &src, &a_out);
    let mut bob = spawn("bob", &cb, &silence, &b_out);
    for a in [&mut alice, &mut bob] {
        a.send(serde_json::json!({"cmd": "register"}));
        a.expect("registered", T);
    }
    alice.send(serde_json::json!({"cmd": "call", "to": "bob"}));
    let call = alice.expect("calling", T)["call"].clone();
    let incoming = bob.expect("incoming_call", T);
    assert_eq!(incoming["tunneled"], true);
    bob.send(serde_json::json!({"cmd": "answer", "call": incoming["call"]}));
    let ma = alice.expect("media_started", T);
    let mb = bob.expect("media_started", T);
    assert_eq!(ma["codec"], "PCMA", "alice's --codecs order decides");
    assert_eq!(ma["escrow_resistant"], true);
    assert_eq!(ma["sas"], mb["sas"]);
    assert_eq!(ma["sas"].as_str().map(str::len), Some(4));
    alice.expect("audio_source_ended", T);
    tokio::time::sleep(Duration::from_millis(400)).await;
    alice.send(serde_json::json!({"cmd": "hangup", "call": call}));
    let stopped = bob.expect("media_stopped", T);
    if let Some(c) = capture {
        check_srtp_only(&c.stop(), &signal, &ca.with_extension("keylog"));
    }
    assert!(
        stopped["stats"]["received"].as_u64().unwrap() >= 100,
        "{stopped}"
    );
    assert_eq!(stopped["stats"]["bad_auth"], 0);
    for a in [&mut alice, &mut bob] {
        a.close_stdin();
        a.expect("unregistered", T);
        assert_eq!(a.wait_exit(T), Some(0), "{}", a.name);
    }
    let rec = read_wav(&b_out).unwrap();
    let (rho, lag, snr) = compare(&signal, &rec, 8000);
    eprintln!(
        "process call: rho {rho:.4} snr {snr:.1} dB lag {} ms",
        lag / 8
    );
    assert!(rho >= 0.95, "rho {rho}");
    assert!(snr >= 6.0, "snr {snr}");
}

/// A missing `--audio-in` file is refused at start with a clear message.
#[test]
fn missing_audio_in_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let domain = TestDomain::new(DOMAIN);
    let cfg = key_file_config(
        dir.path(),
        &domain,
        "alice",
        "alice-pw",
        "127.0.0.1:9".parse().unwrap(),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ibephone"))
        .arg("agent")
        .arg("--config")
        .arg(&cfg)
        .arg("--audio-in")
        .arg(dir.path().join("nothing.wav"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing.wav"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
