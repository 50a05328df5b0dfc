//! Two or three user agents and the registrar/proxy in one process, a fake
//! clock and an in-memory "network" (a queue that can drop datagrams).

use ibephone::sip::digest::{ha1, Algorithm, Password};
use ibephone::sip::filter::{FilterError, MessageFilter, NoFilter, Reject};
use ibephone::sip::message::{HeaderForm, Message};
use ibephone::sip::proxy::{Proxy, ProxyConfig};
use ibephone::sip::registrar::{Registrar, UserRecord};
use ibephone::sip::timers::Timers;
use ibephone::sip::ua::{
    Body, CallId, Command, EndReason, Event, HeaderPolicy, UaConfig, UserAgent,
};
use ibephone::sip::{Dest, Transport};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DOMAIN: &str = "example.invalid";
const PROXY: &str = "127.0.0.1:5060";

fn users() -> HashMap<String, UserRecord> {
    let mut m = HashMap::new();
    for (u, pw) in [
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
    ] {
        let p = Password::new(pw);
        m.insert(
            u.to_string(),
            UserRecord {
                ha1_md5: Some(ha1(Algorithm::Md5, u, DOMAIN, &p).to_string()),
                ha1_sha256: Some(ha1(Algorithm::Sha256, u, DOMAIN, &p).to_string()),
                enabled: true,
            },
        );
    }
    m
}

fn ua_config(user: &str, pw: &str, port: u16) -> UaConfig {
    UaConfig {
        user: user.into(),
        domain: DOMAIN.into(),
        password: Password::new(pw),
        proxy: PROXY.parse().unwrap(),
        local: format!("127.0.0.1:{port}"),
        transport: Transport::Udp,
        expires: 600,
        headers: HeaderPolicy::default(),
        timers: Timers::default(),
        max_transactions: 64,
    }
}

struct Net {
    now: Instant,
    proxy: Proxy,
    uas: Vec<(SocketAddr, UserAgent, Vec<Event>)>,
    queue: VecDeque<(Dest, SocketAddr, Vec<u8>)>,
    rng: StdRng,
    loss: f64,
    proxy_saw: Vec<Vec<u8>>,
    drop_if: Option<fn(&[u8]) -> bool>,
}

impl Net {
    fn new(loss: f64, seed: u64) -> Net {
        let cfg = ProxyConfig {
            local: PROXY.into(),
            form: HeaderForm::Compact,
            timers: Timers::default(),
            max_transactions: 256,
        };
        Net {
            now: Instant::now(),
            proxy: Proxy::new(cfg, Registrar::new(DOMAIN, Box::new(users()))),
            uas: Vec::new(),
            queue: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            loss,
            proxy_saw: Vec::new(),
            drop_if: None,
        }
    }

    fn add(&mut self, user: &str, pw: &str, port: u16, filter: Box<dyn MessageFilter>) -> usize {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        self.uas.push((
            addr,
            UserAgent::new(ua_config(user, pw, port), filter),
            Vec::new(),
        ));
        self.uas.len() - 1
    }

    fn cmd(&mut self, i: usize, c: Command) {
        self.uas[i].1.handle_command(self.now, c);
    }

    fn collect(&mut self) {
        let proxy_addr: SocketAddr = PROXY.parse().unwrap();
        while let Some(t) = self.proxy.poll_transmit() {
            self.queue.push_back((t.dest, proxy_addr, t.bytes));
        }
        for (addr, ua, events) in self.uas.iter_mut() {
            while let Some(t) = ua.poll_transmit() {
                self.queue.push_back((t.dest, *addr, t.bytes));
            }
            events.extend(std::iter::from_fn(|| ua.poll_event()));
        }
    }

