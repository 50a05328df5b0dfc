//! Three agents (SIP core + tunnel + media on silence) and the embedded
//! registrar/proxy over loopback UDP: blind transfer (bob transfers alice
//! to carol with a tunneled REFER; alice's new call to carol is a secured
//! call verified both ways; bob sees the NOTIFY 200 and his call ends) and
//! call waiting (carol calls bob while he talks to alice; answering her
//! holds alice; swap switches back).

use crate::support;

use ibephone::agent::config::AgentConfig;
use ibephone::agent::headless::{start_with_media, RunningAgent, StartError};
use ibephone::agent::media_io::{AudioIn, AudioOut, MediaOptions};
use ibephone::agent::{AgentCommand, AgentEvent};
use ibephone::sip::driver::ProxyHandle;
use support::agents::{register, send, TestDomain, Wait};

const DOMAIN: &str = "transfer.invalid";

async fn start(config: AgentConfig) -> Result<RunningAgent, StartError> {
    let media = MediaOptions {
        audio_in: AudioIn::Silence,
        audio_out: AudioOut::Discard,
        ..MediaOptions::default()
    };
    start_with_media(config, media).await
}

fn id_now(user: &str) -> String {
    support::agents::id_now(user, DOMAIN)
}

/// alice, bob and carol, registered with one proxy.
async fn three(domain: &TestDomain) -> (ProxyHandle, RunningAgent, RunningAgent, RunningAgent) {
    let provider = domain.proxy(&["alice", "bob", "carol"]).await;
    let proxy = provider.addr;
    let mut agents = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let mut a = start(domain.agent(user, proxy).build()).await.unwrap();
        register(&mut a).await;
        agents.push(a);
    }
    let carol = agents.pop().unwrap();
    let bob = agents.pop().unwrap();
    let alice = agents.pop().unwrap();
    (provider, alice, bob, carol)
}

/// `caller` calls `to` at `callee`, who answers; returns (caller's call,
/// callee's call, the callee's `incoming_call`), once media runs on both.
async fn talk(
    w: Wait,
    caller: &mut RunningAgent,
    callee: &mut RunningAgent,
    to: &str,
) -> (u64, u64, AgentEvent) {
    let (calling, incoming) = w.dial(caller, callee, to).await;
    let AgentEvent::Calling { call, .. } = calling else {
        unreachable!()
    };
    let AgentEvent::IncomingCall { call: ccall, .. } = incoming else {
        unreachable!()
    };
    w.answer(callee, caller, ccall).await;
    for (agent, c) in [(&mut *caller, call), (&mut *callee, ccall)] {
        w.event(
            agent,
            "media started",
            |e| matches!(e, AgentEvent::MediaStarted { call, .. } if *call == c),
        )
        .await;
    }
    (call, ccall, incoming)
}

