use super::*;
use std::time::Duration;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Two agents in memory on a fake clock; `drop_to_a` drops every datagram
/// towards alice while it returns true.
struct Net {
    a: IceSession,
    b: IceSession,
    now: Instant,
    a_events: Vec<IceEvent>,
    b_events: Vec<IceEvent>,
    /// What alice sent that reached no one (to her TURN server, or lost
    /// on the way to bob), and when.
    a_elsewhere: Vec<(Instant, Outbound, Vec<u8>)>,
}

/// The direction of a datagram between the two agents of a [`Net`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leg {
    AliceToBob,
    BobToAlice,
}

const A: &str = "127.0.0.1:1000";
const B: &str = "127.0.0.1:2000";

impl Net {
    fn new() -> Net {
        Net::build(false)
    }

    /// Alice also offers a relayed candidate (an allocation on a fake
    /// TURN server nothing answers for).
    fn with_relay() -> Net {
        Net::build(true)
    }

    fn build(relay: bool) -> Net {
        let now = Instant::now();
        let mut la = LocalIce::new(addr(A)).unwrap();
        if relay {
            la.add_relayed(crate::media::turn_client::allocated_for_tests(now))
                .unwrap();
        }
        let lb = LocalIce::new(addr(B)).unwrap();
        let (pa, pb) = (la.params(), lb.params());
        Net::of(la.start(&pb, true), lb.start(&pa, false), now)
    }

    /// Alice's and bob's sessions, started, at `now`.
    fn of(a: IceSession, b: IceSession, now: Instant) -> Net {
        Net {
            a,
            b,
            now,
            a_events: Vec::new(),
            b_events: Vec::new(),
            a_elsewhere: Vec::new(),
        }
    }

    /// When alice sent a deallocation (Refresh, LIFETIME 0), if she did.
    fn a_deallocated_at(&self) -> Option<Instant> {
        self.a_elsewhere
            .iter()
            .find(|(_, _, d)| crate::media::turn_client::is_deallocation_for_tests(d))
            .map(|(at, _, _)| *at)
    }

    /// Runs `ms` milliseconds of fake time in 10 ms steps; each agent's
    /// datagrams to the other's address arrive from the sender's address,
    /// except those to alice while `drop_to_a`.
    fn run(&mut self, ms: u64, drop_to_a: bool) {
        for _ in 0..ms / 10 {
            self.step(|_, leg, to, _| match leg {
                Leg::AliceToBob if to == Outbound::Udp(addr(B)) => vec![addr(A)],
                Leg::BobToAlice if to == Outbound::Udp(addr(A)) && !drop_to_a => vec![addr(B)],
                _ => Vec::new(),
            });
        }
    }

    /// One 10 ms step of fake time: both timers, then every datagram the
    /// agents send until neither sends more, each handed to the other
    /// agent once per source address `route` returns for it (none: lost),
    /// then the events collected.
    fn step(&mut self, mut route: impl FnMut(Instant, Leg, Outbound, &[u8]) -> Vec<SocketAddr>) {
        self.now += Duration::from_millis(10);
        let now = self.now;
        self.a.handle_timeout(now);
        self.b.handle_timeout(now);
        for _ in 0..20 {
            let mut moved = false;
            while let Some((to, bytes)) = self.a.poll_transmit() {
                moved = true;
                let sources = route(now, Leg::AliceToBob, to, &bytes);
                for from in &sources {
                    self.b.handle_datagram(now, *from, &bytes);
                }
                if sources.is_empty() {
                    self.a_elsewhere.push((now, to, bytes));
                }
            }
            while let Some((to, bytes)) = self.b.poll_transmit() {
                moved = true;
                for from in route(now, Leg::BobToAlice, to, &bytes) {
                    self.a.handle_datagram(now, from, &bytes);
                }
            }
            if !moved {
                break;
            }
        }
        while let Some(e) = self.a.poll_event() {
            self.a_events.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.b_events.push(e);
        }
    }
}

