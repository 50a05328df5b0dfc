//! One call on loopback: alice plays a WAV, bob records one; prints CPU
//! per call (getrusage), jitter-buffer delay (mean, p99) and the
//! end-to-end (mouth-to-ear) latency from the WAVs, i.e. the offset of the
//! best cross-correlation.
//!
//! `cargo bench --bench media` runs 10 s of audio; `-- --secs 60` (or
//! `IBEPHONE_BENCH_SECS=60`) runs the 60 s call of issue 7. The last run
//! is a call between two real `ibephone agent` processes (tunneled SIP,
//! `--audio-in`/`--audio-out` WAV files): it prints the CPU of each agent
//! process (user+sys from /proc) over the call.
//! Targets: < 5 % of one core per call (PCMU), mouth-to-ear < 150 ms.
//! First it runs the sound-card path's voice processing (echo
//! cancellation, noise suppression, gain control; `media::voice`) over
//! the same seconds of a far-end/near-end scene through a simulated echo
//! path, and prints its CPU as % of one core for one call (the agent
//! calls below read WAV files, so their processes run without it).
//! `-- --voice` runs only that part.
//! Opus calls run in the same way (in process and between agents) for
//! comparison; their audio runs at 48 kHz, and the recording is compared
//! at 8 kHz with what was sent through the same rate conversion (see
//! `tests/media/media_opus.rs` for why Opus's ρ and SNR are lower).
// A bench has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

use ibephone::media::audio::{convert_frame, read_wav_at, AudioSink, WavSink, WavSource};
use ibephone::media::keys::{Role, SrtpSuite};
use ibephone::media::quality::{compare, test_signal};
use ibephone::media::sdp::{
    answer, AudioDescription, Codec, Direction, LocalMedia, MediaKeysPolicy, PendingOffer,
    SecurityPolicy,
};
use ibephone::media::session::{MediaEvent, MediaSession};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full rusage into the pointer we own.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn local(addr: SocketAddr, codec: Codec, suite: SrtpSuite) -> LocalMedia {
    LocalMedia {
        rtp_addr: addr,
        codecs: vec![codec],
        suites: vec![suite],
        policy: SecurityPolicy::Require,
        media_keys: MediaKeysPolicy::EscrowResistant,
        direction: Direction::SendRecv,
        session_id: 1,
        session_version: 1,
        ice: None,
    }
}

/// A WAV file read at `rate` and brought to 8 kHz (a 6-sample mean from
/// 48 kHz), so that source and recording pass the same conversion.
fn at_8k(path: &std::path::Path, rate: u32) -> Vec<i16> {
    let s = read_wav_at(path, rate).expect("wav");
    let mut out = Vec::new();
    convert_frame(&s, s.len() * 8000 / rate as usize, &mut out);
    out
}

