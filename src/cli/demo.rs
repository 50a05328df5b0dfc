//! `ibephone demo`: the main job on one machine, with the real processes.
//! A provider (`pkg-server` with its embedded SIP registrar/proxy, set up
//! with `pkg-admin init` and `user add alice` / `bob`, passwords on stdin)
//! and two phones (`ibephone agent` processes that log in to the PKG for
//! their keys), all on 127.0.0.1 in a temporary directory; alice places a
//! secured call, bob answers, both see the other's verified identity, they
//! exchange a secure message, hang up; the SIP traffic of the whole run is
//! captured with tshark (when installed) and checked with the proof tool.
//!
//! `pkg-server` and `pkg-admin` are looked up next to this executable
//! (`cargo build --workspace` puts them there), then on `PATH`.

use anyhow::{bail, Context, Result};
use ibephone::agent::AgentEvent;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;

const DOMAIN: &str = "example.invalid";

fn random_password() -> Result<String> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    Ok(hex::encode(b))
}

/// A workspace tool: beside our executable, else on PATH.
fn tool(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|me| me.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn admin(config: &Path, args: &[&str], stdin: &str) -> Result<String> {
    let mut child = Command::new(tool("pkg-admin"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pkg-admin (build it: cargo build --workspace)")?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "pkg-admin {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Provider {
    _proc: Proc,
    sip: SocketAddr,
    url: String,
    fingerprint: String,
}

fn start_provider(dir: &Path, users: &[(&str, &str)]) -> Result<Provider> {
    let config = dir.join("pkg.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[sip]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("pkg").display()
        ),
    )?;
    std::fs::create_dir_all(dir.join("pkg"))?;
    admin(&config, &["init", "--domain", DOMAIN], "")?;
    for (user, pw) in users {
        admin(&config, &["user", "add", user], &format!("{pw}\n"))?;
    }
    let mut child = Command::new(tool("pkg-server"))
        .arg("--config")
        .arg(&config)
        .env("PKG_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting pkg-server (build it: cargo build --workspace)")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    let proc = Proc(child);
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(str::to_string)
            .with_context(|| format!("pkg-server said {line:?}"))
    };
    let sip: SocketAddr = field("sip=")?.parse().context("sip= address")?;
    Ok(Provider {
        sip,
        url: format!("https://{}", field("listening=")?),
        fingerprint: field("fingerprint=")?,
        _proc: proc,
    })
}

/// A free UDP port on loopback for an agent (so the capture can start
/// before the agent does).
fn free_port() -> Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

/// An `ibephone agent` process: events from its stdout, lines of its
/// stderr printed as they come.
struct Phone {
    _proc: Proc,
    stdin: std::process::ChildStdin,
    events: mpsc::Receiver<AgentEvent>,
    port: u16,
}

impl Phone {
    fn start(
        dir: &Path,
        user: &str,
        password: &str,
        provider: &Provider,
        port: u16,
    ) -> Result<Phone> {
        let pw = dir.join(format!("{user}.password"));
        std::fs::write(&pw, format!("{password}\n"))?;
        private(&pw, 0o600)?;
        let cfg = dir.join(format!("{user}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[account]\naor = \"sip:{user}@{DOMAIN}\"\npassword_file = \"{user}.password\"\n\
                 [sip]\nlisten = \"127.0.0.1:{port}\"\nproxy = \"{}\"\n\
                 [pkg]\nurl = \"{}\"\nfingerprint = \"{}\"\nstore = \"{user}.keystore\"\n\
                 [security]\npolicy = \"require\"\nprivacy = true\n",
                provider.sip, provider.url, provider.fingerprint
            ),
        )?;
        let me = std::env::current_exe().context("locating ibephone")?;
        // G.711 for the demo: its capture is judged without keys (`pcap
        // verify` tells SRTP from plain G.711 by entropy and packet size);
        // Opus, the default, is compressed and would only be "undetermined".
        let mut child = Command::new(me)
            .args(["agent", "--no-audio", "--codecs", "pcmu", "--config"])
            .arg(&cfg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ibephone agent")?;
        let (tx, events) = mpsc::channel(256);
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                    if let Ok(e) = serde_json::from_str::<AgentEvent>(&line) {
                        if tx.blocking_send(e).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let who = user.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                    println!("  {who:5} (agent) {line}");
                }
            });
        }
        let stdin = child.stdin.take().context("agent stdin")?;
        Ok(Phone {
            _proc: Proc(child),
            stdin,
            events,
            port,
        })
    }

    fn send(&mut self, cmd: serde_json::Value) -> Result<()> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        Ok(())
    }
}

async fn wait(
    agent: &mut Phone,
    who: &str,
    what: &str,
    f: impl Fn(&AgentEvent) -> bool,
) -> Result<AgentEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, agent.events.recv()).await {
            Ok(Some(e)) => {
                println!("  {who:5} <- {}", serde_json::to_string(&e)?);
                if f(&e) {
                    return Ok(e);
                }
            }
            Ok(None) => bail!("{who} stopped while waiting for {what}"),
            Err(_) => bail!("{who}: no {what} within 15 s"),
        }
    }
}