    /// Runs until `done` holds or `limit` of fake time passes.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Net) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            self.collect();
            if done(self) {
                return true;
            }
            if let Some((to, from, bytes)) = self.queue.pop_front() {
                if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
                    continue;
                }
                if self.drop_if.is_some_and(|f| f(&bytes)) {
                    continue;
                }
                let src = Dest {
                    addr: from,
                    transport: to.transport,
                };
                if to.addr.to_string() == PROXY {
                    self.proxy_saw.push(bytes.clone());
                    self.proxy.handle_datagram(self.now, src, &bytes);
                } else if let Some((_, ua, _)) = self.uas.iter_mut().find(|(a, _, _)| *a == to.addr)
                {
                    ua.handle_datagram(self.now, src, &bytes);
                }
                continue;
            }
            let next = self
                .uas
                .iter()
                .filter_map(|(_, ua, _)| ua.poll_timeout())
                .chain(self.proxy.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.proxy.handle_timeout(self.now);
                    for (_, ua, _) in self.uas.iter_mut() {
                        ua.handle_timeout(self.now);
                    }
                }
                _ => return done(self),
            }
        }
    }

    fn has(&self, i: usize, f: impl Fn(&Event) -> bool) -> bool {
        self.uas[i].2.iter().any(f)
    }
}

fn registered(n: &Net, i: usize) -> bool {
    n.has(i, |e| matches!(e, Event::Registered { .. }))
}

fn register(n: &mut Net, i: usize) {
    n.cmd(i, Command::Register);
    assert!(
        n.run_until(Duration::from_secs(60), |n| registered(n, i)),
        "{:?}",
        n.uas[i].2
    );
}

fn incoming(n: &Net, i: usize) -> Option<CallId> {
    n.uas[i].2.iter().find_map(|e| match e {
        Event::IncomingCall { call, .. } => Some(*call),
        _ => None,
    })
}

