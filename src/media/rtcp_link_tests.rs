use super::*;
use crate::media::keys::{Role, SrtpSuite};
use crate::media::rtcp::is_rtcp;
use crate::media::sdp::{
    answer, AudioDescription, Codec, Direction, LocalMedia, MediaKeysPolicy, Negotiated,
    PendingOffer, SecurityPolicy,
};
use rtp::header::Header;

const A: u16 = 4000;
const B: u16 = 5000;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn local(rtp_addr: SocketAddr) -> LocalMedia {
    LocalMedia {
        rtp_addr,
        codecs: vec![Codec::Pcmu],
        suites: vec![SrtpSuite::AeadAes128Gcm, SrtpSuite::AesCm128HmacSha1_80],
        policy: SecurityPolicy::Require,
        media_keys: MediaKeysPolicy::EscrowResistant,
        direction: Direction::SendRecv,
        session_id: 1,
        session_version: 1,
        ice: None,
    }
}

/// Offer (alice at A) and answer (bob at B) through the SDP text; with
/// `answer_mux` false the answer's `a=rtcp-mux` is taken out.
fn negotiate(answer_mux: bool) -> (Negotiated, Negotiated) {
    negotiate_between(addr(A), addr(B), answer_mux)
}

/// [`negotiate`] with alice's media at `a` and bob's at `b` (also for the
/// session's tests).
pub(crate) fn negotiate_between(
    a: SocketAddr,
    b: SocketAddr,
    answer_mux: bool,
) -> (Negotiated, Negotiated) {
    let pending = PendingOffer::new(local(a), Role::Caller).unwrap();
    let offer = AudioDescription::parse(&pending.offer().to_sdp()).unwrap();
    let (ans, outcome) = answer(&local(b), Role::Callee, &offer, None).unwrap();
    let mut text = ans.to_sdp();
    if !answer_mux {
        text = text.replace("a=rtcp-mux\r\n", "");
    }
    let ans = AudioDescription::parse(&text).unwrap();
    let nb = outcome.finish(pending.reveal().as_ref()).unwrap();
    let na = pending.accept_answer(&ans).unwrap();
    (na, nb)
}

struct Side {
    link: RtcpLink,
    channel: SrtpChannel,
}

fn sides(t0: Instant, answer_mux: bool) -> (Side, Side) {
    let (na, nb) = negotiate(answer_mux);
    let a = Side {
        link: RtcpLink::new(0xA, "a", 8000, na.rtcp_mux, t0, 7),
        channel: SrtpChannel::new(&na).unwrap(),
    };
    let b = Side {
        link: RtcpLink::new(0xB, "b", 8000, nb.rtcp_mux, t0, 7),
        channel: SrtpChannel::new(&nb).unwrap(),
    };
    (a, b)
}

/// A fixed sequence of random words.
fn lcg(seed: u64) -> impl FnMut() -> u32 {
    let mut x = seed;
    move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 32) as u32
    }
}

