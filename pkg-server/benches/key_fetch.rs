//! Issue 16's figure: the time a phone takes to fetch its keys from one
//! PKG against a 2-of-3 threshold provider, measured side by side in one
//! run over loopback with real `pkg-server` processes (target: threshold
//! <= 2x one PKG).
//!
//! Each round fetches once with each variant, in alternating order, as the
//! phone does: log in (Argon2id on the server), fetch the previous,
//! current and next period's keys; the time is the time to checked keys
//! (logouts go on in the background in every variant). For the threshold
//! provider that is every server at once, checking each share and
//! combining the first 2 good ones. Variants:
//! - one PKG;
//! - 2-of-3, first login: the phone also derives the three per-server
//!   login secrets (Argon2id each);
//! - 2-of-3, login secrets kept (every later fetch: renewal, restart);
//! - 2-of-3, login secrets kept, waiting for all three servers (what the
//!   phone did before it returned at the second good share).
//!
//! Every server runs its production Argon2id cost (the configuration's
//! defaults), so the ratio is what a user sees.
//!
//! Run: `cargo bench -p pkg-server --bench key_fetch --profile dev`
//! (`-- ROUNDS`, default 15). Prints medians, the ratios and the phone's
//! own steps timed alone.
// A bench has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]
#![cfg(unix)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{free_port, Pkg, Server, ALICE_PW, DOMAIN};
use ibephone::ibe::PublicParams;
use ibephone::pkg_client::api::SecretString;
use ibephone::pkg_client::threshold::{
    fetch_threshold_keys, fetch_threshold_keys_with_secrets, login_secrets,
};
use std::time::{Duration, Instant};

/// A server directory with the production Argon2id cost (no `[argon2]`
/// section) listening on `port`.
fn server_dir(port: u16) -> Pkg {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("pkg.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\npkg_url = \"https://127.0.0.1:{port}\"\n",
            dir.path().display()
        ),
    )
    .expect("config written");
    Pkg {
        dir,
        config,
        init_stdout: String::new(),
    }
}

fn single() -> Pkg {
    let pkg = server_dir(free_port());
    pkg.admin_ok(&["init", "--domain", DOMAIN], "");
    pkg.admin_ok(&["user", "add", "alice"], &format!("{ALICE_PW}\n"));
    pkg
}

fn two_of_three() -> Vec<Pkg> {
    let pkgs: Vec<Pkg> = (0..3).map(|_| server_dir(free_port())).collect();
    common::deal_2_of_3(&pkgs);
    for p in &pkgs {
        p.admin_ok(&["user", "add", "alice"], &format!("{ALICE_PW}\n"));
    }
    pkgs
}

fn no_otp(_: u32) -> Option<SecretString> {
    None
}

async fn fetch_single(server: &Server, params: &PublicParams) {
    let client = server.client();
    let session = client
        .login("alice", &ALICE_PW.into())
        .await
        .expect("login");
    let keys = client
        .fetch_keys(&session, params, &common::window())
        .await
        .expect("keys");
    assert_eq!(keys.len(), 3);
    tokio::spawn(async move {
        let _ = client.logout(&session).await;
    });
}

/// This process's CPU time so far (user + system, Linux `/proc/self/stat`,
/// clock ticks of 10 ms): the phone's own work, whatever the servers on the
/// same cores do.
fn cpu() -> Duration {
    cpu_of("self")
}

