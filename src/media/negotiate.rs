//! Offer/answer negotiation (RFC 3264) of one audio stream: codec, SRTP
//! suite and direction, and the keys of spec section 6 (escrow-resistant
//! when both sides sent `a=ibesip-dh`, SDES-only otherwise). Re-exported
//! by [`super::sdp`]; the decisions are listed in its module doc.

use super::keys::{derive_sending_key, DhKeyPair, Role, Sas, SdesKey, SrtpSuite};
use super::sdp::{
    AudioDescription, Codec, Direction, SdpError, OPUS_PT, TELEPHONE_EVENT_48K_PT,
    TELEPHONE_EVENT_PT,
};
use super::sdp_attrs::CryptoAttr;
use std::net::SocketAddr;

/// Whether a call may run unencrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityPolicy {
    /// Media never flows unencrypted: plain offers are refused.
    Require,
    /// A plain RTP/AVP offer is accepted (and the UI is told).
    AllowPlain,
}

/// The `media_keys` setting of our own provider's parameters (spec 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKeysPolicy {
    /// Send `a=ibesip-dh`: keys the PKG cannot recover.
    EscrowResistant,
    /// `provider-recoverable`: never send `a=ibesip-dh`.
    ProviderRecoverable,
}

/// What we want for our side of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// Address the peer sends RTP to (SDP `c=` and port).
    pub rtp_addr: SocketAddr,
    /// Codecs in preference order.
    pub codecs: Vec<Codec>,
    /// Suites we offer/accept, in preference order.
    pub suites: Vec<SrtpSuite>,
    /// Plain RTP allowed?
    pub policy: SecurityPolicy,
    /// Our provider's `media_keys`.
    pub media_keys: MediaKeysPolicy,
    /// The direction we wish (sendonly to hold).
    pub direction: Direction,
    /// `o=` session id (constant over the dialog).
    pub session_id: u64,
    /// `o=` version (increment for every re-offer).
    pub session_version: u64,
}

/// Why the keys are not escrow-resistant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdesOnlyReason {
    /// The peer sent no `a=ibesip-dh`.
    PeerWithoutDh,
    /// Our provider is `provider-recoverable` (lawful interception).
    OwnProviderRecoverable,
}

/// The security of the negotiated media, for the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaSecurity {
    /// SRTP with keys mixed with X25519: the PKG cannot recover them.
    EscrowResistant {
        /// The suite.
        suite: SrtpSuite,
        /// The short authentication string to compare aloud.
        sas: Sas,
    },
    /// SRTP keyed by SDES alone (inside the tunnel, but recoverable by the PKG).
    SdesOnly {
        /// The suite.
        suite: SrtpSuite,
        /// Why.
        reason: SdesOnlyReason,
    },
    /// Unencrypted RTP (only under [`SecurityPolicy::AllowPlain`]).
    Plain,
}

/// SRTP master keys for both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// Our sending key (key || salt).
    pub send: SdesKey,
    /// The peer's sending key, which we receive with.
    pub recv: SdesKey,
}

/// The outcome of an offer/answer exchange: everything a media session needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec we send (and expect).
    pub codec: Codec,
    /// The payload type the codec runs on (the offer's number).
    pub payload_type: u8,
    /// The telephone-event payload type at the codec's clock rate, if
    /// both support it.
    pub telephone_event: Option<u8>,
    /// Where to send RTP, and the only source RTP is accepted from.
    pub remote: SocketAddr,
    /// Our direction.
    pub direction: Direction,
    /// Security state for the UI.
    pub security: MediaSecurity,
    /// SRTP keys (`None` only when `security` is `Plain`).
    pub keys: Option<SrtpKeys>,
}

fn fresh_crypto(suites: &[SrtpSuite]) -> Result<Vec<CryptoAttr>, SdpError> {
    suites
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(CryptoAttr {
                tag: i as u32 + 1,
                key: SdesKey::generate(*s)?,
            })
        })
        .collect()
}