#[test]
fn two_agents_check_nominate_and_gain_consent() {
    let mut net = Net::new();
    assert!(
        !net.a.may_send() && !net.b.may_send(),
        "no media before ICE"
    );
    net.run(3000, false);
    assert!(net.a.may_send() && net.b.may_send());
    let pa = net.a.nominated().unwrap();
    let pb = net.b.nominated().unwrap();
    assert_eq!(
        (pa.destination, pa.local, pa.remote),
        (addr(B), "host", "host")
    );
    assert_eq!(pb.destination, addr(A));
    assert!(net.a_events.contains(&IceEvent::Consent(true)));
    assert!(net.a_events.contains(&IceEvent::Nominated(pa)));
}

/// A call whose ICE nominates a direct pair gives its relay allocation
/// back (RFC 8656 7.3: Refresh with LIFETIME 0), [`RELAY_GRACE`] after the
/// nomination and not before; the relayed candidate is no longer checked.
#[test]
fn a_direct_nomination_releases_the_relay_after_the_grace() {
    let mut net = Net::with_relay();
    assert!(net.a.holds_relay());
    net.run(3000, false);
    let path = net.a.nominated().expect("a pair is nominated");
    assert_eq!((path.local, path.remote), ("host", "host"));
    // Within 3 s of the start the grace has not run out yet.
    assert!(net.a_deallocated_at().is_none(), "released too early");
    assert!(net.a.holds_relay());
    net.run(4000, false);
    let at = net.a_deallocated_at().expect("the relay is deallocated");
    assert!(!net.a.holds_relay());
    assert!(net.a.may_send(), "media goes on on the direct pair");
    // Once released, nothing more goes to the TURN server.
    let after = net.a_elsewhere.iter().filter(|(t, _, _)| *t > at).count();
    net.run(2000, false);
    let later = net.a_elsewhere.iter().filter(|(t, _, _)| *t > at).count();
    assert_eq!(after, later, "no more relay traffic after the release");
}

/// Without a direct pair the relay is kept: nothing nominated, nothing
/// released.
#[test]
fn no_nomination_keeps_the_relay() {
    let mut net = Net::with_relay();
    // Bob never hears alice: no pair succeeds for her.
    for _ in 0..500 {
        net.now += Duration::from_millis(10);
        net.a.handle_timeout(net.now);
        while let Some((to, bytes)) = net.a.poll_transmit() {
            net.a_elsewhere.push((net.now, to, bytes));
        }
    }
    assert!(net.a.nominated().is_none());
    assert!(net.a.holds_relay());
    assert!(net.a_deallocated_at().is_none());
}

/// RFC 7675: a short outage (a second and a half of lost answers) keeps
/// consent; when the peer stops answering the consent checks for good, we
/// stop sending (and do not start again on our own: that takes an ICE
/// restart).
#[test]
fn consent_survives_a_short_outage_and_expires_without_answers() {
    let mut net = Net::new();
    net.run(3000, false);
    assert!(net.a.may_send());
    net.a_events.clear();
    net.run(1500, true);
    net.run(2000, false);
    assert!(net.a.may_send(), "a short outage cost the consent");
    assert!(!net.a_events.contains(&IceEvent::Consent(false)));
    net.run(40_000, true);
    assert!(!net.a.may_send(), "consent must expire without answers");
    assert!(net.a_events.contains(&IceEvent::Consent(false)));
}

/// A binding request under other credentials (an attacker who saw our
/// address but not the tunneled SDP) is not taken and nominates nothing.
#[test]
fn a_check_with_wrong_credentials_is_refused() {
    let la = LocalIce::new(addr(A)).unwrap();
    let lb = LocalIce::new(addr(B)).unwrap();
    let evil = LocalIce::new(addr("127.0.0.66:6666")).unwrap();
    let pb = lb.params();
    let mut a = la.start(&pb, false);
    // The attacker runs an agent that believes alice's credentials are
    // its own guess.
    let guess = LocalIce::new(addr(A)).unwrap().params();
    let mut e = evil.start(&guess, true);
    let mut now = Instant::now();
    for _ in 0..200 {
        now += Duration::from_millis(10);
        e.handle_timeout(now);
        a.handle_timeout(now);
        while let Some((_, bytes)) = e.poll_transmit() {
            assert!(!a.handle_datagram(now, addr("127.0.0.66:6666"), &bytes));
        }
        while a.poll_transmit().is_some() {}
    }
    assert!(a.nominated().is_none() && !a.may_send());
}

