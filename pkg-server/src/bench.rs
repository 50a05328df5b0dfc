//! `pkg-admin bench`: drives N concurrent users against a running PKG
//! (log in, fetch the previous/current/next keys, log out) and prints
//! throughput and latency percentiles; then measures key issuance
//! throughput with logged-in sessions and compares it with
//! `cores / single extract time` measured in the same run.
//!
//! The load generator does not run `check_key` on what it receives (that
//! costs more CPU than the extraction and would be charged to the server
//! on a shared machine); the integration tests check keys.

use crate::http::period_window;
use ibephone::ibe::{extract, setup, Aor, Identity, Period};
use ibephone::pkg_client::api::SecretString;
use ibephone::pkg_client::PkgClient;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Pinned certificate (None: trust on first use).
    pub pin: Option<[u8; 32]>,
    /// Number of concurrent users `bench-0` ... `bench-{N-1}`.
    pub users: usize,
    /// Their password.
    pub password: SecretString,
    /// Start times spread over this long (0: all at once).
    pub ramp: Duration,
    /// Key requests (3 keys each) in the issuance phase.
    pub key_requests: usize,
}

/// p50 and p99 of a list of durations, in milliseconds.
pub fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    v.sort();
    let at = |p: f64| {
        let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99))
}

/// Mean time of one `extract` (both keys of one identity) on this machine.
pub fn single_extract_time(samples: usize) -> anyhow::Result<Duration> {
    let (msk, _) = setup("bench.invalid", "https://pkg.bench.invalid")?;
    let aor = Aor::parse("sip:bench@bench.invalid")?;
    let p = Period::month("2026-11")?;
    let _ = extract(&msk, &Identity::new(aor.clone(), p.clone()));
    let t0 = Instant::now();
    for i in 0..samples {
        let a = Aor::parse(&format!("sip:bench{i}@bench.invalid"))?;
        let _ = extract(&msk, &Identity::new(a, p.clone()));
    }
    Ok(t0.elapsed() / samples.max(1) as u32)
}

/// Runs the benchmark and prints the report.
pub async fn run(opts: BenchOptions) -> anyhow::Result<()> {
    let client = PkgClient::new(&opts.url, opts.pin)?;
    client.health().await?;
    let now = crate::http::now_unix();
    let periods: Arc<Vec<Period>> = Arc::new(period_window(now));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Phase 1: N users, each one cycle.
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(opts.users);
    for i in 0..opts.users {
        let client = client.clone();
        let periods = periods.clone();
        let pw = opts.password.clone();
        let delay = if opts.users > 1 {
            opts.ramp.mul_f64(i as f64 / (opts.users - 1) as f64)
        } else {
            Duration::ZERO
        };
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let start = Instant::now();
            let s = client.login(&format!("bench-{i}"), &pw).await?;
            let t_login = start.elapsed();
            let k0 = Instant::now();
            let r = client.fetch_key_entries(&s, &periods).await?;
            let t_keys = k0.elapsed();
            anyhow::ensure!(r.keys.len() == periods.len(), "wrong number of keys");
            let l0 = Instant::now();
            client.logout(&s).await?;
            let t_logout = l0.elapsed();
            Ok::<_, anyhow::Error>((t_login, t_keys, t_logout, start.elapsed()))
        }));
    }
    let (mut logins, mut keys, mut logouts, mut cycles) = (vec![], vec![], vec![], vec![]);
    let mut errors = 0usize;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok((a, b, c, d))) => {
                logins.push(a);
                keys.push(b);
                logouts.push(c);
                cycles.push(d);
            }
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let wall = t0.elapsed();
    let mut all: Vec<Duration> = Vec::new();
    all.extend(&logins);
    all.extend(&keys);
    all.extend(&logouts);
    println!(
        "users: {}  errors: {}  wall: {:.2} s  ramp: {:.1} s",
        opts.users,
        errors,
        wall.as_secs_f64(),
        opts.ramp.as_secs_f64()
    );
    if let Some(e) = first_error {
        println!("first error: {e}");
    }
    println!(
        "throughput: {:.1} user cycles/s, {:.1} requests/s",
        cycles.len() as f64 / wall.as_secs_f64(),
        all.len() as f64 / wall.as_secs_f64()
    );
    for (name, v) in [
        ("login", logins),
        ("keys(3)", keys),
        ("logout", logouts),
        ("all requests", all),
        ("cycle", cycles),
    ] {
        let (p50, p99) = percentiles(v);
        println!("{name:>13}: p50 {p50:8.1} ms  p99 {p99:8.1} ms");
    }

    // Phase 2: key issuance throughput with live sessions.
    if opts.key_requests > 0 {
        let workers = (cores * 4).min(opts.users.max(1));
        let mut sessions = Vec::new();
        for i in 0..workers {
            sessions.push(client.login(&format!("bench-{i}"), &opts.password).await?);
        }
        let per = opts.key_requests.div_ceil(workers);
        let t1 = Instant::now();
        let mut tasks = Vec::new();
        for s in sessions.clone() {
            let client = client.clone();
            let periods = periods.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0usize;
                for _ in 0..per {
                    n += client.fetch_key_entries(&s, &periods).await?.keys.len();
                }
                Ok::<_, anyhow::Error>(n)
            }));
        }
        let mut issued = 0usize;
        for t in tasks {
            issued += t.await??;
        }
        let dt = t1.elapsed();
        for s in &sessions {
            let _ = client.logout(s).await;
        }
        let t_extract = single_extract_time(50)?;
        let ideal = cores as f64 / t_extract.as_secs_f64();
        let got = issued as f64 / dt.as_secs_f64();
        println!(
            "issuance: {issued} keys in {:.2} s = {got:.1} keys/s; single extract {:.2} ms, cores {cores}, ideal {ideal:.1} keys/s; ratio {:.0}%",
            dt.as_secs_f64(),
            t_extract.as_secs_f64() * 1000.0,
            100.0 * got / ideal
        );
    }
    Ok(())
}
