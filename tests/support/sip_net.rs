//! Shared harness of the in-memory SIP network tests: user agents and the
//! registrar/proxy in one process, a fake clock and a queue that can drop
//! datagrams.

use ibephone::sip::digest::{ha1, Algorithm, Password};
use ibephone::sip::filter::MessageFilter;
use ibephone::sip::filter::NoFilter;
use ibephone::sip::message::HeaderForm;
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

/// The domain of the network.
pub const DOMAIN: &str = "example.invalid";
/// The proxy's address.
pub const PROXY: &str = "127.0.0.1:5060";

/// The registrar's records of alice, bob and carol (passwords `USER-pw`).
pub fn users() -> HashMap<String, UserRecord> {
    user_records(&[
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
    ])
}

/// The registrar's records of `(user, password)` in [`DOMAIN`] (MD5 and
/// SHA-256 digests, enabled).
pub fn user_records(users: &[(&str, &str)]) -> HashMap<String, UserRecord> {
    let mut m = HashMap::new();
    for &(u, pw) in users {
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

/// The UA of `user` on loopback `port` (UDP), with [`PROXY`] as its proxy.
pub fn ua_config(user: &str, pw: &str, port: u16) -> UaConfig {
    ua_config_with(
        user,
        pw,
        PROXY.parse().unwrap(),
        format!("127.0.0.1:{port}"),
        Transport::Udp,
    )
}

/// The UA of `user` of [`DOMAIN`] at `local` with outbound `proxy` over
/// `transport`: 600 s registrations, default headers and timers.
pub fn ua_config_with(
    user: &str,
    pw: &str,
    proxy: SocketAddr,
    local: String,
    transport: Transport,
) -> UaConfig {
    UaConfig {
        user: user.into(),
        domain: DOMAIN.into(),
        password: Password::new(pw),
        proxy,
        local,
        transport,
        expires: 600,
        headers: HeaderPolicy::default(),
        timers: Timers::default(),
        max_transactions: 64,
    }
}

/// UAs and the proxy exchanging datagrams through a queue on a fake clock.
pub struct Net {
    /// The fake clock.
    pub now: Instant,
    /// The registrar/proxy at [`PROXY`].
    pub proxy: Proxy,
    /// The UAs: address, UA, the events it reported.
    pub uas: Vec<(SocketAddr, UserAgent, Vec<Event>)>,
    /// Datagrams in flight: (to, from, bytes).
    pub queue: VecDeque<(Dest, SocketAddr, Vec<u8>)>,
    /// Decides the losses.
    pub rng: StdRng,
    /// Probability of losing a datagram.
    pub loss: f64,
    /// Every datagram the proxy received.
    pub proxy_saw: Vec<Vec<u8>>,
    /// Datagrams for which this holds are lost.
    pub drop_if: Option<fn(&[u8]) -> bool>,
}

impl Net {
    /// A network losing `loss` of the datagrams (seeded by `seed`), with
    /// the proxy and no UAs.
    pub fn new(loss: f64, seed: u64) -> Net {
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

    /// Adds the UA of `user` on loopback `port` with `filter`; its index.
    pub fn add(
        &mut self,
        user: &str,
        pw: &str,
        port: u16,
        filter: Box<dyn MessageFilter>,
    ) -> usize {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        self.uas.push((
            addr,
            UserAgent::new(ua_config(user, pw, port), filter),
            Vec::new(),
        ));
        self.uas.len() - 1
    }

    /// Adds a UA with configuration `cfg` whose datagrams come from (and
    /// go to) `flow`: the address its NAT gives it, while `cfg.local`
    /// names its private address. Its index.
    pub fn add_behind(
        &mut self,
        cfg: UaConfig,
        flow: SocketAddr,
        filter: Box<dyn MessageFilter>,
    ) -> usize {
        self.uas
            .push((flow, UserAgent::new(cfg, filter), Vec::new()));
        self.uas.len() - 1
    }

    /// Gives UA `i` the command `c`.
    pub fn cmd(&mut self, i: usize, c: Command) {
        self.uas[i].1.handle_command(self.now, c);
    }

    /// Queues what the proxy and the UAs send, records their events.
    pub fn collect(&mut self) {
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
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&Net) -> bool) -> bool {
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

    /// Whether UA `i` reported an event for which `f` holds.
    pub fn has(&self, i: usize, f: impl Fn(&Event) -> bool) -> bool {
        self.uas[i].2.iter().any(f)
    }

    /// UA `i` calls `user` of [`DOMAIN`] as `call`, offering `body`.
    pub fn dial(&mut self, i: usize, call: CallId, user: &str, body: Body) {
        let target = format!("sip:{user}@{DOMAIN}");
        self.cmd(i, Command::Call { call, target, body });
    }

    /// UA `i` answers its `call` with `body`.
    pub fn answer(&mut self, i: usize, call: CallId, body: Body) {
        self.cmd(i, Command::Answer { call, body });
    }
}

/// Whether UA `i` registered.
pub fn registered(n: &Net, i: usize) -> bool {
    n.has(i, |e| matches!(e, Event::Registered { .. }))
}

/// Registers UA `i` (within 60 s of fake time).
pub fn register(n: &mut Net, i: usize) {
    n.cmd(i, Command::Register);
    assert!(
        n.run_until(Duration::from_secs(60), |n| registered(n, i)),
        "{:?}",
        n.uas[i].2
    );
}

/// The call that reached UA `i`, if any.
pub fn incoming(n: &Net, i: usize) -> Option<CallId> {
    n.uas[i].2.iter().find_map(|e| match e {
        Event::IncomingCall { call, .. } => Some(*call),
        _ => None,
    })
}

/// Why UA `i`'s call ended, if it did.
pub fn ended(n: &Net, i: usize) -> Option<EndReason> {
    n.uas[i].2.iter().find_map(|e| match e {
        Event::Ended { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

/// An opaque body holding `s`.
pub fn body(s: &str) -> Body {
    Body {
        content_type: Some("application/octet-stream".into()),
        bytes: s.as_bytes().to_vec(),
    }
}

/// alice calls bob, bob answers, alice hangs up; every step checked.
pub fn full_call(n: &mut Net, alice: usize, bob: usize) {
    let call = CallId(1);
    n.dial(alice, call, "bob", body("offer"));
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
    n.answer(bob, bcall, body("answer"));
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

/// `a` calls bob, `b` answers: the call's ids at `a` and at `b`.
pub fn answered_call(n: &mut Net, a: usize, b: usize) -> (CallId, CallId) {
    let call = CallId(1);
    n.dial(a, call, "bob", body("o"));
    assert!(n.run_until(Duration::from_secs(60), |n| incoming(n, b).is_some()));
    let bc = incoming(n, b).unwrap();
    n.answer(b, bc, body("a"));
    assert!(n.run_until(Duration::from_secs(60), |n| n
        .has(b, |e| matches!(e, Event::Answered { .. }))));
    (call, bc)
}

/// alice (port 5062) and bob (5064) registered, without filters, on a
/// network without loss.
pub fn pair(seed: u64) -> (Net, usize, usize) {
    pair_with(0.0, seed, Box::new(NoFilter), Box::new(NoFilter))
}

/// alice (port 5062, `alice_filter`) and bob (5064, `bob_filter`)
/// registered on a network losing `loss` of the datagrams.
pub fn pair_with(
    loss: f64,
    seed: u64,
    alice_filter: Box<dyn MessageFilter>,
    bob_filter: Box<dyn MessageFilter>,
) -> (Net, usize, usize) {
    let mut n = Net::new(loss, seed);
    let a = n.add("alice", "alice-pw", 5062, alice_filter);
    let b = n.add("bob", "bob-pw", 5064, bob_filter);
    register(&mut n, a);
    register(&mut n, b);
    (n, a, b)
}

/// alice (port 5062) and two devices of bob (5064, 5066) registered.
pub fn alice_and_two_bobs(seed: u64) -> (Net, usize, usize, usize) {
    let mut n = Net::new(0.0, seed);
    let a = n.add("alice", "alice-pw", 5062, Box::new(NoFilter));
    let b1 = n.add("bob", "bob-pw", 5064, Box::new(NoFilter));
    let b2 = n.add("bob", "bob-pw", 5066, Box::new(NoFilter));
    for i in [a, b1, b2] {
        register(&mut n, i);
    }
    (n, a, b1, b2)
}