#[test]
fn sdp_attributes_round_trip_and_bad_ones_are_refused() {
    let mut l = LocalIce::new(addr("192.168.1.10:40000")).unwrap();
    l.add_server_reflexive(addr("203.0.113.1:40000")).unwrap();
    // The host address again is no new candidate.
    l.add_server_reflexive(addr("192.168.1.10:40000")).unwrap();
    assert_eq!(l.default_addr(), addr("203.0.113.1:40000"));
    let p = l.params();
    assert_eq!(p.candidates.len(), 2);
    let mut attrs = IceAttrs::default();
    for line in p.to_sdp().lines() {
        assert!(attrs.attr(line.strip_prefix("a=").unwrap()).unwrap());
    }
    assert_eq!(attrs.finish(), Some(p.clone()));
    assert!(
        !format!("{p:?}").contains(&p.pwd),
        "Debug shows the password"
    );

    let mut a = IceAttrs::default();
    assert!(!a.attr("sendrecv").unwrap());
    assert!(a.attr("ice-ufrag:ab").is_err(), "too short");
    assert!(a.attr("ice-ufrag:ab c d").is_err(), "not ice-chars");
    assert!(a.attr("ice-pwd:short").is_err());
    a.attr("ice-ufrag:abcd").unwrap();
    assert!(a.attr("ice-ufrag:efgh").is_err(), "repeated");
    // Skipped, not refused: TCP, RTCP component, garbage.
    a.attr("candidate:1 1 tcp 1 10.0.0.1 9 typ host tcptype active")
        .unwrap();
    a.attr("candidate:1 2 udp 1 10.0.0.1 9 typ host").unwrap();
    a.attr("candidate:garbage").unwrap();
    for i in 0..40 {
        a.attr(&format!(
            "candidate:{i} 1 udp 1 10.0.0.1 {} typ host",
            1000 + i
        ))
        .unwrap();
    }
    assert!(a.finish().is_none(), "no password: no ICE");
    let mut a = IceAttrs::default();
    a.attr("ice-ufrag:abcd").unwrap();
    a.attr("ice-pwd:abcdefghijklmnopqrstuvwxyz").unwrap();
    for i in 0..40 {
        a.attr(&format!(
            "candidate:{i} 1 udp 1 10.0.0.1 {} typ host",
            1000 + i
        ))
        .unwrap();
    }
    assert_eq!(a.finish().unwrap().candidates.len(), MAX_CANDIDATES);
}

/// What a STUN server answers to `request` (a binding request): `mapped`
/// in XOR-MAPPED-ADDRESS, under the request's transaction id.
pub(crate) fn stun_reply(request: &[u8], mapped: SocketAddr) -> Vec<u8> {
    crate::sip::stun::binding_success(request, mapped).unwrap()
}

#[test]
fn stun_binding_reads_only_its_own_answer() {
    let (req, bytes) = StunBinding::new().unwrap();
    assert!(is_stun(&bytes));
    assert_eq!(&bytes[0..2], &[0, 1], "a binding request");
    assert_eq!(&bytes[4..8], &[0x21, 0x12, 0xa4, 0x42], "the magic cookie");
    let mapped = addr("203.0.113.1:40000");
    assert_eq!(req.mapped(&stun_reply(&bytes, mapped)), Some(mapped));
    // Someone else's answer (another transaction) is not ours.
    let (_, other) = StunBinding::new().unwrap();
    assert_eq!(req.mapped(&stun_reply(&other, mapped)), None);
    assert_eq!(req.mapped(b"not stun at all, not at all"), None);
}

