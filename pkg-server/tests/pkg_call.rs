//! The product chain end to end: a real `pkg-server` issues alice's and
//! bob's keys over HTTPS (pinned certificate, `check_key` on every key),
//! and those keys drive a secured call between two agents through the same
//! server's embedded SIP registrar/proxy (digest against the PKG's users)
//! on loopback, each side seeing the other verified.

mod common;

use common::*;
use ibephone::agent::config::AgentConfig;
use ibephone::agent::filter::SecurityPolicy;
use ibephone::agent::headless::{start, RunningAgent};
use ibephone::agent::{AgentCommand, AgentEvent};
use ibephone::ibe::Period;
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
    let server = Server::start_with(&pkg.config, &["--sip", "127.0.0.1:0"]);
    let client = server.client();
    let params = client.params().await.unwrap();
    let proxy_addr = server.sip.unwrap();

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
