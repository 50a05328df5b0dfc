//! Two agents (SIP core + tunnel) and the embedded registrar/proxy in one
//! process over loopback UDP: register, a secured call with verified
//! identities on both sides, a secure message, hang-up.

use ibephone::agent::config::AgentConfig;
use ibephone::agent::filter::SecurityPolicy;
use ibephone::agent::headless::{start_with_media, RunningAgent, StartError};
use ibephone::agent::media_io::{AudioIn, AudioOut, MediaOptions};
use ibephone::agent::{AgentCommand, AgentEvent};
use ibephone::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
use ibephone::sip::driver;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An agent without sound devices: silence in, received audio discarded
/// (no sound card on CI, no alsa-lib noise in its log).
async fn start(config: AgentConfig) -> Result<RunningAgent, StartError> {
    let media = MediaOptions {
        audio_in: AudioIn::Silence,
        audio_out: AudioOut::Discard,
        ..MediaOptions::default()
    };
    start_with_media(config, media).await
}

const DOMAIN: &str = "biloxi.invalid";

fn config(
    user: &str,
    pw: &str,
    msk: &MasterSecret,
    params: &PublicParams,
    proxy: SocketAddr,
) -> AgentConfig {
    let aor = Aor::parse(&format!("sip:{user}@{DOMAIN}")).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let current = Period::month_at(now);
    let keys = [current.previous_month().unwrap(), current]
        .into_iter()
        .map(|p| extract(msk, &Identity::new(aor.clone(), p)))
        .collect();
    AgentConfig {
        aor,
        password: zeroize::Zeroizing::new(pw.to_string()),
        listen: "127.0.0.1:0".parse().unwrap(),
        proxy,
        policy: SecurityPolicy::Require,
        privacy: true,
        params: params.clone(),
        trusted: vec![],
        keys,
    }
}

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

fn id_now(user: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("sip:{user}@{DOMAIN}#{}", Period::month_at(now))
}

#[tokio::test]
async fn secured_call_with_verified_identities() {
    let msk = MasterSecret::generate().unwrap();
    let params = PublicParams::new(DOMAIN, msk.p_pub(), "https://127.0.0.1:8443").unwrap();
    let provider = driver::spawn_proxy(
        "127.0.0.1:0".parse().unwrap(),
        DOMAIN,
        &[("alice", "alice-pw"), ("bob", "bob-pw")],
    )
    .await
    .unwrap();
    let proxy = provider.addr;
    let mut alice = start(config("alice", "alice-pw", &msk, &params, proxy))
        .await
        .unwrap();
    let mut bob = start(config("bob", "bob-pw", &msk, &params, proxy))
        .await
        .unwrap();
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
    let AgentEvent::Calling { call, to, tunneled } = expect(&mut alice, "calling", |e| {
        matches!(e, AgentEvent::Calling { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(to, format!("sip:bob@{DOMAIN}"));
    assert!(tunneled);
    let incoming = expect(&mut bob, "incoming call", |e| {
        matches!(e, AgentEvent::IncomingCall { .. })
    })
    .await;
    let AgentEvent::IncomingCall {
        call: bcall,
        from,
        verified,
        tunneled,
    } = incoming
    else {
        unreachable!()
    };
    assert!(from.contains(&format!("sip:alice@{DOMAIN}")), "{from}");
    assert_eq!(verified.as_deref(), Some(id_now("alice").as_str()));
    assert!(tunneled);
    expect(&mut alice, "ringing", |e| {
        matches!(e, AgentEvent::Ringing { .. })
    })
    .await;
    bob.commands
        .send(AgentCommand::Answer { call: bcall })
        .await
        .unwrap();
    let answered = expect(&mut alice, "answered", |e| {
        matches!(e, AgentEvent::Answered { .. })
    })
    .await;
    assert_eq!(
        answered,
        AgentEvent::Answered {
            call,
            verified: Some(id_now("bob")),
            tunneled: true
        }
    );
    expect(&mut bob, "answered", |e| {
        matches!(e, AgentEvent::Answered { .. })
    })
    .await;

    alice
        .commands
        .send(AgentCommand::Message {
            to: "bob".into(),
            text: "secure hello".into(),
        })
        .await
        .unwrap();
    let msg = expect(&mut bob, "message", |e| {
        matches!(e, AgentEvent::MessageReceived { .. })
    })
    .await;
    let AgentEvent::MessageReceived {
        from,
        text,
        verified,
        tunneled,
    } = msg
    else {
        unreachable!()
    };
    assert!(from.contains(&format!("sip:alice@{DOMAIN}")), "{from}");
    assert_eq!(text, "secure hello");
    assert_eq!(verified, Some(id_now("alice")));
    assert!(tunneled);

    alice
        .commands
        .send(AgentCommand::Hangup { call })
        .await
        .unwrap();
    expect(
        &mut bob,
        "ended",
        |e| matches!(e, AgentEvent::Ended { reason, .. } if reason == "remote hangup"),
    )
    .await;
    expect(
        &mut alice,
        "ended",
        |e| matches!(e, AgentEvent::Ended { reason, .. } if reason == "local hangup"),
    )
    .await;
}