fn ended(n: &Net, i: usize) -> Option<EndReason> {
    n.uas[i].2.iter().find_map(|e| match e {
        Event::Ended { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

fn body(s: &str) -> Body {
    Body {
        content_type: Some("application/octet-stream".into()),
        bytes: s.as_bytes().to_vec(),
    }
}

fn full_call(n: &mut Net, alice: usize, bob: usize) {
    let call = CallId(1);
    n.cmd(
        alice,
        Command::Call {
            call,
            target: format!("sip:bob@{DOMAIN}"),
            body: body("offer"),
        },
    );
    assert!(
        // A lost 180 is never repeated (provisional responses are unreliable
        // without RFC 3262), so under loss only the INVITE must arrive.
        n.run_until(Duration::from_secs(120), |n| incoming(n, bob).is_some()
            && (n.loss > 0.0
                || n.has(alice, |e| matches!(e, Event::Ringing { .. }))))
    );
    let bcall = incoming(n, bob).unwrap();
    assert!(n.has(
        bob,
        |e| matches!(e, Event::IncomingCall { body, .. } if body.bytes == b"offer")
    ));
    n.cmd(
        bob,
        Command::Answer {
            call: bcall,
            body: body("answer"),
        },
    );
    assert!(
        n.run_until(Duration::from_secs(120), |n| {
            n.has(
                alice,
                |e| matches!(e, Event::Answered { body, .. } if body.bytes == b"answer"),
            ) && n.has(bob, |e| matches!(e, Event::Answered { .. }))
        }),
        "alice {:?}\nbob {:?}",
        n.uas[alice].2,
        n.uas[bob].2
    );
    n.cmd(alice, Command::Hangup { call });
    assert!(
        n.run_until(Duration::from_secs(120), |n| {
            ended(n, bob) == Some(EndReason::RemoteHangup)
                && ended(n, alice) == Some(EndReason::LocalHangup)
        }),
        "alice {:?} bob {:?}",
        n.uas[alice].2,
        n.uas[bob].2
    );
    assert_eq!(n.uas[alice].1.call_count(), 0);
    assert_eq!(n.uas[bob].1.call_count(), 0);
}

#[test]
fn register_call_ring_answer_ack_bye() {
    let mut n = Net::new(0.0, 1);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    let b = n.add("bob", "bob-pw", 5064, Box::new(NoFilter));
    register(&mut n, a);
    register(&mut n, b);
    full_call(&mut n, a, b);
    // Outer header privacy: compact names, anonymous From, no User-Agent.
    let invite = n
        .proxy_saw
        .iter()
        .find(|m| m.starts_with(b"INVITE"))
        .unwrap();
    let text = String::from_utf8_lossy(invite);
    assert!(text.contains("\r\nf: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag="));
    assert!(!text.to_ascii_lowercase().contains("user-agent"));
    let m = Message::parse(invite).unwrap();
    assert!(m.call_id().unwrap().len() >= 22, "128-bit Call-ID");
    n.cmd(a, Command::Unregister);
    assert!(n.run_until(Duration::from_secs(30), |n| n
        .has(a, |e| *e == Event::Unregistered)));
    assert!(n
        .proxy
        .registrar
        .location
        .lookup(n.now, "alice@example.invalid")
        .is_empty());
}

#[test]
fn registration_is_refreshed_before_expiry() {
    let mut n = Net::new(0.0, 2);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    register(&mut n, a);
    let t0 = n.now;
    assert!(n.run_until(Duration::from_secs(700), |n| {
        n.uas[a]
            .2
            .iter()
            .filter(|e| matches!(e, Event::Registered { .. }))
            .count()
            >= 2
    }));
    assert!(n.now - t0 < Duration::from_secs(600));
    assert!(!n
        .proxy
        .registrar
        .location
        .lookup(t0 + Duration::from_secs(650), "alice@example.invalid")
        .is_empty());
}

#[test]
fn offline_user_gets_480_and_unknown_user_404() {
    let mut n = Net::new(0.0, 3);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    register(&mut n, a);
    n.cmd(
        a,
        Command::Call {
            call: CallId(1),
            target: format!("sip:carol@{DOMAIN}"),
            body: Body::default(),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()));
    assert_eq!(ended(&n, a), Some(EndReason::Rejected(480)));
    n.uas[a].2.clear();
    n.cmd(
        a,
        Command::Call {
            call: CallId(2),
            target: format!("sip:dave@{DOMAIN}"),
            body: Body::default(),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()));
    assert_eq!(ended(&n, a), Some(EndReason::Rejected(404)));
}

#[test]
fn wrong_password_is_refused_and_real_binding_survives() {
    let mut n = Net::new(0.0, 4);
    let b = n.add("bob", "bob-pw", 5064, Box::new(NoFilter));
    let eve = n.add("bob", "guess", 5070, Box::new(NoFilter));
    register(&mut n, b);
    n.cmd(eve, Command::Register);
    assert!(n.run_until(Duration::from_secs(60), |n| n
        .has(eve, |e| matches!(e, Event::RegistrationFailed { .. }))));
    assert!(n.has(eve, |e| *e == Event::RegistrationFailed { status: 403 }));
    let bindings = n
        .proxy
        .registrar
        .location
        .lookup(n.now, "bob@example.invalid");
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].contact, "sip:127.0.0.1:5064");
}

#[test]
fn two_devices_both_ring_one_answers_other_is_cancelled() {
    let mut n = Net::new(0.0, 5);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    let b1 = n.add("bob", "bob-pw", 5064, Box::new(NoFilter));
    let b2 = n.add("bob", "bob-pw", 5066, Box::new(NoFilter));
    for i in [a, b1, b2] {
        register(&mut n, i);
    }
    n.cmd(
        a,
        Command::Call {
            call: CallId(1),
            target: format!("sip:bob@{DOMAIN}"),
            body: body("o"),
        },
    );
    assert!(
        n.run_until(Duration::from_secs(60), |n| incoming(n, b1).is_some()
            && incoming(n, b2).is_some())
    );
    let c2 = incoming(&n, b2).unwrap();
    n.cmd(
        b2,
        Command::Answer {
            call: c2,
            body: body("a"),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| {
        n.has(a, |e| matches!(e, Event::Answered { .. }))
            && ended(n, b1).is_some()
            && n.has(b2, |e| matches!(e, Event::Answered { .. }))
    }));
    assert_eq!(ended(&n, b1), Some(EndReason::Cancelled));
    assert!(ended(&n, b2).is_none());
}

#[test]
fn twenty_percent_loss_still_completes_the_call() {
    // 50 fixed seeds: deterministic. (Over 1000 seeds a few calls fail as
    // RFC 3261 allows: all eleven 2xx/ACK round trips of 4 lossy hops lost.)
    for seed in 100..150 {
        let mut n = Net::new(0.2, seed);
        let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
        let b = n.add("bob", "bob-pw", 5064, Box::new(NoFilter));
        register(&mut n, a);
        register(&mut n, b);
        full_call(&mut n, a, b);
    }
}

/// A stand-in for the tunnel: XORs bodies on the way out and back in, and
/// refuses incoming INVITEs without a body with 493.
struct Xor;

impl MessageFilter for Xor {
    fn outgoing(&mut self, _now: Instant, mut msg: Message) -> Result<Message, FilterError> {
        msg.body.iter_mut().for_each(|b| *b ^= 0x5a);
        Ok(msg)
    }
    fn incoming(&mut self, _now: Instant, mut msg: Message) -> Result<Message, Reject> {
        if msg.is_request() && msg.body.is_empty() && msg.method() == Some(rsip::Method::Invite) {
            return Err(Reject {
                response: Some((493, "Undecipherable".into())),
                headers: vec![],
                reason: "no body".into(),
            });
        }
        msg.body.iter_mut().for_each(|b| *b ^= 0x5a);
        Ok(msg)
    }
}

#[test]
fn filter_sees_every_message_and_can_reject_with_493() {
    let mut n = Net::new(0.0, 6);
    let a = n.add("alice", "alice-pw", 5062, Box::new(Xor));
    let b = n.add("bob", "bob-pw", 5064, Box::new(Xor));
    register(&mut n, a);
    register(&mut n, b);
    full_call(&mut n, a, b);
    // The proxy only ever saw transformed bodies.
    assert!(!n
        .proxy_saw
        .iter()
        .any(|m| m.windows(5).any(|w| w == b"offer")));
    n.uas[a].2.clear();
    n.uas[b].2.clear();
    n.cmd(
        a,
        Command::Call {
            call: CallId(9),
            target: format!("sip:bob@{DOMAIN}"),
            body: Body::default(),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()));
    assert_eq!(ended(&n, a), Some(EndReason::Rejected(493)));
    assert!(n.has(b, |e| matches!(e, Event::Rejected { .. })));
    assert!(incoming(&n, b).is_none());
}

#[test]
fn malformed_requests_get_400_or_are_dropped() {
    let mut n = Net::new(0.0, 7);
    let from = Dest::udp("127.0.0.1:5080".parse().unwrap());
    n.proxy
        .handle_datagram(n.now, from, b"\x00\xffgarbage\r\n\r\n");
    assert!(n.proxy.poll_transmit().is_none());
    let bad = b"OPTIONS sip:example.invalid SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKx\r\nTo: <sip:example.invalid>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
    n.proxy.handle_datagram(n.now, from, bad);
    let t = n.proxy.poll_transmit().unwrap();
    assert!(t.bytes.starts_with(b"SIP/2.0 400"));
}

#[test]
fn unknown_user_probes_are_throttled() {
    let mut n = Net::new(0.0, 8);
    let from = Dest::udp("127.0.0.1:5090".parse().unwrap());
    let mut answered = 0;
    for i in 0..40 {
        let req = format!(
            "OPTIONS sip:u{i}@{DOMAIN} SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKp{i}\r\nf: <sip:x@{DOMAIN}>;tag=t\r\nt: <sip:u{i}@{DOMAIN}>\r\ni: probe{i}\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"
        );
        n.proxy.handle_datagram(n.now, from, req.as_bytes());
        while let Some(t) = n.proxy.poll_transmit() {
            assert!(t.bytes.starts_with(b"SIP/2.0 404"));
            answered += 1;
        }
    }
    assert_eq!(answered, 20);
}

#[test]
fn requests_over_1300_bytes_go_over_tcp() {
    let mut n = Net::new(0.0, 9);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    let b = n.add("bob", "bob-pw", 5064, Box::new(NoFilter));
    register(&mut n, a);
    register(&mut n, b);
    let big = Body {
        content_type: Some("application/octet-stream".into()),
        bytes: vec![7; 2000],
    };
    n.cmd(
        a,
        Command::Message {
            target: format!("sip:bob@{DOMAIN}"),
            body: big,
        },
    );
    let t = n.uas[a].1.poll_transmit().unwrap();
    assert_eq!(t.dest.transport, Transport::Tcp);
    assert!(String::from_utf8_lossy(&t.bytes).contains("SIP/2.0/TCP"));
    n.queue.push_back((t.dest, n.uas[a].0, t.bytes));
    let small = Body {
        content_type: Some("text/plain".into()),
        bytes: b"hi".to_vec(),
    };
    n.cmd(
        a,
        Command::Message {
            target: format!("sip:bob@{DOMAIN}"),
            body: small,
        },
    );
    assert_eq!(
        n.uas[a].1.poll_transmit().unwrap().dest.transport,
        Transport::Udp
    );
    assert!(n.run_until(Duration::from_secs(30), |n| {
        n.has(
            b,
            |e| matches!(e, Event::MessageReceived { body, .. } if body.bytes.len() == 2000),
        ) && n.has(a, |e| {
            matches!(e, Event::RequestCompleted { status: 200, .. })
        })
    }));
}

fn answered_call(n: &mut Net, a: usize, b: usize) -> (CallId, CallId) {
    let call = CallId(1);
    n.cmd(
        a,
        Command::Call {
            call,
            target: format!("sip:bob@{DOMAIN}"),
            body: body("o"),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| incoming(n, b).is_some()));
    let bc = incoming(n, b).unwrap();
    n.cmd(
        b,
        Command::Answer {
            call: bc,
            body: body("a"),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| n
        .has(b, |e| matches!(e, Event::Answered { .. }))));
    (call, bc)
}

fn pair(seed: u64) -> (Net, usize, usize) {
    let mut n = Net::new(0.0, seed);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    let b = n.add("bob", "bob-pw", 5064, Box::new(NoFilter));
    register(&mut n, a);
    register(&mut n, b);
    (n, a, b)
}

#[test]
fn caller_cancels_a_ringing_call() {
    let (mut n, a, b) = pair(20);
    n.cmd(
        a,
        Command::Call {
            call: CallId(1),
            target: format!("sip:bob@{DOMAIN}"),
            body: body("o"),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| n
        .has(a, |e| matches!(e, Event::Ringing { .. }))));
    n.cmd(a, Command::Hangup { call: CallId(1) });
    assert!(
        n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()
            && ended(n, b).is_some())
    );
    assert_eq!(ended(&n, a), Some(EndReason::Cancelled));
    assert_eq!(ended(&n, b), Some(EndReason::Cancelled));
    assert!(n.run_until(Duration::from_secs(1), |n| n.queue.is_empty()));
    assert_eq!(n.proxy.fork_count(), 0);
}

#[test]
fn callee_rejects_with_486() {
    let (mut n, a, b) = pair(21);
    n.cmd(
        a,
        Command::Call {
            call: CallId(1),
            target: format!("sip:bob@{DOMAIN}"),
            body: body("o"),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| incoming(n, b).is_some()));
    let bc = incoming(&n, b).unwrap();
    n.cmd(
        b,
        Command::Reject {
            call: bc,
            status: 486,
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()));
    assert_eq!(ended(&n, a), Some(EndReason::Rejected(486)));
}

#[test]
fn in_dialog_requests_and_callee_bye() {
    let (mut n, a, b) = pair(22);
    let (ac, bc) = answered_call(&mut n, a, b);
    for m in [
        rsip::Method::Info,
        rsip::Method::Invite,
        rsip::Method::Update,
        rsip::Method::Message,
    ] {
        n.uas[a].2.clear();
        n.cmd(
            a,
            Command::InDialog {
                call: ac,
                method: m,
                body: body("x"),
            },
        );
        assert!(
            n.run_until(Duration::from_secs(60), |n| {
                n.has(a, |e| {
                    *e == Event::RequestCompleted {
                        method: m,
                        status: 200,
                    }
                })
            }),
            "{m}: {:?}",
            n.uas[a].2
        );
        assert!(n.has(
            b,
            |e| matches!(e, Event::InDialogRequest { method, .. } if *method == m)
        ));
    }
    // The re-INVITE (CSeq 3) got its 2xx ACKed.
    assert!(n
        .proxy_saw
        .iter()
        .any(|m| m.starts_with(b"ACK ") && String::from_utf8_lossy(m).contains("CSeq: 3 ACK")));
    n.cmd(b, Command::Hangup { call: bc });
    assert!(
        n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()
            && ended(n, b).is_some())
    );
    assert_eq!(ended(&n, a), Some(EndReason::RemoteHangup));
    assert_eq!(ended(&n, b), Some(EndReason::LocalHangup));
}

