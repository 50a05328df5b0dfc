//! The filter's security rules, attacked end to end in memory: two agents
//! (alice, bob) of one domain exchange their real datagrams; an attacker
//! crafts plain or tunneled messages from what travels in the clear (outer
//! Call-ID and tags) and from the public parameters.

use super::{
    strict_reading, Refusal, SecurityLog, SecurityPolicy, TunnelFilter, WallClock, Withheld,
};
use crate::agent::{Agent, AgentCommand, AgentEvent};
use crate::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
use crate::sip::digest::Password;
use crate::sip::driver::Core;
use crate::sip::filter::MessageFilter;
use crate::sip::message::{HeaderForm, Message};
use crate::sip::timers::Timers;
use crate::sip::ua::{HeaderPolicy, UaConfig, UserAgent};
use crate::sip::{Dest, Transport};
use crate::tunnel::{classify, Treatment, Tunnel, TunnelConfig};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DOMAIN: &str = "biloxi.invalid";
const PROXY: &str = "127.0.0.1:5060";

/// A wall clock the test sets.
#[derive(Clone)]
struct FakeClock(Arc<Mutex<SystemTime>>);

impl FakeClock {
    fn at(t: SystemTime) -> Self {
        FakeClock(Arc::new(Mutex::new(t)))
    }
    fn set(&self, t: SystemTime) {
        *self.0.lock().unwrap() = t;
    }
}

impl WallClock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

struct World {
    msk: MasterSecret,
    params: PublicParams,
}

impl World {
    fn new() -> Self {
        let msk = MasterSecret::generate().unwrap();
        let params = PublicParams::new(DOMAIN, msk.p_pub(), "https://127.0.0.1:8443").unwrap();
        World { msk, params }
    }

    fn aor(user: &str) -> Aor {
        Aor::parse(&format!("sip:{user}@{DOMAIN}")).unwrap()
    }

    /// A tunnel for `user`, with keys of the previous and current period
    /// when `keys`.
    fn tunnel(&self, user: &str, keys: bool) -> Tunnel {
        self.tunnel_with(user, keys, TunnelConfig::default())
    }

    /// [`World::tunnel`] with `config`.
    fn tunnel_with(&self, user: &str, keys: bool, config: TunnelConfig) -> Tunnel {
        let mut t = Tunnel::new(Self::aor(user), config);
        t.add_params(self.params.clone());
        if keys {
            let current = Period::month_at(unix(SystemTime::now()));
            for p in [current.previous_month().unwrap(), current] {
                t.add_keys(&extract(&self.msk, &Identity::new(Self::aor(user), p)))
                    .unwrap();
            }
        }
        t
    }

    fn agent(
        &self,
        user: &str,
        port: u16,
        policy: SecurityPolicy,
        clock: Option<FakeClock>,
    ) -> Peer {
        self.agent_with(user, port, policy, clock, TunnelConfig::default())
    }

    /// [`World::agent`] whose tunnel runs with `config`.
    fn agent_with(
        &self,
        user: &str,
        port: u16,
        policy: SecurityPolicy,
        clock: Option<FakeClock>,
        config: TunnelConfig,
    ) -> Peer {
        self.agent_filtered(user, port, policy, clock, config, |f| f)
    }

    /// [`World::agent_with`] whose filter `adjust` changes first.
    fn agent_filtered(
        &self,
        user: &str,
        port: u16,
        policy: SecurityPolicy,
        clock: Option<FakeClock>,
        config: TunnelConfig,
        adjust: impl FnOnce(TunnelFilter) -> TunnelFilter,
    ) -> Peer {
        let log = Arc::new(Mutex::new(SecurityLog::default()));
        let mut filter = adjust(TunnelFilter::new(
            self.tunnel_with(user, true, config),
            policy,
            log.clone(),
        ));
        if let Some(c) = clock {
            filter = filter.with_wall_clock(Box::new(c));
        }
        let ua = UserAgent::new(peer_config(user, port), Box::new(filter));
        Peer {
            agent: Agent::new(ua, log.clone(), DOMAIN).with_policy(policy),
            log,
        }
    }
}

/// The user agent settings of every test peer: `user` of [`DOMAIN`] on
/// loopback port `port`, UDP through [`PROXY`], From naming the user.
fn peer_config(user: &str, port: u16) -> UaConfig {
    UaConfig {
        user: user.into(),
        domain: DOMAIN.into(),
        password: Password::new("pw"),
        proxy: PROXY.parse().unwrap(),
        local: format!("127.0.0.1:{port}"),
        transport: Transport::Udp,
        expires: 600,
        headers: HeaderPolicy {
            anonymous_from: false,
            ..HeaderPolicy::default()
        },
        timers: Timers::default(),
        max_transactions: 64,
    }
}

struct Peer {
    agent: Agent,
    log: Arc<Mutex<SecurityLog>>,
}

