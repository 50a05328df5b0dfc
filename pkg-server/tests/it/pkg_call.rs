//! The product chain end to end: a real `pkg-server` issues alice's and
//! bob's keys over HTTPS (pinned certificate, `check_key` on every key),
//! and those keys drive a secured call between two agents through the same
//! server's embedded SIP registrar/proxy on loopback, each side seeing the
//! other verified. As a phone does, each asks a device SIP credential after
//! login (`POST /v1/sip-credentials`) and registers with it: the PKG
//! password is refused by the registrar.

use crate::agents;
use crate::common;

use agents::{id_now, recent_periods, register, registration_outcome, ConfigBuilder, Wait};
use common::*;
use ibephone::agent::headless::start;
use ibephone::agent::AgentEvent;

#[tokio::test]
async fn keys_from_the_pkg_drive_a_verified_call() {
    let pkg = Pkg::new(&None, "").await;
    let server = Server::start_with(&pkg.config, &["--sip", "127.0.0.1:0"]);
    let client = server.client();
    let params = client.params().await.unwrap();
    let proxy_addr = server.sip.unwrap();

    // Each phone logs in to the PKG and fetches its keys.
    let periods = recent_periods();
    let mut agents = Vec::new();
    for (user, pw) in [("alice", ALICE_PW), ("bob", BOB_PW)] {
        let session = client.login(user, &pw.into()).await.unwrap();
        let keys = client
            .fetch_keys(&session, &params, &periods)
            .await
            .unwrap();
        let device = client.sip_credentials(&session, "laptop").await.unwrap();
        client.logout(&session).await.unwrap();
        assert_eq!(device.username, user);
        assert_ne!(device.password.expose(), pw);
        // The PKG password is not a SIP credential.
        let builder = || {
            ConfigBuilder::new(session.aor.clone(), params.clone(), proxy_addr).keys(keys.clone())
        };
        let mut with_pkg_pw = start(builder().password(pw).build()).await.unwrap();
        assert_eq!(
            registration_outcome(&mut with_pkg_pw).await,
            AgentEvent::RegistrationFailed { status: 403 }
        );
        drop(with_pkg_pw);
        let config = builder().password(device.password.expose()).build();
        let agent = start(config).await.unwrap();
        agents.push(agent);
    }
    let mut bob = agents.pop().unwrap();
    let mut alice = agents.pop().unwrap();
    for a in [&mut alice, &mut bob] {
        register(a).await;
    }
    let w = Wait::default();
    let (_, incoming) = w.dial(&mut alice, &mut bob, "bob").await;
    let AgentEvent::IncomingCall {
        call,
        verified,
        tunneled,
        ..
    } = incoming
    else {
        unreachable!()
    };
    assert_eq!(verified, Some(id_now("alice", DOMAIN)));
    assert!(tunneled);
    let answered = w.answer(&mut bob, &mut alice, call).await;
    assert!(
        matches!(&answered, AgentEvent::Answered { verified: Some(v), tunneled: true, .. } if *v == id_now("bob", DOMAIN)),
        "{answered:?}"
    );
    server.stop();
}
