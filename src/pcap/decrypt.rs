//! `ibephone pcap decrypt FILE --keylog K`: the inner SIP messages of a
//! capture, opened with the keys an agent wrote to its key log
//! ([`crate::tunnel::keylog`]). Reuses the capture reading and SIP framing
//! of [`verify_capture`](super::verify_capture); each tunneled message is
//! decrypted on its own, so a key missing or wrong for one message is an
//! error for that message only.
//!
//! This is a debugging view, not a verifier: it checks the GCM tag (so a
//! wrong key is detected) but not signatures, replay windows or the
//! outer/inner agreement; use the agent itself for those.

use super::capture::{read_segments, Transport};
use super::stream::frame_messages;
use super::PcapError;
use crate::tunnel::cms::{self, KeyTransport};
use crate::tunnel::keylog::KeyLog;
use crate::tunnel::ENTITY_PREFIX;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::fmt;
use std::net::SocketAddr;
use thiserror::Error;
use zeroize::Zeroizing;

/// Why one tunneled message could not be decrypted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecryptError {
    /// The body is not a tunnel CMS object.
    #[error("not a tunnel body: {0}")]
    Cms(String),
    /// The key log holds no key for this message.
    #[error("no key in the key log for session {session} (direction {direction}, seq {seq})")]
    NoKey {
        /// Session id, hex.
        session: String,
        /// 0 caller to callee, 1 back.
        direction: u8,
        /// `ibesip-seq`.
        seq: u64,
    },
    /// The logged KEK does not unwrap the message's CEK.
    #[error(
        "the key log's KEK for session {0} does not unwrap this message's key (wrong key log?)"
    )]
    KeyUnwrap(String),
    /// No logged key passes the GCM tag.
    #[error("the key log's key does not authenticate this message (wrong key log, or the body was changed)")]
    Authentication,
    /// The plaintext is not the `message/sip` entity of the spec.
    #[error("decrypted content is not a message/sip entity: {0}")]
    Entity(String),
}

/// The outcome for one tunneled message of the capture.
#[derive(Debug, Clone)]
pub struct DecryptedMessage {
    /// Frame where the message starts.
    pub frame: usize,
    /// UDP or TCP.
    pub transport: Transport,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// The outer start line.
    pub outer_line: String,
    /// The inner message, or why it could not be had.
    pub inner: Result<Vec<u8>, DecryptError>,
}

/// Every tunneled message of a capture, decrypted with `log`.
#[derive(Debug, Default)]
pub struct Decryption {
    /// In capture order.
    pub messages: Vec<DecryptedMessage>,
    /// SIP messages of the capture that were not tunneled.
    pub plain: usize,
    /// The RTP-shaped flows, with the packets the key log's SRTP keys
    /// opened ([`super::srtp_decrypt`]).
    pub srtp: Vec<super::srtp_decrypt::SrtpFlow>,
}

impl Decryption {
    /// Number of tunneled messages that could not be decrypted.
    pub fn failures(&self) -> usize {
        self.messages.iter().filter(|m| m.inner.is_err()).count()
    }

    /// SRTP packets authenticated and decrypted with the key log's keys.
    pub fn srtp_decrypted(&self) -> usize {
        self.srtp.iter().map(|f| f.decrypted).sum()
    }
}

/// Reads a capture and decrypts every tunneled SIP message in it.
pub fn decrypt_capture(bytes: &[u8], log: &KeyLog) -> Result<Decryption, PcapError> {
    decrypt_capture_with(bytes, log, None)
}

/// [`decrypt_capture`], and with `tls` (the TLS secrets of the same key
/// log) the tunneled messages inside SIP over TLS are opened too: TLS
/// first, then the tunnel.
pub fn decrypt_capture_with(
    bytes: &[u8],
    log: &KeyLog,
    tls: Option<&super::tls::TlsKeys>,
) -> Result<Decryption, PcapError> {
    let mut framing = frame_messages(&read_segments(bytes)?);
    if tls.is_some() {
        super::stream::frame_tls(&mut framing, tls);
    }
    let mut out = Decryption::default();
    for f in &framing.messages {
        let m = &f.message;
        let tunneled = m
            .header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().contains("application/pkcs7-mime"));
        if !tunneled {
            out.plain += 1;
            continue;
        }
        out.messages.push(DecryptedMessage {
            frame: f.frame,
            transport: f.transport,
            src: f.src,
            dst: f.dst,
            outer_line: m.first_line.clone(),
            inner: decrypt_body(&m.body, log),
        });
    }
    out.srtp = super::srtp_decrypt::decrypt_flows(&framing.datagrams, log);
    Ok(out)
}

