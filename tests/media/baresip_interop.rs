//! baresip, a SIP phone nobody here wrote, as a plain SIP peer with SDES
//! SRTP (`mediaenc=srtp-mand`): it registers with the embedded
//! registrar/proxy and calls alice, an in-process ibephone agent under
//! `allow-plain`. alice's events say the call is not tunneled and the
//! media keys are not escrow-resistant (baresip sends no `a=ibesip-dh`);
//! audio flows both ways: baresip plays a WAV file (aufile) and records
//! what it receives (sndfile), alice the same with `MediaOptions`.
//!
//! Thresholds are the clean ones of `tests/media/agent_media.rs` (ρ >= 0.95,
//! SNR >= 6 dB; measured here: ρ 0.9999, SNR 37 dB both ways).
//!
//! ibephone calls baresip too, at its registered contact
//! (`sip:carol@127.0.0.1:<port>`, a domain without IBE parameters): under
//! `allow-plain` the agent sends the INVITE plain (`plain_fallback`, then
//! `calling` with `tunneled: false`), baresip auto-answers, and audio
//! flows both ways again. Calling `carol@biloxi.invalid` instead seals the
//! INVITE, and baresip 1.0 answers it `500 Call Error` rather than the
//! `415` of RFC 3261 21.4.13 / spec 5.6; the 415 fallback is pinned in
//! `src/agent/fallback_tests.rs` and not reached with this baresip.
//!
//! baresip also calls with Opus only (its `opus.so`): alice answers Opus at
//! baresip's payload type, and the speech comes through both ways with the
//! Opus thresholds of `tests/media/media_opus.rs` (measured rho 0.93-0.94,
//! envelope 0.99, the same as between two ibephones).
//!
//! Gated: `IBEPHONE_TEST_BARESIP=1` (scripts/test.sh sets it after
//! scripts/install-deps.sh installed baresip); when set, baresip missing
//! is a failure.

use crate::support;

use ibephone::agent::filter::SecurityPolicy;
use ibephone::agent::headless::{start_with_media, RunningAgent};
use ibephone::agent::media_io::{AudioIn, AudioOut, MediaOptions};
use ibephone::agent::{AgentCommand, AgentEvent};
use ibephone::media::audio::read_wav_at;
use ibephone::media::quality::{compare, envelope_match, test_signal};
use ibephone::sip::driver;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::agents::{current_period, send, TestDomain, Wait};
use support::audio::write_wav;
use support::tools::gate;

const DOMAIN: &str = "biloxi.invalid";

/// Waits of up to 30 s, printing alice's other events.
const WAIT: Wait = Wait::secs(30).echo("alice");

/// What both tests set up: the registrar/proxy with alice and carol, and
/// the audio each plays (carol's is longer: baresip hangs up when its
/// file ends, and alice when hers has played).
struct Setup {
    dir: tempfile::TempDir,
    domain: TestDomain,
    provider: driver::ProxyHandle,
    alice_src: Vec<i16>,
    carol_src: Vec<i16>,
    /// alice's source file.
    a_in: PathBuf,
    /// carol's source file.
    c_in: PathBuf,
    /// What alice receives.
    a_out: PathBuf,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let domain = TestDomain::new(DOMAIN);
    let provider = domain.proxy(&["alice", "carol"]).await;
    let (alice_src, carol_src) = (test_signal(3.0), test_signal(6.0));
    let (a_in, c_in) = (
        dir.path().join("alice-in.wav"),
        dir.path().join("carol-in.wav"),
    );
    write_wav(&a_in, &alice_src);
    write_wav(&c_in, &carol_src);
    let a_out = dir.path().join("alice-out.wav");
    Setup {
        dir,
        domain,
        provider,
        alice_src,
        carol_src,
        a_in,
        c_in,
        a_out,
    }
}