/// The CPU time so far of process `pid` ("self": this one).
fn cpu_of(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name in parentheses: utime is the 12th,
    // stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// Runs `f`, adding its wall time to `wall` and the process's CPU time to
/// `cpu_total`.
async fn timed<F: std::future::Future<Output = ()>>(
    wall: &mut Vec<Duration>,
    cpu_total: &mut Duration,
    f: F,
) {
    let (t0, c0) = (Instant::now(), cpu());
    f.await;
    wall.push(t0.elapsed());
    *cpu_total += cpu().saturating_sub(c0);
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(15);
    let one = single();
    let one = one.start();
    let three = two_of_three();
    let servers: Vec<Server> = three.iter().map(Pkg::start).collect();
    let one_params = one.client().params().await.expect("params");
    let t_params = servers[0].client().params().await.expect("params");
    let password: SecretString = ALICE_PW.into();
    let secrets = login_secrets(&t_params, &password).expect("login secrets");
    let periods = common::window();

    let (mut single_t, mut threshold_t, mut given_t, mut all_t) = (vec![], vec![], vec![], vec![]);
    let (mut single_cpu, mut threshold_cpu, mut given_cpu, mut all_cpu) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let threshold = || async {
        let (_, keys) = fetch_threshold_keys(&t_params, "alice", &password, &no_otp, &periods)
            .await
            .expect("threshold keys");
        assert_eq!(keys.keys.len(), 3);
    };
    let given = || async {
        let (_, keys) =
            fetch_threshold_keys_with_secrets(&t_params, "alice", &secrets, &no_otp, &periods)
                .await
                .expect("threshold keys");
        assert_eq!(keys.keys.len(), 3);
    };
    let all_three = || async {
        let (_, keys) =
            fetch_threshold_keys_with_secrets(&t_params, "alice", &secrets, &no_otp, &periods)
                .await
                .expect("threshold keys");
        assert_eq!(keys.keys.len(), 3);
        let mut late = keys.late;
        while late.recv().await.is_some() {}
    };
    let servers_cpu =
        |s: &[&Server]| -> Duration { s.iter().map(|s| cpu_of(&s.pid().to_string())).sum() };
    let three_refs: Vec<&Server> = servers.iter().collect();
    // One warm-up of each (page cache, first connections).
    fetch_single(&one, &one_params).await;
    threshold().await;
    let (one0, three0) = (servers_cpu(&[&one]), servers_cpu(&three_refs));
    for round in 0..rounds {
        // Alternate the order so that neither always runs first.
        if round % 2 == 0 {
            timed(
                &mut single_t,
                &mut single_cpu,
                fetch_single(&one, &one_params),
            )
            .await;
            timed(&mut threshold_t, &mut threshold_cpu, threshold()).await;
            timed(&mut given_t, &mut given_cpu, given()).await;
            timed(&mut all_t, &mut all_cpu, all_three()).await;
        } else {
            timed(&mut all_t, &mut all_cpu, all_three()).await;
            timed(&mut given_t, &mut given_cpu, given()).await;
            timed(&mut threshold_t, &mut threshold_cpu, threshold()).await;
            timed(
                &mut single_t,
                &mut single_cpu,
                fetch_single(&one, &one_params),
            )
            .await;
        }
    }
    // Logouts finish in the background: let them before reading the servers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let one_server_cpu = servers_cpu(&[&one]).saturating_sub(one0);
    let three_server_cpu = servers_cpu(&three_refs).saturating_sub(three0);
    let s = median(&mut single_t);
    let t = median(&mut threshold_t);
    let g = median(&mut given_t);
    let a = median(&mut all_t);
    let per = |c: Duration| ms(c) / rounds as f64;
    println!(
        "key fetch over loopback, {rounds} rounds interleaved, medians (production Argon2id):"
    );
    println!(
        "  one PKG                          {:8.1} ms              phone CPU {:6.1} ms",
        ms(s),
        per(single_cpu)
    );
    println!(
        "  2-of-3, first login (derives)    {:8.1} ms  {:.2}x one PKG  phone CPU {:6.1} ms",
        ms(t),
        ms(t) / ms(s),
        per(threshold_cpu),
    );
    println!(
        "  2-of-3, login secrets kept       {:8.1} ms  {:.2}x one PKG  phone CPU {:6.1} ms  target <= 2x  {}",
        ms(g),
        ms(g) / ms(s),
        per(given_cpu),
        if ms(g) / ms(s) <= 2.0 { "ok" } else { "MISSED" }
    );
    println!(
        "  2-of-3, kept, waits for all 3    {:8.1} ms  {:.2}x one PKG  phone CPU {:6.1} ms",
        ms(a),
        ms(a) / ms(s),
        per(all_cpu)
    );
    println!(
        "  (the three servers, the single PKG and the phone share this machine's {} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    // Each round asks the one PKG once and the three servers three times.
    println!(
        "servers' CPU per fetch: one PKG {:.1} ms; the three threshold servers together {:.1} ms",
        per(one_server_cpu),
        per(three_server_cpu) / 3.0
    );
    phone_steps(&t_params, &servers, &secrets, &periods).await;
}

/// The median of `rounds` runs of `f`, ms.
fn step_ms(rounds: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed()
        })
        .collect();
    ms(median(&mut v))
}

