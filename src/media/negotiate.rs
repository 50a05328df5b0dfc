//! Offer/answer negotiation (RFC 3264) of one audio stream: codec, SRTP
//! suite and direction, and the keys of spec section 6 version 1.1
//! (escrow-resistant when the offer committed to a key with
//! `a=ibesip-dh-commit`, the answer sent `a=ibesip-dh` and the reveal
//! matched the commitment; SDES-only otherwise). Re-exported by
//! [`super::sdp`]; the decisions are listed in its module doc and here:
//! - An offer with a bare `a=ibesip-dh` and no commitment (a version 1.0
//!   peer, or a man in the middle that removed the commitment to grind the
//!   SAS) is answered SDES-only, without our key
//!   ([`SdesOnlyReason::PeerWithoutCommit`]).
//! - To an offer with neither attribute (a peer without the profile) the
//!   answer still carries our `a=ibesip-dh`, as before version 1.1, and
//!   the keys are SDES-only.
//! - The answerer's keys wait in a [`PendingAnswer`] until the reveal; a
//!   missing, malformed or wrong reveal is a [`RevealError`] and no key
//!   derived from X25519 is kept.

use super::commit::{commitment_matches, dh_commitment, RetainedSecret};
use super::ice::IceParams;
use super::keys::{derive_sending_key, DhKeyPair, MediaKeyError, Role, Sas, SdesKey, SrtpSuite};
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
    /// Send `a=ibesip-dh-commit` / `a=ibesip-dh`: keys the PKG cannot recover.
    EscrowResistant,
    /// `provider-recoverable`: never send `a=ibesip-dh` nor `a=ibesip-dh-commit`.
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
    /// Our ICE parameters, when we run ICE (RFC 8839 attributes).
    pub ice: Option<IceParams>,
}

/// Why the keys are not escrow-resistant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdesOnlyReason {
    /// The peer sent no `a=ibesip-dh` (answer) / `a=ibesip-dh-commit` (offer).
    PeerWithoutDh,
    /// The offer carried `a=ibesip-dh` without `a=ibesip-dh-commit`: a
    /// version 1.0 peer, or a downgrade by a man in the middle.
    PeerWithoutCommit,
    /// Our provider is `provider-recoverable` (lawful interception).
    OwnProviderRecoverable,
}

/// What the peer's `a=ibesip-rs` says about key continuity (spec 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// We hold no retained secret for this peer (never confirmed a SAS
    /// with it, or the peer identity is not verified): compare the SAS.
    NoSecret,
    /// The peer proved the secret of our last confirmed call: "same keys
    /// as your confirmed call", no SAS to compare.
    Verified,
    /// We hold a secret for this peer and its SDP carried no `a=ibesip-rs`:
    /// a loud warning (a man in the middle, or the peer lost its secret).
    Missing,
    /// We hold a secret for this peer and its `a=ibesip-rs` is wrong: a
    /// loud warning.
    Wrong,
}

impl Continuity {
    /// Checks the peer's MAC over the value `v` it sent, against `rs`.
    pub fn check(rs: Option<&RetainedSecret>, mac: Option<&[u8; 32]>, v: &[u8; 32]) -> Self {
        match (rs, mac) {
            (None, _) => Continuity::NoSecret,
            (Some(_), None) => Continuity::Missing,
            (Some(rs), Some(mac)) if rs.verify(v, mac) => Continuity::Verified,
            (Some(_), Some(_)) => Continuity::Wrong,
        }
    }
}

/// Why the answerer cannot finish an escrow-resistant exchange.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevealError {
    /// The ACK carried no `Ibesip-Dh` header.
    #[error("the offerer revealed no key (no Ibesip-Dh header in the ACK)")]
    Missing,
    /// The `Ibesip-Dh` value is not base64url of 32 bytes.
    #[error("the revealed key is malformed (Ibesip-Dh is not base64url of 32 bytes)")]
    Malformed,
    /// The revealed key does not match the commitment of the offer.
    #[error("the revealed key does not match the offer's a=ibesip-dh-commit")]
    Mismatch,
    /// The revealed key is unusable (low order).
    #[error(transparent)]
    Keys(#[from] MediaKeyError),
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
        /// What the peer's `a=ibesip-rs` showed.
        continuity: Continuity,
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
    /// The retained secret of this exchange (escrow-resistant only): kept
    /// for the peer once the SAS is confirmed or continuity verified.
    pub retained: Option<RetainedSecret>,
    /// The peer's ICE parameters, when both sides run ICE; `None`: media
    /// goes to `remote` (with latching).
    pub remote_ice: Option<IceParams>,
    /// Whether we are the controlling ICE agent (we made the offer).
    pub ice_controlling: bool,
    /// Whether both sides said `a=rtcp-mux`: only then is RTCP sent (and
    /// read) on the RTP port; without it no RTCP flows at all.
    pub rtcp_mux: bool,
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

/// The X25519 half of an exchange: `offer_dh` and `answer_dh` are the
/// offerer's and answerer's public keys.
struct DhHalf<'a> {
    own: &'a DhKeyPair,
    peer: &'a [u8; 32],
    offer_dh: [u8; 32],
    answer_dh: [u8; 32],
    continuity: Continuity,
}

