//! The product chain end to end: a real `pkg-server` issues alice's and
//! bob's keys over HTTPS (pinned certificate, `check_key` on every key),
//! and those keys drive a secured call between two agents through the SIP
//! registrar/proxy on loopback, each side seeing the other verified.

mod common;

use common::*;
use ibephone::agent::config::AgentConfig;
use ibephone::agent::filter::SecurityPolicy;
use ibephone::agent::headless::{start, RunningAgent};
use ibephone::agent::{AgentCommand, AgentEvent};
use ibephone::ibe::Period;
use ibephone::sip::digest::{ha1, Algorithm, Password};
use ibephone::sip::driver;
use ibephone::sip::message::HeaderForm;
use ibephone::sip::proxy::{Proxy, ProxyConfig};
use ibephone::sip::registrar::{Registrar, UserRecord};
use ibephone::sip::timers::Timers;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

async fn expect(
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

#[tokio::test]
async fn keys_from_the_pkg_drive_a_verified_call() {
    let pkg = Pkg::new(&None, "").await;
    let server = pkg.start();
    let client = server.client();
    let params = client.params().await.unwrap();

    // The registrar/proxy of the domain, with the users' digest secrets.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = udp.local_addr().unwrap();
    // Signed INVITEs exceed 1300 bytes and go over TCP (RFC 3261 18.1.1).
    let tcp = tokio::net::TcpListener::bind(proxy_addr).await.ok();
    let mut records = HashMap::new();
    for (u, pw) in [("alice", ALICE_PW), ("bob", BOB_PW)] {
        let p = Password::new(pw);
        records.insert(
            u.to_string(),
            UserRecord {
                ha1_md5: Some(ha1(Algorithm::Md5, u, DOMAIN, &p).to_string()),
                ha1_sha256: Some(ha1(Algorithm::Sha256, u, DOMAIN, &p).to_string()),
                enabled: true,
            },
        );
    }
    let proxy = Proxy::new(
        ProxyConfig {
            local: proxy_addr.to_string(),
            form: HeaderForm::Compact,
            timers: Timers::default(),
            max_transactions: 256,
        },
        Registrar::new(DOMAIN, Box::new(records)),
    );
    let (_keep, crx) = tokio::sync::mpsc::channel(1);
    let (etx, mut erx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move { while erx.recv().await.is_some() {} });
    tokio::spawn(driver::run(proxy, udp, tcp, crx, etx));

    // Each phone logs in to the PKG and fetches its keys.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let current = Period::month_at(now);
    let periods = [current.previous_month().unwrap(), current.clone()];
    let mut agents = Vec::new();
    for (user, pw) in [("alice", ALICE_PW), ("bob", BOB_PW)] {
        let session = client.login(user, &pw.into()).await.unwrap();
        let keys = client
            .fetch_keys(&session, &params, &periods)
            .await
            .unwrap();
        client.logout(&session).await.unwrap();
        let agent = start(AgentConfig {
            aor: session.aor.clone(),
            password: zeroize::Zeroizing::new(pw.to_string()),
            listen: "127.0.0.1:0".parse().unwrap(),
            proxy: proxy_addr,
            policy: SecurityPolicy::Require,
            privacy: true,
            params: params.clone(),
            trusted: vec![],
            keys,
        })
        .await
        .unwrap();
        agents.push(agent);
    }
    let mut bob = agents.pop().unwrap();
    let mut alice = agents.pop().unwrap();
    for a in [&mut alice, &mut bob] {
        a.commands.send(AgentCommand::Register).await.unwrap();
        expect(a, "registered", |e| {
            matches!(e, AgentEvent::Registered { .. })
        })
        .await;
    }
    alice
        .commands
        .send(AgentCommand::Call { to: "bob".into() })
        .await
        .unwrap();
    let AgentEvent::IncomingCall {
        call,
        verified,
        tunneled,
        ..
    } = expect(&mut bob, "incoming call", |e| {
        matches!(e, AgentEvent::IncomingCall { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(verified, Some(format!("sip:alice@{DOMAIN}#{current}")));
    assert!(tunneled);
    bob.commands
        .send(AgentCommand::Answer { call })
        .await
        .unwrap();
    let answered = expect(&mut alice, "answered", |e| {
        matches!(e, AgentEvent::Answered { .. })
    })
    .await;
    assert!(
        matches!(&answered, AgentEvent::Answered { verified: Some(v), tunneled: true, .. } if *v == format!("sip:bob@{DOMAIN}#{current}")),
        "{answered:?}"
    );
    server.stop();
}