/// Over a minute of a fake clock (10 ms steps): the first report within
/// [0.5, 1.5) s, every later one [2.5, 7.5) s after the previous (5 s
/// randomised), each SRTCP (encrypted: the CNAME is not on the wire) and
/// read by the peer.
#[test]
fn reports_leave_at_rfc3550_intervals_as_srtcp() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let (mut a, mut b) = sides(t0, true);
    let mut rand = lcg(1);
    let mut at = Vec::new();
    for step in 0..6000u64 {
        let now = t0 + Duration::from_millis(10 * step);
        if let Some(due) = a.link.poll_timeout() {
            assert!(due > now - Duration::from_millis(10), "timer in the past");
        }
        if let Some(wire) = a.link.handle_timeout(now, wall, rand(), &mut a.channel) {
            assert!(is_rtcp(&wire));
            assert!(
                !wire.windows(3).any(|w| w == b"\x01\x01a"),
                "CNAME in clear"
            );
            b.link
                .handle_datagram(now, addr(A), &wire, &mut b.channel)
                .unwrap();
            at.push(now - t0);
        }
    }
    let first = at[0];
    assert!(
        (Duration::from_millis(500)..Duration::from_millis(1500)).contains(&first),
        "{first:?}"
    );
    for gap in at.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            (Duration::from_millis(2500)..Duration::from_millis(7510)).contains(&gap),
            "{gap:?} in {at:?}"
        );
    }
    // 5 s on average: about 12 reports in a minute, not one per tick.
    assert!((8..=20).contains(&at.len()), "{at:?}");
    assert_eq!(a.link.sent(), at.len() as u64);
    assert_eq!(b.link.stats().reports_received, at.len() as u64);
    // The extremes of the random factor.
    let mut t = ReportTimer::new(t0, 0);
    assert_eq!(t.due(), t0 + Duration::from_millis(500));
    assert!(!t.fire(t0, 0));
    assert!(t.fire(t.due(), u32::MAX));
    let gap = t.due() - (t0 + Duration::from_millis(500));
    assert!(gap < Duration::from_millis(7500) && gap > Duration::from_millis(7499));
}

/// A forged, tampered, replayed, misdirected or plain RTCP packet changes
/// no figure (only `dropped`); the good one does.
#[test]
fn tampered_replayed_or_plain_rtcp_changes_no_statistic() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let (mut a, mut b) = sides(t0, true);
    // Bob heard alice's RTP and sent an SR: alice's next report is about it.
    a.link.on_rtp_received(0xB, 1, 0, t0);
    b.link.on_rtp_sent(160, 0, t0);
    let later = t0 + Duration::from_secs(2);
    let sr = b
        .link
        .handle_timeout(later, wall, 0, &mut b.channel)
        .unwrap();
    let before = a.link.stats();

    let mut tampered = sr.to_vec();
    tampered[10] ^= 0x40;
    let plain = RtcpState::new(0xB, "b", 8000, t0)
        .build_report(later, wall)
        .unwrap();
    let from_elsewhere = addr(B + 1);
    let cases: [(&[u8], SocketAddr); 4] = [
        (&tampered, addr(B)),
        (&plain, addr(B)),
        (&sr, from_elsewhere),
        (&sr[..sr.len() - 1], addr(B)),
    ];
    for (i, (bytes, from)) in cases.into_iter().enumerate() {
        let r = a.link.handle_datagram(later, from, bytes, &mut a.channel);
        assert!(matches!(r, Err(RtcpDrop::Srtcp(_))), "case {i}: {r:?}");
        assert_eq!(a.link.stats(), before, "case {i}");
        assert_eq!(a.link.dropped(), i as u64 + 1);
    }
    // RTCP never latches: where alice sends is still bob's SDP address.
    assert_eq!(a.channel.remote(), addr(B));

    a.link
        .handle_datagram(later, addr(B), &sr, &mut a.channel)
        .unwrap();
    let after = a.link.stats();
    assert_eq!(after.reports_received, 1);
    // The replay of the good one changes nothing.
    let r = a.link.handle_datagram(
        later + Duration::from_millis(5),
        addr(B),
        &sr,
        &mut a.channel,
    );
    assert_eq!(r, Err(RtcpDrop::Srtcp(SrtpError::Replay)));
    assert_eq!(a.link.stats(), after);
    assert_eq!(a.link.dropped(), 5);
}