impl Peer {
    fn events(&mut self) -> Vec<AgentEvent> {
        std::iter::from_fn(|| self.agent.poll_event()).collect()
    }
    fn sent(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.agent.poll_transmit())
            .map(|t| t.bytes)
            .collect()
    }
    /// What it sent besides `100 Trying` (built by the transaction layer
    /// from the outer headers, plain by spec 5.5).
    fn answered(&mut self) -> Vec<String> {
        self.sent()
            .iter()
            .map(|b| String::from_utf8_lossy(b).to_string())
            .filter(|t| !t.starts_with("SIP/2.0 100 "))
            .collect()
    }
    fn feed(&mut self, now: Instant, bytes: &[u8]) {
        let from = Dest {
            addr: PROXY.parse().unwrap(),
            transport: Transport::Udp,
        };
        self.agent.handle_datagram(now, from, bytes);
    }
    fn last_rejection(&self) -> Option<Refusal> {
        self.log
            .lock()
            .unwrap()
            .rejections
            .back()
            .map(|(_, r)| r.clone())
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn id_now(user: &str) -> String {
    format!(
        "sip:{user}@{DOMAIN}#{}",
        Period::month_at(unix(SystemTime::now()))
    )
}

/// Delivers what `from` sent to `to` (as the proxy would), returning the
/// datagrams.
fn deliver(now: Instant, from: &mut Peer, to: &mut Peer) -> Vec<Vec<u8>> {
    let sent = from.sent();
    for b in &sent {
        to.feed(now, b);
    }
    sent
}

/// A secured call alice -> bob, answered; returns the outer INVITE and the
/// outer 200 (what anyone on the path sees).
fn call(now: Instant, alice: &mut Peer, bob: &mut Peer) -> (Message, Message) {
    alice
        .agent
        .handle_command(now, AgentCommand::Call { to: "bob".into() });
    let invite = deliver(now, alice, bob);
    let ev = bob.events();
    let Some(AgentEvent::IncomingCall { call, .. }) = ev
        .iter()
        .find(|e| matches!(e, AgentEvent::IncomingCall { .. }))
    else {
        panic!("no incoming call: {ev:?}");
    };
    let call = *call;
    deliver(now, bob, alice); // 180
    bob.agent.handle_command(now, AgentCommand::Answer { call });
    let ok = deliver(now, bob, alice);
    deliver(now, alice, bob); // ACK
    let invite = invite
        .iter()
        .map(|b| Message::parse(b).unwrap())
        .find(|m| m.method() == Some(rsip::Method::Invite))
        .unwrap();
    let ok = ok
        .iter()
        .map(|b| Message::parse(b).unwrap())
        .find(|m| m.status() == Some(200))
        .unwrap();
    (invite, ok)
}

/// A MESSAGE "hi" from `user` to bob outside any dialog (Via branch and
/// From tag from `id`), with `extra` header lines.
fn message_to_bob(user: &str, id: &str, call_id: &str, extra: &str) -> Vec<u8> {
    format!(
        "MESSAGE sip:bob@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{DOMAIN}>;tag={id}\r\n\
         To: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 MESSAGE\r\n\
         {extra}\
         Content-Type: text/plain\r\n\
         Content-Length: 2\r\n\r\nhi"
    )
    .into_bytes()
}

/// An in-dialog request to bob's side of the dialog of `ok`, plain, with
/// `extra` header lines and `from` as From (without tag).
fn plain_in_dialog(method: &str, ok: &Message, from: &str, extra: &str, cseq: u32) -> Vec<u8> {
    format!(
        "{method} sip:bob@127.0.0.1:5072 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKevil{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: {from};tag={}\r\n\
         To: <sip:bob@{DOMAIN}>;tag={}\r\n\
         Call-ID: {}\r\n\
         CSeq: {cseq} {method}\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n",
        ok.from_tag().unwrap(),
        ok.to_tag().unwrap(),
        ok.call_id().unwrap(),
    )
    .into_bytes()
}

#[test]
fn unsigned_invite_reusing_a_call_id_is_shown_unverified() {
    let w = World::new();
    let now = Instant::now();
    let mut alice = w.agent("alice", 5070, SecurityPolicy::Require, None);
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Require, None);
    let (invite, _) = call(now, &mut alice, &mut bob);
    // The genuine call was verified, then ends.
    alice
        .agent
        .handle_command(now, AgentCommand::Hangup { call: 1 });
    deliver(now, &mut alice, &mut bob);
    deliver(now, &mut bob, &mut alice);
    bob.events();
    // Mallory holds no keys: her first message is unsigned. She reuses the
    // Call-ID she saw and claims to be alice.
    let mut mallory = w.tunnel("mallory", false);
    let cid = invite.call_id().unwrap();
    let inner = format!(
        "INVITE sip:bob@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKm1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@{DOMAIN}>;tag=mtag\r\n\
         To: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:127.0.0.1:5099>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let outer = mallory.seal(SystemTime::now(), inner.as_bytes()).unwrap();
    bob.feed(now, &outer);
    let ev = bob.events();
    // The tunnel refuses a first message on the Call-ID of a session it
    // still holds (spec 5.4, no shadowing); if it ever let one through, the
    // call must still show unverified. Either way nothing says "alice".
    let refused =
        matches!(&ev[..], [AgentEvent::Rejected { reason, .. }] if reason.contains("collides"));
    let unverified = matches!(&ev[..], [AgentEvent::IncomingCall { verified: None, tunneled: true, from, .. }]
            if from.contains("alice"));
    assert!(
        refused || unverified,
        "an unsigned INVITE proves nothing, whatever Call-ID it reuses: {ev:?}"
    );
    // A fresh Call-ID gets past the tunnel's collision rule: the call
    // arrives, claimed From alice, and unverified.
    let inner_fresh = inner
        .replace(cid, "fresh-call-id-mallory-0123456789")
        .replace("z9hG4bKm1", "z9hG4bKm1b");
    let outer = mallory
        .seal(SystemTime::now(), inner_fresh.as_bytes())
        .unwrap();
    bob.feed(now, &outer);
    let ev = bob.events();
    assert!(
        matches!(&ev[..], [AgentEvent::IncomingCall { verified: None, tunneled: true, from, .. }]
            if from.contains("alice")),
        "an unsigned INVITE proves nothing: {ev:?}"
    );
    // The same for a secure message.
    let inner = format!(
        "MESSAGE sip:bob@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKm2\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@{DOMAIN}>;tag=mtag2\r\n\
         To: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: 2\r\n\r\nhi"
    );
    // On the verified call's own Call-ID (from a fresh tunnel of hers: her
    // first one holds that Call-ID already): refused as a collision or
    // shown unverified, never "verified alice".
    let outer = w
        .tunnel("mallory", false)
        .seal(SystemTime::now(), inner.as_bytes())
        .unwrap();
    bob.feed(now, &outer);
    let ev = bob.events();
    assert!(
        !ev.iter().any(|e| matches!(
            e,
            AgentEvent::MessageReceived {
                verified: Some(_),
                ..
            }
        )),
        "an unsigned MESSAGE on a verified call's Call-ID proves nothing: {ev:?}"
    );
    assert!(
        ev.iter().any(|e| matches!(
            e,
            AgentEvent::Rejected { .. } | AgentEvent::MessageReceived { verified: None, .. }
        )),
        "{ev:?}"
    );
    let inner = inner
        .replace(cid, "fresh-message-id-mallory-0123456789")
        .replace("z9hG4bKm2", "z9hG4bKm2b");
    let outer = mallory.seal(SystemTime::now(), inner.as_bytes()).unwrap();
    bob.feed(now, &outer);
    let ev = bob.events();
    assert!(
        matches!(&ev[..], [AgentEvent::MessageReceived { verified: None, tunneled: true, text, .. }]
            if text == "hi"),
        "{ev:?}"
    );
}

#[test]
fn a_leftover_signed_request_does_not_vouch_for_the_next_call() {
    // alice's signed OPTIONS opens a session at bob but makes no event; a
    // plain INVITE that follows must not inherit its identity.
    let w = World::new();
    let now = Instant::now();
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Ask, None);
    let mut alice_tunnel = w.tunnel("alice", true);
    let options = format!(
        "OPTIONS sip:bob@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKo1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@{DOMAIN}>;tag=otag\r\n\
         To: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: options-call-id-0123456789\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let outer = alice_tunnel
        .seal(SystemTime::now(), options.as_bytes())
        .unwrap();
    bob.feed(now, &outer);
    assert!(bob.events().is_empty());
    assert_eq!(bob.sent().len(), 1, "the OPTIONS is answered");
    // A plain INVITE the strict parser cannot read (NUL in the display name).
    let invite = format!(
        "INVITE sip:bob@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKp1\r\n\
         Max-Forwards: 70\r\n\
         From: \"ali\0ce\" <sip:alice@{DOMAIN}>;tag=ptag\r\n\
         To: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: plain-call-id-0123456789\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:127.0.0.1:5099>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    bob.feed(now, invite.as_bytes());
    let ev = bob.events();
    assert!(
        matches!(
            &ev[..],
            [AgentEvent::IncomingCall {
                verified: None,
                tunneled: false,
                ..
            }]
        ),
        "{ev:?}"
    );
    // bob's answers to it cannot be read strictly: never sent, plain or not.
    let sent = bob.answered();
    assert!(sent.is_empty(), "nothing goes out for it: {sent:?}");
}

#[test]
fn verified_identities_come_from_the_messages_that_made_the_call() {
    let w = World::new();
    let now = Instant::now();
    let mut alice = w.agent("alice", 5070, SecurityPolicy::Require, None);
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Require, None);
    alice
        .agent
        .handle_command(now, AgentCommand::Call { to: "bob".into() });
    deliver(now, &mut alice, &mut bob);
    let ev = bob.events();
    assert!(
        matches!(&ev[..], [AgentEvent::IncomingCall { call, verified: Some(v), tunneled: true, .. }]
            if *v == id_now("alice") && *call == 1 << 63),
        "{ev:?}"
    );
    deliver(now, &mut bob, &mut alice);
    bob.agent
        .handle_command(now, AgentCommand::Answer { call: 1 << 63 });
    deliver(now, &mut bob, &mut alice);
    let ev = alice.events();
    assert!(
        ev.iter().any(
            |e| matches!(e, AgentEvent::Answered { call: 1, verified: Some(v), tunneled: true }
            if *v == id_now("bob"))
        ),
        "{ev:?}"
    );
    deliver(now, &mut alice, &mut bob);
    let ev = bob.events();
    assert!(
        matches!(&ev[..], [AgentEvent::Answered { verified: Some(v), tunneled: true, .. }]
            if *v == id_now("alice")),
        "{ev:?}"
    );
}

#[test]
fn plain_bye_cannot_end_a_protected_call() {
    for policy in [
        SecurityPolicy::Require,
        SecurityPolicy::Ask,
        SecurityPolicy::AllowPlain,
    ] {
        let w = World::new();
        let now = Instant::now();
        let mut alice = w.agent("alice", 5070, policy, None);
        let mut bob = w.agent("bob", 5072, policy, None);
        let (_, ok) = call(now, &mut alice, &mut bob);
        bob.events();
        let from = format!("<sip:alice@{DOMAIN}>");
        // A NUL rsip takes and the strict parser refuses, then a clean one.
        for (n, extra) in [(10, "X-A: a\0b\r\n"), (11, "")] {
            bob.feed(now, &plain_in_dialog("BYE", &ok, &from, extra, n));
            assert!(
                bob.answered().is_empty(),
                "{policy:?}: no answer to a plain BYE"
            );
            assert!(
                !bob.events()
                    .iter()
                    .any(|e| matches!(e, AgentEvent::Ended { .. })),
                "{policy:?}: the call goes on"
            );
            assert_eq!(
                bob.last_rejection(),
                Some(Refusal::PlainInProtectedDialog("BYE".into())),
                "{policy:?}"
            );
        }
        // The call is still up: alice's tunneled BYE ends it.
        alice
            .agent
            .handle_command(now, AgentCommand::Hangup { call: 1 });
        deliver(now, &mut alice, &mut bob);
        assert!(bob
            .events()
            .iter()
            .any(|e| matches!(e, AgentEvent::Ended { reason, .. } if reason == "remote hangup")));
    }
}

#[test]
fn plain_reinvite_with_a_nul_gets_nothing_back() {
    let w = World::new();
    let now = Instant::now();
    let mut alice = w.agent("alice", 5070, SecurityPolicy::Require, None);
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Require, None);
    let (_, ok) = call(now, &mut alice, &mut bob);
    bob.events();
    let from = format!("\"a\0b\" <sip:alice@{DOMAIN}>");
    bob.feed(now, &plain_in_dialog("INVITE", &ok, &from, "", 20));
    let sent = bob.answered();
    assert!(
        sent.is_empty(),
        "no answer, sealed or plain, to a plain re-INVITE: {sent:?}"
    );
    let ev = bob.events();
    assert!(
        matches!(&ev[..], [AgentEvent::Rejected { .. }]),
        "only the rejection is reported: {ev:?}"
    );
    assert_eq!(
        bob.last_rejection(),
        Some(Refusal::PlainInProtectedDialog("INVITE".into()))
    );
}