/// Hole punching: bob's (the controlled callee's) first checks die at
/// alice's NAT, which opens only when alice's own check leaves; the
/// answers to alice's checks get through. Alice's check succeeds at once
/// and she nominates the pair; bob must then check it at once (RFC 8445
/// 7.3.1.4, a triggered check) and start sending within a few pacing
/// intervals of alice, not when his check's retransmission timer runs out
/// (250 ms after his first check, 500 ms after the second).
#[test]
fn the_callee_sends_soon_after_the_nomination_reaches_it() {
    let mut net = Net::new();
    let start = net.now;
    let (mut a_at, mut b_at) = (None, None);
    for _ in 0..100 {
        net.step(|now, leg, _, bytes| match leg {
            Leg::AliceToBob => vec![addr(A)],
            // Requests (type 0x0001) die at alice's NAT for the first
            // 20 ms: bob's first check is lost.
            Leg::BobToAlice
                if bytes.get(..2) == Some(&[0, 1]) && now - start <= Duration::from_millis(20) =>
            {
                Vec::new()
            }
            Leg::BobToAlice => vec![addr(B)],
        });
        let now = net.now;
        if a_at.is_none() && net.a.may_send() {
            a_at = Some(now - start);
        }
        if b_at.is_none() && net.b.may_send() {
            b_at = Some(now - start);
        }
    }
    let (a_at, b_at) = (a_at.expect("alice sends"), b_at.expect("bob sends"));
    println!("alice may send after {a_at:?}, bob after {b_at:?}");
    assert!(
        b_at <= a_at + Duration::from_millis(150),
        "bob started {:?} after alice",
        b_at - a_at
    );
}

/// Alice's phone and bob's NAT mapping (his server-reflexive address).
const B_MAPPED: &str = "127.0.0.2:2000";

/// Two agents behind address-dependent-filtering NATs (the lab's `cone`)
/// driven as the media session drives them (a timer at `poll_timeout`,
/// datagrams as they arrive), with a one-way delay `delay`. Alice (the
/// caller, controlling) starts when the answer reaches her; bob (the
/// callee) `callee_late` later, when her ACK has reached him and been
/// opened. Bob offers his host address (which alice cannot reach: a
/// private one, and the first pair on her list) and his NAT's mapping
/// `B_MAPPED`; his datagrams reach alice from the mapping. A datagram
/// passes a NAT only once the home behind it has sent to the sender, so
/// alice's first checks die at bob's NAT. Returns when each may send,
/// from alice's start.
fn punch(delay: Duration, callee_late: Duration) -> (Duration, Duration) {
    let a_start = Instant::now();
    let b_start = a_start + callee_late;
    let la = LocalIce::new(addr(A)).unwrap();
    let mut lb = LocalIce::new(addr(B)).unwrap();
    lb.add_server_reflexive(addr(B_MAPPED)).unwrap();
    let (pa, pb) = (la.params(), lb.params());
    let mut a = la.start(&pb, true);
    let mut b = lb.start(&pa, false);
    // (arrival, to alice?, bytes)
    let mut wire: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
    let (mut a_sent, mut b_sent) = (false, false);
    let (mut a_at, mut b_at) = (None, None);
    let (mut a_due, mut b_due) = (Some(a_start), Some(b_start));
    let mut now = a_start;
    while now < a_start + Duration::from_secs(3) && (a_at.is_none() || b_at.is_none()) {
        now += Duration::from_millis(1);
        let (due, rest): (Vec<_>, Vec<_>) = wire.drain(..).partition(|(at, _, _)| *at <= now);
        wire = rest;
        for (_, to_a, bytes) in due {
            if to_a && a_sent {
                a.handle_datagram(now, addr(B_MAPPED), &bytes);
            } else if !to_a && b_sent && now >= b_start {
                b.handle_datagram(now, addr(A), &bytes);
            }
        }
        if a_due.is_some_and(|d| d <= now) {
            a.handle_timeout(now);
        }
        if b_due.is_some_and(|d| d <= now) {
            b.handle_timeout(now);
        }
        while let Some((to, bytes)) = a.poll_transmit() {
            // Only what goes to bob's mapping reaches his NAT.
            if to == Outbound::Udp(addr(B_MAPPED)) {
                a_sent = true;
                wire.push((now + delay, false, bytes));
            }
        }
        while let Some((_, bytes)) = b.poll_transmit() {
            b_sent = true;
            wire.push((now + delay, true, bytes));
        }
        a_due = a.poll_timeout();
        if now >= b_start {
            b_due = b.poll_timeout();
        }
        if a_at.is_none() && a.may_send() {
            a_at = Some(now - a_start);
        }
        if b_at.is_none() && b.may_send() {
            b_at = Some(now - a_start);
        }
    }
    (a_at.expect("alice sends"), b_at.expect("bob sends"))
}

