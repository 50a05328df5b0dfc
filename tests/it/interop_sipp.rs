//! SIPp (apt package `sip-tester`) against the agent over loopback, gated
//! on `IBEPHONE_TEST_SIPP=1` (scripts/test.sh sets it after
//! scripts/install-deps.sh installed SIPp). Scenarios in `tests/sipp/`.
//!
//! - SIPp as the registrar: the agent's digest answer verifies against
//!   SIPp's own implementation; a wrong password is refused (403).
//! - SIPp as a plain phone: OPTIONS answered 200 by an `allow-plain` agent
//!   and 415 by a `require` agent; a plain INVITE gets 415; a garbage
//!   tunnel body is dropped unanswered; a well-formed tunnel body for a key
//!   the agent does not hold gets 493. Afterwards the agent still answers
//!   OPTIONS and places a secured call with verified identities.
//! - SIPp as registering phones (REGISTER load) against the embedded
//!   registrar of a real `pkg-server` whose `[sip] digest_algorithms` is
//!   MD5 only: every registration with a device credential succeeds; the
//!   registrations per CPU-second of the server are printed.

use crate::support;

use ibephone::agent::filter::SecurityPolicy;
use ibephone::agent::headless::start;
use ibephone::agent::AgentEvent;
use ibephone::ibe::{Aor, Identity, Period};
use ibephone::tunnel::cms::{self, ContentKind, Direction, KeyTransport, SeqValue, TunnelAttrs};
use ibephone::tunnel::message::SipView;
use ibephone::tunnel::outer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use support::agents::{id_now, register, registration_outcome, TestDomain, Wait};
use support::tools::{free_port, gate, tool_path};

const DOMAIN: &str = "atlanta.invalid";

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// One SIPp run: scenario options beyond the common ones.
#[derive(Default)]
struct Run<'a> {
    /// `-key name value` pairs.
    keys: &'a [(&'a str, &'a str)],
    /// `-s`: the user part of the Request-URI (client scenarios).
    service: Option<&'a str>,
    /// `-cid_str`: the Call-ID; by default one without a host (spec 5.1).
    call_id: Option<&'a str>,
    /// The agent, for client scenarios; `None` for server ones.
    target: Option<SocketAddr>,
}

/// Runs one SIPp scenario (one call) from `dir` on `port`.
async fn sipp(dir: &Path, name: &str, port: u16, run: Run<'_>) -> Output {
    let mut cmd = Command::new(tool_path("sipp"));
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(scenario(name))
        .args(["-m", "1", "-i", "127.0.0.1", "-mi", "127.0.0.1", "-nostdin"])
        .args(["-timeout", "20", "-timeout_error", "-trace_err"])
        .arg("-error_file")
        .arg(dir.join(format!("{name}.errors.log")))
        .args(["-p", &port.to_string(), "-key", "domain", DOMAIN])
        .args([
            "-cid_str",
            run.call_id.unwrap_or("%u-%p-c2lwcHNpcHBzaXBwc2lwcA"),
        ]);
    for (k, v) in run.keys {
        cmd.args(["-key", k, v]);
    }
    if let Some(service) = run.service {
        cmd.args(["-s", service]);
    }
    if let Some(t) = run.target {
        cmd.arg(t.to_string());
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Whether some process has bound UDP `port` (Linux `/proc/net/udp{,6}`),
/// checked without binding it ourselves.
fn udp_port_bound(port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| format!("{a} ").contains(&needle))
            })
        })
    })
}