#[test]
fn plain_invite_reusing_a_protected_call_id_is_refused_and_not_listed() {
    for policy in [SecurityPolicy::Ask, SecurityPolicy::AllowPlain] {
        let w = World::new();
        let now = Instant::now();
        let mut alice = w.agent("alice", 5070, policy, None);
        let mut bob = w.agent("bob", 5072, policy, None);
        let (invite, _) = call(now, &mut alice, &mut bob);
        bob.events();
        let cid = invite.call_id().unwrap().to_string();
        let plain = format!(
            "INVITE sip:bob@{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKq1\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@{DOMAIN}>;tag=qtag\r\n\
             To: <sip:bob@{DOMAIN}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:127.0.0.1:5099>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        bob.feed(now, plain.as_bytes());
        let ev = bob.events();
        assert!(
            matches!(&ev[..], [AgentEvent::Rejected { .. }]),
            "{policy:?}: no incoming call: {ev:?}"
        );
        assert!(bob.answered().is_empty(), "{policy:?}");
        assert!(
            !bob.log.lock().unwrap().plain.contains(&cid),
            "{policy:?}: a protected Call-ID never goes on the plain list"
        );
        assert_eq!(
            bob.last_rejection(),
            Some(Refusal::PlainInProtectedDialog("INVITE".into()))
        );
    }
}

#[test]
fn stray_plain_2xx_makes_us_send_nothing() {
    for policy in [SecurityPolicy::Require, SecurityPolicy::AllowPlain] {
        let w = World::new();
        let now = Instant::now();
        let mut alice = w.agent("alice", 5070, policy, None);
        let mut bob = w.agent("bob", 5072, policy, None);
        let (invite, ok) = call(now, &mut alice, &mut bob);
        alice.events();
        // A forged plain 2xx of the call: one as a retransmission (same To
        // tag), one as a second fork (new To tag).
        for to_tag in [ok.to_tag().unwrap().to_string(), "forktag".to_string()] {
            let mut forged = Message::response_to(&invite, 200, "OK", Some(&to_tag));
            forged.push_header("Contact", "<sip:127.0.0.1:5099>");
            alice.feed(now, &forged.to_bytes(HeaderForm::Full));
            assert!(
                alice.sent().is_empty(),
                "{policy:?}: no ACK, no BYE for a plain 2xx"
            );
            assert!(matches!(
                alice.last_rejection(),
                Some(Refusal::PlainInProtectedDialog(_)) | Some(Refusal::Tunnel(_))
            ));
        }
    }
}

#[test]
fn unreadable_messages_are_never_sent_plain() {
    let w = World::new();
    let now = Instant::now();
    for policy in [SecurityPolicy::Require, SecurityPolicy::AllowPlain] {
        let log = Arc::new(Mutex::new(SecurityLog::default()));
        let mut f = TunnelFilter::new(w.tunnel("alice", true), policy, log.clone());
        // A CANCEL is plain by 5.5, but only when it can be read.
        for bytes in [
            "CANCEL sip:bob@biloxi.invalid SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKc\r\n\
             f: <sip:alice@biloxi.invalid>;tag=a\r\nt: <sip:bob@biloxi.invalid>\r\ni: cid-cancel\r\n\
             CSeq: 1 CANCEL\r\nX-A: a\0b\r\nl: 0\r\n\r\n",
            "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKd\r\n\
             f: \"a\0b\" <sip:alice@biloxi.invalid>;tag=a\r\nt: <sip:bob@biloxi.invalid>;tag=b\r\n\
             i: cid-plain\r\nCSeq: 2 INVITE\r\nl: 0\r\n\r\n",
        ] {
            let msg = Message::parse(bytes.as_bytes()).expect("rsip takes the NUL");
            assert_eq!(
                classify(&msg.to_bytes(HeaderForm::Compact), false),
                Treatment::Tunnel,
                "unreadable bytes are never classified plain"
            );
            log.lock().unwrap().plain.push("cid-plain".into());
            assert!(f.outgoing(now, msg).is_err(), "{policy:?}");
            assert!(matches!(
                log.lock().unwrap().withheld.back(),
                Some((_, Withheld::Unreadable(_)))
            ));
        }
    }
}

#[test]
fn parser_differentials_fail_closed() {
    // Each: rsip takes it; the strict reading must refuse it or agree.
    let base = |extra: &str, from: &str| {
        format!(
            "BYE sip:bob@biloxi.invalid SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\n\
             From: {from}\r\nTo: <sip:bob@biloxi.invalid>;tag=b\r\nCall-ID: cid-x\r\n\
             CSeq: 3 BYE\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    };
    let cases = [
        (
            "NUL in a header",
            base("X-A: a\0b\r\n", "<sip:alice@biloxi.invalid>;tag=a"),
        ),
        (
            "bare CR in a header",
            base("X-A: a\rb\r\n", "<sip:alice@biloxi.invalid>;tag=a"),
        ),
        (
            "duplicate Call-ID",
            base("i: cid-y\r\n", "<sip:alice@biloxi.invalid>;tag=a"),
        ),
        (
            "duplicate From",
            base(
                "f: <sip:carol@biloxi.invalid>;tag=c\r\n",
                "<sip:alice@biloxi.invalid>;tag=a",
            ),
        ),
        (
            "NUL in From",
            base("", "\"a\0\" <sip:alice@biloxi.invalid>;tag=a"),
        ),
    ];
    for (what, bytes) in cases {
        let Ok(msg) = Message::parse(bytes.as_bytes()) else {
            continue; // rsip refuses it too: no differential.
        };
        let reserialised = msg.to_bytes(HeaderForm::Compact);
        assert!(
            strict_reading(&msg, &reserialised).is_err(),
            "{what}: read differently yet accepted"
        );
    }
    // Raw bytes as an opened inner message arrives (not re-serialised):
    // folded lines, odd spacing, lower-case names. Whatever rsip makes of
    // them, a strict reading that passes means both saw the same From.
    let raw = |from_lines: &str| {
        format!(
            "INVITE sip:bob@biloxi.invalid SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKy\r\n\
             {from_lines}t: <sip:bob@biloxi.invalid>\r\ni: cid-z\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n"
        )
    };
    for from_lines in [
        "From: <sip:mallory@biloxi.invalid>\r\n ;tag=m\r\n",
        "From: \"Alice\"\r\n\t<sip:mallory@biloxi.invalid>;tag=m\r\n",
        "From : <sip:mallory@biloxi.invalid>;tag=m\r\n",
        "from: <sip:mallory@biloxi.invalid>;tag=m\r\nX-F: <sip:alice@biloxi.invalid>\r\n",
    ] {
        let bytes = raw(from_lines);
        let Ok(msg) = Message::parse(bytes.as_bytes()) else {
            continue;
        };
        if strict_reading(&msg, bytes.as_bytes()).is_ok() {
            let view = crate::tunnel::message::SipView::parse(bytes.as_bytes()).unwrap();
            assert_eq!(
                view.one("from").ok(),
                msg.header("From"),
                "{from_lines:?}: accepted but read differently"
            );
        }
    }
    // Compact forms and case are read alike.
    let fine = "BYE sip:bob@biloxi.invalid SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\n\
                F: <sip:alice@biloxi.invalid>;tag=a\r\nTO: <sip:bob@biloxi.invalid>;tag=b\r\ni: cid-x\r\n\
                cseq: 3 BYE\r\nl: 0\r\n\r\n";
    let msg = Message::parse(fine.as_bytes()).unwrap();
    assert_eq!(
        strict_reading(&msg, &msg.to_bytes(HeaderForm::Compact)),
        Ok(())
    );
}

#[test]
fn a_stalled_monotonic_clock_does_not_make_calls_stale() {
    // The laptop slept an hour: the monotonic clock stalled at `frozen`
    // while wall time moved on. alice's filter was built before the sleep.
    let w = World::new();
    let frozen = Instant::now();
    let woke = SystemTime::now();
    let alice_clock = FakeClock::at(woke - Duration::from_secs(3600));
    let mut alice = w.agent(
        "alice",
        5070,
        SecurityPolicy::Require,
        Some(alice_clock.clone()),
    );
    let mut bob = w.agent(
        "bob",
        5072,
        SecurityPolicy::Require,
        Some(FakeClock::at(woke)),
    );
    alice_clock.set(woke);
    alice
        .agent
        .handle_command(frozen, AgentCommand::Call { to: "bob".into() });
    deliver(frozen, &mut alice, &mut bob);
    let ev = bob.events();
    assert!(
        matches!(
            &ev[..],
            [AgentEvent::IncomingCall {
                verified: Some(_),
                tunneled: true,
                ..
            }]
        ),
        "the call still opens: {ev:?}"
    );
    assert_eq!(bob.last_rejection(), None);
    deliver(frozen, &mut bob, &mut alice);
    bob.agent
        .handle_command(frozen, AgentCommand::Answer { call: 1 << 63 });
    deliver(frozen, &mut bob, &mut alice);
    assert!(alice.events().iter().any(|e| matches!(
        e,
        AgentEvent::Answered {
            verified: Some(_),
            ..
        }
    )));
}

/// The protected Call-ID memory is bounded (oldest forgotten first). A
/// keyless attacker floods it with unsigned first messages on fresh
/// Call-IDs (the tunnel opens them: they only prove nothing), pushing the
/// live call's Call-ID out, then sends a plain BYE: under `ask` and
/// `allow-plain` it would pass as a plain dialog's. The live tunnel
/// session keeps the dialog protected whatever the memory forgot.
#[test]
fn a_flood_of_first_messages_cannot_unprotect_a_live_call() {
    for policy in [SecurityPolicy::Ask, SecurityPolicy::AllowPlain] {
        let w = World::new();
        let now = Instant::now();
        let mut alice = w.agent("alice", 5070, policy, None);
        let mut bob = w.agent_filtered("bob", 5072, policy, None, TunnelConfig::default(), |f| {
            f.with_protected_limit(2)
        });
        let (_, ok) = call(now, &mut alice, &mut bob);
        bob.events();
        let mut mallory = w.tunnel("mallory", false);
        for n in 0..3 {
            let inner = message_to_bob(
                "mallory",
                &format!("flood{n}"),
                &format!("flood-{n}-0123456789abcdef"),
                "",
            );
            let outer = mallory.seal(SystemTime::now(), &inner).unwrap();
            bob.feed(now, &outer);
        }
        assert_eq!(
            bob.events()
                .iter()
                .filter(|e| matches!(e, AgentEvent::MessageReceived { verified: None, .. }))
                .count(),
            3,
            "{policy:?}: the flood got through the tunnel (unverified)"
        );
        let from = format!("<sip:alice@{DOMAIN}>");
        bob.feed(now, &plain_in_dialog("BYE", &ok, &from, "", 20));
        assert!(
            !bob.events()
                .iter()
                .any(|e| matches!(e, AgentEvent::Ended { .. })),
            "{policy:?}: a plain BYE ended the protected call"
        );
        assert_eq!(
            bob.last_rejection(),
            Some(Refusal::PlainInProtectedDialog("BYE".into())),
            "{policy:?}"
        );
    }
}

/// Under `require`, a plain message on a fresh Call-ID that the strict
/// parser cannot read (a NUL in a header value, which rsip takes) is
/// dropped without an answer: no 415 computed from a reading that the
/// other parser may not share. The same message without the NUL gets the
/// readable refusal, 415 with `Accept`.
#[test]
fn an_unreadable_plain_message_is_dropped_under_require() {
    let w = World::new();
    let now = Instant::now();
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Require, None);
    let message = |n: u32, extra: &str| {
        message_to_bob(
            "carol",
            &format!("unread{n}"),
            &format!("unreadable-{n}-0123456789"),
            extra,
        )
    };
    bob.feed(now, &message(1, "X-A: a\0b\r\n"));
    assert!(
        bob.answered().is_empty(),
        "no answer to an unreadable message"
    );
    assert!(
        matches!(bob.last_rejection(), Some(Refusal::Unreadable(_))),
        "{:?}",
        bob.last_rejection()
    );
    assert!(!bob
        .events()
        .iter()
        .any(|e| matches!(e, AgentEvent::MessageReceived { .. })));
    bob.feed(now, &message(2, ""));
    let answers = bob.answered();
    assert!(
        answers.len() == 1 && answers[0].starts_with("SIP/2.0 415 "),
        "{answers:?}"
    );
    assert!(matches!(
        bob.last_rejection(),
        Some(Refusal::Tunnel(crate::tunnel::OpenError::NotTunneled))
    ));
}

#[test]
fn a_full_table_answers_503_with_retry_after() {
    // bob's table holds one session: alice's live call fills it.
    let w = World::new();
    let now = Instant::now();
    let mut alice = w.agent("alice", 5070, SecurityPolicy::Require, None);
    let mut bob = w.agent_with(
        "bob",
        5072,
        SecurityPolicy::Require,
        None,
        TunnelConfig {
            max_sessions: 1,
            ..TunnelConfig::default()
        },
    );
    call(now, &mut alice, &mut bob);
    bob.events();
    // carol's signed INVITE and MESSAGE find no room: each is answered
    // 503 with Retry-After, plain (no tunnel session to seal it in), and
    // alice's call is not evicted for them.
    let mut carol = w.agent("carol", 5074, SecurityPolicy::Require, None);
    carol
        .agent
        .handle_command(now, AgentCommand::Call { to: "bob".into() });
    carol.agent.handle_command(
        now,
        AgentCommand::Message {
            to: "bob".into(),
            text: "hello".into(),
        },
    );
    for b in carol.sent() {
        bob.feed(now, &b);
        let answers = bob.answered();
        assert_eq!(answers.len(), 1, "{answers:?}");
        let a = &answers[0];
        assert!(a.starts_with("SIP/2.0 503 Service Unavailable\r\n"), "{a}");
        assert!(a.contains("\r\nRetry-After: 60\r\n"), "{a}");
        assert!(!a.contains("pkcs7"), "plain: {a}");
        assert!(matches!(
            bob.last_rejection(),
            Some(Refusal::Tunnel(crate::tunnel::OpenError::TableFull))
        ));
        assert!(!bob.events().iter().any(|e| matches!(
            e,
            AgentEvent::IncomingCall { .. } | AgentEvent::MessageReceived { .. }
        )));
    }
    // alice's call still works: her BYE is answered inside the tunnel.
    alice
        .agent
        .handle_command(now, AgentCommand::Hangup { call: 1 });
    deliver(now, &mut alice, &mut bob);
    let ok = bob.answered();
    assert!(
        ok.iter()
            .any(|m| m.starts_with("SIP/2.0 200 ") && m.contains("pkcs7")),
        "{ok:?}"
    );
}

#[test]
fn a_racing_unsigned_invite_cannot_block_the_signed_call() {
    let w = World::new();
    let now = Instant::now();
    let mut alice = w.agent("alice", 5070, SecurityPolicy::Require, None);
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Require, None);
    alice
        .agent
        .handle_command(now, AgentCommand::Call { to: "bob".into() });
    let genuine = alice.sent();
    let outer = genuine
        .iter()
        .map(|b| Message::parse(b).unwrap())
        .find(|m| m.method() == Some(rsip::Method::Invite))
        .unwrap();
    // Eve (no keys) copies Call-ID, alice's tag and the CSeq from the clear
    // outer INVITE and gets her unsigned INVITE to bob first.
    let mut eve = w.tunnel("eve", false);
    let inner = format!(
        "INVITE sip:bob@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKrace1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@{DOMAIN}>;tag={}\r\n\
         To: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: {}\r\n\
         CSeq: {}\r\n\
         Contact: <sip:127.0.0.1:5099>\r\n\
         Content-Length: 0\r\n\r\n",
        outer.from_tag().unwrap(),
        outer.call_id().unwrap(),
        outer.header("CSeq").unwrap(),
    );
    bob.feed(now, &eve.seal(SystemTime::now(), inner.as_bytes()).unwrap());
    let ev = bob.events();
    let Some(AgentEvent::IncomingCall {
        call: eves,
        verified: None,
        ..
    }) = ev.first()
    else {
        panic!("the racer rings, unverified: {ev:?}");
    };
    let eves = *eves;
    bob.sent();
    // Alice's signed INVITE arrives: it rings, verified, and the racer's
    // call ends without anything sent for it.
    for b in &genuine {
        bob.feed(now, b);
    }
    let ev = bob.events();
    let genuine_call = ev
        .iter()
        .find_map(|e| match e {
            AgentEvent::IncomingCall { call, verified, .. } => {
                assert_eq!(verified.as_deref(), Some(id_now("alice").as_str()));
                Some(*call)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("the signed call is not blocked: {ev:?}"));
    assert!(
        ev.iter()
            .any(|e| matches!(e, AgentEvent::Ended { call, reason }
            if *call == eves && reason.starts_with("superseded"))),
        "{ev:?}"
    );
    // Bob answers: alice sees bob verified; the call is alice's.
    deliver(now, &mut bob, &mut alice);
    bob.agent
        .handle_command(now, AgentCommand::Answer { call: genuine_call });
    deliver(now, &mut bob, &mut alice);
    let ev = alice.events();
    assert!(
        ev.iter().any(
            |e| matches!(e, AgentEvent::Answered { verified: Some(v), tunneled: true, .. }
            if *v == id_now("bob"))
        ),
        "{ev:?}"
    );
}

/// The same bytes as `original` with another Via branch of the same
/// length (another transaction, as the transaction layer sees it).
fn with_other_branch(original: &[u8]) -> Vec<u8> {
    let branch = Message::parse(original)
        .unwrap()
        .branch()
        .unwrap()
        .to_string();
    let at = original
        .windows(branch.len())
        .position(|w| w == branch.as_bytes())
        .unwrap();
    let mut m = original.to_vec();
    let other = format!("z9hG4bK{}", "r".repeat(branch.len() - 7));
    m[at..at + branch.len()].copy_from_slice(other.as_bytes());
    assert_ne!(m, original);
    m
}

/// A captured tunneled request played again as a new transaction (another
/// Via branch), or as the same transaction after its lifetime, is refused
/// as a replay: shown once, the copies answered nothing. A copy within the
/// transaction (same branch, within 64*T1) is a retransmission, absorbed
/// by the transaction layer. A copy in another transaction is caught by
/// the tunnel (the session id of a first message was used; the sequence
/// number of a later one was accepted); a copy of the same transaction
/// after its lifetime by the filter (`Refusal::ReplayedRequest`).
#[test]
fn a_replayed_tunneled_request_is_refused_as_a_replay() {
    let w = World::new();
    let now = Instant::now();
    let later = |s| now + Duration::from_secs(s);
    let mut alice = w.agent("alice", 5070, SecurityPolicy::Require, None);
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Require, None);
    let received = |bob: &mut Peer| {
        bob.events()
            .iter()
            .filter(|e| matches!(e, AgentEvent::MessageReceived { .. }))
            .count()
    };

    // A first message (out-of-dialog MESSAGE).
    alice.agent.handle_command(
        now,
        AgentCommand::Message {
            to: "bob".into(),
            text: "pay 100".into(),
        },
    );
    let message = deliver(now, &mut alice, &mut bob).remove(0);
    assert_eq!(received(&mut bob), 1, "the genuine message arrives");
    assert!(bob.answered().iter().any(|a| a.starts_with("SIP/2.0 200 ")));
    bob.feed(later(1), &message);
    assert_eq!(received(&mut bob), 0, "a retransmission is not shown again");
    assert_eq!(bob.last_rejection(), None);
    assert!(
        bob.answered().iter().any(|a| a.starts_with("SIP/2.0 200 ")),
        "a retransmission is answered from its transaction"
    );
    bob.feed(later(2), &with_other_branch(&message));
    assert_eq!(
        bob.last_rejection(),
        Some(Refusal::Tunnel(crate::tunnel::OpenError::SessionIdReused))
    );
    assert!(bob.answered().is_empty(), "a replay gets no answer");
    assert_eq!(received(&mut bob), 0, "a replay is not shown");
    // The same transaction after its lifetime (64*T1 = 32 s; the
    // transaction layer's timers have run): the filter refuses it.
    bob.agent.handle_timeout(later(39));
    bob.sent();
    bob.log.lock().unwrap().rejections.clear();
    bob.feed(later(40), &message);
    assert_eq!(bob.last_rejection(), Some(Refusal::ReplayedRequest));
    assert!(bob.answered().is_empty());
    assert_eq!(received(&mut bob), 0);

    // An in-dialog request: alice's BYE.
    bob.log.lock().unwrap().rejections.clear();
    call(later(41), &mut alice, &mut bob);
    bob.events();
    alice
        .agent
        .handle_command(later(42), AgentCommand::Hangup { call: 1 });
    let sent = deliver(later(42), &mut alice, &mut bob);
    let bye = sent
        .into_iter()
        .find(|b| Message::parse(b).unwrap().method() == Some(rsip::Method::Bye))
        .expect("alice sent a BYE");
    assert!(bob
        .events()
        .iter()
        .any(|e| matches!(e, AgentEvent::Ended { .. })));
    bob.sent();
    bob.feed(later(43), &bye);
    assert_eq!(bob.last_rejection(), None, "a retransmission of the BYE");
    assert!(
        bob.answered().iter().any(|a| a.starts_with("SIP/2.0 200 ")),
        "a retransmitted BYE is answered from its transaction"
    );
    bob.feed(later(44), &with_other_branch(&bye));
    assert!(
        matches!(
            bob.last_rejection(),
            Some(Refusal::Tunnel(crate::tunnel::OpenError::Replay { .. }))
        ),
        "{:?}",
        bob.last_rejection()
    );
    assert!(bob.answered().is_empty(), "a replayed BYE gets no answer");
    // The same transaction after its lifetime (64*T1 = 32 s).
    bob.agent.handle_timeout(later(42 + 39));
    bob.sent();
    bob.log.lock().unwrap().rejections.clear();
    bob.feed(later(42 + 40), &bye);
    assert_eq!(bob.last_rejection(), Some(Refusal::ReplayedRequest));
    assert!(bob.answered().is_empty());
}

/// The outer Request-URI of the BYE bob sends to end his side of the
/// call: where his dialog's remote target points.
fn bob_hangs_up_towards(now: Instant, bob: &mut Peer) -> String {
    let call = *bob.agent.security.keys().next().expect("bob has the call");
    bob.agent.handle_command(now, AgentCommand::Hangup { call });
    let sent = bob.sent();
    let bye = sent
        .iter()
        .map(|b| Message::parse(b).unwrap())
        .find(|m| m.method() == Some(rsip::Method::Bye))
        .expect("a BYE");
    bye.uri().unwrap().to_string()
}

/// A network change moves a dialog only by the peer's own verified
/// request: an attacker's plain re-INVITE, one that does not open
/// (keyless), and one another user signed with the dialog's tags (a
/// session of her own) carry a new Contact, and bob's BYE still goes to
/// alice's address; alice's own tunneled re-INVITE from her new address
/// moves it.
#[test]
fn only_the_peers_verified_reinvite_moves_the_dialog() {
    let w = World::new();
    let now = Instant::now();
    let evil = "<sip:evil@198.51.100.66:5060;ctok=evil>";
    let attacks = |bob: &mut Peer, ok: &Message| {
        let from = format!("<sip:alice@{DOMAIN}>");
        // Plain, with a new Contact.
        let contact = format!("m: {evil}\r\n");
        bob.feed(now, &plain_in_dialog("INVITE", ok, &from, &contact, 30));
        assert_eq!(
            bob.last_rejection(),
            Some(Refusal::PlainInProtectedDialog("INVITE".into()))
        );
        // Keyless: looks tunneled, does not open.
        let keyless = String::from_utf8(plain_in_dialog("INVITE", ok, &from, &contact, 31))
            .unwrap()
            .replace(
                "Content-Length: 0\r\n\r\n",
                "c: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Length: 4\r\n\r\nMIIB",
            );
        bob.feed(now, keyless.as_bytes());
        assert!(
            matches!(
                bob.last_rejection(),
                Some(Refusal::Tunnel(_) | Refusal::Unreadable(_))
            ),
            "{:?}",
            bob.last_rejection()
        );
        // Signed by mallory, a user of the same provider, on the dialog's tags.
        let mut mallory = w.tunnel("mallory", true);
        let inner = format!(
            "INVITE sip:bob@127.0.0.1:5072 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.66:5060;branch=z9hG4bKmallory\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:mallory@{DOMAIN}>;tag={}\r\n\
             To: <sip:bob@{DOMAIN}>;tag={}\r\n\
             Call-ID: {}\r\n\
             CSeq: 32 INVITE\r\n\
             Contact: {evil}\r\n\
             Content-Length: 0\r\n\r\n",
            ok.from_tag().unwrap(),
            ok.to_tag().unwrap(),
            ok.call_id().unwrap(),
        );
        // The stock tunnel will not seal an in-dialog request outside the
        // dialog's session (`NoSession`); a hand-built one would be the
        // first message of her own session, which the filter never lets
        // move a dialog (`may_refresh_target`).
        assert!(mallory.seal(SystemTime::now(), inner.as_bytes()).is_err());
        bob.sent();
        bob.events();
    };

    let mut alice = w.agent("alice", 5070, SecurityPolicy::AllowPlain, None);
    let mut bob = w.agent("bob", 5072, SecurityPolicy::AllowPlain, None);
    let (_, ok) = call(now, &mut alice, &mut bob);
    bob.events();
    attacks(&mut bob, &ok);
    let target = bob_hangs_up_towards(now, &mut bob);
    assert!(target.contains("127.0.0.1:5070"), "{target}");
    assert!(!target.contains("198.51.100.66"), "{target}");

    // The same attacks, then alice moves for real.
    let mut alice = w.agent("alice", 5070, SecurityPolicy::Require, None);
    let mut bob = w.agent("bob", 5072, SecurityPolicy::Require, None);
    let (_, ok) = call(now, &mut alice, &mut bob);
    bob.events();
    attacks(&mut bob, &ok);
    let watch = crate::sip::ua::NetWatch::new(
        "0.0.0.0:5070".parse().unwrap(),
        Some("127.0.0.1".parse().unwrap()),
        Duration::from_secs(2),
    );
    alice.agent.ua.set_net_watch(Some(watch));
    let moved = crate::sip::ua::RouteProbe {
        route: Some("10.0.0.7".parse().unwrap()),
        bound_alive: true,
    };
    assert!(alice.agent.handle_route(now, moved).is_some());
    assert!(alice.events().iter().any(|e| matches!(
        e,
        AgentEvent::NetworkChanged { local, .. } if local == "10.0.0.7:5070"
    )));
    alice.sent(); // (no REGISTER: never registered; nothing else)
    alice.agent.ua.handle_command(
        now,
        crate::sip::ua::Command::InDialog {
            call: crate::sip::ua::CallId(1),
            method: rsip::Method::Invite,
            body: crate::sip::ua::Body::default(),
        },
    );
    deliver(now, &mut alice, &mut bob); // the re-INVITE
    deliver(now, &mut bob, &mut alice); // 200
    deliver(now, &mut alice, &mut bob); // ACK
    bob.events();
    let target = bob_hangs_up_towards(now, &mut bob);
    assert!(target.contains("10.0.0.7:5070"), "{target}");
}

#[path = "transfer_tests.rs"]
mod transfer_tests;
