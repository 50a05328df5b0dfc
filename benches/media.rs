//! One call on loopback: alice plays a WAV, bob records one; prints CPU
//! per call (getrusage), jitter-buffer delay (mean, p99) and the
//! end-to-end (mouth-to-ear) latency from the WAVs, i.e. the offset of the
//! best cross-correlation.
//!
//! `cargo bench --bench media` runs 10 s of audio; `-- --secs 60` (or
//! `IBEPHONE_BENCH_SECS=60`) runs the 60 s call of issue 7.
//! Targets: < 5 % of one core per call (PCMU), mouth-to-ear < 150 ms.

use ibephone::media::audio::{read_wav, AudioSink, WavSink, WavSource};
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
    }
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
    )
    .expect("answer");
    let na = pending
        .accept_answer(&AudioDescription::parse(&ans.to_sdp()).expect("parse"))
        .expect("accept");
    let (atx, mut arx) = mpsc::unbounded_channel();
    let (btx, _brx) = mpsc::unbounded_channel();
    let rec = dir.join("bob-out.wav");
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let alice = MediaSession::start(
        sa,
        na,
        Box::new(WavSource::open(&src).expect("wav")),
        Box::new(WavSink::create(&dir.join("alice-out.wav")).expect("wav")),
        atx,
    )
    .expect("alice");
    let bob = MediaSession::start(
        sb,
        nb,
        Box::new(WavSource::from_samples(Vec::new())),
        Box::new(WavSink::create(&rec).expect("wav")),
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
    let recorded = read_wav(&rec).expect("wav");
    let (rho, lag, snr) = compare(&signal, &recorded, 4000);
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(call(secs, Codec::Pcmu, SrtpSuite::AesCm128HmacSha1_80));
    rt.block_on(call(secs, Codec::Pcma, SrtpSuite::AeadAes128Gcm));
}