fn dh_for(local: &LocalMedia) -> Result<Option<DhKeyPair>, SdpError> {
    Ok(match local.media_keys {
        MediaKeysPolicy::EscrowResistant => Some(DhKeyPair::generate()?),
        MediaKeysPolicy::ProviderRecoverable => None,
    })
}

fn first_common_codec(prefer: &[Codec], other: &[Codec]) -> Result<Codec, SdpError> {
    prefer
        .iter()
        .copied()
        .find(|c| other.contains(c))
        .ok_or(SdpError::NoCommonCodec)
}

/// Keys and security state from both sides' key material.
fn agree_keys(
    own_dh: Option<&DhKeyPair>,
    peer_dh: Option<&[u8; 32]>,
    own_sdes: &SdesKey,
    peer_sdes: &SdesKey,
    role: Role,
    offer_answer_dh: impl FnOnce(&[u8; 32], &[u8; 32]) -> ([u8; 32], [u8; 32]),
) -> Result<(MediaSecurity, SrtpKeys), SdpError> {
    let suite = own_sdes.suite();
    match (own_dh, peer_dh) {
        (Some(own), Some(peer)) => {
            let shared = own.agree(peer)?;
            let peer_role = match role {
                Role::Caller => Role::Callee,
                Role::Callee => Role::Caller,
            };
            let (o, a) = offer_answer_dh(&own.public_bytes(), peer);
            Ok((
                MediaSecurity::EscrowResistant {
                    suite,
                    sas: Sas::compute(&shared, &o, &a),
                },
                SrtpKeys {
                    send: derive_sending_key(&shared, own_sdes, role),
                    recv: derive_sending_key(&shared, peer_sdes, peer_role),
                },
            ))
        }
        (own, _) => Ok((
            MediaSecurity::SdesOnly {
                suite,
                reason: if own.is_none() {
                    SdesOnlyReason::OwnProviderRecoverable
                } else {
                    SdesOnlyReason::PeerWithoutDh
                },
            },
            SrtpKeys {
                send: own_sdes.clone(),
                recv: peer_sdes.clone(),
            },
        )),
    }
}

/// An offer we sent, waiting for its answer. Holds the secrets of the
/// offer (SDES keys, X25519 secret); consumed by [`PendingOffer::accept_answer`].
#[derive(Debug)]
pub struct PendingOffer {
    local: LocalMedia,
    role: Role,
    offer: AudioDescription,
    dh: Option<DhKeyPair>,
}

impl PendingOffer {
    /// Makes an offer (initial or re-INVITE) with fresh keys. `role` is our
    /// role in the dialog (caller for the INVITE's sender, even when the
    /// callee sends a later re-INVITE).
    pub fn new(local: LocalMedia, role: Role) -> Result<Self, SdpError> {
        let dh = dh_for(&local)?;
        let has = |rate: u32| local.codecs.iter().any(|c| c.clock_rate() == rate);
        let offer = AudioDescription {
            session_id: local.session_id,
            session_version: local.session_version,
            rtp_addr: local.rtp_addr,
            secure: true,
            codecs: local.codecs.clone(),
            opus_pt: local.codecs.contains(&Codec::Opus).then_some(OPUS_PT),
            telephone_event: has(8000).then_some(TELEPHONE_EVENT_PT),
            telephone_event_48k: has(48_000).then_some(TELEPHONE_EVENT_48K_PT),
            ptime: 20,
            crypto: fresh_crypto(&local.suites)?,
            dh: dh.as_ref().map(DhKeyPair::public_bytes),
            direction: local.direction,
        };
        Ok(PendingOffer {
            local,
            role,
            offer,
            dh,
        })
    }

    /// The offer to send.
    pub fn offer(&self) -> &AudioDescription {
        &self.offer
    }

