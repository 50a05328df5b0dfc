//! `ibephone agent --audio-in FILE.wav --audio-out FILE.wav`: two real
//! agent processes (JSON lines on stdin/stdout) and the embedded
//! registrar/proxy of this test over loopback. alice plays a WAV file
//! into the call, bob records it; the recording must match (clean-path
//! thresholds of `tests/agent_media.rs`: ρ >= 0.95, SNR >= 6 dB), both
//! print the same SAS.

use ibephone::agent::config::write_key_file;
use ibephone::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
use ibephone::media::audio::{read_wav, AudioSink, WavSink};
use ibephone::media::quality::{compare, test_signal};
use ibephone::sip::driver;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

const DOMAIN: &str = "biloxi.invalid";

fn secret_file(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn write_config(
    dir: &Path,
    user: &str,
    msk: &MasterSecret,
    params: &PublicParams,
    proxy: SocketAddr,
) -> std::path::PathBuf {
    let aor = Aor::parse(&format!("sip:{user}@{DOMAIN}")).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let current = Period::month_at(now);
    let keys: Vec<_> = [current.previous_month().unwrap(), current]
        .into_iter()
        .map(|p| extract(msk, &Identity::new(aor.clone(), p)))
        .collect();
    write_key_file(&dir.join(format!("{user}.keys.json")), params, &[], &keys).unwrap();
    secret_file(
        &dir.join(format!("{user}.password")),
        &format!("{user}-pw\n"),
    );
    let toml = format!(
        "[account]\naor = \"sip:{user}@{DOMAIN}\"\npassword_file = \"{user}.password\"\n\n\
         [sip]\nlisten = \"127.0.0.1:0\"\nproxy = \"{proxy}\"\n\n\
         [keys]\nfile = \"{user}.keys.json\"\n"
    );
    let path = dir.join(format!("{user}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

fn write_wav(path: &Path, signal: &[i16]) {
    let mut w = WavSink::create(path).unwrap();
    for f in signal.chunks(160) {
        let mut frame = f.to_vec();
        frame.resize(160, 0);
        w.write_frame(&frame).unwrap();
    }
    w.finish().unwrap();
}

struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<Value>,
    name: &'static str,
}

impl Agent {
    fn spawn(name: &'static str, config: &Path, audio_in: &Path, audio_out: &Path) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ibephone"))
            .arg("agent")
            .arg("--config")
            .arg(config)
            .arg("--audio-in")
            .arg(audio_in)
            .arg("--audio-out")
            .arg(audio_out)
            .arg("--codecs")
            .arg("pcma,pcmu")
            .arg("--keylog")
            .arg(config.with_extension("keylog"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Agent {
            stdin: child.stdin.take(),
            child,
            events,
            name,
        }
    }

    fn send(&mut self, cmd: Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
    }

    async fn expect(&mut self, event: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(v)) if v["event"] == event => return v,
                Ok(Some(v)) if v["event"] == "error" => panic!("{}: {v}", self.name),
                Ok(Some(_)) => continue,
                other => panic!("{} waiting for {event}: {other:?}", self.name),
            }
        }
    }
}

/// tshark on loopback, when `IBEPHONE_TEST_TSHARK=1` (scripts/test.sh sets
/// it after installing tshark; tshark missing then is a failure).
struct Capture {
    child: Child,
    path: std::path::PathBuf,
}

impl Capture {
    fn start(path: &Path) -> Option<Capture> {
        if std::env::var("IBEPHONE_TEST_TSHARK").as_deref() != Ok("1") {
            eprintln!("capture skipped: set IBEPHONE_TEST_TSHARK=1 (needs tshark)");
            return None;
        }
        let child = Command::new("tshark")
            .args(["-q", "-i", "lo", "-f", "udp", "-F", "pcap", "-w"])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tshark must be installed when IBEPHONE_TEST_TSHARK=1");
        // tshark needs a moment before it captures.
        std::thread::sleep(Duration::from_millis(1500));
        Some(Capture {
            child,
            path: path.to_path_buf(),
        })
    }

    /// The capture holds the call's SRTP (AEAD_AES_128_GCM: 12-byte RTP
    /// header, 160 bytes of PCMA, 16-byte tag) and no datagram carries a
    /// frame of the source in clear.
    fn check_srtp_only(mut self, signal: &[i16], keylog: &Path) {
        // SIGINT lets tshark flush and close the file.
        // SAFETY: kill(2) on the pid of a child we spawned and still own.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let _ = self.child.wait();
        let bytes = std::fs::read(&self.path).unwrap();
        let segments = ibephone::pcap::capture::read_segments(&bytes).unwrap();
        let mut clear = std::collections::HashSet::new();
        let mut enc = Vec::new();
        for f in signal
            .chunks(160)
            .filter(|f| f.iter().any(|&s| s.abs() > 200))
        {
            ibephone::media::g711::G711::Alaw.encode(f, &mut enc);
            clear.insert(enc[..16].to_vec());
        }
        let srtp = segments
            .iter()
            .filter(|s| {
                let p = &s.payload;
                p.len() == 12 + 160 + 16 && p[0] >> 6 == 2 && p[1] & 0x7f == 8
            })
            .count();
        assert!(srtp >= 100, "{srtp} SRTP packets captured");
        // The proof tool, without keys, judges every media flow SRTP.
        let report = ibephone::pcap::verify_capture(&bytes).unwrap();
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
            ibephone::tunnel::keylog::KeyLog::parse(&std::fs::read_to_string(keylog).unwrap())
                .unwrap();
        assert!(log.srtp_keys().len() >= 2);
        let dec = ibephone::pcap::decrypt_capture(&bytes, &log).unwrap();
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
                !s.payload.windows(16).any(|w| clear.contains(w)),
                "frame {}: clear PCMA on the wire",
                s.frame
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_processes_play_and_record_wav_files() {
    let dir = tempfile::tempdir().unwrap();
    let msk = MasterSecret::generate().unwrap();
    let params = PublicParams::new(DOMAIN, msk.p_pub(), "https://127.0.0.1:8443").unwrap();
    let provider = driver::spawn_proxy(
        "127.0.0.1:0".parse().unwrap(),
        DOMAIN,
        &[("alice", "alice-pw"), ("bob", "bob-pw")],
    )
    .await
    .unwrap();
    let signal = test_signal(2.5);
    let (src, silence) = (dir.path().join("src.wav"), dir.path().join("silence.wav"));
    write_wav(&src, &signal);
    write_wav(&silence, &[]);
    let (a_out, b_out) = (
        dir.path().join("alice-out.wav"),
        dir.path().join("bob-out.wav"),
    );
    let ca = write_config(dir.path(), "alice", &msk, &params, provider.addr);
    let cb = write_config(dir.path(), "bob", &msk, &params, provider.addr);
    let capture = Capture::start(&dir.path().join("call.pcap"));
    let mut alice = Agent::spawn("alice", &ca, &src, &a_out);
    let mut bob = Agent::spawn("bob", &cb, &silence, &b_out);
    for a in [&mut alice, &mut bob] {
        a.send(serde_json::json!({"cmd": "register"}));
        a.expect("registered").await;
    }
    alice.send(serde_json::json!({"cmd": "call", "to": "bob"}));
    let call = alice.expect("calling").await["call"].clone();
    let incoming = bob.expect("incoming_call").await;
    assert_eq!(incoming["tunneled"], true);
    bob.send(serde_json::json!({"cmd": "answer", "call": incoming["call"]}));
    let ma = alice.expect("media_started").await;
    let mb = bob.expect("media_started").await;
    assert_eq!(ma["codec"], "PCMA", "alice's --codecs order decides");
    assert_eq!(ma["escrow_resistant"], true);
    assert_eq!(ma["sas"], mb["sas"]);
    assert_eq!(ma["sas"].as_str().map(str::len), Some(4));
    alice.expect("audio_source_ended").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    alice.send(serde_json::json!({"cmd": "hangup", "call": call}));
    let stopped = bob.expect("media_stopped").await;
    if let Some(c) = capture {
        c.check_srtp_only(&signal, &ca.with_extension("keylog"));
    }
    assert!(
        stopped["stats"]["received"].as_u64().unwrap() >= 100,
        "{stopped}"
    );
    assert_eq!(stopped["stats"]["bad_auth"], 0);
    for a in [&mut alice, &mut bob] {
        a.stdin.take();
        a.expect("unregistered").await;
        let status = a.child.wait().unwrap();
        assert!(status.success(), "{}: {status}", a.name);
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
    let msk = MasterSecret::generate().unwrap();
    let params = PublicParams::new(DOMAIN, msk.p_pub(), "https://127.0.0.1:8443").unwrap();
    let cfg = write_config(
        dir.path(),
        "alice",
        &msk,
        &params,
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