#[test]
fn options_and_message_outside_dialogs() {
    let (mut n, a, b) = pair(23);
    n.cmd(
        a,
        Command::Options {
            target: format!("sip:bob@{DOMAIN}"),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| {
        n.has(a, |e| {
            *e == Event::RequestCompleted {
                method: rsip::Method::Options,
                status: 200,
            }
        })
    }));
    n.cmd(
        a,
        Command::Message {
            target: format!("sip:bob@{DOMAIN}"),
            body: body("hello"),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| {
        n.has(
            b,
            |e| matches!(e, Event::MessageReceived { body, .. } if body.bytes == b"hello"),
        )
    }));
}

#[test]
fn replayed_register_is_refused_and_changes_nothing() {
    let (mut n, a, _b) = pair(24);
    let authed = n
        .proxy_saw
        .iter()
        .rev()
        .find(|m| {
            m.starts_with(b"REGISTER") && String::from_utf8_lossy(m).contains("Authorization")
        })
        .unwrap()
        .clone();
    // Let the server transaction expire (Timer J) so the replay is new to it.
    n.run_until(Duration::from_secs(40), |_| false);
    let before = n
        .proxy
        .registrar
        .location
        .lookup(n.now, "alice@example.invalid");
    let attacker = Dest::udp("127.0.0.1:5099".parse().unwrap());
    n.proxy.handle_datagram(n.now, attacker, &authed);
    let t = n.proxy.poll_transmit().unwrap();
    assert!(
        t.bytes.starts_with(b"SIP/2.0 500"),
        "{}",
        String::from_utf8_lossy(&t.bytes)
    );
    assert_eq!(
        n.proxy
            .registrar
            .location
            .lookup(n.now, "alice@example.invalid"),
        before
    );
    let _ = a;
}

