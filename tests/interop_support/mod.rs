//! Shared by the interop tests (`tests/interop_*.rs`): the env-flag gate of
//! tests that need an apt tool, agents with freshly extracted keys, waiting
//! for events, free loopback ports.
#![allow(dead_code)]

use ibephone::agent::config::AgentConfig;
use ibephone::agent::filter::SecurityPolicy;
use ibephone::agent::headless::RunningAgent;
use ibephone::agent::AgentEvent;
use ibephone::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whether the interop test of `tool` runs: only when `flag` is `1`
/// (scripts/test.sh sets it after installing the tool). When it is set,
/// the tool missing is a failure; when it is unset the test says it is
/// skipped.
pub fn gate(flag: &str, tool: &str) -> bool {
    if std::env::var(flag).as_deref() != Ok("1") {
        eprintln!("skipped: {flag} is not 1 (scripts/test.sh sets it after installing {tool})");
        return false;
    }
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| d.join(tool).is_file())
            || ["/usr/sbin", "/sbin"]
                .iter()
                .any(|d| std::path::Path::new(d).join(tool).is_file())
    });
    assert!(found, "{flag}=1 but `{tool}` is not installed");
    true
}

/// The path of an installed tool (also looked up in the sbin directories,
/// where Debian puts kamailio).
pub fn tool_path(tool: &str) -> std::path::PathBuf {
    for d in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = std::path::Path::new(d).join(tool);
        if p.is_file() {
            return p;
        }
    }
    tool.into()
}

/// A provider: master secret and parameters for `domain`.
pub fn provider(domain: &str) -> (MasterSecret, PublicParams) {
    let msk = MasterSecret::generate().unwrap();
    let params = PublicParams::new(domain, msk.p_pub(), "https://127.0.0.1:8443").unwrap();
    (msk, params)
}

/// An agent configuration for `user@domain` holding keys for the current
/// and previous periods, listening on a free loopback port.
pub fn agent_config(
    user: &str,
    password: &str,
    msk: &MasterSecret,
    params: &PublicParams,
    proxy: SocketAddr,
    policy: SecurityPolicy,
) -> AgentConfig {
    let aor = Aor::parse(&format!("sip:{user}@{}", params.domain())).unwrap();
    let current = Period::month_at(unix_now());
    let keys = [current.previous_month().unwrap(), current]
        .into_iter()
        .map(|p| extract(msk, &Identity::new(aor.clone(), p)))
        .collect();
    AgentConfig {
        aor,
        password: zeroize::Zeroizing::new(password.to_string()),
        listen: "127.0.0.1:0".parse().unwrap(),
        proxy,
        policy,
        privacy: true,
        params: params.clone(),
        trusted: vec![],
        keys,
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The identity string `sip:user@domain#YYYY-MM` of the current period.
pub fn id_now(user: &str, domain: &str) -> String {
    format!("sip:{user}@{domain}#{}", Period::month_at(unix_now()))
}

/// The next event matching `f` within 10 s (others are skipped).
pub async fn expect(
    agent: &mut RunningAgent,
    what: &str,
    f: impl Fn(&AgentEvent) -> bool,
) -> AgentEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, agent.events.recv()).await {
            Ok(Some(e)) if f(&e) => return e,
            Ok(Some(_)) => continue,
            other => panic!("waiting for {what}: {other:?}"),
        }
    }
}

/// A loopback port that was free a moment ago, for UDP and TCP.
pub fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// tshark capturing loopback traffic of `ports` into `path`, when
/// `IBEPHONE_TEST_TSHARK=1` (else `None`: the caller checks without a
/// live capture). Returns once the capture file exists.
pub async fn start_tshark(path: &std::path::Path, ports: &[u16]) -> Option<std::process::Child> {
    if std::env::var("IBEPHONE_TEST_TSHARK").as_deref() != Ok("1") {
        eprintln!("IBEPHONE_TEST_TSHARK is not 1: no live capture in this test");
        return None;
    }
    let child = std::process::Command::new(tool_path("tshark"))
        .args(["-q", "-i", "lo", "-f"])
        .arg(
            ports
                .iter()
                .map(|p| format!("port {p}"))
                .collect::<Vec<_>>()
                .join(" or "),
        )
        .arg("-w")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("IBEPHONE_TEST_TSHARK=1 but tshark does not start");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !path.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The file appears when dumpcap opens it, a moment before it captures.
    tokio::time::sleep(Duration::from_millis(700)).await;
    Some(child)
}

/// Stops a capture started by [`start_tshark`] (SIGINT: tshark flushes).
pub async fn stop_tshark(child: std::process::Child) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let mut child = child;
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}