fn report(dir: &Path, name: &str, out: &Output) -> String {
    let errors =
        std::fs::read_to_string(dir.join(format!("{name}.errors.log"))).unwrap_or_default();
    format!(
        "sipp {name}: {}\nstdout:\n{}\nstderr:\n{}\nerrors:\n{errors}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ibephone-sipp")
        .tempdir()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registrar_checks_the_agents_digest() {
    if !gate("IBEPHONE_TEST_SIPP", "sipp") {
        return;
    }
    let dir = tempdir();
    let domain = TestDomain::new(DOMAIN);
    for (password, ok) in [("alice-pw", true), ("wrong-pw", false)] {
        let port = free_port();
        let registrar: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let keys = [("user", "alice"), ("password", "alice-pw")];
        let run = Run {
            keys: &keys,
            ..Run::default()
        };
        let sipp_run = sipp(dir.path(), "register_uas.xml", port, run);
        let agent = async {
            // Register only once SIPp holds its port: a REGISTER lost
            // before would come back as a retransmission in the wrong step.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !udp_port_bound(port) && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let cfg = domain.agent("alice", registrar).password(password).build();
            let mut a = start(cfg).await.unwrap();
            let e = registration_outcome(&mut a).await;
            (a, e)
        };
        let (out, (_agent, event)) = tokio::join!(sipp_run, agent);
        let why = report(dir.path(), "register_uas.xml", &out);
        if ok {
            assert!(out.status.success(), "{why}");
            assert_eq!(event, AgentEvent::Registered { expires: 120 }, "{why}");
        } else {
            assert!(!out.status.success(), "{why}");
            assert_eq!(
                event,
                AgentEvent::RegistrationFailed { status: 403 },
                "{why}"
            );
        }
    }
}

/// A tunnel body that parses and carries the right outer binding for an
/// INVITE with `call_id` and `from_tag`, but is keyed to an identity
/// (a period long past) for which `user` holds no key.
fn undecipherable_body(user: &str, call_id: &str, from_tag: &str) -> Vec<u8> {
    let probe = format!(
        "INVITE sip:{user}@{DOMAIN} SIP/2.0\r\nf: <sip:anonymous@anonymous.invalid>;tag={from_tag}\r\nt: <sip:{user}@{DOMAIN}>\r\ni: {call_id}\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n"
    );
    let binding = outer::outer_binding(&SipView::parse(probe.as_bytes()).unwrap()).unwrap();
    let attrs = TunnelAttrs {
        content: ContentKind::Data,
        session_id: Some([7u8; 16]),
        seq: SeqValue {
            direction: Direction::CallerToCallee,
            seq: 0,
        },
        outer_binding: binding,
    };
    let aad = cms::auth_attrs_der(&attrs).unwrap();
    let old = Identity::new(
        Aor::parse(&format!("sip:{user}@{DOMAIN}")).unwrap(),
        Period::month("2001-01").unwrap(),
    );
    let key = KeyTransport::Ibe {
        rid: old.key_identifier(),
        encrypted_key: vec![0x5a; 112],
    };
    cms::encode_envelope(
        &key,
        &aad,
        ContentKind::Data,
        &[3u8; 12],
        &[0xa5; 64],
        &[9u8; 16],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_plain_and_hostile_requests_leave_the_agent_working() {
    if !gate("IBEPHONE_TEST_SIPP", "sipp") {
        return;
    }
    let dir = tempdir();
    let domain = TestDomain::new(DOMAIN);
    let provider = domain.proxy(&["alice", "bob"]).await;
    let alice_cfg = domain.agent("alice", provider.addr).build();
    let bob_cfg = domain
        .agent("bob", provider.addr)
        .policy(SecurityPolicy::AllowPlain)
        .build();
    let mut alice = start(alice_cfg).await.unwrap();
    let mut bob = start(bob_cfg).await.unwrap();
    register(&mut alice).await;
    register(&mut bob).await;

    let call_id = "c2lwcC11bmRlY2lwaGVyYWJsZS0wMDE";
    let from_tag = "sippx493";
    std::fs::write(
        dir.path().join("body.der"),
        undecipherable_body("alice", call_id, from_tag),
    )
    .unwrap();
    let steps: [(&str, &str, SocketAddr); 6] = [
        ("options_ok.xml", "bob", bob.local),
        ("options_refused.xml", "alice", alice.local),
        ("invite_plain.xml", "alice", alice.local),
        ("invite_garbage.xml", "alice", alice.local),
        ("invite_undecipherable.xml", "alice", alice.local),
        ("options_refused.xml", "alice", alice.local),
    ];
    for (name, user, target) in steps {
        let undecipherable = name == "invite_undecipherable.xml";
        let run = Run {
            keys: &[("fromtag", from_tag)],
            service: Some(user),
            call_id: undecipherable.then_some(call_id),
            target: Some(target),
        };
        let out = sipp(dir.path(), name, free_port(), run).await;
        assert!(out.status.success(), "{}", report(dir.path(), name, &out));
    }
    // Every refusal was reported, and none became a call.
    let mut rejected = 0;
    while let Ok(e) = alice.events.try_recv() {
        assert!(!matches!(e, AgentEvent::IncomingCall { .. }), "{e:?}");
        if matches!(e, AgentEvent::Rejected { .. }) {
            rejected += 1;
        }
    }
    assert!(rejected >= 4, "{rejected} rejections reported");

    // The agent still places a secured call with verified identities.
    let w = Wait::default();
    let (_, incoming) = w.dial(&mut alice, &mut bob, "bob").await;
    let AgentEvent::IncomingCall { call, verified, .. } = incoming else {
        unreachable!()
    };
    assert_eq!(verified, Some(id_now("alice", DOMAIN)));
    let answered = w.answer(&mut bob, &mut alice, call).await;
    assert!(
        matches!(&answered, AgentEvent::Answered { verified: Some(v), tunneled: true, .. } if *v == id_now("bob", DOMAIN)),
        "{answered:?}"
    );
}

/// The user lines of a SIPp injection file: `user;[authentication
/// username=user password=device credential]` (SIPp expands no field
/// inside `[authentication ...]`: with `username=[field0]` it wrote the
/// user name before the keyword, a broken header line that the
/// registrar's parser answered 400; the SIPp load run of the earlier
/// attempt failed with exactly those 400s).
fn sipp_users(server: &support::provider::Server, users: &[(String, String)]) -> String {
    let mut csv = String::from("SEQUENTIAL\n");
    for (user, pw) in users {
        let secret = server.sip_credential(user, pw, "sipp");
        csv.push_str(&format!(
            "{user};[authentication username={user} password={secret}]\n"
        ));
    }
    csv
}

#[test]
fn sipp_register_load_against_the_embedded_registrar_md5_only() {
    if !gate("IBEPHONE_TEST_SIPP", "sipp") {
        return;
    }
    const USERS: usize = 20;
    const REGISTRATIONS: usize = 2000;
    let users: Vec<(String, String)> = (0..USERS)
        .map(|i| (format!("load{i}"), format!("load password {i}")))
        .collect();
    let refs: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    // SIPp 3.6 answers only MD5 challenges (and takes the first one).
    let pkg = support::provider::Provider::with_sip(&refs, "digest_algorithms = [\"MD5\"]\n");
    let server = pkg.start();
    let dir = tempdir();
    std::fs::write(dir.path().join("users.csv"), sipp_users(&server, &users)).unwrap();
    let name = "register_uac.xml";
    let before = server.cpu_time();
    let out = Command::new(tool_path("sipp"))
        .current_dir(dir.path())
        .arg("-sf")
        .arg(scenario(name))
        .args([
            "-inf",
            "users.csv",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-nostdin",
        ])
        .args(["-m", &REGISTRATIONS.to_string(), "-r", "500", "-l", "200"])
        .args([
            "-timeout",
            "120",
            "-timeout_error",
            "-trace_err",
            "-trace_msg",
        ])
        .arg("-error_file")
        .arg(dir.path().join(format!("{name}.errors.log")))
        .arg("-message_file")
        .arg(dir.path().join(format!("{name}.messages.log")))
        .args(["-key", "domain", support::provider::DOMAIN])
        .arg(server.sip.to_string())
        .output()
        .unwrap();
    let cpu = server.cpu_time().saturating_sub(before);
    let messages = std::fs::read_to_string(dir.path().join(format!("{name}.messages.log")))
        .unwrap_or_default();
    assert!(
        out.status.success(),
        "{}\nfirst messages:\n{}",
        report(dir.path(), name, &out),
        messages.chars().take(4000).collect::<String>()
    );
    println!(
        "REGISTER load (debug build unless built with --release): {REGISTRATIONS} \
         registrations with digest, server CPU {:.2} s, {:.0} per CPU-second",
        cpu.as_secs_f64(),
        REGISTRATIONS as f64 / cpu.as_secs_f64().max(0.01)
    );
}
