//! RTP packetisation (the `rtp` crate) and SRTP/SRTCP protection
//! (`webrtc-srtp`), sans-I/O: bytes in, bytes out, with the drop counters
//! the UI shows.
//!
//! One [`SrtpChannel`] holds two one-way `webrtc-srtp` contexts: ours
//! (sending key = our derived key) and the peer's (receiving key = the
//! peer's derived key). Re-keying replaces both; packets under the old keys
//! then fail authentication and are dropped and counted.
//!
//! Symmetric RTP with latching (RFC 4961; for peers without ICE behind a
//! NAT, whose packets come from another address than their SDP names): an
//! SRTP packet from a new source address is accepted, and the stream moves
//! there, only once it authenticates under the peer's key and is no replay.
//! A packet from a new source that does not authenticate never moves the
//! stream (it is dropped and counted as `bad_source`); plain RTP never
//! latches, since nothing proves who sent it.

use super::keys::{SdesKey, SrtpSuite};
use super::sdp::{MediaSecurity, Negotiated};
use bytes::Bytes;
use rtp::header::Header;
use rtp::packet::Packet;
use std::fmt;
use std::net::SocketAddr;
use thiserror::Error;
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;
use webrtc_util::{Marshal, Unmarshal};

/// Replay window (packets), as libsrtp's default.
const REPLAY_WINDOW: usize = 128;

/// Why a packet could not be sent or was dropped.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SrtpError {
    /// The negotiated keys did not fit the suite.
    #[error("SRTP context could not be built: {0}")]
    Context(String),
    /// The packet came from an address other than the negotiated peer.
    #[error("RTP from unexpected source {0}")]
    UnexpectedSource(SocketAddr),
    /// The authentication tag did not verify (wrong or old key, tampering).
    #[error("SRTP authentication failed")]
    BadAuth,
    /// A replayed packet (same sequence number seen before).
    #[error("SRTP replay")]
    Replay,
    /// Not an RTP packet.
    #[error("malformed RTP packet")]
    Malformed,
    /// Encrypting failed.
    #[error("SRTP protect failed: {0}")]
    Protect(String),
}

/// Counts of packets received and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// Packets accepted.
    pub accepted: u64,
    /// From an unexpected source address.
    pub bad_source: u64,
    /// Bad authentication tag.
    pub bad_auth: u64,
    /// Replays.
    pub replayed: u64,
    /// Not RTP at all.
    pub malformed: u64,
    /// Times the stream moved to a new source address (latching).
    pub latched: u64,
}

fn profile(suite: SrtpSuite) -> ProtectionProfile {
    match suite {
        SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    }
}

fn context(key: &SdesKey) -> Result<Context, SrtpError> {
    let suite = key.suite();
    let (k, s) = key.as_bytes().split_at(suite.key_len());
    Context::new(
        k,
        s,
        profile(suite),
        Some(srtp_replay_protection(REPLAY_WINDOW)),
        Some(srtcp_replay_protection(REPLAY_WINDOW)),
    )
    .map_err(|e| SrtpError::Context(e.to_string()))
}

struct Contexts {
    tx: Context,
    rx: Context,
}

/// One call's RTP channel: protects what we send and checks what we receive.
pub struct SrtpChannel {
    remote: SocketAddr,
    /// The address the last offer/answer named.
    signaled: SocketAddr,
    srtp: Option<Contexts>,
    counters: DropCounters,
    latching: bool,
}

impl fmt::Debug for SrtpChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpChannel")
            .field("remote", &self.remote)
            .field("encrypted", &self.srtp.is_some())
            .field("counters", &self.counters)
            .finish()
    }
}

impl SrtpChannel {
    /// A channel for the negotiated stream; plain only if the negotiation
    /// said `Plain` (which only `allow-plain` produces).
    pub fn new(negotiated: &Negotiated) -> Result<Self, SrtpError> {
        let mut ch = SrtpChannel {
            remote: negotiated.remote,
            signaled: negotiated.remote,
            srtp: None,
            counters: DropCounters::default(),
            latching: true,
        };
        ch.rekey(negotiated)?;
        Ok(ch)
    }

