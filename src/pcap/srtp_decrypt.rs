//! The SRTP half of `ibephone pcap decrypt`: each RTP-shaped flow of a
//! capture (sender, receiver, SSRC) is tried with every `IBESIP_SRTP` key
//! of the key log ([`crate::tunnel::keylog`]); the key that authenticates
//! the flow's first packet is used for all of it, and the packets that
//! authenticate and decrypt are counted. Uses `webrtc-srtp` as
//! [`crate::media::srtp`] does, without a replay window (a capture may hold
//! a packet twice).

use super::rtpflow::is_rtp_shaped;
use super::stream::Datagram;
use crate::tunnel::keylog::{KeyLog, SrtpLogKey};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

/// One SRTP flow and how much of it the key log opened.
#[derive(Debug, Clone)]
pub struct SrtpFlow {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Synchronization source.
    pub ssrc: u32,
    /// RTP-shaped packets in the flow.
    pub packets: usize,
    /// Packets that authenticated and decrypted with a logged key.
    pub decrypted: usize,
    /// The suite of the key that opened it, if any.
    pub suite: Option<&'static str>,
}

fn context(k: &SrtpLogKey) -> Option<Context> {
    let (profile, key_len) = match k.suite {
        "AEAD_AES_128_GCM" => (ProtectionProfile::AeadAes128Gcm, 16),
        "AES_CM_128_HMAC_SHA1_80" => (ProtectionProfile::Aes128CmHmacSha1_80, 16),
        _ => return None,
    };
    let (key, salt) = k.key.split_at(key_len.min(k.key.len()));
    Context::new(key, salt, profile, None, None).ok()
}

/// Tries the key log's SRTP keys on every RTP-shaped flow of `datagrams`.
pub fn decrypt_flows(datagrams: &[Datagram], log: &KeyLog) -> Vec<SrtpFlow> {
    let mut flows: BTreeMap<(SocketAddr, SocketAddr, u32), Vec<&[u8]>> = BTreeMap::new();
    for d in datagrams.iter().filter(|d| is_rtp_shaped(&d.payload)) {
        let p = &d.payload;
        let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
        flows.entry((d.src, d.dst, ssrc)).or_default().push(p);
    }
    flows
        .into_iter()
        .map(|((src, dst, ssrc), packets)| {
            let mut out = SrtpFlow {
                src,
                dst,
                ssrc,
                packets: packets.len(),
                decrypted: 0,
                suite: None,
            };
            for k in log.srtp_keys() {
                let Some(mut ctx) = context(k) else { continue };
                let n = packets
                    .iter()
                    .filter(|p| ctx.decrypt_rtp(p).is_ok())
                    .count();
                if n > out.decrypted {
                    out.decrypted = n;
                    out.suite = Some(k.suite);
                }
                if n == packets.len() {
                    break;
                }
            }
            out
        })
        .collect()
}

impl fmt::Display for SrtpFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "srtp {} -> {} ssrc {:08x}: {}/{} packets decrypted{}",
            self.src,
            self.dst,
            self.ssrc,
            self.decrypted,
            self.packets,
            self.suite.map(|s| format!(" ({s})")).unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(key: &[u8]) -> Vec<Datagram> {
        let mut ctx = Context::new(
            &key[..16],
            &key[16..],
            ProtectionProfile::AeadAes128Gcm,
            None,
            None,
        )
        .unwrap();
        (0..5u16)
            .map(|i| {
                let mut p = vec![0x80, 8];
                p.extend_from_slice(&i.to_be_bytes());
                p.extend_from_slice(&(u32::from(i) * 160).to_be_bytes());
                p.extend_from_slice(&7u32.to_be_bytes());
                p.extend_from_slice(&[0xd5; 160]);
                Datagram {
                    frame: usize::from(i) + 1,
                    src: "127.0.0.1:4000".parse().unwrap(),
                    dst: "127.0.0.1:4002".parse().unwrap(),
                    payload: ctx.encrypt_rtp(&p).unwrap().to_vec(),
                }
            })
            .collect()
    }

    fn log(key: &[u8]) -> KeyLog {
        KeyLog::parse(&format!(
            "IBESIP_SRTP 1 tx AEAD_AES_128_GCM {}\nIBESIP_SRTP 1 rx AES_CM_128_HMAC_SHA1_80 {}\n",
            hex::encode(key),
            "ab".repeat(30)
        ))
        .unwrap()
    }

    #[test]
    fn the_logged_key_opens_its_flow_and_only_it() {
        let key = [5u8; 28];
        let flows = decrypt_flows(&flow(&key), &log(&key));
        assert_eq!((flows[0].decrypted, flows[0].packets), (5, 5));
        assert_eq!(flows[0].suite, Some("AEAD_AES_128_GCM"));
        let flows = decrypt_flows(&flow(&key), &log(&[6u8; 28]));
        assert_eq!((flows[0].decrypted, flows[0].suite), (0, None));
        assert!(flows[0].to_string().contains("0/5 packets decrypted"));
    }
}