/// Opens one tunnel body with the keys of `log`; returns the inner message.
pub fn decrypt_body(body: &[u8], log: &KeyLog) -> Result<Vec<u8>, DecryptError> {
    let env = cms::decode_envelope(body).map_err(|e| DecryptError::Cms(e.to_string()))?;
    let seq = env.attrs.seq;
    let session_id = match &env.key {
        KeyTransport::Ibe { .. } => env
            .attrs
            .session_id
            .ok_or_else(|| DecryptError::Cms("first message without session id".into()))?,
        KeyTransport::Kek { kek_id, .. } => *kek_id,
    };
    let mut candidates: Vec<Zeroizing<[u8; 32]>> = log
        .ceks(&session_id, seq.direction, seq.seq)
        .into_iter()
        .map(|k| Zeroizing::new(*k))
        .collect();
    if let (KeyTransport::Kek { wrapped, .. }, Some(kek)) = (&env.key, log.kek(&session_id)) {
        let cek = aes_kw::KekAes256::new(&(*kek).into())
            .unwrap_vec(wrapped)
            .map_err(|_| DecryptError::KeyUnwrap(hex::encode(session_id)))?;
        let cek: [u8; 32] = cek
            .as_slice()
            .try_into()
            .map_err(|_| DecryptError::KeyUnwrap(hex::encode(session_id)))?;
        candidates.insert(0, Zeroizing::new(cek));
    }
    if candidates.is_empty() {
        return Err(DecryptError::NoKey {
            session: hex::encode(session_id),
            direction: seq.direction as u8,
            seq: seq.seq,
        });
    }
    let ciphertext = [env.ciphertext.as_slice(), &env.mac].concat();
    let plaintext = candidates
        .iter()
        .find_map(|cek| {
            Aes256Gcm::new((&**cek).into())
                .decrypt(
                    Nonce::from_slice(&env.nonce),
                    Payload {
                        msg: &ciphertext,
                        aad: &env.aad,
                    },
                )
                .ok()
        })
        .map(Zeroizing::new)
        .ok_or(DecryptError::Authentication)?;
    let entity = match env.attrs.content {
        cms::ContentKind::SignedData => {
            cms::decode_signed(&plaintext)
                .map_err(|e| DecryptError::Entity(e.to_string()))?
                .entity
        }
        cms::ContentKind::Data => plaintext.to_vec(),
    };
    entity
        .strip_prefix(ENTITY_PREFIX)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| DecryptError::Entity("no `Content-Type: message/sip` prefix".into()))
}

impl fmt::Display for Decryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.messages {
            let proto = match m.transport {
                Transport::Udp => "udp",
                Transport::Tcp => "tcp",
                Transport::Tls => "tls",
            };
            writeln!(
                f,
                "#{:<5} {proto} {} -> {}  {}",
                m.frame, m.src, m.dst, m.outer_line
            )?;
            match &m.inner {
                Ok(inner) => {
                    for line in String::from_utf8_lossy(inner).split("\r\n") {
                        writeln!(f, "    | {line}")?;
                    }
                }
                Err(e) => writeln!(f, "    cannot decrypt: {e}")?,
            }
        }
        for flow in &self.srtp {
            writeln!(f, "{flow}")?;
        }
        write!(
            f,
            "{} tunneled messages: {} decrypted, {} failed; {} plain SIP messages not shown; {} SRTP packets decrypted",
            self.messages.len(),
            self.messages.len() - self.failures(),
            self.failures(),
            self.plain,
            self.srtp_decrypted(),
        )
    }
}