    /// Installs the keys of a new offer/answer; the old ones stop working.
    /// The address we send to changes only when the SDP names a new one (a
    /// latched address survives a re-INVITE that names the same).
    pub fn rekey(&mut self, negotiated: &Negotiated) -> Result<(), SrtpError> {
        if negotiated.remote != self.signaled {
            self.remote = negotiated.remote;
            self.signaled = negotiated.remote;
        }
        self.srtp = match (&negotiated.keys, negotiated.security) {
            (
                Some(keys),
                MediaSecurity::EscrowResistant { .. } | MediaSecurity::SdesOnly { .. },
            ) => Some(Contexts {
                tx: context(&keys.send)?,
                rx: context(&keys.recv)?,
            }),
            (None, MediaSecurity::Plain) => None,
            _ => {
                return Err(SrtpError::Context(
                    "keys do not match the security state".into(),
                ))
            }
        };
        Ok(())
    }

    /// Where packets go: the negotiated address, or the source of the
    /// last authenticated packet from a new address (latching).
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Sends to `remote` from now on (the pair ICE nominated).
    pub fn set_remote(&mut self, remote: SocketAddr) {
        self.remote = remote;
    }

    /// Latching on (the default) or off. Off (under ICE, which alone picks
    /// where we send, RFC 7675): an authenticated packet from a new source
    /// is accepted but never moves where we send.
    pub fn set_latching(&mut self, on: bool) {
        self.latching = on;
    }

    /// Whether media is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.srtp.is_some()
    }

    /// The drop counters so far.
    pub fn counters(&self) -> DropCounters {
        self.counters
    }

    /// Builds and protects one RTP packet.
    pub fn protect(&mut self, header: Header, payload: &[u8]) -> Result<Bytes, SrtpError> {
        let pkt = Packet {
            header,
            payload: Bytes::copy_from_slice(payload),
        };
        let plain = pkt
            .marshal()
            .map_err(|e| SrtpError::Protect(e.to_string()))?;
        match &mut self.srtp {
            Some(c) => {
                c.tx.encrypt_rtp(&plain)
                    .map_err(|e| SrtpError::Protect(e.to_string()))
            }
            None => Ok(plain),
        }
    }

    /// Checks source and tag, decrypts and parses one datagram; failures are
    /// counted and returned.
    pub fn unprotect(&mut self, from: SocketAddr, datagram: &[u8]) -> Result<Packet, SrtpError> {
        let r = self.unprotect_inner(from, datagram);
        let c = &mut self.counters;
        match &r {
            Ok(_) => c.accepted += 1,
            Err(SrtpError::UnexpectedSource(_)) => c.bad_source += 1,
            Err(SrtpError::Replay) => c.replayed += 1,
            Err(SrtpError::Malformed) => c.malformed += 1,
            Err(_) => c.bad_auth += 1,
        }
        r
    }

    fn unprotect_inner(&mut self, from: SocketAddr, datagram: &[u8]) -> Result<Packet, SrtpError> {
        let known = from == self.remote;
        let unknown = || SrtpError::UnexpectedSource(from);
        // RTCP (RFC 5761) never gets here: the session demultiplexes it
        // with `rtcp::is_rtcp` and hands it to `unprotect_rtcp`.
        if datagram.len() < 12 || datagram[0] >> 6 != 2 {
            return Err(if known {
                SrtpError::Malformed
            } else {
                unknown()
            });
        }
        let plain = match &mut self.srtp {
            Some(c) => c.rx.decrypt_rtp(datagram).map_err(|e| match e {
                _ if !known => unknown(),
                webrtc_srtp::Error::SrtpSsrcDuplicated(..) => SrtpError::Replay,
                _ => SrtpError::BadAuth,
            })?,
            // Plain RTP proves nothing about its sender: no latching.
            None if !known => return Err(unknown()),
            None => Bytes::copy_from_slice(datagram),
        };
        let mut buf = plain;
        let pkt = Packet::unmarshal(&mut buf).map_err(|_| SrtpError::Malformed)?;
        if !known && self.latching {
            // Authenticated under the peer's key and no replay: the peer
            // (behind a NAT) sends from here; so do we from now on.
            self.remote = from;
            self.counters.latched += 1;
        }
        Ok(pkt)
    }
}

