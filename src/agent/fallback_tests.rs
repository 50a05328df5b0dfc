//! The plain fallback of spec 5.6, in memory: an agent calls a callee
//! outside the tunnel; the tests play the callee's answers.

use super::filter::{SecurityLog, SecurityPolicy, TunnelFilter};
use super::{Agent, AgentCommand, AgentEvent};
use crate::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
use crate::sip::digest::Password;
use crate::sip::driver::Core;
use crate::sip::message::{HeaderForm, Message};
use crate::sip::timers::Timers;
use crate::sip::ua::{HeaderPolicy, UaConfig, UserAgent};
use crate::sip::{Dest, Transport};
use crate::tunnel::{Tunnel, TunnelConfig};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const DOMAIN: &str = "biloxi.invalid";
const PROXY: &str = "127.0.0.1:5060";

fn agent(policy: SecurityPolicy) -> Agent {
    let msk = MasterSecret::generate().unwrap();
    let params = PublicParams::new(DOMAIN, msk.p_pub(), "https://127.0.0.1:8443").unwrap();
    let aor = Aor::parse(&format!("sip:alice@{DOMAIN}")).unwrap();
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut tunnel = Tunnel::new(aor.clone(), TunnelConfig::default());
    tunnel.add_params(params);
    tunnel
        .add_keys(&extract(&msk, &Identity::new(aor, Period::month_at(secs))))
        .unwrap();
    let log = Arc::new(Mutex::new(SecurityLog::default()));
    let filter = TunnelFilter::new(tunnel, policy, log.clone());
    let ua = UserAgent::new(
        UaConfig {
            user: "alice".into(),
            domain: DOMAIN.into(),
            password: Password::new("pw"),
            proxy: PROXY.parse().unwrap(),
            local: "127.0.0.1:5070".into(),
            transport: Transport::Udp,
            expires: 600,
            headers: HeaderPolicy {
                anonymous_from: false,
                ..HeaderPolicy::default()
            },
            timers: Timers::default(),
            max_transactions: 64,
        },
        Box::new(filter),
    );
    Agent::new(ua, log, DOMAIN).with_policy(policy)
}

fn events(a: &mut Agent) -> Vec<AgentEvent> {
    std::iter::from_fn(|| a.poll_event()).collect()
}

/// The INVITEs the agent sent (parsed), other messages dropped.
fn invites(a: &mut Agent) -> Vec<Message> {
    std::iter::from_fn(|| a.poll_transmit())
        .filter_map(|t| Message::parse(&t.bytes).ok())
        .filter(|m| m.method() == Some(rsip::Method::Invite))
        .collect()
}

fn tunneled(m: &Message) -> bool {
    m.header("Content-Type")
        .is_some_and(|c| c.starts_with("application/pkcs7-mime"))
}

/// The callee answers `invite` with `status` (plus `extra` headers).
fn answer(a: &mut Agent, invite: &Message, status: u16, extra: &[(&str, &str)]) {
    let mut r = Message::response_to(invite, status, "Answer", Some("callee-tag"));
    if status < 300 {
        r.push_header("Contact", "<sip:carol@127.0.0.1:5090>");
    }
    for (n, v) in extra {
        r.push_header(n, v.to_string());
    }
    let from = Dest {
        addr: PROXY.parse().unwrap(),
        transport: Transport::Udp,
    };
    a.handle_datagram(Instant::now(), from, &r.to_bytes(HeaderForm::Full));
}

fn call(a: &mut Agent, to: &str) -> Vec<Message> {
    a.handle_command(Instant::now(), AgentCommand::Call { to: to.into() });
    invites(a)
}

#[test]
fn allow_plain_retries_a_415_plain_with_the_same_call_number() {
    let mut a = agent(SecurityPolicy::AllowPlain);
    let first = call(&mut a, "carol");
    assert_eq!(first.len(), 1);
    assert!(tunneled(&first[0]));
    assert!(matches!(
        events(&mut a)[..],
        [AgentEvent::Calling {
            call: 1,
            tunneled: true,
            ..
        }]
    ));
    answer(&mut a, &first[0], 415, &[("Accept", "application/sdp")]);
    let retry = invites(&mut a);
    assert_eq!(retry.len(), 1, "one new INVITE");
    assert!(!tunneled(&retry[0]), "the retry is plain");
    assert_ne!(retry[0].call_id(), first[0].call_id(), "a new INVITE");
    assert!(retry[0].header("From").unwrap().contains("alice"));
    let ev = events(&mut a);
    assert!(
        matches!(&ev[..], [AgentEvent::PlainFallback { call: 1, needs_consent: false, reason, .. },
            AgentEvent::Calling { call: 1, tunneled: false, .. }] if reason.contains("415")),
        "{ev:?}"
    );
    answer(&mut a, &retry[0], 200, &[]);
    let ev = events(&mut a);
    assert!(
        matches!(
            &ev[..],
            [AgentEvent::Answered {
                call: 1,
                verified: None,
                tunneled: false
            }]
        ),
        "{ev:?}"
    );
}