#[test]
fn unreachable_proxy_times_out_registration_and_call() {
    let mut n = Net::new(1.0, 25);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    n.cmd(a, Command::Register);
    n.cmd(
        a,
        Command::Call {
            call: CallId(1),
            target: format!("sip:bob@{DOMAIN}"),
            body: Body::default(),
        },
    );
    let t0 = n.now;
    assert!(n.run_until(Duration::from_secs(100), |n| {
        ended(n, a).is_some() && n.has(a, |e| matches!(e, Event::RegistrationFailed { .. }))
    }));
    assert_eq!(ended(&n, a), Some(EndReason::Timeout));
    assert!(n.has(a, |e| *e == Event::RegistrationFailed { status: 408 }));
    assert_eq!(n.now - t0, Duration::from_secs(32), "Timer B/F = 64*T1");
}

#[test]
fn user_agent_answers_malformed_request_with_400() {
    let mut n = Net::new(0.0, 26);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    let from = Dest::udp("127.0.0.1:5060".parse().unwrap());
    let bad = b"INVITE sip:127.0.0.1:5062 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKq\r\nf: <sip:x@example.invalid>;tag=1\r\nt: <sip:alice@example.invalid>\r\ni: q\r\nCSeq: 1 BYE\r\nl: 0\r\n\r\n";
    n.uas[a].1.handle_datagram(n.now, from, bad);
    let t = n.uas[a].1.poll_transmit().unwrap();
    assert!(t.bytes.starts_with(b"SIP/2.0 400"));
    n.uas[a].1.handle_datagram(n.now, from, &[0xff; 64]);
    assert!(n.uas[a].1.poll_transmit().is_none());
    assert!(n.uas[a].1.poll_event().is_none());
}