/// [`punch`] over one-way delays and callee lateness from a LAN to a slow
/// callee: (delay, lateness, when alice may send, when bob may).
fn punched() -> Vec<(Duration, Duration, Duration, Duration)> {
    [(1, 20), (5, 60), (20, 100), (1, 300)]
        .into_iter()
        .map(|(delay, late)| {
            let (delay, late) = (Duration::from_millis(delay), Duration::from_millis(late));
            let (a, b) = punch(delay, late);
            println!(
                "delay {delay:?}, callee {late:?} late: alice may send after {a:?}, bob after {b:?}"
            );
            (delay, late, a, b)
        })
        .collect()
}

/// Hole punching as in the lab (cone/cone): alice's first check dies at
/// bob's NAT; bob's first check, which leaves once he has opened her ACK,
/// passes hers. Alice must check that pair at once (a triggered check,
/// RFC 8445 7.3.1.4), not when her retransmission timer runs out (250 ms
/// after her first check, then 500 ms more), so both sides send within a
/// few round trips of bob's start and two pacing intervals (Ta, 50 ms:
/// the agent paces its timer, and the nomination's check follows it).
#[test]
fn both_send_within_round_trips_of_the_callee_start() {
    for (delay, late, a, b) in punched() {
        let bound = late + 6 * delay + Duration::from_millis(100);
        assert!(
            a <= bound && b <= bound,
            "alice {a:?}, bob {b:?}, bound {bound:?}"
        );
    }
}

/// RFC 8445 12.1: before a pair is nominated the controlled agent sends on
/// a pair its own check found valid; the callee no longer waits for the
/// nomination's check, which leaves a pacing interval (Ta, 50 ms) after
/// the check that found the pair. So bob may send within a few one-way
/// delays of alice, not a pacing interval behind her.
#[test]
fn the_callee_sends_on_a_valid_pair_before_the_nomination() {
    for (delay, _, a, b) in punched() {
        let bound = a + 4 * delay + Duration::from_millis(5);
        assert!(b <= bound, "alice {a:?}, bob {b:?}, bound {bound:?}");
    }
}

/// The valid pair the callee sends on before the nomination is the one
/// its own check found: an answer to our check replayed from another
/// address (an attacker on the path who copies it) makes no pair valid
/// there, and media never goes to that address; once alice nominates,
/// bob sends on the nominated pair.
#[test]
fn a_replayed_answer_from_elsewhere_takes_no_media() {
    let evil = addr("127.0.0.9:6666");
    let mut net = Net::new();
    let mut seen_valid = None;
    for _ in 0..300 {
        net.step(|_, leg, _, bytes| match leg {
            // Every answer of alice's reaches bob first from the
            // attacker's address, then from alice's.
            Leg::AliceToBob if bytes.get(..2) == Some(&[1, 1]) => vec![evil, addr(A)],
            Leg::AliceToBob => vec![addr(A)],
            Leg::BobToAlice => vec![addr(B)],
        });
        let now = net.now;
        if let Some(p) = net.b.path() {
            assert_ne!(p.destination, evil, "{p:?}");
            if net.b.nominated().is_none() && net.b.may_send() {
                seen_valid.get_or_insert(p);
            }
        }
        if net
            .b
            .route_media(now, vec![0x80; 12])
            .is_some_and(|(to, _)| to == Outbound::Udp(evil))
        {
            panic!("media to the attacker");
        }
    }
    let valid = seen_valid.expect("bob sent before the nomination");
    assert_eq!(valid.destination, addr(A));
    assert_eq!(net.b.nominated().map(|p| p.destination), Some(addr(A)));
}