#[tokio::test]
async fn bob_transfers_alice_to_carol() {
    let domain = TestDomain::new(DOMAIN);
    let (_proxy, mut alice, mut bob, mut carol) = three(&domain).await;
    let w = Wait::default();
    let (acall, bcall, _) = talk(w, &mut alice, &mut bob, "bob").await;

    send(
        &mut bob,
        AgentCommand::Transfer {
            call: bcall,
            to: "carol".into(),
        },
    )
    .await;
    let requested = w
        .event(&mut alice, "transfer requested", |e| {
            matches!(e, AgentEvent::TransferRequested { .. })
        })
        .await;
    let AgentEvent::TransferRequested {
        call,
        to,
        by,
        new_call,
    } = requested
    else {
        unreachable!()
    };
    assert_eq!(call, acall);
    assert_eq!(to, format!("sip:carol@{DOMAIN}"));
    assert_eq!(by, Some(format!("sip:bob@{DOMAIN}")));

    let incoming = w
        .event(&mut carol, "incoming call", |e| {
            matches!(e, AgentEvent::IncomingCall { .. })
        })
        .await;
    let AgentEvent::IncomingCall {
        call: ccall,
        verified,
        tunneled,
        waiting,
        ..
    } = incoming
    else {
        unreachable!()
    };
    assert_eq!(verified, Some(id_now("alice")), "carol sees alice verified");
    assert!(tunneled && !waiting);
    send(&mut carol, AgentCommand::Answer { call: ccall }).await;
    let answered = w
        .event(
            &mut alice,
            "carol answered",
            |e| matches!(e, AgentEvent::Answered { call, .. } if *call == new_call),
        )
        .await;
    assert_eq!(
        answered,
        AgentEvent::Answered {
            call: new_call,
            verified: Some(id_now("carol")),
            tunneled: true
        },
        "alice sees carol verified"
    );
    let done = w
        .event(&mut bob, "the final NOTIFY", |e| {
            matches!(e, AgentEvent::TransferProgress { done: true, .. })
        })
        .await;
    assert!(
        matches!(done, AgentEvent::TransferProgress { call, status: 200, .. } if call == bcall),
        "{done:?}"
    );
    w.event(
        &mut bob,
        "bob's call ends",
        |e| matches!(e, AgentEvent::Ended { call, .. } if *call == bcall),
    )
    .await;
    w.event(
        &mut alice,
        "alice's call with bob ends",
        |e| matches!(e, AgentEvent::Ended { call, .. } if *call == acall),
    )
    .await;
    w.hang_up(&mut alice, &mut carol, new_call).await;
}

#[tokio::test]
async fn bob_answers_a_waiting_call_and_swaps_back() {
    let domain = TestDomain::new(DOMAIN);
    let (_proxy, mut alice, mut bob, mut carol) = three(&domain).await;
    let w = Wait::default();
    let (acall, b_alice, _) = talk(w, &mut alice, &mut bob, "bob").await;

    send(&mut carol, AgentCommand::Call { to: "bob".into() }).await;
    let incoming = w
        .event(&mut bob, "carol's call", |e| {
            matches!(e, AgentEvent::IncomingCall { .. })
        })
        .await;
    let AgentEvent::IncomingCall {
        call: b_carol,
        verified,
        waiting,
        ..
    } = incoming
    else {
        unreachable!()
    };
    assert!(waiting, "bob is in a call: carol's is a waiting call");
    assert_eq!(verified, Some(id_now("carol")));

    // Answering carol holds alice.
    send(&mut bob, AgentCommand::Answer { call: b_carol }).await;
    let held = |c: u64, dir: &'static str| move |e: &AgentEvent| matches!(e, AgentEvent::MediaUpdated { call, direction, .. } if *call == c && direction == dir);
    w.event(&mut alice, "alice is held", held(acall, "recvonly"))
        .await;
    w.event(&mut carol, "carol answered", |e| {
        matches!(e, AgentEvent::Answered { .. })
    })
    .await;
    // Bob's hold of alice and carol's media start, in either order.
    let carol_media =
        |e: &AgentEvent| matches!(e, AgentEvent::MediaStarted { call, .. } if *call == b_carol);
    let bob_holds = held(b_alice, "sendonly");
    let first = w
        .event(&mut bob, "hold and carol's media", |e| {
            bob_holds(e) || carol_media(e)
        })
        .await;
    if bob_holds(&first) {
        w.event(&mut bob, "carol's media", carol_media).await;
    } else {
        w.event(&mut bob, "bob holds alice", bob_holds).await;
    }

    // Swap back: carol held, alice resumed.
    send(&mut bob, AgentCommand::Swap { call: b_alice }).await;
    w.event(
        &mut carol,
        "carol is held",
        |e| matches!(e, AgentEvent::MediaUpdated { direction, .. } if direction == "recvonly"),
    )
    .await;
    w.event(&mut alice, "alice is back", held(acall, "sendrecv"))
        .await;
    w.hang_up(&mut alice, &mut bob, acall).await;
    send(&mut bob, AgentCommand::Hangup { call: b_carol }).await;
    w.event(&mut carol, "carol's call ends", |e| {
        matches!(e, AgentEvent::Ended { .. })
    })
    .await;
}