/// tshark capturing the given ports on loopback, if tshark is installed.
fn start_capture(path: &PathBuf, ports: &[u16]) -> Result<Option<Child>> {
    if Command::new("tshark")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("tshark is not installed: no capture (scripts/install-deps.sh installs it)");
        return Ok(None);
    }
    let filter = ports
        .iter()
        .map(|p| format!("port {p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let child = Command::new("tshark")
        .args(["-q", "-i", "lo", "-f", &filter, "-w"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting tshark")?;
    Ok(Some(child))
}

fn stop_capture(child: Child) -> Result<()> {
    // SIGINT lets tshark flush and close the file.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let mut child = child;
    let _ = child.wait();
    Ok(())
}

/// Narrows `path` to `mode` on unix. Windows: the demo's files are in the
/// user's temporary directory under the per-user profile and inherit its
/// ACL; nothing to set.
fn private(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Runs the demo; returns whether everything went as it should.
pub async fn run(pcap: PathBuf, hold: Duration) -> Result<bool> {
    let dir = std::env::temp_dir().join(format!("ibephone-demo-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    private(&dir, 0o700)?;
    let result = run_in(&dir, pcap, hold).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &Path, pcap: PathBuf, hold: Duration) -> Result<bool> {
    println!(
        "== provider: pkg-admin init --domain {DOMAIN}; user add alice, bob (passwords on stdin)"
    );
    let (apw, bpw) = (random_password()?, random_password()?);
    let provider = start_provider(dir, &[("alice", &apw), ("bob", &bpw)])?;
    println!(
        "   pkg-server: PKG {} (TLS certificate {}), SIP registrar/proxy {}",
        provider.url, provider.fingerprint, provider.sip
    );
    let (aport, bport) = (free_port()?, free_port()?);
    let capture = start_capture(&pcap, &[provider.sip.port(), aport, bport])?;
    if capture.is_some() {
        // tshark needs a moment before it captures.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    println!("== phones: ibephone agent for alice (127.0.0.1:{aport}) and bob (127.0.0.1:{bport}) log in to the PKG");
    let mut alice = Phone::start(dir, "alice", &apw, &provider, aport)?;
    let mut bob = Phone::start(dir, "bob", &bpw, &provider, bport)?;
    for (who, a) in [("alice", &mut alice), ("bob", &mut bob)] {
        a.send(serde_json::json!({"cmd": "register"}))?;
        wait(a, who, "registration", |e| {
            matches!(e, AgentEvent::Registered { .. })
        })
        .await?;
    }
    println!("== alice calls bob");
    alice.send(serde_json::json!({"cmd": "call", "to": "bob"}))?;
    let AgentEvent::IncomingCall {
        call: bcall,
        verified: caller,
        tunneled: in_tunnel,
        ..
    } = wait(&mut bob, "bob", "the call", |e| {
        matches!(e, AgentEvent::IncomingCall { .. })
    })
    .await?
    else {
        bail!("unexpected event");
    };
    bob.send(serde_json::json!({"cmd": "answer", "call": bcall}))?;
    let AgentEvent::Answered {
        call,
        verified: callee,
        tunneled: out_tunnel,
    } = wait(&mut alice, "alice", "the answer", |e| {
        matches!(e, AgentEvent::Answered { .. })
    })
    .await?
    else {
        bail!("unexpected event");
    };
    wait(&mut bob, "bob", "the ACK", |e| {
        matches!(e, AgentEvent::Answered { .. })
    })
    .await?;
    println!("== in call for {} s", hold.as_secs());
    tokio::time::sleep(hold).await;
    alice.send(serde_json::json!({"cmd": "message", "to": "bob",
        "text": "Hello Bob, this message is end-to-end tunneled."}))?;
    wait(&mut bob, "bob", "the message", |e| {
        matches!(e, AgentEvent::MessageReceived { .. })
    })
    .await?;
    alice.send(serde_json::json!({"cmd": "hangup", "call": call}))?;
    wait(&mut bob, "bob", "the hang-up", |e| {
        matches!(e, AgentEvent::Ended { .. })
    })
    .await?;
    wait(&mut alice, "alice", "the end", |e| {
        matches!(e, AgentEvent::Ended { .. })
    })
    .await?;
    for (who, a) in [("alice", &mut alice), ("bob", &mut bob)] {
        a.send(serde_json::json!({"cmd": "unregister"}))?;
        wait(a, who, "unregistration", |e| {
            matches!(e, AgentEvent::Unregistered)
        })
        .await?;
    }
    let ports = (alice.port, bob.port);
    drop((alice, bob));
    let mut ok = in_tunnel && out_tunnel && caller.is_some() && callee.is_some();
    println!("\n== summary");
    println!(
        "   provider: pkg-server, PKG and SIP registrar/proxy {} for {DOMAIN}",
        provider.sip
    );
    println!("   phones: two ibephone agent processes (127.0.0.1:{} and :{}), keys fetched from the PKG over pinned TLS", ports.0, ports.1);
    println!(
        "   bob saw the caller as:   {}",
        caller.as_deref().unwrap_or("UNVERIFIED")
    );
    println!(
        "   alice saw the callee as: {}",
        callee.as_deref().unwrap_or("UNVERIFIED")
    );
    println!(
        "   signaling tunneled both ways: {}",
        in_tunnel && out_tunnel
    );
    if let Some(child) = capture {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop_capture(child)?;
        let bytes = std::fs::read(&pcap).with_context(|| format!("reading {}", pcap.display()))?;
        let report = ibephone::pcap::verify_capture(&bytes)?;
        println!(
            "\n== capture {} (ibephone pcap verify)\n{report}",
            pcap.display()
        );
        ok &= report.clean() && !report.messages.is_empty();
    }
    println!(
        "\n{}",
        if ok {
            "DEMO OK: a secured call with verified identities, nothing readable on the wire"
        } else {
            "DEMO FAILED"
        }
    );
    Ok(ok)
}