/// An answered check is no consent (RFC 7675): while nothing bob sends
/// reaches alice (his checks and answers are lost), bob answers her
/// checks but never sends media, before or after any nomination.
#[test]
fn the_callee_sends_nothing_while_its_own_checks_go_unanswered() {
    let mut net = Net::new();
    net.run(3000, true);
    assert_eq!(net.b.path(), None);
    assert!(!net.b.may_send());
    assert!(net.b.route_media(net.now, vec![0x80; 12]).is_none());
}

/// A valid pair through a relay carries nothing before the nomination:
/// bob sees alice's only candidate as a relayed one, and although his
/// check to it succeeds at once he sends only once alice's nomination
/// reaches him.
#[test]
fn a_relayed_valid_pair_waits_for_the_nomination() {
    let now = Instant::now();
    let (la, lb) = (
        LocalIce::new(addr(A)).unwrap(),
        LocalIce::new(addr(B)).unwrap(),
    );
    let (mut pa, pb) = (la.params(), lb.params());
    for c in &mut pa.candidates {
        *c = c.replace("typ host", "typ relay raddr 127.0.0.1 rport 1000");
    }
    assert!(pa
        .parsed_candidates()
        .iter()
        .all(|c| c.kind() == CandidateKind::Relayed));
    let mut net = Net::of(la.start(&pb, true), lb.start(&pa, false), now);
    let mut b_sent_unnominated = false;
    for _ in 0..100 {
        net.run(10, false);
        if net.b.may_send() && net.b.nominated().is_none() {
            b_sent_unnominated = true;
        }
    }
    let nominated = net.b.nominated().expect("nominated");
    assert_eq!(nominated.remote, "relay");
    assert!(net.b.may_send());
    assert!(
        !b_sent_unnominated,
        "bob sent on a relayed pair before the nomination"
    );
}

/// The first checks on the pair cross (RFC 8445 7.3.1.4 on an In-Progress
/// pair): alice's check to bob's mapping dies at his NAT, which opens a
/// moment later when bob's first check leaves; that check reaches alice
/// half a millisecond after hers left, too soon for the agent to hold
/// the pair due again. Alice must still check bob at once (a couple of
/// milliseconds later), not when her retransmission timer runs out
/// (250 ms after her check).
#[test]
fn a_check_crossing_ours_still_triggers_one() {
    let step = Duration::from_micros(100);
    let delay = Duration::from_micros(200);
    let a_start = Instant::now();
    let b_start = a_start + Duration::from_micros(50_300);
    let la = LocalIce::new(addr(A)).unwrap();
    let mut lb = LocalIce::new(addr(B)).unwrap();
    lb.add_server_reflexive(addr(B_MAPPED)).unwrap();
    let (pa, pb) = (la.params(), lb.params());
    let mut a = la.start(&pb, true);
    let mut b = lb.start(&pa, false);
    // (arrival, to alice?, bytes)
    let mut wire: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
    let (mut a_sent_at, mut b_sent_at) = (None::<Instant>, None::<Instant>);
    let mut a_dropped = 0;
    let (mut a_due, mut b_due) = (Some(a_start), None);
    let mut now = a_start;
    let mut a_at = None;
    while now < a_start + Duration::from_secs(1) && a_at.is_none() {
        now += step;
        let (due, rest): (Vec<_>, Vec<_>) = wire.drain(..).partition(|(at, _, _)| *at <= now);
        wire = rest;
        for (_, to_a, bytes) in due {
            // A NAT lets a datagram in once its home sent to the sender.
            if to_a && a_sent_at.is_some() {
                a.handle_datagram(now, addr(B_MAPPED), &bytes);
            } else if !to_a && b_sent_at.is_some() {
                b.handle_datagram(now, addr(A), &bytes);
            } else if !to_a {
                a_dropped += 1;
            }
        }
        if a_due.is_some_and(|d| d <= now) {
            a.handle_timeout(now);
        }
        if now >= b_start && b_due.is_none_or(|d| d <= now) {
            b.handle_timeout(now);
        }
        while let Some((to, bytes)) = a.poll_transmit() {
            if to == Outbound::Udp(addr(B_MAPPED)) {
                a_sent_at.get_or_insert(now);
                wire.push((now + delay, false, bytes));
            }
        }
        while let Some((_, bytes)) = b.poll_transmit() {
            b_sent_at.get_or_insert(now);
            wire.push((now + delay, true, bytes));
        }
        a_due = a.poll_timeout();
        if now >= b_start {
            b_due = b.poll_timeout();
        }
        if a.may_send() {
            a_at = Some(now - a_start);
        }
    }
    let (a_sent, b_sent) = (a_sent_at.unwrap() - a_start, b_sent_at.unwrap() - a_start);
    println!("alice checked bob's mapping at {a_sent:?}, bob sent at {b_sent:?}, alice may send at {a_at:?}");
    assert!(a_dropped >= 1, "alice's first check must die at bob's NAT");
    assert!(b_sent >= a_sent + delay && b_sent + delay < a_sent + TRIGGER_RTO);
    let a_at = a_at.expect("alice sends");
    assert!(
        a_at <= b_sent + Duration::from_millis(20),
        "alice may send only at {a_at:?}"
    );
}