#[test]
fn both_devices_answer_the_second_is_acked_and_hung_up() {
    let mut n = Net::new(0.0, 27);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    let b1 = n.add("bob", "bob-pw", 5064, Box::new(NoFilter));
    let b2 = n.add("bob", "bob-pw", 5066, Box::new(NoFilter));
    for i in [a, b1, b2] {
        register(&mut n, i);
    }
    n.cmd(
        a,
        Command::Call {
            call: CallId(1),
            target: format!("sip:bob@{DOMAIN}"),
            body: body("o"),
        },
    );
    assert!(
        n.run_until(Duration::from_secs(60), |n| incoming(n, b1).is_some()
            && incoming(n, b2).is_some())
    );
    let (c1, c2) = (incoming(&n, b1).unwrap(), incoming(&n, b2).unwrap());
    n.cmd(
        b1,
        Command::Answer {
            call: c1,
            body: body("a1"),
        },
    );
    n.cmd(
        b2,
        Command::Answer {
            call: c2,
            body: body("a2"),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| {
        (ended(n, b1).is_some() || ended(n, b2).is_some()) && n.queue.is_empty()
    }));
    let answers = n.uas[a]
        .2
        .iter()
        .filter(|e| matches!(e, Event::Answered { .. }))
        .count();
    assert_eq!(answers, 1);
    let ends: Vec<_> = [b1, b2].iter().filter_map(|i| ended(&n, *i)).collect();
    assert_eq!(ends, vec![EndReason::RemoteHangup]);
    assert!(ended(&n, a).is_none());
}