impl Setup {
    /// alice under `allow-plain`, keys of the current period only,
    /// playing and recording WAV files; registered.
    async fn alice(&self) -> RunningAgent {
        let config = self
            .domain
            .agent("alice", self.provider.addr)
            .policy(SecurityPolicy::AllowPlain)
            .keys(self.domain.keys("alice", &[current_period()]))
            .build();
        let mut alice = start_with_media(
            config,
            MediaOptions {
                audio_in: AudioIn::Wav(self.a_in.clone()),
                audio_out: AudioOut::Wav(self.a_out.clone()),
                ..MediaOptions::default()
            },
        )
        .await
        .unwrap();
        WAIT.register(&mut alice).await;
        alice
    }

    /// baresip (offering `codecs`) dials alice, who sees a plain,
    /// unverified call from carol and answers it; returns baresip, its
    /// output, the call number and alice's first media event (or the end).
    async fn baresip_dials_alice(
        &self,
        alice: &mut RunningAgent,
        codecs: &str,
    ) -> (Child, Arc<Mutex<String>>, u64, AgentEvent) {
        let conf = baresip_dir_with(
            self.dir.path(),
            self.provider.addr,
            &self.c_in,
            false,
            codecs,
        );
        let (baresip, log) = baresip(
            &conf,
            20,
            &["-e".into(), format!("/dial sip:alice@{DOMAIN}")],
        );
        let incoming = WAIT
            .event(alice, "incoming call", |e| {
                matches!(e, AgentEvent::IncomingCall { .. })
            })
            .await;
        let AgentEvent::IncomingCall {
            call,
            tunneled,
            verified,
            from,
            ..
        } = incoming
        else {
            unreachable!()
        };
        assert!(from.contains("carol"), "{from}");
        assert!(!tunneled, "baresip's call is plain SIP");
        assert_eq!(verified, None);
        send(alice, AgentCommand::Answer { call }).await;
        let started = WAIT
            .event(alice, "media", |e| {
                matches!(
                    e,
                    AgentEvent::MediaStarted { .. } | AgentEvent::Ended { .. }
                )
            })
            .await;
        (baresip, log, call, started)
    }