/// The phone's own steps of one threshold fetch (three periods), each
/// timed alone (no server working meanwhile): where the phone's CPU time
/// goes, and the checks one by one against batched.
async fn phone_steps(
    params: &PublicParams,
    servers: &[Server],
    secrets: &std::collections::BTreeMap<u32, SecretString>,
    periods: &[ibephone::ibe::Period],
) {
    use ibephone::ibe::encoding::b64_decode;
    use ibephone::ibe::threshold::{
        check_key_share, check_key_shares, combine, combine_checked, Combined, KeyShare,
        ServerShares,
    };
    use ibephone::ibe::{check_key, check_keys, Identity, PreparedIdentity, PrivateKeys};
    let threshold = params.threshold().expect("threshold");
    let password: SecretString = ALICE_PW.into();
    // Per server: its P_pub_i and its shares, one per period.
    let mut per_server = Vec::new();
    for (s, server) in threshold.servers.iter().zip(servers).take(2) {
        let client = server.client();
        let session = client
            .login("alice", &secrets[&s.index])
            .await
            .expect("login");
        let answer = client
            .fetch_key_entries(&session, periods)
            .await
            .expect("shares");
        let shares: Vec<KeyShare> = periods
            .iter()
            .zip(&answer.keys)
            .map(|(p, e)| {
                let keys = PrivateKeys::from_bytes(
                    Identity::new(session.aor.clone(), p.clone()),
                    &b64_decode("d_enc", e.d_enc.expose()).expect("b64"),
                    &b64_decode("d_sig", e.d_sig.expose()).expect("b64"),
                )
                .expect("share");
                KeyShare::new(s.index, keys).expect("share")
            })
            .collect();
        per_server.push((s.p_pub_i, shares));
    }
    let n = 9;
    let domain = params.domain().to_string();
    let derive = step_ms(3, || {
        let _ = ibephone::pkg_client::threshold::login_secret(&password, &domain, 1);
    });
    let ids: Vec<Identity> = per_server[0]
        .1
        .iter()
        .map(|s| s.identity().clone())
        .collect();
    let prepare = step_ms(n, || {
        let _: Vec<PreparedIdentity> = ids.iter().map(PreparedIdentity::new).collect();
    });
    let prepared: Vec<PreparedIdentity> = ids.iter().map(PreparedIdentity::new).collect();
    let (p_pub_1, shares_1) = &per_server[0];
    let one_by_one = step_ms(n, || {
        for s in shares_1 {
            check_key_share(&domain, p_pub_1, s).expect("good share");
        }
    });
    let batch: Vec<(&KeyShare, &PreparedIdentity)> = shares_1.iter().zip(&prepared).collect();
    let batched = step_ms(n, || {
        check_key_shares(&domain, p_pub_1, &batch).expect("good shares");
    });
    let combined: Vec<PrivateKeys> = (0..periods.len())
        .map(|k| {
            let two: Vec<KeyShare> = per_server.iter().map(|(_, s)| s[k].clone()).collect();
            combine(&two).expect("combined")
        })
        .collect();
    let comb = step_ms(n, || {
        for k in 0..periods.len() {
            let two: Vec<KeyShare> = per_server.iter().map(|(_, s)| s[k].clone()).collect();
            let _ = combine(&two);
        }
    });
    let keys_one_by_one = step_ms(n, || {
        for k in &combined {
            check_key(params, k).expect("key");
        }
    });
    let items: Vec<(&PrivateKeys, &PreparedIdentity)> = combined.iter().zip(&prepared).collect();
    let keys_batched = step_ms(n, || check_keys(params, &items).expect("keys"));
    let servers_shares: Vec<ServerShares<'_>> = per_server
        .iter()
        .map(|(p, s)| ServerShares {
            p_pub_i: p,
            shares: s,
        })
        .collect();
    let all_in_one = step_ms(n, || {
        let checked = combine_checked(params, &servers_shares, &prepared).expect("combined");
        assert!(matches!(checked, Combined::Keys(_)));
    });
    let tls = {
        let mut v = Vec::new();
        for _ in 0..n {
            let t0 = Instant::now();
            let _ = servers[0].client().params().await.expect("params");
            v.push(t0.elapsed());
        }
        ms(median(&mut v))
    };
    println!(
        "the phone's steps alone, medians, for {} periods:",
        periods.len()
    );
    println!("  login secret (Argon2id m=19456 KiB, t=2), one   {derive:6.1} ms  x n servers, first login only");
    println!("  hash and prepare Q_enc, Q_sig of every period    {prepare:6.2} ms  once per fetch");
    println!("  one server's shares checked one by one           {one_by_one:6.2} ms");
    println!("  one server's shares checked in one batch         {batched:6.2} ms  x servers heard after the keys (Qs prepared)");
    println!("  combine t shares, every period                   {comb:6.2} ms");
    println!("  combined keys checked one by one                 {keys_one_by_one:6.2} ms");
    println!(
        "  combined keys checked in one batch               {keys_batched:6.2} ms  (Qs prepared)"
    );
    println!("  t servers' shares combined, all shares and keys");
    println!(
        "    checked in one batch (now)                     {all_in_one:6.2} ms  (Qs prepared)"
    );
    println!(
        "  TLS connection + GET /v1/params                  {tls:6.2} ms  x 2 requests per server"
    );
}