async fn call(secs: f64, codec: Codec, suite: SrtpSuite) {
    let dir = std::env::temp_dir().join(format!("ibephone-media-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let signal = test_signal(secs);
    let src = dir.join("alice-in.wav");
    let mut w = WavSink::create(&src).expect("wav");
    for f in signal.chunks(160) {
        let mut frame = f.to_vec();
        frame.resize(160, 0);
        w.write_frame(&frame).expect("wav");
    }
    w.finish().expect("wav");
    let sa = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let sb = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let pending = PendingOffer::new(
        local(sa.local_addr().expect("addr"), codec, suite),
        Role::Caller,
    )
    .expect("offer");
    let offer = AudioDescription::parse(&pending.offer().to_sdp()).expect("parse");
    let (ans, nb) = answer(
        &local(sb.local_addr().expect("addr"), codec, suite),
        Role::Callee,
        &offer,
        None,
    )
    .expect("answer");
    let reveal = pending.reveal();
    let na = pending
        .accept_answer(&AudioDescription::parse(&ans.to_sdp()).expect("parse"))
        .expect("accept");
    let nb = nb.finish(reveal.as_ref()).expect("reveal");
    let (atx, mut arx) = mpsc::unbounded_channel();
    let (btx, _brx) = mpsc::unbounded_channel();
    let rec = dir.join("bob-out.wav");
    let rate = codec.audio_rate();
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let alice = MediaSession::start(
        sa,
        na,
        Box::new(WavSource::open_at(&src, rate).expect("wav")),
        Box::new(WavSink::create_at(&dir.join("alice-out.wav"), rate).expect("wav")),
        atx,
    )
    .expect("alice");
    let bob = MediaSession::start(
        sb,
        nb,
        Box::new(WavSource::from_samples_at(Vec::new(), rate)),
        Box::new(WavSink::create_at(&rec, rate).expect("wav")),
        btx,
    )
    .expect("bob");
    while let Some(ev) = arx.recv().await {
        if ev == MediaEvent::SourceEnded {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = alice.stop().await.expect("alice");
    let stats = bob.stop().await.expect("bob");
    let wall = t0.elapsed();
    let cpu = cpu_time() - cpu0;
    let (rho, lag, snr) = compare(&at_8k(&src, rate), &at_8k(&rec, rate), 4000);
    println!(
        "media call {codec:?} {} {secs:.0} s: CPU {:.2} % of one core per call (both ends), jitter buffer delay mean {:.1} ms p99 {} ms, mouth-to-ear {:.1} ms (WAV cross-correlation), rho {rho:.4}, SNR {snr:.1} dB, concealed {} frames",
        suite.sdp_name(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        stats.jitter.mean_delay().as_secs_f64() * 1000.0,
        stats.jitter.p99_delay().as_millis(),
        lag as f64 / 8.0,
        stats.jitter.concealed,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// user+sys of process `pid` so far (Linux /proc).
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 1000 / hz)
}

struct AgentProcess {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    events: mpsc::UnboundedReceiver<serde_json::Value>,
}

impl AgentProcess {
    fn spawn(
        config: &std::path::Path,
        audio_in: &std::path::Path,
        audio_out: &std::path::Path,
        codec: Codec,
    ) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ibephone"))
            .arg("agent")
            .arg("--config")
            .arg(config)
            .arg("--audio-in")
            .arg(audio_in)
            .arg("--audio-out")
            .arg(audio_out)
            .arg("--codecs")
            .arg(codec.encoding_name().to_ascii_lowercase())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("ibephone agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        AgentProcess {
            stdin: child.stdin.take(),
            child,
            events,
        }
    }

    fn send(&mut self, cmd: serde_json::Value) {
        use std::io::Write;
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{cmd}");
            let _ = s.flush();
        }
    }

    async fn expect(&mut self, event: &str) -> serde_json::Value {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), self.events.recv()).await {
                Ok(Some(v)) if v["event"] == event => return v,
                Ok(Some(_)) => continue,
                other => panic!("waiting for {event}: {other:?}"),
            }
        }
    }
}

fn agent_config(
    dir: &std::path::Path,
    user: &str,
    msk: &ibephone::ibe::MasterSecret,
    params: &ibephone::ibe::PublicParams,
    proxy: SocketAddr,
) -> std::path::PathBuf {
    use ibephone::ibe::{extract, Aor, Identity, Period};
    use std::io::Write;
    let domain = params.domain().to_string();
    let aor = Aor::parse(&format!("sip:{user}@{domain}")).expect("aor");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let keys = vec![extract(msk, &Identity::new(aor, Period::month_at(now)))];
    ibephone::agent::config::write_key_file(&dir.join(format!("{user}.keys")), params, &[], &keys)
        .expect("key file");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(dir.join(format!("{user}.pw")))
        .and_then(|mut f| f.write_all(format!("{user}-pw").as_bytes()))
        .expect("password file");
    let path = dir.join(format!("{user}.toml"));
    std::fs::write(
        &path,
        format!(
            "[account]\naor = \"sip:{user}@{domain}\"\npassword_file = \"{user}.pw\"\n\
             [sip]\nlisten = \"127.0.0.1:0\"\nproxy = \"{proxy}\"\n[keys]\nfile = \"{user}.keys\"\n"
        ),
    )
    .expect("config");
    path
}