    /// Once alice's file has played (or the call ended), alice hangs up;
    /// returns her `MediaStopped`.
    async fn hang_up_when_played(&self, alice: &mut RunningAgent, call: u64) -> AgentEvent {
        WAIT.event(alice, "source ended", |e| {
            matches!(
                e,
                AgentEvent::AudioSourceEnded { .. } | AgentEvent::Ended { .. }
            )
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        send(alice, AgentCommand::Hangup { call }).await;
        let stopped = WAIT
            .event(alice, "stopped", |e| {
                matches!(e, AgentEvent::MediaStopped { .. })
            })
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stopped
    }

    /// Stops baresip; it ran SRTP, and audio went both ways (clean-path
    /// thresholds).
    async fn check(&self, baresip: Child, log: Arc<Mutex<String>>, stopped: &AgentEvent) {
        self.check_with(baresip, log, stopped, G711).await
    }

    /// [`Setup::check`] with the thresholds of the call's codec.
    async fn check_with(
        &self,
        mut baresip: Child,
        log: Arc<Mutex<String>>,
        stopped: &AgentEvent,
        q: Quality,
    ) {
        // SAFETY: kill(2) on the pid of a child we spawned and still own.
        unsafe {
            libc::kill(baresip.id() as i32, libc::SIGINT);
        }
        baresip.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let log = log.lock().unwrap().clone();
        eprintln!("{log}");
        eprintln!("alice: {stopped:?}");
        assert!(log.contains("SRTP is Enabled"), "baresip ran SRTP");
        let dec = dump(self.dir.path(), "dec").expect("sndfile dump of received audio");
        for (what, src, path) in [
            ("baresip -> ibephone", &self.carol_src, &self.a_out),
            ("ibephone -> baresip", &self.alice_src, &dec),
        ] {
            // Both recordings at 8 kHz, whatever rate the codec ran at.
            let rec = read_wav_at(path, 8000).unwrap();
            let sent = played(src, &rec);
            let (rho, lag, snr) = compare(sent, &rec, 8000);
            let (env, _) = envelope_match(sent, &rec, 80, 50);
            eprintln!(
                "{what}: {} samples, rho {rho:.4} snr {snr:.1} dB envelope {env:.3} lag {} ms",
                rec.len(),
                lag / 8
            );
            assert!(
                rho >= q.rho && snr >= q.snr && env >= q.envelope,
                "{what}: rho {rho} snr {snr} envelope {env}"
            );
        }
    }
}

/// What a clean call must reach, per codec family.
#[derive(Clone, Copy)]
struct Quality {
    rho: f64,
    snr: f64,
    envelope: f64,
}

/// G.711 is waveform-exact (measured rho 0.9999, SNR 37 dB).
const G711: Quality = Quality {
    rho: 0.95,
    snr: 6.0,
    envelope: 0.95,
};

/// Opus is not (see `tests/media/media_opus.rs`): measured against baresip rho
/// 0.93-0.94, SNR 7.7-8.5 dB, envelope 0.99, the same as ibephone to
/// ibephone; the clean-call thresholds of `tests/media/media_opus.rs`.
const OPUS: Quality = Quality {
    rho: 0.85,
    snr: 5.0,
    envelope: 0.95,
};

/// A baresip configuration directory: carol@biloxi.invalid, SDES SRTP
/// mandatory, G.711 offered (Opus loaded but not offered), a WAV file as microphone, received audio dumped.
fn baresip_dir(dir: &Path, proxy: SocketAddr, source: &Path, answer: bool) -> PathBuf {
    baresip_dir_with(dir, proxy, source, answer, "PCMU,PCMA")
}

/// As [`baresip_dir`], offering `codecs` (baresip's names: `PCMU`, `opus`).
fn baresip_dir_with(
    dir: &Path,
    proxy: SocketAddr,
    source: &Path,
    answer: bool,
    codecs: &str,
) -> PathBuf {
    let conf = dir.join("baresip");
    std::fs::create_dir_all(&conf).unwrap();
    let sip_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "poll_method epoll\n\
         sip_listen 127.0.0.1:{sip_port}\n\
         audio_player alsa,null\n\
         audio_source aufile,{}\n\
         audio_alert alsa,null\n\
         ausrc_srate 8000\n\
         auplay_srate 8000\n\
         ausrc_channels 1\n\
         auplay_channels 1\n\
         rtcp_mux no\n\
         jitter_buffer_delay 2-10\n\
         snd_path {}\n\
         module_path /usr/lib/baresip/modules\n\
         module g711.so\n\
         module opus.so\n\
         opus_stereo no\n\
         opus_sprop_stereo no\n\
         module aufile.so\n\
         module alsa.so\n\
         module srtp.so\n\
         module sndfile.so\n\
         module_tmp account.so\n\
         module_app menu.so\n",
        source.display(),
        dir.display()
    );
    std::fs::write(conf.join("config"), config).unwrap();
    let account = format!(
        "<sip:carol@{DOMAIN}>;auth_pass=carol-pw;outbound=\"sip:{proxy}\";\
         mediaenc=srtp-mand;audio_codecs={codecs};{}\n",
        if answer {
            "regint=0;answermode=auto"
        } else {
            "regint=600"
        }
    );
    std::fs::write(conf.join("accounts"), account).unwrap();
    std::fs::write(conf.join("sip_port"), sip_port.to_string()).unwrap();
    conf
}

/// Registers `sip:carol@127.0.0.1:<port>` for carol from that port, as
/// baresip would:
/// baresip 1.0 (libre) gives up on a challenge list that holds an
/// algorithm other than MD5 (ENOSYS), and our registrar offers SHA-256
/// and MD5 (RFC 8760), so the test answers the digest challenge itself.
fn register_carol(proxy: SocketAddr, port: u16) {
    use ibephone::sip::digest::{Challenge, Password};
    use ibephone::sip::message::Message;
    // From baresip's port (before baresip binds it): the registrar routes
    // to the flow a REGISTER came from.
    let sock = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = sock.local_addr().unwrap();
    let call_id = ibephone::sip::random_token(16);
    let send = |cseq: u32, auth: Option<String>| {
        let mut m = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:carol@{DOMAIN}>;tag=carolreg\r\n\
             To: <sip:carol@{DOMAIN}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:carol@127.0.0.1:{port}>\r\n\
             Expires: 600\r\n",
            ibephone::sip::random_token(8)
        );
        if let Some(a) = auth {
            m.push_str(&format!("Authorization: {a}\r\n"));
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        sock.send_to(m.as_bytes(), proxy).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).unwrap();
            let r = Message::parse(&buf[..n]).unwrap();
            if r.status() != Some(100) {
                return r;
            }
        }
    };
    let r = send(1, None);
    assert_eq!(r.status(), Some(401));
    let ch = Challenge::best(r.header_values("WWW-Authenticate")).unwrap();
    let a = ch.answer(
        "carol",
        &Password::new("carol-pw"),
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        1,
        "carolcnonce",
    );
    assert_eq!(send(2, Some(a)).status(), Some(200), "carol registered");
}