#[test]
fn callee_retransmits_2xx_until_ack_then_gives_up_with_bye() {
    let (mut n, a, b) = pair(28);
    n.drop_if = Some(|m: &[u8]| m.starts_with(b"ACK "));
    n.cmd(
        a,
        Command::Call {
            call: CallId(1),
            target: format!("sip:bob@{DOMAIN}"),
            body: body("o"),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| incoming(n, b).is_some()));
    let bc = incoming(&n, b).unwrap();
    n.cmd(
        b,
        Command::Answer {
            call: bc,
            body: body("a"),
        },
    );
    let t0 = n.now;
    let oks_before = n
        .proxy_saw
        .iter()
        .filter(|m| m.starts_with(b"SIP/2.0 200"))
        .count();
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, b).is_some()));
    assert_eq!(ended(&n, b), Some(EndReason::Timeout));
    assert_eq!(n.now - t0, Duration::from_secs(32), "64*T1");
    let oks = n
        .proxy_saw
        .iter()
        .filter(|m| m.starts_with(b"SIP/2.0 200"))
        .count()
        - oks_before;
    // 1 + retransmissions at 0.5, 1.5, 3.5, 7.5, 11.5, ... 31.5 s (T2 cap),
    // plus the 200s of REGISTER-free exchanges (none here) and the BYE's 200.
    assert!(oks >= 10, "{oks}");
    assert!(n.run_until(Duration::from_secs(60), |n| ended(n, a).is_some()));
    assert_eq!(ended(&n, a), Some(EndReason::RemoteHangup));
}

#[test]
fn unanswered_call_is_given_up_and_nothing_leaks() {
    let (mut n, a, b) = pair(29);
    n.cmd(
        a,
        Command::Call {
            call: CallId(1),
            target: format!("sip:bob@{DOMAIN}"),
            body: body("o"),
        },
    );
    assert!(n.run_until(Duration::from_secs(60), |n| incoming(n, b).is_some()));
    // Bob's device vanishes while ringing: nothing reaches it any more.
    n.drop_if = Some(|m: &[u8]| String::from_utf8_lossy(m).contains("sip:127.0.0.1:5064"));
    let t0 = n.now;
    assert!(n.run_until(Duration::from_secs(400), |n| {
        ended(n, a).is_some() && n.proxy.fork_count() == 0 && n.queue.is_empty()
    }));
    // The proxy's Timer C answered 408 (reported as a timeout).
    assert_eq!(ended(&n, a), Some(EndReason::Timeout));
    assert!(n.now - t0 >= Duration::from_secs(180));
    assert_eq!(n.uas[a].1.call_count(), 0);
    // Bob's own core refuses the call it never answered.
    n.drop_if = None;
    assert!(n.run_until(Duration::from_secs(400), |n| ended(n, b).is_some()));
    assert_eq!(ended(&n, b), Some(EndReason::Timeout));
    assert_eq!(n.uas[b].1.call_count(), 0);
}
