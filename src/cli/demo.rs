//! `ibephone demo`: the main job on one machine. A provider (master secret,
//! parameters, the embedded registrar/proxy) and two phones, alice and bob,
//! on 127.0.0.1; alice places a secured call, bob answers, both see the
//! other's verified identity, they exchange a secure message, hang up; the
//! whole run is captured with tshark (when installed) and checked with the
//! proof tool.
//!
//! Today the provider runs inside this process and plays the PKG by
//! extracting the phones' keys directly; the HTTPS PKG server takes that
//! role once it is wired in (see README).

use anyhow::{bail, Context, Result};
use ibephone::agent::config::AgentConfig;
use ibephone::agent::filter::SecurityPolicy;
use ibephone::agent::headless::{start, RunningAgent};
use ibephone::agent::{AgentCommand, AgentEvent};
use ibephone::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
use ibephone::sip::driver;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DOMAIN: &str = "example.invalid";

fn random_password() -> Result<String> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    Ok(hex::encode(b))
}

fn phone(
    user: &str,
    pw: &str,
    msk: &MasterSecret,
    params: &PublicParams,
    proxy: SocketAddr,
) -> Result<AgentConfig> {
    let aor = Aor::parse(&format!("sip:{user}@{DOMAIN}"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let current = Period::month_at(now);
    let keys = [current.previous_month()?, current]
        .into_iter()
        .map(|p| extract(msk, &Identity::new(aor.clone(), p)))
        .collect();
    Ok(AgentConfig {
        aor,
        password: zeroize::Zeroizing::new(pw.to_string()),
        listen: "127.0.0.1:0".parse()?,
        proxy,
        policy: SecurityPolicy::Require,
        privacy: true,
        params: params.clone(),
        trusted: vec![],
        keys,
    })
}

async fn wait(
    agent: &mut RunningAgent,
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

/// Runs the demo; returns whether everything went as it should.
pub async fn run(pcap: PathBuf, hold: Duration) -> Result<bool> {
    println!("== provider: new master secret for {DOMAIN}, registrar/proxy on 127.0.0.1");
    let msk = MasterSecret::generate()?;
    let params = PublicParams::new(DOMAIN, msk.p_pub(), "https://127.0.0.1:8443")?;
    println!("   parameter fingerprint: {}", params.fingerprint_display());
    let (apw, bpw) = (random_password()?, random_password()?);
    let provider = driver::spawn_proxy(
        "127.0.0.1:0".parse()?,
        DOMAIN,
        &[("alice", &apw), ("bob", &bpw)],
    )
    .await
    .context("starting the registrar/proxy")?;
    let proxy = provider.addr;
    let mut alice = start(phone("alice", &apw, &msk, &params, proxy)?).await?;
    let mut bob = start(phone("bob", &bpw, &msk, &params, proxy)?).await?;
    println!("== phones: alice on {}, bob on {}", alice.local, bob.local);
    let capture = start_capture(&pcap, &[proxy.port(), alice.local.port(), bob.local.port()])?;
    if capture.is_some() {
        // tshark needs a moment before it captures.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    for (who, a) in [("alice", &mut alice), ("bob", &mut bob)] {
        a.commands.send(AgentCommand::Register).await?;
        wait(a, who, "registration", |e| {
            matches!(e, AgentEvent::Registered { .. })
        })
        .await?;
    }
    println!("== alice calls bob");
    alice
        .commands
        .send(AgentCommand::Call { to: "bob".into() })
        .await?;
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
    bob.commands
        .send(AgentCommand::Answer { call: bcall })
        .await?;
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
    alice
        .commands
        .send(AgentCommand::Message {
            to: "bob".into(),
            text: "Hello Bob, this message is end-to-end tunneled.".into(),
        })
        .await?;
    wait(&mut bob, "bob", "the message", |e| {
        matches!(e, AgentEvent::MessageReceived { .. })
    })
    .await?;
    alice.commands.send(AgentCommand::Hangup { call }).await?;
    wait(&mut bob, "bob", "the hang-up", |e| {
        matches!(e, AgentEvent::Ended { .. })
    })
    .await?;
    wait(&mut alice, "alice", "the end", |e| {
        matches!(e, AgentEvent::Ended { .. })
    })
    .await?;
    for (who, a) in [("alice", &mut alice), ("bob", &mut bob)] {
        a.commands.send(AgentCommand::Unregister).await?;
        wait(a, who, "unregistration", |e| {
            matches!(e, AgentEvent::Unregistered)
        })
        .await?;
    }
    let mut ok = in_tunnel && out_tunnel && caller.is_some() && callee.is_some();
    println!("\n== summary");
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