/// An answer without `a=rtcp-mux`: no RTCP leaves in a minute, and RTCP
/// that arrives anyway is not read.
#[test]
fn no_rtcp_when_the_answer_lacks_rtcp_mux() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    // Bob's answer said rtcp-mux, the text alice got does not (as from
    // baresip with `rtcp_mux no`): only alice is without it.
    let (mut a, b) = sides(t0, false);
    assert_eq!(a.link.poll_timeout(), None);
    for step in 0..600u64 {
        let now = t0 + Duration::from_millis(100 * step);
        assert!(a
            .link
            .handle_timeout(now, wall, 0, &mut a.channel)
            .is_none());
    }
    assert_eq!(a.link.sent(), 0);
    // Bob's side, made to send by hand: alice drops it unread.
    let mut forced = RtcpLink::new(0xB, "b", 8000, true, t0, 0);
    let mut b_channel = b.channel;
    let wire = forced
        .handle_timeout(t0 + Duration::from_secs(2), wall, 0, &mut b_channel)
        .unwrap();
    let r = a.link.handle_datagram(t0, addr(B), &wire, &mut a.channel);
    assert_eq!(r, Err(RtcpDrop::NotMuxed));
    assert_eq!(a.link.stats().reports_received, 0);
    // A re-INVITE that agrees on rtcp-mux turns it on.
    a.link.update(true, 8000);
    assert!(a.link.poll_timeout().is_some());
}

/// Two links over a fake network with 30 ms one-way delay, bob losing
/// every tenth of alice's packets: the round trip is 60 ms on both
/// sides, bob measures 10 % loss and alice hears the same from him.
#[test]
fn round_trip_and_loss_between_two_links() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let (mut a, mut b) = sides(t0, true);
    let delay = Duration::from_millis(30);
    let mut rand = lcg(9);
    // (arrival, to alice?, bytes)
    let mut wire: Vec<(Instant, bool, Bytes)> = Vec::new();
    for i in 0..1000u32 {
        let now = t0 + Duration::from_millis(20 * u64::from(i));
        // Deliver what has arrived.
        let (due, rest): (Vec<_>, Vec<_>) = wire.into_iter().partition(|(t, ..)| *t <= now);
        wire = rest;
        for (t, to_a, bytes) in due {
            let (side, from) = if to_a { (&mut a, B) } else { (&mut b, A) };
            if is_rtcp(&bytes) {
                side.link
                    .handle_datagram(t, addr(from), &bytes, &mut side.channel)
                    .unwrap();
            } else {
                let p = side.channel.unprotect(addr(from), &bytes).unwrap();
                let h = p.header;
                side.link
                    .on_rtp_received(h.ssrc, h.sequence_number, h.timestamp, t);
            }
        }
        for (to_a, side, ssrc) in [(false, &mut a, 0xAu32), (true, &mut b, 0xB)] {
            let header = Header {
                version: 2,
                payload_type: 0,
                sequence_number: i as u16,
                timestamp: i * 160,
                ssrc,
                ..Default::default()
            };
            let rtp = side.channel.protect(header, &[0xFF; 160]).unwrap();
            side.link.on_rtp_sent(160, i * 160, now);
            let lost = !to_a && i % 10 == 5;
            if !lost {
                wire.push((now + delay, to_a, rtp));
            }
            let w = wall + (now - t0);
            if let Some(r) = side.link.handle_timeout(now, w, rand(), &mut side.channel) {
                wire.push((now + delay, to_a, r));
            }
        }
    }
    let (sa, sb) = (a.link.stats(), b.link.stats());
    for s in [sa, sb] {
        let rtt = s.rtt_ms.unwrap();
        assert!((59.0..=61.0).contains(&rtt), "{s:?}");
    }
    // Bob lost 10 % of alice's stream, and told her so.
    assert!((0.09..=0.11).contains(&sb.fraction_lost), "{sb:?}");
    assert!((95..=100).contains(&sb.cumulative_lost), "{sb:?}");
    let told = sa.remote_fraction_lost.unwrap();
    assert!((0.09..=0.11).contains(&told), "{sa:?}");
    assert!(
        (40..=100).contains(&sa.remote_cumulative_lost.unwrap()),
        "{sa:?}"
    );
    // Alice lost nothing of bob's.
    assert_eq!((sa.fraction_lost, sa.cumulative_lost), (0.0, 0));
    assert_eq!(sb.remote_fraction_lost, Some(0.0));
    assert_eq!(sb.remote_cumulative_lost, Some(0));
}
