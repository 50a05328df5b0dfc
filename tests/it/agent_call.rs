//! Two agents (SIP core + tunnel) and the embedded registrar/proxy in one
//! process over loopback UDP: register, a secured call with verified
//! identities on both sides, a secure message, hang-up.

use crate::support;

use ibephone::agent::config::AgentConfig;
use ibephone::agent::headless::{start_with_media, RunningAgent, StartError};
use ibephone::agent::media_io::{AudioIn, AudioOut, MediaOptions};
use ibephone::agent::AgentEvent;
use support::agents::{register, wait_event, TestDomain, Wait};

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

fn id_now(user: &str) -> String {
    support::agents::id_now(user, DOMAIN)
}

#[tokio::test]
async fn secured_call_with_verified_identities() {
    let domain = TestDomain::new(DOMAIN);
    let provider = domain.proxy(&["alice", "bob"]).await;
    let proxy = provider.addr;
    let mut alice = start(domain.agent("alice", proxy).build()).await.unwrap();
    let mut bob = start(domain.agent("bob", proxy).build()).await.unwrap();
    for a in [&mut alice, &mut bob] {
        register(a).await;
    }

    let w = Wait::default();
    let (calling, incoming) = w.dial(&mut alice, &mut bob, "bob").await;
    let AgentEvent::Calling { call, to, tunneled } = calling else {
        unreachable!()
    };
    assert_eq!(to, format!("sip:bob@{DOMAIN}"));
    assert!(tunneled);
    let AgentEvent::IncomingCall {
        call: bcall,
        from,
        verified,
        tunneled,
        waiting,
    } = incoming
    else {
        unreachable!()
    };
    assert!(from.contains(&format!("sip:alice@{DOMAIN}")), "{from}");
    assert_eq!(verified.as_deref(), Some(id_now("alice").as_str()));
    assert!(tunneled);
    assert!(!waiting, "bob has no other call");
    wait_event(&mut alice, "ringing", |e| {
        matches!(e, AgentEvent::Ringing { .. })
    })
    .await;
    let answered = w.answer(&mut bob, &mut alice, bcall).await;
    assert_eq!(
        answered,
        AgentEvent::Answered {
            call,
            verified: Some(id_now("bob")),
            tunneled: true
        }
    );
    wait_event(&mut bob, "answered", |e| {
        matches!(e, AgentEvent::Answered { .. })
    })
    .await;

    let msg = w.message(&mut alice, &mut bob, "bob", "secure hello").await;
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

    w.hang_up(&mut alice, &mut bob, call).await;
}
