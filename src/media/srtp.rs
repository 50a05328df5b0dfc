//! RTP packetisation (the `rtp` crate) and SRTP/SRTCP protection
//! (`webrtc-srtp`), sans-I/O: bytes in, bytes out, with the drop counters
//! the UI shows.
//!
//! One [`SrtpChannel`] holds two one-way `webrtc-srtp` contexts: ours
//! (sending key = our derived key) and the peer's (receiving key = the
//! peer's derived key). Re-keying replaces both; packets under the old keys
//! then fail authentication and are dropped and counted.

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
    srtp: Option<Contexts>,
    counters: DropCounters,
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
            srtp: None,
            counters: DropCounters::default(),
        };
        ch.rekey(negotiated)?;
        Ok(ch)
    }

    /// Installs the keys of a new offer/answer; the old ones stop working.
    pub fn rekey(&mut self, negotiated: &Negotiated) -> Result<(), SrtpError> {
        self.remote = negotiated.remote;
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

    /// Where packets go, and the only address they are accepted from.
    pub fn remote(&self) -> SocketAddr {
        self.remote
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
        if from != self.remote {
            return Err(SrtpError::UnexpectedSource(from));
        }
        // RTCP (payload types 200-204 in the second byte, RFC 5761) is not
        // multiplexed here: we send no RTCP.
        if datagram.len() < 12 || datagram[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let plain = match &mut self.srtp {
            Some(c) => c.rx.decrypt_rtp(datagram).map_err(|e| match e {
                webrtc_srtp::Error::SrtpSsrcDuplicated(..) => SrtpError::Replay,
                _ => SrtpError::BadAuth,
            })?,
            None => Bytes::copy_from_slice(datagram),
        };
        let mut buf = plain;
        Packet::unmarshal(&mut buf).map_err(|_| SrtpError::Malformed)
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
        assert_eq!(
            b.unprotect(other, &wire),
            Err(SrtpError::UnexpectedSource(other))
        );
        let mut bad = wire.to_vec();
        bad[20] ^= 1;
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
}
