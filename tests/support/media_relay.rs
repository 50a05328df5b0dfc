//! Media sessions under test: a relay between two sides that captures one
//! direction and drops a deterministic share of datagrams, and waiting for
//! media events, offer/answer as the tunnel would carry it.

use ibephone::media::keys::{Role, SrtpSuite};
use ibephone::media::rtcp::is_rtcp;
use ibephone::media::sdp::{
    answer, AudioDescription, Codec, Direction, LocalMedia, MediaKeysPolicy, Negotiated,
    PendingOffer, SecurityPolicy,
};
use ibephone::media::session::MediaEvent;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// The media relay: alice advertises `r1`, bob `r2`. Alice→bob datagrams
/// are captured; datagram `i` of either direction is dropped when the
/// deterministic generator says so (`loss_pct` percent).
pub struct Relay {
    /// Every alice-to-bob datagram, as forwarded or dropped.
    pub capture: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Bob-to-alice RTP datagrams seen (RTCP, which goes on while a
    /// stream is held, RFC 3264 5.1, is not counted).
    pub bob_to_alice: Arc<AtomicUsize>,
    /// Set to stop the relay.
    pub stop: Arc<AtomicBool>,
}

/// Starts the relay between `r1`/`r2` and the two sides `a`/`b`.
pub async fn relay(
    r1: UdpSocket,
    r2: UdpSocket,
    a: SocketAddr,
    b: SocketAddr,
    loss_pct: u64,
) -> Relay {
    let capture = Arc::new(Mutex::new(Vec::new()));
    let bob_to_alice = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (cap, b2a, st) = (capture.clone(), bob_to_alice.clone(), stop.clone());
    tokio::spawn(async move {
        let mut lcg: u64 = 0x2545_f491_4f6c_dd1d;
        let mut drop_now = move || {
            lcg = lcg
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (lcg >> 33) % 100 < loss_pct
        };
        let (mut b1, mut b2) = (vec![0u8; 2048], vec![0u8; 2048]);
        while !st.load(Ordering::Relaxed) {
            tokio::select! {
                Ok((n, from)) = r1.recv_from(&mut b1) => {
                    // bob -> alice
                    if from == b {
                        if !is_rtcp(&b1[..n]) {
                            b2a.fetch_add(1, Ordering::Relaxed);
                        }
                        if !drop_now() { let _ = r2.send_to(&b1[..n], a).await; }
                    }
                }
                Ok((n, from)) = r2.recv_from(&mut b2) => {
                    if from == a {
                        cap.lock().unwrap().push(b2[..n].to_vec());
                        if !drop_now() { let _ = r1.send_to(&b2[..n], b).await; }
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
    Relay {
        capture,
        bob_to_alice,
        stop,
    }
}

/// A UDP socket on a free loopback port.
pub async fn bind() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// The events until (and with) the first that `what` accepts; 20 s at most.
pub async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<MediaEvent>,
    what: impl Fn(&MediaEvent) -> bool,
) -> Vec<MediaEvent> {
    let mut seen = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let done = what(&ev);
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

/// What one side of a test call offers or answers: `codecs` in that
/// order, both SRTP suites, SRTP required, escrow-resistant keys.
pub fn local(addr: SocketAddr, codecs: &[Codec]) -> LocalMedia {
    LocalMedia {
        rtp_addr: addr,
        codecs: codecs.to_vec(),
        suites: vec![SrtpSuite::AeadAes128Gcm, SrtpSuite::AesCm128HmacSha1_80],
        policy: SecurityPolicy::Require,
        media_keys: MediaKeysPolicy::EscrowResistant,
        direction: Direction::SendRecv,
        session_id: 7,
        session_version: 1,
        ice: None,
    }
}

/// Offer/answer through the SDP text, as the tunnel would carry it; the
/// offer announces loopback only.
pub fn negotiate(a: LocalMedia, b: &LocalMedia) -> (Negotiated, Negotiated) {
    let pending = PendingOffer::new(a, Role::Caller).unwrap();
    let offer_text = pending.offer().to_sdp();
    assert!(offer_text.contains("IN IP4 127.0.0.1"));
    let offer = AudioDescription::parse(&offer_text).unwrap();
    let (ans, nb) = answer(b, Role::Callee, &offer, None).unwrap();
    let ans = AudioDescription::parse(&ans.to_sdp()).unwrap();
    // The offerer reveals its key in the ACK (spec 6, version 1.1).
    let reveal = pending.reveal();
    let na = pending.accept_answer(&ans).unwrap();
    (na, nb.finish(reveal.as_ref()).unwrap())
}