/// The received-audio dump sndfile wrote (`dump-*-dec.wav`), if any.
fn dump(dir: &Path, kind: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("dump-") && n.ends_with(&format!("{kind}.wav")))
        })
}

/// The part of `src` a recording of `rec.len()` samples can hold (the
/// call may end before the source does), less 200 ms for the latency.
fn played<'a>(src: &'a [i16], rec: &[i16]) -> &'a [i16] {
    &src[..src.len().min(rec.len().saturating_sub(1600))]
}

/// Collects a child's stdout and stderr on threads.
fn collect(child: &mut Child) -> Arc<Mutex<String>> {
    use std::io::Read;
    let log = Arc::new(Mutex::new(String::new()));
    let out: Vec<Box<dyn Read + Send>> = vec![
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for mut r in out {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    log
}

/// baresip on configuration `conf`, quitting after `secs` (`-t`), with
/// `args` of its own; its output collected.
fn baresip(conf: &Path, secs: u32, args: &[String]) -> (Child, Arc<Mutex<String>>) {
    let mut child = Command::new("baresip")
        .arg("-f")
        .arg(conf)
        .args(args)
        .args(["-n", "127.0.0.1", "-t", &secs.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baresip must be installed when IBEPHONE_TEST_BARESIP=1");
    let log = collect(&mut child);
    (child, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_ibephone_with_sdes_srtp() {
    if !gate("IBEPHONE_TEST_BARESIP", "baresip") {
        return;
    }
    let _one = crate::ONE_CALL.lock().await;
    let s = setup().await;
    let mut alice = s.alice().await;
    let (baresip, log, call, started) = s.baresip_dials_alice(&mut alice, "PCMU,PCMA").await;
    let AgentEvent::MediaStarted {
        cipher,
        escrow_resistant,
        sas,
        ..
    } = started
    else {
        unreachable!()
    };
    assert_eq!(cipher, "AES_CM_128_HMAC_SHA1_80");
    assert!(!escrow_resistant);
    assert_eq!(sas, None);
    let notice = WAIT
        .event(&mut alice, "notice", |e| {
            matches!(e, AgentEvent::MediaNotice { .. })
        })
        .await;
    assert!(
        matches!(&notice, AgentEvent::MediaNotice { message, .. } if message.contains("not escrow-resistant")),
        "{notice:?}"
    );
    let stopped = s.hang_up_when_played(&mut alice, call).await;
    s.check(baresip, log, &stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ibephone_calls_baresip_plain() {
    if !gate("IBEPHONE_TEST_BARESIP", "baresip") {
        return;
    }
    let _one = crate::ONE_CALL.lock().await;
    let s = setup().await;
    let conf = baresip_dir(s.dir.path(), s.provider.addr, &s.c_in, true);
    let port: u16 = std::fs::read_to_string(conf.join("sip_port"))
        .unwrap()
        .parse()
        .unwrap();
    register_carol(s.provider.addr, port);
    let (baresip, log) = baresip(&conf, 30, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !log.lock().unwrap().contains("baresip is ready") {
        assert!(
            std::time::Instant::now() < deadline,
            "baresip did not start: {}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut alice = s.alice().await;
    send(
        &mut alice,
        AgentCommand::Call {
            to: format!("sip:carol@127.0.0.1:{port}"),
        },
    )
    .await;
    let fallback = WAIT
        .event(&mut alice, "fallback", |e| {
            matches!(
                e,
                AgentEvent::PlainFallback { .. } | AgentEvent::Ended { .. }
            )
        })
        .await;
    assert!(
        matches!(&fallback, AgentEvent::PlainFallback { call: c, needs_consent: false, reason, .. }
            if *c == 1 && reason.contains("no public parameters")),
        "{fallback:?}"
    );
    let call = 1;
    let retry = WAIT
        .event(&mut alice, "calling plain", |e| {
            matches!(e, AgentEvent::Calling { .. } | AgentEvent::Ended { .. })
        })
        .await;
    assert!(
        matches!(retry, AgentEvent::Calling { call: c, tunneled: false, .. } if c == call),
        "{retry:?}"
    );
    let answered = WAIT
        .event(&mut alice, "answered", |e| {
            matches!(e, AgentEvent::Answered { .. } | AgentEvent::Ended { .. })
        })
        .await;
    assert!(
        matches!(answered, AgentEvent::Answered { call: c, verified: None, tunneled: false } if c == call),
        "{answered:?}"
    );
    let started = WAIT
        .event(&mut alice, "media", |e| {
            matches!(
                e,
                AgentEvent::MediaStarted { .. } | AgentEvent::Ended { .. }
            )
        })
        .await;
    let AgentEvent::MediaStarted {
        cipher,
        escrow_resistant,
        sas,
        ..
    } = started
    else {
        panic!("{started:?}")
    };
    // baresip takes our first suite it knows (we offer GCM first).
    assert_eq!(cipher, "AEAD_AES_128_GCM");
    assert!(!escrow_resistant);
    assert_eq!(sas, None);
    let stopped = s.hang_up_when_played(&mut alice, call).await;
    s.check(baresip, log, &stopped).await;
}

/// baresip calls with Opus only: the answer takes Opus (baresip's payload
/// type and `opus/48000/2`), SDES SRTP, and the syllables come through both
/// ways (thresholds [`OPUS`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_ibephone_with_opus() {
    if !gate("IBEPHONE_TEST_BARESIP", "baresip") {
        return;
    }
    let _one = crate::ONE_CALL.lock().await;
    let s = setup().await;
    let mut alice = s.alice().await;
    // baresip names its mono Opus codec `opus/48000/1` (the SDP says /2).
    let (baresip, log, call, started) = s.baresip_dials_alice(&mut alice, "opus/48000/1").await;
    assert!(
        matches!(&started, AgentEvent::MediaStarted { codec, cipher, escrow_resistant: false, .. }
            if codec == "opus" && cipher == "AES_CM_128_HMAC_SHA1_80"),
        "{started:?}"
    );
    let stopped = s.hang_up_when_played(&mut alice, call).await;
    let said = log.lock().unwrap().clone();
    assert!(
        said.contains("Set audio encoder: opus"),
        "baresip encodes Opus"
    );
    s.check_with(baresip, log, &stopped, OPUS).await;
}
