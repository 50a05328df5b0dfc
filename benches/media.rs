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
//! Then the processed path as a desktop phone runs it (voice processing
//! at both ends of a call): the mouth-to-ear latency of chirps through
//! an in-process SRTP call (`voice_latency`, wall-clock instants at the
//! microphone and the speaker), and the CPU of each agent process with
//! `--voice-processing-on-wav`. Targets: < 150 ms, < 5 % of one core.
//! `-- --voice` runs only these parts.
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

/// Two sockets on loopback and the negotiated media of a call between
/// them (alice offers, bob answers): `(alice socket, alice media, bob
/// socket, bob media)`.
async fn pair(
    codec: Codec,
    suite: SrtpSuite,
) -> (
    UdpSocket,
    ibephone::media::sdp::Negotiated,
    UdpSocket,
    ibephone::media::sdp::Negotiated,
) {
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
    (sa, na, sb, nb)
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
    let (sa, na, sb, nb) = pair(codec, suite).await;
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
        extra: &[&str],
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
            .args(extra)
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
/// A call between two agent processes; with `processed`, both run the
/// voice processing on their WAV files as on a sound card
/// (`--voice-processing-on-wav`): the figure of a desktop phone's call.
async fn agent_call(secs: f64, codec: Codec, processed: bool) {
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
    let extra: &[&str] = if processed {
        &["--voice-processing-on-wav"]
    } else {
        &[]
    };
    let mut alice = AgentProcess::spawn(
        &agent_config(&dir, "alice", &msk, &params, proxy.addr),
        &src,
        &dir.join("alice-out.wav"),
        codec,
        extra,
    );
    let mut bob = AgentProcess::spawn(
        &agent_config(&dir, "bob", &msk, &params, proxy.addr),
        &silence,
        &rec,
        codec,
        extra,
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
        "agent processes, {codec:?} AEAD_AES_128_GCM {secs:.0} s, voice processing {}: CPU alice {:.2} % bob {:.2} % of one core (user+sys per process), jitter buffer mean {} ms p99 {} ms, mouth-to-ear {:.1} ms, rho {rho:.4}, SNR {snr:.1} dB",
        if processed { "on (AEC+NS+AGC)" } else { "off" },
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

/// A 40 ms linear chirp (300 to 3000 Hz, Hann window, peak 8000) at
/// `rate`: the mark whose travel the latency measure times.
#[cfg(feature = "voice-processing")]
fn chirp(rate: u32) -> Vec<i16> {
    let n = rate as usize / 25;
    let (f0, f1, d) = (300.0, 3000.0, n as f64 / f64::from(rate));
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let phase = 2.0 * std::f64::consts::PI * (f0 * t + (f1 - f0) * t * t / (2.0 * d));
            let w = 0.5 * (1.0 - (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos());
            (8000.0 * w * phase.sin()) as i16
        })
        .collect()
}

/// The microphone of the latency measure: its samples, and the instant
/// each 20 ms frame was taken (the frame's last sample is "spoken" then).
#[cfg(feature = "voice-processing")]
struct TimedSource {
    samples: Vec<i16>,
    pos: usize,
    reads: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
}

#[cfg(feature = "voice-processing")]
impl ibephone::media::audio::AudioSource for TimedSource {
    fn read_frame(
        &mut self,
        frame: &mut [i16],
    ) -> Result<bool, ibephone::media::audio::AudioError> {
        frame.fill(0);
        let end = (self.pos + frame.len()).min(self.samples.len());
        if let (Some(src), Some(dst)) = (
            self.samples.get(self.pos..end),
            frame.get_mut(..end.saturating_sub(self.pos)),
        ) {
            dst.copy_from_slice(src);
        }
        self.pos += frame.len();
        if let Ok(mut r) = self.reads.lock() {
            r.push(Instant::now());
        }
        Ok(self.pos < self.samples.len())
    }

    fn sample_rate(&self) -> u32 {
        ibephone::media::voice::RATE
    }
}

/// The speaker of the latency measure: what it played, and the instant
/// each 20 ms frame was handed to it (its first sample plays then).
#[cfg(feature = "voice-processing")]
struct TimedSink {
    samples: std::sync::Arc<std::sync::Mutex<Vec<i16>>>,
    writes: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
}

#[cfg(feature = "voice-processing")]
impl AudioSink for TimedSink {
    fn write_frame(&mut self, frame: &[i16]) -> Result<(), ibephone::media::audio::AudioError> {
        if let (Ok(mut s), Ok(mut w)) = (self.samples.lock(), self.writes.lock()) {
            s.extend_from_slice(frame);
            w.push(Instant::now());
        }
        Ok(())
    }

    fn sample_rate(&self) -> u32 {
        ibephone::media::voice::RATE
    }

    fn finish(&mut self) -> Result<(), ibephone::media::audio::AudioError> {
        Ok(())
    }
}

/// Mouth-to-ear latency of one SRTP call on loopback with voice
/// processing on at both ends, as on a sound card: alice's microphone (a
/// [`TimedSource`] at 48 kHz) carries a chirp every second from the 2nd
/// second on (after the processors have settled); both ends' source and
/// sink are wrapped by their own `VoiceProcessor`, as the agent does for
/// a device; bob's speaker (a [`TimedSink`]) records what it is handed.
/// Each chirp is found in the recording by normalised cross-correlation
/// (within the second after it was spoken); its latency is the instant
/// its first sample was handed to bob's speaker minus the instant it
/// entered alice's microphone, from the frames' wall-clock instants and
/// the chirp's offsets inside them. Excluded: the sound devices' own
/// buffers (not present headless; typically 10-20 ms each way with
/// cpal's defaults). Prints the median, min and max over the chirps.
#[cfg(feature = "voice-processing")]
async fn voice_latency(secs: f64, codec: Codec) {
    use ibephone::media::quality::best_lag;
    use ibephone::media::voice::{VoiceProcessor, RATE};
    use std::sync::{Arc, Mutex};
    let rate = RATE as usize;
    let frame = rate / 50;
    let mark = chirp(RATE);
    let mut mic = vec![0i16; (secs * RATE as f64) as usize];
    let starts: Vec<usize> = (2..secs as usize).map(|s| s * rate).collect();
    for &s in &starts {
        for (m, &c) in mic.iter_mut().skip(s).zip(&mark) {
            *m = c;
        }
    }
    let reads = Arc::new(Mutex::new(Vec::new()));
    let (played, writes) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let (sa, na, sb, nb) = pair(codec, SrtpSuite::AeadAes128Gcm).await;
    let (atx, mut arx) = mpsc::unbounded_channel();
    let (btx, _brx) = mpsc::unbounded_channel();
    let (a_src, a_sink) = VoiceProcessor::new().expect("voice processor").wrap(
        Box::new(TimedSource {
            samples: mic,
            pos: 0,
            reads: reads.clone(),
        }),
        Box::new(ibephone::media::audio::DiscardSink),
    );
    let (b_src, b_sink) = VoiceProcessor::new().expect("voice processor").wrap(
        Box::new(ibephone::media::audio::SilenceSource),
        Box::new(TimedSink {
            samples: played.clone(),
            writes: writes.clone(),
        }),
    );
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let bob = MediaSession::start(sb, nb, b_src, b_sink, btx).expect("bob");
    let alice = MediaSession::start(sa, na, a_src, a_sink, atx).expect("alice");
    while let Some(ev) = arx.recv().await {
        if ev == MediaEvent::SourceEnded {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let _ = alice.stop().await.expect("alice");
    let _ = bob.stop().await.expect("bob");
    let cpu = cpu_time() - cpu0;
    let wall = t0.elapsed();
    let reads = reads.lock().expect("reads").clone();
    let writes = writes.lock().expect("writes").clone();
    let played: Vec<f64> = played
        .lock()
        .expect("played")
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let tpl: Vec<f64> = mark.iter().map(|&v| f64::from(v)).collect();
    let at = |n: usize| Duration::from_secs_f64(n as f64 / RATE as f64);
    let mut lat = Vec::new();
    let mut weak = 0;
    for &s in &starts {
        // Spoken: the frame holding sample s was read when its last
        // sample had been captured.
        let Some(&read) = reads.get(s / frame) else {
            continue;
        };
        let spoken = read - at(frame - s % frame);
        // Search the played frames handed over within the next second.
        let first = writes
            .iter()
            .position(|&w| w + at(frame) > spoken)
            .unwrap_or(writes.len());
        let last = writes
            .iter()
            .position(|&w| w > spoken + Duration::from_secs(1))
            .unwrap_or(writes.len());
        let (lo, hi) = (first * frame, (last * frame).min(played.len()));
        if hi <= lo + tpl.len() {
            continue;
        }
        let (rho, lag, _) = best_lag(&tpl, &played[lo..hi], 0..hi - lo - tpl.len());
        if rho < 0.5 {
            weak += 1;
            continue;
        }
        let d = lo + lag;
        let heard = writes[d / frame] + at(d % frame);
        lat.push(heard.saturating_duration_since(spoken).as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let median = lat.get(lat.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "voice-processed call {codec:?} AEAD_AES_128_GCM {secs:.0} s (AEC+NS+AGC at both ends, in process): \
         mouth-to-ear median {median:.1} ms, min {:.1} ms, max {:.1} ms over {} chirps ({weak} not found), \
         CPU {:.2} % of one core for both ends",
        lat.first().copied().unwrap_or(f64::NAN),
        lat.last().copied().unwrap_or(f64::NAN),
        lat.len(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
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
    let multi = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    };
    voice_call(&multi(), secs.max(4.0));
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
    let rt = multi();
    rt.block_on(agent_call(secs, Codec::Pcmu, false));
    rt.block_on(agent_call(secs, Codec::Opus, false));
}

/// The processed path's figures: mouth-to-ear latency in process, then
/// the CPU of each agent process with voice processing on.
#[cfg(feature = "voice-processing")]
fn voice_call(rt: &tokio::runtime::Runtime, secs: f64) {
    for codec in [Codec::Opus, Codec::Pcmu] {
        rt.block_on(voice_latency(secs, codec));
    }
    for codec in [Codec::Opus, Codec::Pcmu] {
        rt.block_on(agent_call(secs, codec, true));
    }
}

#[cfg(not(feature = "voice-processing"))]
fn voice_call(_rt: &tokio::runtime::Runtime, _secs: f64) {
    println!("voice-processed calls: not built (feature voice-processing)");
}