    /// Checks the answer against the offer and agrees the keys.
    pub fn accept_answer(self, answer: &AudioDescription) -> Result<Negotiated, SdpError> {
        if !answer.secure {
            return Err(SdpError::AnswerMismatch(
                "RTP/AVP answer to an RTP/SAVP offer",
            ));
        }
        let codec = *answer
            .codecs
            .first()
            .filter(|c| self.offer.codecs.contains(c))
            .ok_or(SdpError::AnswerMismatch("answer codec was not offered"))?;
        let [theirs] = answer.crypto.as_slice() else {
            return Err(SdpError::AnswerMismatch("answer must carry one a=crypto"));
        };
        let ours = self
            .offer
            .crypto
            .iter()
            .find(|c| c.tag == theirs.tag && c.key.suite() == theirs.key.suite())
            .ok_or(SdpError::AnswerMismatch(
                "a=crypto tag or suite was not offered",
            ))?;
        let direction = Direction::from_flags(
            self.local.direction.sends() && answer.direction.receives(),
            self.local.direction.receives() && answer.direction.sends(),
        );
        let (security, keys) = agree_keys(
            self.dh.as_ref(),
            answer.dh.as_ref(),
            &ours.key,
            &theirs.key,
            self.role,
            |own, peer| (*own, *peer),
        )?;
        let rate = codec.clock_rate();
        Ok(Negotiated {
            codec,
            payload_type: answer.payload_type(codec),
            telephone_event: answer
                .telephone_event_at(rate)
                .filter(|_| self.offer.telephone_event_at(rate).is_some()),
            remote: answer.rtp_addr,
            direction,
            security,
            keys: Some(keys),
        })
    }
}

/// Answers an offer: picks codec, suite and direction, makes fresh keys.
/// `role` is our role in the dialog.
pub fn answer(
    local: &LocalMedia,
    role: Role,
    offer: &AudioDescription,
) -> Result<(AudioDescription, Negotiated), SdpError> {
    let codec = first_common_codec(&offer.codecs, &local.codecs)?;
    let direction = Direction::answer_to(offer.direction, local.direction);
    let payload_type = offer.payload_type(codec);
    // Only the telephone-event whose clock is the codec's (RFC 4733 2.1).
    let telephone_event = offer.telephone_event_at(codec.clock_rate());
    let mut desc = AudioDescription {
        session_id: local.session_id,
        session_version: local.session_version,
        rtp_addr: local.rtp_addr,
        secure: offer.secure,
        codecs: vec![codec],
        opus_pt: (codec == Codec::Opus).then_some(payload_type),
        telephone_event: telephone_event.filter(|_| codec.clock_rate() == 8000),
        telephone_event_48k: telephone_event.filter(|_| codec.clock_rate() == 48_000),
        ptime: 20,
        crypto: Vec::new(),
        dh: None,
        direction,
    };
    let mut negotiated = Negotiated {
        codec,
        payload_type,
        telephone_event,
        remote: offer.rtp_addr,
        direction,
        security: MediaSecurity::Plain,
        keys: None,
    };
    if !offer.secure {
        if local.policy == SecurityPolicy::Require {
            return Err(SdpError::PlainRefused);
        }
        return Ok((desc, negotiated));
    }
    // Prefer GCM when offered, then the offer's order.
    let theirs = [SrtpSuite::AeadAes128Gcm, SrtpSuite::AesCm128HmacSha1_80]
        .iter()
        .filter(|s| local.suites.contains(s))
        .find_map(|s| offer.crypto.iter().find(|c| c.key.suite() == *s))
        .ok_or(SdpError::NoCommonSuite)?;
    let own = CryptoAttr {
        tag: theirs.tag,
        key: SdesKey::generate(theirs.key.suite())?,
    };
    let dh = dh_for(local)?;
    let (security, keys) = agree_keys(
        dh.as_ref(),
        offer.dh.as_ref(),
        &own.key,
        &theirs.key,
        role,
        |own, peer| (*peer, *own),
    )?;
    desc.dh = dh.as_ref().map(DhKeyPair::public_bytes);
    desc.crypto = vec![own];
    negotiated.security = security;
    negotiated.keys = Some(keys);
    Ok((desc, negotiated))
}