/// One call between two `ibephone agent` processes; prints each one's CPU.
async fn agent_call(secs: f64, codec: Codec) {
    use serde_json::json;
    let dir = std::env::temp_dir().join(format!("ibephone-agent-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let msk = ibephone::ibe::MasterSecret::generate().expect("msk");
    let params =
        ibephone::ibe::PublicParams::new("bench.invalid", msk.p_pub(), "https://127.0.0.1:8443")
            .expect("params");
    let proxy = ibephone::sip::driver::spawn_proxy(
        "127.0.0.1:0".parse().expect("addr"),
        "bench.invalid",
        &[("alice", "alice-pw"), ("bob", "bob-pw")],
    )
    .await
    .expect("proxy");
    let signal = test_signal(secs);
    let (src, silence) = (dir.join("src.wav"), dir.join("silence.wav"));
    for (p, s) in [(&src, &signal[..]), (&silence, &[][..])] {
        let mut w = WavSink::create(p).expect("wav");
        for f in s.chunks(160) {
            let mut frame = f.to_vec();
            frame.resize(160, 0);
            w.write_frame(&frame).expect("wav");
        }
        w.finish().expect("wav");
    }
    let rec = dir.join("bob-out.wav");
    let mut alice = AgentProcess::spawn(
        &agent_config(&dir, "alice", &msk, &params, proxy.addr),
        &src,
        &dir.join("alice-out.wav"),
        codec,
    );
    let mut bob = AgentProcess::spawn(
        &agent_config(&dir, "bob", &msk, &params, proxy.addr),
        &silence,
        &rec,
        codec,
    );
    for a in [&mut alice, &mut bob] {
        a.send(json!({"cmd": "register"}));
        a.expect("registered").await;
    }
    alice.send(json!({"cmd": "call", "to": "bob"}));
    let call = alice.expect("calling").await["call"].clone();
    let incoming = bob.expect("incoming_call").await;
    bob.send(json!({"cmd": "answer", "call": incoming["call"]}));
    alice.expect("media_started").await;
    bob.expect("media_started").await;
    let (ca0, cb0, t0) = (
        process_cpu(alice.child.id()),
        process_cpu(bob.child.id()),
        Instant::now(),
    );
    alice.expect("audio_source_ended").await;
    let wall = t0.elapsed();
    let (ca, cb) = (
        process_cpu(alice.child.id()) - ca0,
        process_cpu(bob.child.id()) - cb0,
    );
    alice.send(json!({"cmd": "hangup", "call": call}));
    let stopped = bob.expect("media_stopped").await;
    for a in [&mut alice, &mut bob] {
        a.stdin.take();
        let _ = a.child.wait();
    }
    let rate = codec.audio_rate();
    let (rho, lag, snr) = compare(&at_8k(&src, rate), &at_8k(&rec, rate), 8000);
    println!(
        "agent processes, {codec:?} AEAD_AES_128_GCM {secs:.0} s: CPU alice {:.2} % bob {:.2} % of one core (user+sys per process), jitter buffer mean {} ms p99 {} ms, mouth-to-ear {:.1} ms, rho {rho:.4}, SNR {snr:.1} dB",
        100.0 * ca.as_secs_f64() / wall.as_secs_f64(),
        100.0 * cb.as_secs_f64() / wall.as_secs_f64(),
        stopped["stats"]["jitter_mean_ms"],
        stopped["stats"]["jitter_p99_ms"],
        lag as f64 / 8.0,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPU of the voice processor for `secs` of one call: far end and
/// microphone (its echo plus a near-end talker) at 48 kHz, 10 ms frames.
#[cfg(feature = "voice-processing")]
fn voice_processing(secs: f64) {
    use ibephone::media::audio::Resampler;
    use ibephone::media::quality::{erle_db, EchoPath};
    use ibephone::media::voice::{VoiceProcessor, RATE};
    let to_48k = |s: &[i16]| {
        let f: Vec<f32> = s.iter().map(|&v| f32::from(v)).collect();
        let mut out = Vec::new();
        Resampler::new(8000, RATE).process(&f, &mut out);
        out.iter().map(|&v| v as i16).collect::<Vec<i16>>()
    };
    let far = to_48k(&test_signal(secs));
    let half = far.len() / 2;
    let mut near = vec![0i16; half];
    near.extend(
        to_48k(&test_signal(secs))
            .iter()
            .rev()
            .take(far.len() - half)
            .map(|&v| v / 2),
    );
    let path = EchoPath::laptop(RATE);
    let mic = path.microphone(&far, &near);
    let mut p = VoiceProcessor::new().expect("voice processor");
    let t0 = cpu_time();
    let out = p.process_recording(&far, &mic).expect("processing");
    let cpu = cpu_time() - t0;
    let audio = far.len() as f64 / f64::from(RATE);
    let frames = (far.len() / 480) as f64;
    let from = RATE as usize * 2;
    println!(
        "voice processing (AEC+NS+AGC, 48 kHz): {audio:.0} s of a call in {:.3} s CPU: \
         {:.0} frames of 10 ms per CPU-second, {:.2} % of one core per call; \
         ERLE {:.1} dB (far end alone, from 2 s)",
        cpu.as_secs_f64(),
        frames / cpu.as_secs_f64().max(1e-9),
        100.0 * cpu.as_secs_f64() / audio,
        erle_db(&mic[from..half], &out[from..half]),
    );
}

#[cfg(not(feature = "voice-processing"))]
fn voice_processing(_secs: f64) {
    println!("voice processing: not built (feature voice-processing)");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .or_else(|| std::env::var("IBEPHONE_BENCH_SECS").ok())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(10.0);
    voice_processing(secs.max(4.0));
    if args.iter().any(|a| a == "--voice") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(call(secs, Codec::Pcmu, SrtpSuite::AesCm128HmacSha1_80));
    rt.block_on(call(secs, Codec::Pcma, SrtpSuite::AeadAes128Gcm));
    rt.block_on(call(secs, Codec::Opus, SrtpSuite::AeadAes128Gcm));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(agent_call(secs, Codec::Pcmu));
    rt.block_on(agent_call(secs, Codec::Opus));
}