// SRTCP (RFC 3711 section 3.4) under the same keys as SRTP, for RTCP
// multiplexed on the RTP port (RFC 5761); see `super::rtcp`.
impl SrtpChannel {
    /// Protects one compound RTCP packet (SRTCP when encrypted).
    pub fn protect_rtcp(&mut self, plain: &[u8]) -> Result<Bytes, SrtpError> {
        match &mut self.srtp {
            Some(c) => {
                c.tx.encrypt_rtcp(plain)
                    .map_err(|e| SrtpError::Protect(e.to_string()))
            }
            None => Ok(Bytes::copy_from_slice(plain)),
        }
    }

    /// Checks source and tag of one SRTCP datagram and decrypts it; a
    /// failure changes no state and is an error (not counted with RTP).
    pub fn unprotect_rtcp(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Bytes, SrtpError> {
        if from != self.remote {
            return Err(SrtpError::UnexpectedSource(from));
        }
        if !super::rtcp::is_rtcp(datagram) {
            return Err(SrtpError::Malformed);
        }
        match &mut self.srtp {
            Some(c) => c.rx.decrypt_rtcp(datagram).map_err(|e| match e {
                webrtc_srtp::Error::SrtcpSsrcDuplicated(..) => SrtpError::Replay,
                _ => SrtpError::BadAuth,
            }),
            None => Ok(Bytes::copy_from_slice(datagram)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sdp::{Codec, Direction, SdesOnlyReason, SrtpKeys};

    fn negotiated(send: &SdesKey, recv: &SdesKey, port: u16) -> Negotiated {
        Negotiated {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: None,
            remote: SocketAddr::from(([127, 0, 0, 1], port)),
            direction: Direction::SendRecv,
            security: MediaSecurity::SdesOnly {
                suite: send.suite(),
                reason: SdesOnlyReason::PeerWithoutDh,
            },
            keys: Some(SrtpKeys {
                send: send.clone(),
                recv: recv.clone(),
            }),
            retained: None,
            remote_ice: None,
            ice_controlling: false,
            rtcp_mux: true,
        }
    }

    fn header(seq: u16) -> Header {
        Header {
            version: 2,
            payload_type: 0,
            sequence_number: seq,
            timestamp: u32::from(seq) * 160,
            ssrc: 0x1234,
            ..Default::default()
        }
    }

    fn pair(suite: SrtpSuite) -> (SrtpChannel, SrtpChannel) {
        let ka = SdesKey::generate(suite).unwrap();
        let kb = SdesKey::generate(suite).unwrap();
        (
            SrtpChannel::new(&negotiated(&ka, &kb, 2000)).unwrap(),
            SrtpChannel::new(&negotiated(&kb, &ka, 1000)).unwrap(),
        )
    }

    const FROM_A: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1000);

    #[test]
    fn both_suites_round_trip_and_hide_the_payload() {
        for suite in [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AeadAes128Gcm] {
            let (mut a, mut b) = pair(suite);
            let payload = [0x55u8; 160];
            let wire = a.protect(header(1), &payload).unwrap();
            assert!(!wire.windows(16).any(|w| w == &payload[..16]));
            let tag = if suite == SrtpSuite::AeadAes128Gcm {
                16
            } else {
                10
            };
            assert_eq!(wire.len(), 12 + 160 + tag);
            let pkt = b.unprotect(FROM_A, &wire).unwrap();
            assert_eq!(&pkt.payload[..], &payload[..]);
            assert_eq!(pkt.header.sequence_number, 1);
        }
    }

    #[test]
    fn drops_are_counted() {
        let (mut a, mut b) = pair(SrtpSuite::AesCm128HmacSha1_80);
        let wire = a.protect(header(7), &[1; 160]).unwrap();
        let other = SocketAddr::from(([127, 0, 0, 1], 9));
        let mut bad = wire.to_vec();
        bad[20] ^= 1;
        assert_eq!(
            b.unprotect(other, &bad),
            Err(SrtpError::UnexpectedSource(other))
        );
        assert_eq!(b.unprotect(FROM_A, &bad), Err(SrtpError::BadAuth));
        assert!(b.unprotect(FROM_A, &wire).is_ok());
        assert_eq!(b.unprotect(FROM_A, &wire), Err(SrtpError::Replay));
        assert_eq!(b.unprotect(FROM_A, &[0x80; 4]), Err(SrtpError::Malformed));
        let c = b.counters();
        assert_eq!(
            (
                c.accepted,
                c.bad_source,
                c.bad_auth,
                c.replayed,
                c.malformed
            ),
            (1, 1, 1, 1, 1)
        );
    }

    #[test]
    fn rekeyed_packets_do_not_decrypt_under_old_keys() {
        let (mut a, mut b) = pair(SrtpSuite::AeadAes128Gcm);
        let ka = SdesKey::generate(SrtpSuite::AeadAes128Gcm).unwrap();
        let kb = SdesKey::generate(SrtpSuite::AeadAes128Gcm).unwrap();
        a.rekey(&negotiated(&ka, &kb, 2000)).unwrap();
        let wire = a.protect(header(1), &[3; 160]).unwrap();
        assert_eq!(
            b.unprotect(FROM_A, &wire),
            Err(SrtpError::BadAuth),
            "old keys"
        );
        b.rekey(&negotiated(&kb, &ka, 1000)).unwrap();
        assert!(b.unprotect(FROM_A, &wire).is_ok(), "new keys");
    }

    #[test]
    fn srtcp_round_trip_tamper_and_replay() {
        use crate::media::rtcp::RtcpState;
        use std::time::{Instant, SystemTime};
        for suite in [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AeadAes128Gcm] {
            let (mut a, mut b) = pair(suite);
            let mut st = RtcpState::new(0x1234, "alice", 8000, Instant::now());
            st.on_rtp_sent(160, 0, Instant::now());
            let plain = st.build_report(Instant::now(), SystemTime::now()).unwrap();
            let wire = a.protect_rtcp(&plain).unwrap();
            assert!(crate::media::rtcp::is_rtcp(&wire));
            assert_ne!(&wire[8..plain.len()], &plain[8..], "encrypted");
            let mut bad = wire.to_vec();
            bad[12] ^= 1;
            assert_eq!(b.unprotect_rtcp(FROM_A, &bad), Err(SrtpError::BadAuth));
            let other = SocketAddr::from(([127, 0, 0, 1], 9));
            assert_eq!(
                b.unprotect_rtcp(other, &wire),
                Err(SrtpError::UnexpectedSource(other))
            );
            assert_eq!(&b.unprotect_rtcp(FROM_A, &wire).unwrap()[..], &plain[..]);
            assert_eq!(b.unprotect_rtcp(FROM_A, &wire), Err(SrtpError::Replay));
            // RTP on the RTCP path is refused, and RTCP counts no RTP drops.
            let rtp = a.protect(header(1), &[0; 160]).unwrap();
            assert_eq!(b.unprotect_rtcp(FROM_A, &rtp), Err(SrtpError::Malformed));
            assert_eq!(b.counters(), DropCounters::default());
        }
    }

    fn plain_pair() -> (SrtpChannel, SrtpChannel) {
        let plain = |port| Negotiated {
            security: MediaSecurity::Plain,
            keys: None,
            ..negotiated(
                &SdesKey::generate(SrtpSuite::AeadAes128Gcm).unwrap(),
                &SdesKey::generate(SrtpSuite::AeadAes128Gcm).unwrap(),
                port,
            )
        };
        (
            SrtpChannel::new(&plain(2000)).unwrap(),
            SrtpChannel::new(&plain(1000)).unwrap(),
        )
    }

    /// A NATed peer without ICE: its packets come from its public mapping,
    /// not from the address its SDP named; the first authentic one moves
    /// the stream there, and we send there from now on.
    #[test]
    fn an_authenticated_packet_from_a_new_source_moves_the_stream() {
        let (mut a, mut b) = pair(SrtpSuite::AesCm128HmacSha1_80);
        let nat = SocketAddr::from(([127, 0, 0, 7], 40_000));
        assert_eq!(b.remote(), FROM_A);
        let wire = a.protect(header(1), &[9; 160]).unwrap();
        let pkt = b.unprotect(nat, &wire).unwrap();
        assert_eq!(&pkt.payload[..], &[9; 160][..]);
        assert_eq!(b.remote(), nat, "latched onto the NAT mapping");
        assert_eq!(b.counters().latched, 1);
        // Later packets from the old address are now foreign, and can
        // only move the stream back by authenticating.
        let wire = a.protect(header(2), &[9; 160]).unwrap();
        assert!(b.unprotect(FROM_A, &wire).is_ok());
        assert_eq!((b.remote(), b.counters().latched), (FROM_A, 2));
        // A re-INVITE naming the same address keeps the latched one; one
        // naming a new address moves there.
        assert!(b
            .unprotect(nat, &a.protect(header(3), &[9; 160]).unwrap())
            .is_ok());
        let (ka, kb) = (
            SdesKey::generate(SrtpSuite::AesCm128HmacSha1_80).unwrap(),
            SdesKey::generate(SrtpSuite::AesCm128HmacSha1_80).unwrap(),
        );
        b.rekey(&negotiated(&kb, &ka, 1000)).unwrap();
        assert_eq!(b.remote(), nat, "re-keyed, same SDP address: still latched");
        b.rekey(&negotiated(&kb, &ka, 1001)).unwrap();
        assert_eq!(b.remote(), SocketAddr::from(([127, 0, 0, 1], 1001)));
    }

    /// The attacker: knows the peer's address and the SSRC, can send from
    /// anywhere, but has no key. Forged, tampered, truncated and replayed
    /// packets from a new source never move the stream.
    #[test]
    fn an_unauthenticated_packet_from_a_new_source_never_moves_the_stream() {
        for suite in [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AeadAes128Gcm] {
            let (mut a, mut b) = pair(suite);
            let evil = SocketAddr::from(([127, 0, 0, 66], 6666));
            let first = a.protect(header(1), &[1; 160]).unwrap();
            assert!(b.unprotect(FROM_A, &first).is_ok());
            let next = a.protect(header(2), &[2; 160]).unwrap();
            let mut tampered = next.to_vec();
            tampered[30] ^= 0x80;
            let mut forged = next.to_vec();
            forged[12..].fill(0x41);
            let plain = {
                let p = Packet {
                    header: header(3),
                    payload: Bytes::from_static(&[0; 160]),
                };
                p.marshal().unwrap().to_vec()
            };
            for attack in [
                &tampered[..],
                &forged[..],
                &plain[..],
                &first[..], // a replay of a captured authentic packet
                &next[..next.len() - 1],
                &[0x80; 12][..],
                b"junk",
            ] {
                assert_eq!(
                    b.unprotect(evil, attack),
                    Err(SrtpError::UnexpectedSource(evil))
                );
                assert_eq!(b.remote(), FROM_A, "the attacker moved the stream");
            }
            assert_eq!(b.counters().latched, 0);
            assert_eq!(b.counters().bad_source, 7);
            // The real peer goes on undisturbed.
            assert!(b.unprotect(FROM_A, &next).is_ok());
        }
    }

    /// Plain RTP (only under `allow-plain`) proves nothing: no latching.
    #[test]
    fn plain_rtp_never_latches() {
        let (mut a, mut b) = plain_pair();
        let other = SocketAddr::from(([127, 0, 0, 7], 40_000));
        let wire = a.protect(header(1), &[5; 160]).unwrap();
        assert_eq!(
            b.unprotect(other, &wire),
            Err(SrtpError::UnexpectedSource(other))
        );
        assert_eq!(b.remote(), FROM_A);
        assert!(b.unprotect(FROM_A, &wire).is_ok());
    }
}