/// Keys and security state from both sides' key material.
fn agree_keys(
    dh: Result<DhHalf<'_>, SdesOnlyReason>,
    own_sdes: &SdesKey,
    peer_sdes: &SdesKey,
    role: Role,
) -> Result<(MediaSecurity, SrtpKeys, Option<RetainedSecret>), MediaKeyError> {
    let suite = own_sdes.suite();
    match dh {
        Ok(h) => {
            let shared = h.own.agree(h.peer)?;
            let peer_role = match role {
                Role::Caller => Role::Callee,
                Role::Callee => Role::Caller,
            };
            Ok((
                MediaSecurity::EscrowResistant {
                    suite,
                    sas: Sas::compute(&shared, &h.offer_dh, &h.answer_dh),
                    continuity: h.continuity,
                },
                SrtpKeys {
                    send: derive_sending_key(&shared, own_sdes, role),
                    recv: derive_sending_key(&shared, peer_sdes, peer_role),
                },
                Some(RetainedSecret::derive(&shared, &h.offer_dh, &h.answer_dh)),
            ))
        }
        Err(reason) => Ok((
            MediaSecurity::SdesOnly { suite, reason },
            SrtpKeys {
                send: own_sdes.clone(),
                recv: peer_sdes.clone(),
            },
            None,
        )),
    }
}

/// An offer we sent, waiting for its answer. Holds the secrets of the
/// offer (SDES keys, X25519 secret); consumed by [`PendingOffer::accept_answer`].
/// The offer carries only a commitment to our X25519 key; the key itself
/// ([`PendingOffer::reveal`]) goes in the ACK of the answer.
#[derive(Debug)]
pub struct PendingOffer {
    local: LocalMedia,
    role: Role,
    offer: AudioDescription,
    dh: Option<DhKeyPair>,
    rs: Option<RetainedSecret>,
}

impl PendingOffer {
    /// Makes an offer (initial or re-INVITE) with fresh keys. `role` is our
    /// role in the dialog (caller for the INVITE's sender, even when the
    /// callee sends a later re-INVITE).
    pub fn new(local: LocalMedia, role: Role) -> Result<Self, SdpError> {
        Self::with_retained(local, role, None)
    }

    /// [`PendingOffer::new`], proving `rs` (the retained secret held for
    /// the peer) with `a=ibesip-rs` and checking the answer's proof.
    /// Without an X25519 key (provider-recoverable) nothing is proved.
    pub fn with_retained(
        local: LocalMedia,
        role: Role,
        rs: Option<RetainedSecret>,
    ) -> Result<Self, SdpError> {
        let dh = dh_for(&local)?;
        let has = |rate: u32| local.codecs.iter().any(|c| c.clock_rate() == rate);
        let commit = dh.as_ref().map(|d| dh_commitment(&d.public_bytes()));
        let rs = rs.filter(|_| commit.is_some());
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
            dh: None,
            dh_commit: commit,
            rs_mac: rs.as_ref().zip(commit.as_ref()).map(|(r, c)| r.mac(c)),
            direction: local.direction,
            ice: local.ice.clone(),
            rtcp_mux: true,
        };
        Ok(PendingOffer {
            local,
            role,
            offer,
            dh,
            rs,
        })
    }

    /// The offer to send.
    pub fn offer(&self) -> &AudioDescription {
        &self.offer
    }

    /// Our X25519 public key, to reveal in the ACK of the answer (inner
    /// `Ibesip-Dh` header); `None` when we offered no key.
    pub fn reveal(&self) -> Option<[u8; 32]> {
        self.dh.as_ref().map(DhKeyPair::public_bytes)
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
        let half = match (self.dh.as_ref(), answer.dh.as_ref()) {
            (None, _) => Err(SdesOnlyReason::OwnProviderRecoverable),
            (Some(_), None) => Err(SdesOnlyReason::PeerWithoutDh),
            (Some(own), Some(peer)) => Ok(DhHalf {
                own,
                peer,
                offer_dh: own.public_bytes(),
                answer_dh: *peer,
                continuity: Continuity::check(self.rs.as_ref(), answer.rs_mac.as_ref(), peer),
            }),
        };
        let (security, keys, retained) = agree_keys(half, &ours.key, &theirs.key, self.role)?;
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
            retained,
            remote_ice: answer.ice.clone().filter(|_| self.offer.ice.is_some()),
            ice_controlling: true,
            rtcp_mux: self.offer.rtcp_mux && answer.rtcp_mux,
        })
    }
}

