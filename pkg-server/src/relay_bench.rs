//! `pkg-admin relay-bench`: N concurrent relayed "calls" through a running
//! TURN server (the embedded one or coturn): each call is two TURN
//! clients, each with an allocation, sending a 172-byte packet (PCMU RTP
//! size) every 20 ms to the other's relayed address through channels.
//! Prints relayed packets per second, the relay process's CPU time (from
//! `/proc/PID/stat`), packets per CPU-second ("per core"), loss and the
//! one-way latency through the relay (sender and receiver share a clock).
//!
//! Credentials are made from the shared secret exactly as
//! `POST /v1/turn-credentials` makes them, so one run can drive both the
//! embedded relay and a coturn with the same `static-auth-secret`.

use crate::turn::credentials::{username, SharedSecret};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

/// What to run.
#[derive(Debug, Clone)]
pub struct RelayBenchOptions {
    /// The relay (UDP).
    pub relay: SocketAddr,
    /// The shared secret.
    pub secret: SharedSecret,
    /// Account name in the credentials.
    pub user: String,
    /// Concurrent calls (two allocations each).
    pub calls: usize,
    /// Measured time.
    pub duration: Duration,
    /// Process id of the relay, for its CPU time (Linux `/proc`).
    pub pid: Option<u32>,
    /// Label printed with the figures.
    pub label: String,
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct RelayFigures {
    /// Packets relayed (received by the far side) per second.
    pub pps: f64,
    /// Relay CPU seconds per wall second (1.0 = one core busy).
    pub cores: Option<f64>,
    /// Packets per relay CPU-second.
    pub pps_per_core: Option<f64>,
    /// Share of packets sent that were not received.
    pub loss: f64,
    /// One-way latency through the relay, median and 99th percentile, ms.
    pub latency_ms: (f64, f64),
}

const PACKET: usize = 172;
const PTIME: Duration = Duration::from_millis(20);

/// utime + stime of `pid` in seconds (USER_HZ = 100 on Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

async fn allocate(o: &RelayBenchOptions) -> anyhow::Result<(Client, impl Conn)> {
    let name = username(crate::http::now_unix().max(0) as u64 + 3600, &o.user);
    let password = o.secret.password(&name);
    let conn = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
    let c = Client::new(ClientConfig {
        stun_serv_addr: o.relay.to_string(),
        turn_serv_addr: o.relay.to_string(),
        username: name,
        password: password.to_string(),
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await?;
    c.listen().await?;
    let r = c.allocate().await?;
    Ok((c, r))
}

/// Runs the bench and prints one line of figures.
pub async fn run(o: RelayBenchOptions) -> anyhow::Result<RelayFigures> {
    let mut legs = Vec::new();
    for _ in 0..o.calls {
        let a = allocate(&o).await?;
        let b = allocate(&o).await?;
        legs.push((a, b));
    }
    let t0 = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    let mut clients = Vec::new();
    for ((ca, ra), (cb, rb)) in legs {
        let (ra, rb) = (Arc::new(ra), Arc::new(rb));
        let (aa, ab) = (ra.local_addr()?, rb.local_addr()?);
        // Permissions and channels both ways before the clock starts.
        for _ in 0..3 {
            ra.send_to(&[0u8; PACKET], ab).await?;
            rb.send_to(&[0u8; PACKET], aa).await?;
        }
        for (me, peer) in [(ra.clone(), ab), (rb.clone(), aa)] {
            let (sent, measuring) = (sent.clone(), measuring.clone());
            let stop = stop.clone();
            let tx = me.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(PTIME);
                let mut pkt = [0u8; PACKET];
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.notified() => break,
                    }
                    let on = measuring.load(Ordering::Relaxed);
                    pkt[0] = u8::from(on);
                    let ns = t0.elapsed().as_nanos() as u64;
                    pkt[1..9].copy_from_slice(&ns.to_be_bytes());
                    if tx.send_to(&pkt, peer).await.is_ok() && on {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
            let (received, latencies) = (received.clone(), latencies.clone());
            let rx = me;
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while let Ok((n, _)) = rx.recv_from(&mut buf).await {
                    if n == PACKET && buf[0] == 1 {
                        let mut ns = [0u8; 8];
                        ns.copy_from_slice(&buf[1..9]);
                        let dt =
                            (t0.elapsed().as_nanos() as u64).saturating_sub(u64::from_be_bytes(ns));
                        received.fetch_add(1, Ordering::Relaxed);
                        latencies.lock().unwrap_or_else(|p| p.into_inner()).push(dt);
                    }
                }
            }));
        }
        clients.push((ca, cb, ra, rb));
    }
    // Warm up (channel bindings complete), then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = o.pid.and_then(cpu_seconds);
    let start = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(o.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let wall = start.elapsed().as_secs_f64();
    let cpu1 = o.pid.and_then(cpu_seconds);
    // Let the last packets arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.notify_waiters();
    for (ca, cb, ra, rb) in &clients {
        let _ = ra.close().await;
        let _ = rb.close().await;
        let _ = ca.close().await;
        let _ = cb.close().await;
    }
    for t in tasks {
        t.abort();
    }
    let sent = sent.load(Ordering::Relaxed) as f64;
    let received = received.load(Ordering::Relaxed) as f64;
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_unstable();
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q) as usize)
            .map_or(0.0, |ns| *ns as f64 / 1e6)
    };
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let f = RelayFigures {
        pps: received / wall,
        cores: cpu.map(|c| c / wall),
        pps_per_core: cpu.filter(|c| *c > 0.0).map(|c| received / c),
        loss: if sent > 0.0 {
            1.0 - received / sent
        } else {
            0.0
        },
        latency_ms: (pick(0.5), pick(0.99)),
    };
    println!(
        "RELAY-BENCH label={} calls={} pps={:.0} cpu_cores={} pps_per_core={} loss={:.4} latency_p50_ms={:.3} latency_p99_ms={:.3}",
        o.label,
        o.calls,
        f.pps,
        f.cores.map_or("n/a".into(), |c| format!("{c:.3}")),
        f.pps_per_core.map_or("n/a".into(), |c| format!("{c:.0}")),
        f.loss,
        f.latency_ms.0,
        f.latency_ms.1,
    );
    Ok(f)
}
