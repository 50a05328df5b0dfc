//! The tests that need a tool from apt (baresip, SIPp, Kamailio, tshark,
//! espeak-ng): their env-flag gate, the tool's path, free loopback ports.

/// Whether the test of `tool` runs: only when `flag` is `1`
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

/// Waits up to `wait` for `child` to exit, then kills it; whether it
/// exited by itself.
pub fn wait_or_kill(child: &mut std::process::Child, wait: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
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