#[test]
fn a_second_415_ends_the_call() {
    let mut a = agent(SecurityPolicy::AllowPlain);
    let first = call(&mut a, "carol");
    answer(&mut a, &first[0], 415, &[]);
    let retry = invites(&mut a);
    events(&mut a);
    answer(&mut a, &retry[0], 415, &[]);
    assert!(invites(&mut a).is_empty(), "falls back once only");
    let ev = events(&mut a);
    assert!(
        matches!(&ev[..], [AgentEvent::Ended { call: 1, reason }] if reason == "rejected 415"),
        "{ev:?}"
    );
}

#[test]
fn require_never_falls_back() {
    let mut a = agent(SecurityPolicy::Require);
    let first = call(&mut a, "carol");
    events(&mut a);
    answer(&mut a, &first[0], 415, &[("Accept", "application/sdp")]);
    assert!(invites(&mut a).is_empty(), "no plain INVITE under require");
    let ev = events(&mut a);
    assert!(
        matches!(&ev[..], [AgentEvent::Ended { call: 1, reason }] if reason.contains("require")),
        "{ev:?}"
    );
    // Unknown domain: nothing leaves, plain or sealed.
    assert!(call(&mut a, "carol@elsewhere.invalid").is_empty());
    let ev = events(&mut a);
    assert!(
        matches!(&ev[..], [AgentEvent::Ended { call: 2, reason }]
            if reason.contains("no public parameters") && reason.contains("require")),
        "{ev:?}"
    );
    // Even a forged mark cannot make the filter send plain.
    a.log.lock().unwrap().plain_next = true;
    let sealed = call(&mut a, "carol");
    assert!(tunneled(&sealed[0]));
}

#[test]
fn allow_plain_calls_a_domain_without_parameters_plain() {
    let mut a = agent(SecurityPolicy::AllowPlain);
    let sent = call(&mut a, "carol@elsewhere.invalid");
    assert_eq!(sent.len(), 1);
    assert!(!tunneled(&sent[0]));
    let ev = events(&mut a);
    assert!(
        matches!(&ev[..], [AgentEvent::PlainFallback { call: 1, reason, needs_consent: false, .. },
            AgentEvent::Calling { call: 1, tunneled: false, .. }] if reason.contains("elsewhere.invalid")),
        "{ev:?}"
    );
}

#[test]
fn tunnel_speakers_are_not_downgraded() {
    for (status, extra) in [
        (493, vec![]),
        (
            415,
            vec![("Accept", "application/pkcs7-mime, application/sdp")],
        ),
    ] {
        let mut a = agent(SecurityPolicy::AllowPlain);
        let first = call(&mut a, "carol");
        events(&mut a);
        answer(&mut a, &first[0], status, &extra);
        assert!(invites(&mut a).is_empty(), "{status}: no plain retry");
        let ev = events(&mut a);
        assert!(
            matches!(&ev[..], [AgentEvent::Ended { call: 1, reason }] if reason == &format!("rejected {status}")),
            "{ev:?}"
        );
    }
}

#[test]
fn ask_waits_for_consent() {
    let mut a = agent(SecurityPolicy::Ask);
    let first = call(&mut a, "carol");
    events(&mut a);
    answer(&mut a, &first[0], 415, &[]);
    assert!(
        invites(&mut a).is_empty(),
        "nothing plain before the user agrees"
    );
    let ev = events(&mut a);
    assert!(
        matches!(
            &ev[..],
            [AgentEvent::PlainFallback {
                call: 1,
                needs_consent: true,
                ..
            }]
        ),
        "{ev:?}"
    );
    a.handle_command(Instant::now(), AgentCommand::CallPlain { call: 1 });
    let retry = invites(&mut a);
    assert_eq!(retry.len(), 1);
    assert!(!tunneled(&retry[0]));
    assert!(matches!(
        events(&mut a)[..],
        [AgentEvent::Calling {
            call: 1,
            tunneled: false,
            ..
        }]
    ));
    // Declining instead: the call ends, nothing is sent.
    let second = call(&mut a, "carol");
    events(&mut a);
    answer(&mut a, &second[0], 415, &[]);
    events(&mut a);
    a.handle_command(Instant::now(), AgentCommand::Hangup { call: 2 });
    assert!(invites(&mut a).is_empty());
    let ev = events(&mut a);
    assert!(
        matches!(&ev[..], [AgentEvent::Ended { call: 2, reason }] if reason.contains("declined")),
        "{ev:?}"
    );
    a.handle_command(Instant::now(), AgentCommand::CallPlain { call: 2 });
    assert!(
        invites(&mut a).is_empty(),
        "consent is asked once per fallback"
    );
}