/// Our answer to an offer, as far as it can be agreed before the ACK.
#[derive(Debug)]
pub enum AnswerOutcome {
    /// Everything is agreed (plain RTP, or SDES-only keys).
    Ready(Negotiated),
    /// The offer committed to an X25519 key: the keys wait for its reveal.
    AwaitingReveal(PendingAnswer),
}

impl AnswerOutcome {
    /// The negotiation once the ACK arrived with `revealed` (the offerer's
    /// `Ibesip-Dh`, ignored when nothing waits for it).
    pub fn finish(self, revealed: Option<&[u8; 32]>) -> Result<Negotiated, RevealError> {
        match self {
            AnswerOutcome::Ready(n) => Ok(n),
            AnswerOutcome::AwaitingReveal(p) => p.reveal(revealed),
        }
    }
}

/// The answerer's half of a committed exchange, waiting for the offerer's
/// key in the ACK. Holds our X25519 secret and both SDES keys.
#[derive(Debug)]
pub struct PendingAnswer {
    commitment: [u8; 32],
    dh: DhKeyPair,
    own_sdes: SdesKey,
    peer_sdes: SdesKey,
    role: Role,
    continuity: Continuity,
    base: Negotiated,
}

impl PendingAnswer {
    /// What the offer's `a=ibesip-rs` showed (known before the reveal).
    pub fn continuity(&self) -> Continuity {
        self.continuity
    }

    /// Checks the revealed key against the commitment and agrees the keys;
    /// nothing derived from X25519 comes out of a failed check.
    pub fn reveal(self, revealed: Option<&[u8; 32]>) -> Result<Negotiated, RevealError> {
        let a = revealed.ok_or(RevealError::Missing)?;
        if !commitment_matches(&self.commitment, a) {
            return Err(RevealError::Mismatch);
        }
        let half = DhHalf {
            own: &self.dh,
            peer: a,
            offer_dh: *a,
            answer_dh: self.dh.public_bytes(),
            continuity: self.continuity,
        };
        let (security, keys, retained) =
            agree_keys(Ok(half), &self.own_sdes, &self.peer_sdes, self.role)?;
        Ok(Negotiated {
            security,
            keys: Some(keys),
            retained,
            ..self.base
        })
    }
}

/// Answers an offer: picks codec, suite and direction, makes fresh keys.
/// `role` is our role in the dialog; `rs` is the retained secret held for
/// the peer, proved with `a=ibesip-rs` over our `a=ibesip-dh`.
pub fn answer(
    local: &LocalMedia,
    role: Role,
    offer: &AudioDescription,
    rs: Option<&RetainedSecret>,
) -> Result<(AudioDescription, AnswerOutcome), SdpError> {
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
        dh_commit: None,
        rs_mac: None,
        direction,
        // ICE only when both run it (RFC 8839 4.2.5).
        ice: local.ice.clone().filter(|_| offer.ice.is_some()),
        // RFC 5761 5.1.1: the answer says it only when the offer did.
        rtcp_mux: offer.rtcp_mux,
    };
    let mut negotiated = Negotiated {
        codec,
        payload_type,
        telephone_event,
        remote: offer.rtp_addr,
        direction,
        security: MediaSecurity::Plain,
        keys: None,
        retained: None,
        remote_ice: offer.ice.clone().filter(|_| local.ice.is_some()),
        ice_controlling: false,
        rtcp_mux: offer.rtcp_mux,
    };
    if !offer.secure {
        if local.policy == SecurityPolicy::Require {
            return Err(SdpError::PlainRefused);
        }
        return Ok((desc, AnswerOutcome::Ready(negotiated)));
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
    let outcome = match (dh, offer.dh_commit) {
        (Some(dh), Some(commitment)) => {
            let b = dh.public_bytes();
            desc.dh = Some(b);
            desc.rs_mac = rs.map(|r| r.mac(&b));
            let continuity = Continuity::check(rs, offer.rs_mac.as_ref(), &commitment);
            AnswerOutcome::AwaitingReveal(PendingAnswer {
                commitment,
                dh,
                own_sdes: own.key.clone(),
                peer_sdes: theirs.key.clone(),
                role,
                continuity,
                base: negotiated,
            })
        }
        (dh, _) => {
            let reason = if dh.is_none() {
                SdesOnlyReason::OwnProviderRecoverable
            } else if offer.dh.is_some() {
                SdesOnlyReason::PeerWithoutCommit
            } else {
                // A peer without the profile (baresip): our answer keeps
                // its a=ibesip-dh as before version 1.1; such a peer
                // ignores it, and no key of ours is derived from it.
                desc.dh = dh.as_ref().map(DhKeyPair::public_bytes);
                SdesOnlyReason::PeerWithoutDh
            };
            let (security, keys, _) = agree_keys(Err(reason), &own.key, &theirs.key, role)?;
            negotiated.security = security;
            negotiated.keys = Some(keys);
            AnswerOutcome::Ready(negotiated)
        }
    };
    desc.crypto = vec![own];
    Ok((desc, outcome))
}
