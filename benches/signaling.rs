//! Signaling figures of issue 13 with real processes, in the NAT lab
//! (`../shared/natlab/natlab.sh`, root only; `IBEPHONE_NATLAB_SCRIPT`
//! names another copy). The bench brings up its own lab (cone/cone) and
//! always brings it down (the lab's Drop, also on a panic):
//!
//! `cargo bench --bench signaling` (both parts), `-- --setup` or
//! `-- --idle` for one; `-- --calls N` (default 20), `-- --secs S`
//! (default 60, each idle phase).
//!
//! 1. Setup over TLS, lab against loopback, side by side in one run: a
//!    `pkg-server` in `prov` on the lab's internet (203.0.113.10) with
//!    alice in homeA and bob in homeB behind cone NATs, and a second
//!    `pkg-server` on `prov`'s own loopback with its alice and bob in
//!    `prov` too; all four phones on `sips:` (TLS 1.3, the PKG's pin).
//!    Rounds alternate lab / loopback. Registration: `register` asked ->
//!    `registered` (REGISTER, the 401, REGISTER, the 200, on the open TLS
//!    flow); the first one (a new TLS connection, handshake included,
//!    5 s after the agents started) is given apart. Call
//!    setup: `call` asked -> the caller's `answered` (INVITE sealed and
//!    sent, opened by the callee, answered, the 200 opened and verified):
//!    the definition of `benches/call_setup.rs`, here across processes
//!    (the JSON lines to and from the agents and the callee's `answer`
//!    are in both figures alike). The lab's round trip: `ping` from homeA
//!    to the provider.
//! 2. An idle registered phone over UDP, TCP and TLS: one `ibephone agent`
//!    at a time against the loopback `pkg-server` in `prov` (nothing else
//!    on that loopback), three phases: keep-alives every 1 s for `secs`;
//!    keep-alives off for `secs` (what an idle phone costs besides:
//!    timers, route checks); 10 registration refreshes (`register` on the
//!    registered flow). Bytes are the loopback's (IP, TCP/UDP and TLS
//!    headers included, each packet once); CPU is the agent process's
//!    (its threads' run time, `/proc/PID/task/*/schedstat`). Per hour at the defaults: 144
//!    keep-alives (25 s), 12 refreshes (600 s granted, refreshed at half).
// A bench has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::natlab::{Lab, Provider, PROV, STEP};
use support::process::Agent;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str, d: u64| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (calls, secs) = (value("--calls", 20), value("--secs", 60));
    let (setup, idle) = match (has("--setup"), has("--idle")) {
        (false, false) => (true, true),
        x => x,
    };
    let lab = Lab::up("sg", &["--nat-a", "cone", "--nat-b", "cone"]);
    let loopback = lab.pkg_server_at(
        "prov",
        "127.0.0.1",
        "pkg-loop",
        "[sip]\nlisten = \"127.0.0.1:5060\"\nuser_refresh_secs = 1\ntls = true\n",
    );
    if setup {
        setup_figures(&lab, &loopback, calls as usize);
    }
    if idle {
        idle_figures(&lab, &loopback, Duration::from_secs(secs));
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One pair of phones (caller, callee) of one provider.
struct Pair {
    name: &'static str,
    alice: Agent,
    bob: Agent,
    register: Vec<f64>,
    setup: Vec<f64>,
}

impl Pair {
    /// `register` -> `registered` of alice, in ms.
    fn register(&mut self) -> f64 {
        let t = Instant::now();
        self.alice.send(json!({"cmd": "register"}));
        self.alice.expect("registered", STEP);
        ms(t.elapsed())
    }

    /// alice calls bob, bob answers at once; `call` -> alice's
    /// `answered` in ms; then alice hangs up.
    fn call(&mut self) -> f64 {
        let t = Instant::now();
        self.alice.send(json!({"cmd": "call", "to": "bob"}));
        let incoming = self.bob.expect("incoming_call", STEP);
        assert_eq!(incoming["tunneled"], true, "{incoming}");
        self.bob
            .send(json!({"cmd": "answer", "call": incoming["call"]}));
        let answered = self.alice.expect("answered", STEP);
        let took = ms(t.elapsed());
        assert_eq!(answered["tunneled"], true, "{answered}");
        assert!(answered["verified"].is_string(), "{answered}");
        self.alice
            .send(json!({"cmd": "hangup", "call": answered["call"]}));
        self.bob.expect("ended", STEP);
        self.alice.expect("ended", STEP);
        took
    }
}

fn setup_figures(lab: &Lab, loopback: &Provider, calls: usize) {
    let internet = lab.provider_with("tls = true\n");
    let sips =
        |host: &str| format!("proxy = \"sips:{host}\"\n[pkg]\nurl = \"https://{host}:8443\"\n");
    let lab_sips = sips(PROV);
    let loop_sips = sips("127.0.0.1");
    let phone = |node: &str, name: &str, user: &str, listen: &str, p: &Provider, tail: &str| {
        lab.phone_at(node, name, user, listen, p, tail, "", &[])
    };
    let mut pairs = [
        Pair {
            name: "lab (TLS)",
            alice: phone(
                "homeA",
                "alice",
                "alice",
                "0.0.0.0:5062",
                &internet,
                &lab_sips,
            ),
            bob: phone("homeB", "bob", "bob", "0.0.0.0:5062", &internet, &lab_sips),
            register: vec![],
            setup: vec![],
        },
        Pair {
            name: "loopback (TLS)",
            alice: phone(
                "prov",
                "l-alice",
                "alice",
                "127.0.0.1:5072",
                loopback,
                &loop_sips,
            ),
            bob: phone(
                "prov",
                "l-bob",
                "bob",
                "127.0.0.1:5073",
                loopback,
                &loop_sips,
            ),
            register: vec![],
            setup: vec![],
        },
    ];
    // The agents log in to their PKG and load their keys at start; the
    // first registration is then a fresh TLS connection's (handshake
    // included), not the start's.
    std::thread::sleep(Duration::from_secs(5));
    let mut first = Vec::new();
    for p in pairs.iter_mut() {
        first.push(p.register());
        p.bob.send(json!({"cmd": "register"}));
        p.bob.expect("registered", STEP);
        // Warm-up: the first call to a peer pays for its key (a new
        // recipient) and the signer's tables.
        p.call();
    }
    for _ in 0..calls {
        for p in pairs.iter_mut() {
            let r = p.register();
            p.register.push(r);
            let s = p.call();
            p.setup.push(s);
        }
    }
    let rtt = lab_rtt(lab);
    println!("signaling setup over TLS, {calls} rounds alternating lab / loopback (medians):");
    println!(
        "{:16} {:>14} {:>16} {:>16}",
        "", "first reg ms", "registration ms", "call setup ms"
    );
    let mut med = Vec::new();
    for (p, f) in pairs.iter_mut().zip(&first) {
        let (r, s) = (median(&mut p.register), median(&mut p.setup));
        println!("{:16} {f:14.1} {r:16.1} {s:16.1}", p.name);
        med.push((r, s));
    }
    println!("lab round trip homeA -> provider: {rtt:.3} ms (ping median)");
    let (lab_s, loop_s) = (med[0].1, med[1].1);
    // The call crosses the lab twice (alice -> proxy -> bob and back):
    // INVITE and 200 each take one round trip's worth of path.
    let budget = 2.0 * loop_s + 2.0 * rtt;
    println!(
        "call setup lab / loopback: {:.2}x; target lab <= 2 x loopback + 2 round trips = {budget:.1} ms: {}",
        lab_s / loop_s,
        if lab_s <= budget { "met" } else { "MISSED" }
    );
    for p in pairs.iter_mut() {
        p.alice.quit();
        p.bob.quit();
    }
}

/// The median of `ping -c 10` from homeA to the provider, in ms.
fn lab_rtt(lab: &Lab) -> f64 {
    let out = lab.script(&["exec", "homeA", "ping", "-n", "-c", "10", "-i", "0.2", PROV]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    median(&mut v)
}

/// Bytes through `prov`'s loopback so far (each packet counted once).
fn loopback_bytes(lab: &Lab) -> u64 {
    let out = lab.script(&[
        "exec",
        "prov",
        "cat",
        "/sys/class/net/lo/statistics/rx_bytes",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("lo rx_bytes")
}

/// CPU time of process `pid` so far, in ms: the sum of its threads'
/// run time in nanoseconds (`/proc/PID/task/*/schedstat`; `/proc/PID/stat`
/// counts 10 ms ticks, too coarse for an idle phone). A thread that ended
/// within a phase takes its time with it (the agent's threads live as
/// long as it does; tokio's blocking pool may retire one).
fn cpu_ms(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e6
}

/// What one phase cost: loopback bytes and the agent's CPU ms.
fn measure(lab: &Lab, pid: u32, during: impl FnOnce()) -> (u64, f64) {
    let (b0, c0) = (loopback_bytes(lab), cpu_ms(pid));
    during();
    (loopback_bytes(lab) - b0, cpu_ms(pid) - c0)
}

fn idle_figures(lab: &Lab, loopback: &Provider, secs: Duration) {
    const REFRESHES: u32 = 10;
    let per_hour_ka = 3600.0 / 25.0;
    let per_hour_ref = 3600.0 / 300.0;
    println!(
        "idle registered phone, per hour at the defaults (keep-alive 25 s, refresh every 300 s); phases of {} s:",
        secs.as_secs()
    );
    println!(
        "{:9} {:>10} {:>10} {:>10} {:>12} {:>12} {:>10} {:>10} {:>12}",
        "transport",
        "B/keepal",
        "B/refresh",
        "B/h keepal",
        "B/h refresh",
        "B/h other",
        "CPU ms/ka",
        "CPU ms/ref",
        "CPU ms/h"
    );
    for (name, proxy) in [
        ("UDP", "127.0.0.1:5060".to_string()),
        ("TCP", "sip:127.0.0.1:5060;transport=tcp".to_string()),
        ("TLS", "sips:127.0.0.1".to_string()),
    ] {
        let tail = |ka: u64| {
            format!(
                "proxy = \"{proxy}\"\nkeepalive_secs = {ka}\n[pkg]\nurl = \"https://127.0.0.1:8443\"\n"
            )
        };
        let dir = format!("idle-{name}");
        // alice registered on the provider's host, keep-alives every `ka` s.
        let registered = |ka: u64| {
            let mut a = lab.phone_at(
                "prov",
                &dir,
                "alice",
                "127.0.0.1:5074",
                loopback,
                &tail(ka),
                "",
                &[],
            );
            a.register();
            std::thread::sleep(Duration::from_secs(2));
            a
        };
        // Keep-alives every second.
        let mut a = registered(1);
        let (ka_bytes, ka_cpu) = measure(lab, a.pid(), || std::thread::sleep(secs));
        a.quit();
        // Keep-alives off: the rest of an idle phone, then refreshes.
        let mut a = registered(0);
        let (base_bytes, base_cpu) = measure(lab, a.pid(), || std::thread::sleep(secs));
        let t = Instant::now();
        let (ref_bytes, ref_cpu) = measure(lab, a.pid(), || {
            for _ in 0..REFRESHES {
                a.register();
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let ref_secs = t.elapsed().as_secs_f64();
        a.quit();
        let s = secs.as_secs_f64();
        let base_cpu_rate = base_cpu / s;
        let base_byte_rate = base_bytes as f64 / s;
        let b_ka = (ka_bytes as f64 - base_byte_rate * s) / s;
        let c_ka = (ka_cpu - base_cpu_rate * s) / s;
        let b_ref = (ref_bytes as f64 - base_byte_rate * ref_secs) / f64::from(REFRESHES);
        let c_ref = (ref_cpu - base_cpu_rate * ref_secs) / f64::from(REFRESHES);
        let cpu_h = base_cpu_rate * 3600.0 + c_ka * per_hour_ka + c_ref * per_hour_ref;
        println!(
            "{name:9} {b_ka:10.0} {b_ref:10.0} {:10.0} {:12.0} {:12.0} {c_ka:10.3} {c_ref:10.2} {cpu_h:12.0}",
            b_ka * per_hour_ka,
            b_ref * per_hour_ref,
            base_byte_rate * 3600.0
        );
    }
    println!("(B/h other: what the phone sends and gets with keep-alives off; CPU ms/h = idle rate x 3600 + 144 keep-alives + 12 refreshes; CPU: the agent's threads' run time)");
}