/// RFC 8445 8.1.1: both sides use the pair the controlling agent
/// nominated, also when it nominated an earlier one before (the `is`
/// agent nominates again when a better pair succeeds later). Alice's
/// datagrams to bob's host address reach him from her srflx address
/// `A2`, those to his srflx `B_MAPPED` from her host address; her pair to
/// his host address works only after 500 ms. She nominates her pair to
/// `B_MAPPED` first, then the better one to `B`: bob must follow her to
/// that pair (his view: to `A2`), although by his own priorities the
/// first one (to her host address) ranks higher. Before the fix he kept
/// sending to her host address, the path she stopped using (in the lab,
/// a relay she then released).
#[test]
fn the_controlled_agent_follows_the_latest_nomination() {
    const A2: &str = "127.0.0.3:1000";
    let start = Instant::now();
    let mut la = LocalIce::new(addr(A)).unwrap();
    la.add_server_reflexive(addr(A2)).unwrap();
    let mut lb = LocalIce::new(addr(B)).unwrap();
    lb.add_server_reflexive(addr(B_MAPPED)).unwrap();
    let (pa, pb) = (la.params(), lb.params());
    let mut net = Net::of(la.start(&pb, true), lb.start(&pa, false), start);
    for _ in 0..1000 {
        let seen = net.a_events.len();
        net.step(|now, leg, to, _| match leg {
            Leg::AliceToBob if to == Outbound::Udp(addr(B_MAPPED)) => vec![addr(A)],
            Leg::AliceToBob
                if to == Outbound::Udp(addr(B)) && now - start > Duration::from_millis(500) =>
            {
                vec![addr(A2)]
            }
            Leg::BobToAlice if to == Outbound::Udp(addr(A)) => vec![addr(B_MAPPED)],
            Leg::BobToAlice if to == Outbound::Udp(addr(A2)) => vec![addr(B)],
            _ => Vec::new(),
        });
        let a_paths = nominated(&net.a_events[seen..]);
        if !a_paths.is_empty() {
            println!("{:?}: alice nominates {a_paths:?}", net.now - start);
        }
    }
    let b_paths = nominated(&net.b_events);
    let (a, b) = (&net.a, &net.b);
    // Her first pair goes on carrying USE-CANDIDATE in her consent
    // checks: bob does not go back to it.
    assert_eq!(b_paths, [addr(A), addr(A2)], "bob's pairs in turn");
    let pa = a.nominated().expect("alice nominated");
    assert_eq!(pa.destination, addr(B), "alice ends on the better pair");
    let pb = b.nominated().expect("bob follows a nomination");
    assert_eq!(pb.destination, addr(A2), "bob uses the pair alice selected");
    assert!(a.may_send() && b.may_send());
}

/// The destinations of the `Nominated` events among `events`, in order.
fn nominated(events: &[IceEvent]) -> Vec<SocketAddr> {
    events
        .iter()
        .filter_map(|e| match e {
            IceEvent::Nominated(p) => Some(p.destination),
            _ => None,
        })
        .collect()
}
