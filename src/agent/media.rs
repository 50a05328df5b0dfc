//! The media of the agent's calls, sans-I/O: per call the SDP offer/answer
//! of spec section 6 (made and checked here, carried inside the tunnel by
//! the SIP core as the INVITE/200 bodies), and the [`MediaAction`]s a
//! driver carries out (start, re-key, stop a media session). The core
//! never touches a socket: it asks a [`MediaPorts`] for the address to
//! announce, and the driver that bound it runs the session.
//!
//! Decisions (pinned by the tests below and in `tests/media/agent_media.rs`):
//! - An INVITE without an SDP offer (delayed offer, RFC 3261 13.2.1) gets
//!   our offer in the 2xx: spec 6's mirrored exchange. The 2xx commits to
//!   our key (`a=ibesip-dh-commit`), the ACK must bring the caller's
//!   answer with its key (`a=ibesip-dh`), and only then do we reveal our
//!   key in the inner `Ibesip-Dh` header of an INFO in the dialog
//!   (tunneled like every in-dialog request of a tunneled call). We are
//!   the offerer, so media starts once the answer checks; the caller must
//!   check the reveal before it starts escrow-resistant media. An ACK
//!   without an acceptable answer ends the call and reveals nothing
//!   (pinned by `an_offerless_invite_gets_the_offer_in_the_2xx_and_the_reveal_in_an_info`
//!   and `an_ack_without_the_answer_to_our_2xx_offer_ends_the_call`).
//!   ibephone itself always offers in its INVITEs, so the caller's half
//!   (answering in the ACK, checking an INFO's reveal) is not built; a
//!   re-INVITE without SDP is still refused with 488 and the old keys stay.
//!   So is an offer we cannot answer (no common codec or suite, plain RTP
//!   under `require`).
//! - Hold is `a=sendonly` from the side that holds (the peer answers
//!   `recvonly`); resume is `a=sendrecv`. Every offer and answer, including
//!   these, carries fresh SDES keys and a fresh X25519 key pair, so each
//!   re-INVITE re-keys and yields a new SAS.
//! - Spec 6 version 1.1: every offer of ours commits to its key
//!   (`a=ibesip-dh-commit`) and the key ([`MediaCalls::reveal`]) goes in
//!   the inner `Ibesip-Dh` header of the ACK of the answer; the ACK leaves
//!   before the answer is read, so it carries the key whatever the answer
//!   (a public key: nothing is disclosed to a peer without the profile).
//!   As answerer we start (or re-key) escrow-resistant media only when the
//!   ACK's key matched the commitment ([`MediaCalls::ack`]); a missing,
//!   malformed or wrong key ends the call ([`CallMediaError::Reveal`]),
//!   and no key derived from it is kept. When we offer in a 2xx (see
//!   above) the roles are mirrored and our key goes in an INFO.
//! - Key continuity: a retained secret per verified peer AOR
//!   ([`RetainedStore`]). It is replaced by the call's value when the user
//!   confirms the call's SAS ([`MediaCalls::confirm_sas`]), or on its own
//!   when the exchange completed (offerer: the answer accepted; answerer:
//!   the reveal checked) and the peer's `a=ibesip-rs` verified. A missing
//!   or wrong `a=ibesip-rs` keeps the old secret until a new confirmation.
//!   Calls whose peer identity is not verified by a signature (plain,
//!   unsigned) neither prove nor keep a secret.
//! - A re-INVITE that arrives while our own offer is pending is answered
//!   491 (RFC 3261 14.2 glare); one we cannot answer gets 488 and the old
//!   keys stay in force. A 2xx answer we cannot accept ends the call: the
//!   peer has switched keys already, and media must not run half-keyed.

use super::AgentEvent;
use crate::ibe::identity::{Aor, Identity};
use crate::media::commit::RetainedSecret;
use crate::media::dtmf::digit_to_event;
use crate::media::ice::IceParams;
use crate::media::keys::{Role, SrtpSuite};
use crate::media::sdp::{
    answer, AnswerOutcome, AudioDescription, Codec, Continuity, Direction, LocalMedia,
    MediaKeysPolicy, MediaSecurity, Negotiated, PendingOffer, RevealError, SdesOnlyReason,
    SdpError, SecurityPolicy,
};
use crate::sip::ua::{self, Body, CallId};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;
use thiserror::Error;

/// The Content-Type of our offers and answers.
pub const SDP_CONTENT_TYPE: &str = "application/sdp";

/// Where a call's RTP is received: the driver binds a local port, the
/// core only writes its address into the SDP.
pub trait MediaPorts: Send {
    /// Reserves a local RTP port for `call`; returns the address to
    /// announce (`c=` and `m=` port).
    fn allocate(&mut self, call: u64) -> Result<SocketAddr, String>;
    /// Gives back the port of a call that ended or never started.
    fn release(&mut self, call: u64);
    /// Our ICE parameters for `call`'s port (after [`MediaPorts::allocate`]),
    /// `None` when the call runs no ICE.
    fn ice(&self, _call: u64) -> Option<IceParams> {
        None
    }
}

/// Where the retained secrets of key continuity (spec 6) live, by peer
/// AOR (`sip:user@host`, canonical). The store seals them at rest.
pub trait RetainedStore: Send {
    /// The secret kept for `peer`, if any.
    fn get(&self, peer: &str) -> Option<RetainedSecret>;
    /// Keeps `rs` for `peer` (replacing the old one) and persists it; an
    /// error is a sentence for the user (the old value stays in force).
    fn put(&mut self, peer: &str, rs: RetainedSecret) -> Result<(), String>;
}

/// Retained secrets in memory only: continuity while the process runs.
#[derive(Default)]
pub struct MemoryRetained(HashMap<String, RetainedSecret>);

impl RetainedStore for MemoryRetained {
    fn get(&self, peer: &str) -> Option<RetainedSecret> {
        self.0.get(peer).cloned()
    }
    fn put(&mut self, peer: &str, rs: RetainedSecret) -> Result<(), String> {
        self.0.insert(peer.to_string(), rs);
        Ok(())
    }
}

/// The canonical AOR of a verified identity (`sip:u@h#YYYY-MM`) or of a
/// URI; `None` when it is neither.
pub fn peer_aor(s: &str) -> Option<String> {
    Identity::parse(s)
        .map(|i| i.aor().as_str().to_string())
        .or_else(|_| Aor::parse(s).map(|a| a.as_str().to_string()))
        .ok()
}

/// What we offer and accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPolicy {
    /// Codecs, most preferred first (the answerer follows the offer's order).
    pub codecs: Vec<Codec>,
    /// SRTP suites we offer and accept.
    pub suites: Vec<SrtpSuite>,
    /// Whether a plain RTP offer is answered (never under `require`).
    pub security: SecurityPolicy,
    /// Our provider's `media_keys`: whether we send `a=ibesip-dh`.
    pub media_keys: MediaKeysPolicy,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        MediaPolicy {
            codecs: vec![Codec::Opus, Codec::Pcmu, Codec::Pcma],
            suites: vec![SrtpSuite::AeadAes128Gcm, SrtpSuite::AesCm128HmacSha1_80],
            security: SecurityPolicy::Require,
            media_keys: MediaKeysPolicy::EscrowResistant,
        }
    }
}

/// What the driver must do with a call's media session.
#[derive(Debug)]
pub enum MediaAction {
    /// Start sending and receiving on the port allocated for `call`.
    Start {
        /// Call number.
        call: u64,
        /// Codec, peer address, direction and keys.
        negotiated: Negotiated,
    },
    /// A re-INVITE completed: install the new keys and direction.
    Update {
        /// Call number.
        call: u64,
        /// The new negotiation.
        negotiated: Negotiated,
    },
    /// A re-INVITE moved the call's media to the port allocated for it
    /// anew (after a network change; an ICE restart): move the session
    /// there, with the new keys.
    Restart {
        /// Call number.
        call: u64,
        /// The new negotiation.
        negotiated: Negotiated,
    },
    /// The call is over: stop the session and close its audio.
    Stop {
        /// Call number.
        call: u64,
    },
    /// Send silence (`on`) or the microphone again.
    Mute {
        /// Call number.
        call: u64,
        /// Muted?
        on: bool,
    },
    /// Send one RFC 4733 digit.
    Dtmf {
        /// Call number.
        call: u64,
        /// `0-9`, `*`, `#`, `A-D`.
        digit: char,
    },
}

/// What the user is told about a negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInfo {
    /// `opus`, `PCMU` or `PCMA`.
    pub codec: &'static str,
    /// The SRTP suite, or `none` for plain RTP.
    pub cipher: &'static str,
    /// Keys mixed with X25519: the PKG cannot recover them.
    pub escrow_resistant: bool,
    /// The short authentication string (escrow-resistant calls only).
    pub sas: Option<String>,
    /// Our direction (`sendrecv`, `sendonly` while we hold...).
    pub direction: &'static str,
    /// A warning the UI must show, when the keys are not escrow-resistant.
    pub notice: Option<String>,
    /// What the peer's `a=ibesip-rs` showed (escrow-resistant calls).
    pub continuity: Continuity,
}

/// The words of a continuity state: whether the peer proved the keys of
/// the confirmed call, and the sentence to show; `None` for no secret.
pub fn continuity_text(c: Continuity) -> Option<(bool, &'static str)> {
    match c {
        Continuity::NoSecret => None,
        Continuity::Verified => Some((true, "same keys as your confirmed call: no need to compare the SAS")),
        Continuity::Missing => Some((false, "WARNING: this peer did not prove the keys of your confirmed call (no a=ibesip-rs): someone may be in the middle; compare the SAS aloud before you say anything private")),
        Continuity::Wrong => Some((false, "WARNING: this peer's proof of the keys of your confirmed call is wrong (a=ibesip-rs does not verify): someone may be in the middle; compare the SAS aloud before you say anything private")),
    }
}

/// Counters of one call's media, as the UI shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaCounters {
    /// RTP packets sent.
    pub sent: u64,
    /// Packets received and accepted.
    pub received: u64,
    /// Dropped: authentication failed (wrong or old key, tampering).
    pub bad_auth: u64,
    /// Dropped: from an unexpected address.
    pub bad_source: u64,
    /// Dropped: replays.
    pub replayed: u64,
    /// Times the stream moved to a new source address (symmetric RTP
    /// latching onto an authenticated packet).
    #[serde(default)]
    pub latched: u64,
    /// Frames concealed by the jitter buffer.
    pub concealed: u64,
    /// Mean jitter-buffer delay, ms.
    pub jitter_mean_ms: u64,
    /// 99th percentile jitter-buffer delay, ms.
    pub jitter_p99_ms: u64,
    /// Under ICE, the kind of our candidate of the pair media flows on
    /// (`host`, `relay`); absent before a pair is nominated or without ICE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_candidate: Option<String>,
    /// The kind of the peer's candidate of that pair (`host`, `srflx`,
    /// `prflx`, `relay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_candidate: Option<String>,
    /// Share of the peer's packets we lost over our last RTCP report
    /// interval, per mille (RFC 3550 fraction lost; 0 without RTCP).
    #[serde(default)]
    pub loss_permille: u32,
    /// Packets of the peer we lost since the start (RFC 3550 cumulative
    /// lost; negative with duplicates).
    #[serde(default)]
    pub lost: i64,
    /// Interarrival jitter of the peer's packets (RFC 3550 A.8), ms.
    #[serde(default)]
    pub jitter_ms: u64,
    /// What the peer's last RTCP report says it lost of our packets, per
    /// mille; absent until a report about us arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_loss_permille: Option<u32>,
    /// What the peer's last RTCP report says it lost of our packets since
    /// the start; absent until a report about us arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_lost: Option<i64>,
    /// The interarrival jitter of our packets as the peer reports it, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_jitter_ms: Option<u64>,
    /// Round-trip time from the peer's last report about our sender
    /// report (RFC 3550 6.4.1), ms; absent until measured (and always
    /// without rtcp-mux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u64>,
    /// RTCP compound reports sent (SRTCP).
    #[serde(default)]
    pub rtcp_sent: u64,
    /// RTCP reports accepted from the peer.
    #[serde(default)]
    pub rtcp_received: u64,
    /// RTCP datagrams dropped: failed SRTCP (forged, replayed, plain,
    /// wrong source), malformed, or received without rtcp-mux.
    #[serde(default)]
    pub rtcp_dropped: u64,
    /// Milliseconds from the call's 200 OK (the media session's start)
    /// to the first audio heard: the first frame played from a received
    /// packet, jitter-buffer delay included; absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_audio_ms: Option<u64>,
}

/// Why a call's media could not be set up or changed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CallMediaError {
    /// No local port for RTP.
    #[error("no local RTP port: {0}")]
    Port(String),
    /// The peer's SDP is malformed or cannot be answered.
    #[error("the peer's SDP is not acceptable: {0}")]
    Sdp(#[from] SdpError),
    /// The body is not SDP.
    #[error("the peer sent no SDP offer/answer ({0})")]
    NotSdp(String),
    /// The call has no media (unknown or ended).
    #[error("call {0} has no media")]
    NoCall(u64),
    /// Our own offer is still waiting for its answer.
    #[error("call {0} has an offer pending")]
    Pending(u64),
    /// A DTMF string with a character that is no digit.
    #[error("not a DTMF digit: {0:?}")]
    Dtmf(char),
    /// The peer refused our re-INVITE.
    #[error("the peer refused the re-INVITE with {0}; the old keys stay in force")]
    Refused(u16),
    /// The offerer's key in the ACK did not check against its commitment:
    /// the call's escrow-resistant media ends.
    #[error("escrow-resistant media ended: {0}")]
    Reveal(#[from] RevealError),
    /// There is no SAS to confirm (no escrow-resistant exchange, or the
    /// peer identity is not verified by a signature).
    #[error("call {call}: no SAS to confirm ({why})")]
    NothingToConfirm {
        /// Call number.
        call: u64,
        /// Why.
        why: &'static str,
    },
    /// The retained secret could not be kept.
    #[error("the confirmed keys could not be kept: {0}")]
    Retained(String),
}

struct CallMedia {
    role: Role,
    local: LocalMedia,
    pending: Option<PendingOffer>,
    answer: Option<Body>,
    negotiated: Option<Negotiated>,
    started: bool,
    /// Answerer: the exchange waiting for the offerer's key in the ACK.
    awaiting: Option<AnswerOutcome>,
    /// Answerer of the initial INVITE: the ACK's `Ibesip-Dh` (checked
    /// when the call is answered); `Some(None)` for an ACK without it.
    revealed: Option<Option<String>>,
    /// The verified peer AOR (continuity only with one).
    peer: Option<String>,
    /// The retained secret of the last completed exchange.
    retained: Option<RetainedSecret>,
    /// Offer in our 2xx (an INVITE without SDP): the SDP answer the ACK
    /// brought, read when the call is answered.
    ack_answer: Option<Body>,
    /// Offer in our 2xx: our key, to reveal in a tunneled INFO once the
    /// ACK's answer was accepted (spec 6, mirrored exchange).
    info_reveal: Option<[u8; 32]>,
    /// A restart in flight (a new port allocated, its exchange not done):
    /// our local media before it, put back if the exchange fails.
    restart: Option<LocalMedia>,
    /// The network changed but the media has not moved yet (another
    /// offer was pending, or the restart met glare): to do when possible.
    wants_restart: bool,
}

impl CallMedia {
    fn new(role: Role, local: LocalMedia, peer: Option<&str>) -> Self {
        CallMedia {
            role,
            local,
            pending: None,
            answer: None,
            negotiated: None,
            started: false,
            awaiting: None,
            revealed: None,
            peer: peer.and_then(peer_aor),
            retained: None,
            ack_answer: None,
            info_reveal: None,
            restart: None,
            wants_restart: false,
        }
    }
}

/// The media state of every call of one agent.
pub struct MediaCalls {
    policy: MediaPolicy,
    ports: Box<dyn MediaPorts>,
    calls: HashMap<u64, CallMedia>,
    actions: VecDeque<MediaAction>,
    next_session: u64,
    retained: Box<dyn RetainedStore>,
    warnings: VecDeque<String>,
}

/// Whether a re-INVITE offer restarts the media: new ICE credentials
/// (RFC 8445 9: an ICE restart), or, without ICE, a new address. A hold
/// or resume keeps both.
fn is_restart(current: Option<&Negotiated>, offer: &AudioDescription) -> bool {
    let Some(n) = current else {
        return false;
    };
    match (&n.remote_ice, &offer.ice) {
        (Some(old), Some(new)) => old.ufrag != new.ufrag || old.pwd != new.pwd,
        _ => n.remote != offer.rtp_addr,
    }
}

fn sdp_body(desc: &AudioDescription) -> Body {
    Body {
        content_type: Some(SDP_CONTENT_TYPE.into()),
        bytes: desc.to_sdp().into_bytes(),
    }
}

fn parse_sdp(body: &Body) -> Result<AudioDescription, CallMediaError> {
    let ct = body.content_type.as_deref().unwrap_or("");
    let is_sdp = ct
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(SDP_CONTENT_TYPE));
    if body.bytes.is_empty() {
        return Err(CallMediaError::NotSdp("empty body".into()));
    }
    if !is_sdp {
        return Err(CallMediaError::NotSdp(format!("Content-Type {ct:?}")));
    }
    let text = std::str::from_utf8(&body.bytes)
        .map_err(|_| CallMediaError::NotSdp("body is not UTF-8".into()))?;
    Ok(AudioDescription::parse(text)?)
}

/// The UI's view of a negotiation.
pub fn info(n: &Negotiated) -> MediaInfo {
    let continuity = match n.security {
        MediaSecurity::EscrowResistant { continuity, .. } => continuity,
        _ => Continuity::NoSecret,
    };
    let (cipher, escrow_resistant, sas, notice) = match n.security {
        MediaSecurity::EscrowResistant { suite, sas, .. } => {
            (suite.sdp_name(), true, Some(sas.to_base32()), None)
        }
        MediaSecurity::SdesOnly { suite, reason } => (
            suite.sdp_name(),
            false,
            None,
            Some(match reason {
                SdesOnlyReason::PeerWithoutDh => "the peer sent no a=ibesip-dh: plain SDES, not escrow-resistant (the provider could recover this call's media keys)",
                SdesOnlyReason::OwnProviderRecoverable => "our provider is provider-recoverable: it can recover this call's media keys (lawful interception)",
                SdesOnlyReason::PeerWithoutCommit => "the peer sent a=ibesip-dh without a=ibesip-dh-commit (an old peer, or someone in the middle removed the commitment): plain SDES, not escrow-resistant (the provider could recover this call's media keys)",
            }.to_string()),
        ),
        MediaSecurity::Plain => (
            "none",
            false,
            None,
            Some("unencrypted RTP: the peer offered no SRTP (allowed by the policy)".to_string()),
        ),
    };
    MediaInfo {
        codec: n.codec.encoding_name(),
        cipher,
        escrow_resistant,
        sas,
        direction: n.direction.as_str(),
        notice,
        continuity,
    }
}

/// Reads the `Ibesip-Dh` value of an ACK.
fn parse_reveal(value: Option<&str>) -> Result<[u8; 32], RevealError> {
    let v = value.ok_or(RevealError::Missing)?;
    URL_SAFE_NO_PAD
        .decode(v.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or(RevealError::Malformed)
}

impl MediaCalls {
    /// Media for calls under `policy`, with RTP ports from `ports`; the
    /// retained secrets are kept in memory ([`MediaCalls::with_retained`]
    /// keeps them elsewhere).
    pub fn new(policy: MediaPolicy, ports: Box<dyn MediaPorts>) -> Self {
        MediaCalls {
            policy,
            ports,
            calls: HashMap::new(),
            actions: VecDeque::new(),
            next_session: 1,
            retained: Box::new(MemoryRetained::default()),
            warnings: VecDeque::new(),
        }
    }

    /// Keeps the retained secrets of key continuity in `store`.
    pub fn with_retained(mut self, store: Box<dyn RetainedStore>) -> Self {
        self.retained = store;
        self
    }

    fn local(&mut self, call: u64) -> Result<LocalMedia, CallMediaError> {
        let rtp_addr = self.ports.allocate(call).map_err(CallMediaError::Port)?;
        self.next_session += 1;
        Ok(LocalMedia {
            rtp_addr,
            codecs: self.policy.codecs.clone(),
            suites: self.policy.suites.clone(),
            policy: self.policy.security,
            media_keys: self.policy.media_keys,
            direction: Direction::SendRecv,
            session_id: self.next_session,
            session_version: 1,
            ice: self.ports.ice(call),
        })
    }

    fn rs_for(&self, peer: Option<&String>) -> Option<RetainedSecret> {
        peer.and_then(|p| self.retained.get(p))
    }

    /// The SDP offer of a new outgoing call to `peer` (the callee's URI:
    /// its retained secret, if any, is proved in the offer). Our fresh
    /// keys inside; our X25519 key only as a commitment.
    pub fn offer(&mut self, call: u64, peer: Option<&str>) -> Result<Body, CallMediaError> {
        let (c, body) = self.new_offer(call, Role::Caller, peer)?;
        self.calls.insert(call, c);
        Ok(body)
    }

    /// A new call's media as the offerer in `role` (its port allocated,
    /// released again on failure) and the offer's body.
    fn new_offer(
        &mut self,
        call: u64,
        role: Role,
        peer: Option<&str>,
    ) -> Result<(CallMedia, Body), CallMediaError> {
        let local = self.local(call)?;
        let mut c = CallMedia::new(role, local.clone(), peer);
        let rs = self.rs_for(c.peer.as_ref());
        let pending = match PendingOffer::with_retained(local, role, rs) {
            Ok(p) => p,
            Err(e) => {
                self.ports.release(call);
                return Err(e.into());
            }
        };
        let body = sdp_body(pending.offer());
        c.pending = Some(pending);
        Ok((c, body))
    }

    /// The value of the inner `Ibesip-Dh` header for the ACK of the answer
    /// to our pending offer (base64url of our X25519 key), if we offered one.
    pub fn reveal(&self, call: u64) -> Option<String> {
        let key = self.calls.get(&call)?.pending.as_ref()?.reveal()?;
        Some(URL_SAFE_NO_PAD.encode(key))
    }

    /// Reads the offer of an incoming call from `peer` (its verified
    /// identity, if a signature proved one) and prepares our answer; an
    /// error means the call must be refused with 488. An INVITE without a
    /// body asks for the offer in our 2xx (RFC 3261 13.2.1): we prepare
    /// one with a commitment to our key, the ACK must bring the answer
    /// and our key goes in a tunneled INFO (spec 6, mirrored exchange).
    pub fn incoming(
        &mut self,
        call: u64,
        body: &Body,
        peer: Option<&str>,
    ) -> Result<(), CallMediaError> {
        if body.bytes.is_empty() {
            return self.offer_in_2xx(call, peer);
        }
        let offer = parse_sdp(body)?;
        let local = self.local(call)?;
        let mut c = CallMedia::new(Role::Callee, local.clone(), peer);
        let rs = self.rs_for(c.peer.as_ref());
        let (desc, outcome) = match answer(&local, Role::Callee, &offer, rs.as_ref()) {
            Ok(a) => a,
            Err(e) => {
                self.ports.release(call);
                return Err(e.into());
            }
        };
        c.answer = Some(sdp_body(&desc));
        match outcome {
            AnswerOutcome::Ready(n) => c.negotiated = Some(n),
            waiting => c.awaiting = Some(waiting),
        }
        self.calls.insert(call, c);
        Ok(())
    }

    /// Prepares the offer of our 2xx to an INVITE without SDP.
    fn offer_in_2xx(&mut self, call: u64, peer: Option<&str>) -> Result<(), CallMediaError> {
        let (mut c, body) = self.new_offer(call, Role::Callee, peer)?;
        c.answer = Some(body);
        self.calls.insert(call, c);
        Ok(())
    }

    /// The value of the inner `Ibesip-Dh` header of the INFO that reveals
    /// our key after the ACK answered the offer of our 2xx; taken once,
    /// `None` in every other exchange.
    pub fn take_info_reveal(&mut self, call: u64) -> Option<String> {
        let key = self.calls.get_mut(&call)?.info_reveal.take()?;
        Some(URL_SAFE_NO_PAD.encode(key))
    }

    /// The SDP body of our 200 to an incoming call: the answer, or the
    /// offer when the INVITE had none.
    pub fn answer_body(&mut self, call: u64) -> Option<Body> {
        self.calls.get_mut(&call).and_then(|c| c.answer.take())
    }

    /// The caller's answer came from `verified` (the identity its
    /// signature proved, if any): continuity is kept only when that is
    /// the AOR we called.
    pub fn answered_by(&mut self, call: u64, verified: Option<&str>) {
        if let Some(c) = self.calls.get_mut(&call) {
            let verified = verified.and_then(peer_aor);
            if c.peer != verified {
                c.peer = None;
            }
        }
    }

    /// An ACK arrived with `reveal` (its `Ibesip-Dh` value) and `body`.
    /// For a re-INVITE we answered, checks the key and re-keys (`Some`
    /// info for the UI); for the initial INVITE the key (or, when our 2xx
    /// carried the offer, the body: the answer) is kept for
    /// [`MediaCalls::answered`]. An error ends the call's
    /// escrow-resistant media (the call must end).
    pub fn ack(
        &mut self,
        call: u64,
        reveal: Option<&str>,
        body: &Body,
    ) -> Result<Option<MediaInfo>, CallMediaError> {
        let Some(c) = self.calls.get_mut(&call) else {
            return Ok(None);
        };
        if !c.started {
            if c.pending.is_some() {
                c.ack_answer.get_or_insert_with(|| body.clone());
            } else {
                c.revealed.get_or_insert(reveal.map(str::to_string));
            }
            return Ok(None);
        }
        let Some(waiting) = c.awaiting.take() else {
            return Ok(None);
        };
        let key = parse_reveal(reveal)?;
        let negotiated = waiting.finish(Some(&key))?;
        let negotiated = self.complete(call, negotiated);
        let shown = info(&negotiated);
        if let Some(c) = self.calls.get_mut(&call) {
            c.negotiated = Some(negotiated.clone());
        }
        self.install(call, negotiated);
        Ok(Some(shown))
    }

    /// An exchange completed: takes its retained secret out of the
    /// negotiation (the media session never holds it) and replaces the
    /// peer's secret when continuity verified.
    fn complete(&mut self, call: u64, mut n: Negotiated) -> Negotiated {
        let Some(c) = self.calls.get_mut(&call) else {
            return n;
        };
        c.retained = n.retained.take();
        let verified = matches!(
            n.security,
            MediaSecurity::EscrowResistant {
                continuity: Continuity::Verified,
                ..
            }
        );
        if let (true, Some(peer), Some(rs)) = (verified, c.peer.clone(), c.retained.clone()) {
            if let Err(e) = self.retained.put(&peer, rs) {
                self.warnings.push_back(format!(
                    "call {call}: the verified keys could not be kept: {e}"
                ));
            }
        }
        n
    }

    /// The call is up: checks the callee's answer (caller), the ACK's
    /// reveal (callee) or, when our 2xx carried the offer, the ACK's
    /// answer (callee: our key is then to be revealed, see
    /// [`MediaCalls::take_info_reveal`]) and starts the session. An error
    /// means the call must end (no media without agreed keys).
    pub fn answered(&mut self, call: u64, body: &Body) -> Result<MediaInfo, CallMediaError> {
        let c = self
            .calls
            .get_mut(&call)
            .ok_or(CallMediaError::NoCall(call))?;
        let fresh = if let Some(pending) = c.pending.take() {
            let in_ack = c.ack_answer.take();
            let desc = parse_sdp(in_ack.as_ref().unwrap_or(body))?;
            let reveal = pending.reveal();
            let n = pending.accept_answer(&desc)?;
            if in_ack.is_some() {
                c.info_reveal = reveal;
            }
            Some(n)
        } else if let Some(waiting) = c.awaiting.take() {
            let reveal = c.revealed.take().flatten();
            let key = parse_reveal(reveal.as_deref())?;
            Some(waiting.finish(Some(&key))?)
        } else {
            None
        };
        if let Some(n) = fresh {
            let n = self.complete(call, n);
            if let Some(c) = self.calls.get_mut(&call) {
                c.negotiated = Some(n);
            }
        }
        let c = self
            .calls
            .get_mut(&call)
            .ok_or(CallMediaError::NoCall(call))?;
        let negotiated = c.negotiated.clone().ok_or(CallMediaError::NoCall(call))?;
        let shown = info(&negotiated);
        if !c.started {
            c.started = true;
            self.actions
                .push_back(MediaAction::Start { call, negotiated });
        }
        Ok(shown)
    }

    /// The user confirmed the call's SAS: keeps the call's retained secret
    /// for the verified peer (replacing the old one). Returns that peer.
    pub fn confirm_sas(&mut self, call: u64) -> Result<String, CallMediaError> {
        let c = self
            .calls
            .get(&call)
            .filter(|c| c.started)
            .ok_or(CallMediaError::NoCall(call))?;
        let nothing = |why| CallMediaError::NothingToConfirm { call, why };
        let rs = c
            .retained
            .clone()
            .ok_or_else(|| nothing("the media keys are not escrow-resistant"))?;
        let peer = c
            .peer
            .clone()
            .ok_or_else(|| nothing("the peer's identity is not verified by a signature"))?;
        self.retained
            .put(&peer, rs)
            .map_err(CallMediaError::Retained)?;
        Ok(peer)
    }

    /// A warning for the user (a retained secret that could not be kept).
    pub fn poll_warning(&mut self) -> Option<String> {
        self.warnings.pop_front()
    }

    /// A re-INVITE offer that holds (`a=sendonly`) or resumes the call,
    /// with fresh keys.
    pub fn hold(&mut self, call: u64, on: bool) -> Result<Body, CallMediaError> {
        let c = self
            .calls
            .get(&call)
            .filter(|c| c.started)
            .ok_or(CallMediaError::NoCall(call))?;
        if c.pending.is_some() || c.awaiting.is_some() {
            return Err(CallMediaError::Pending(call));
        }
        let rs = self.rs_for(c.peer.as_ref());
        let c = self
            .calls
            .get_mut(&call)
            .ok_or(CallMediaError::NoCall(call))?;
        c.local.direction = if on {
            Direction::SendOnly
        } else {
            Direction::SendRecv
        };
        c.local.session_version += 1;
        let pending = PendingOffer::with_retained(c.local.clone(), c.role, rs)?;
        let body = sdp_body(pending.offer());
        c.pending = Some(pending);
        Ok(body)
    }

    /// A re-INVITE offer that moves the call's media to a newly allocated
    /// port (the network changed under us): new address and candidates,
    /// new ICE credentials (an ICE restart, RFC 8445 9), fresh keys and
    /// a fresh X25519 commitment as for any re-INVITE (spec 6). The
    /// direction stays as it was.
    /// With another exchange in flight it fails with
    /// [`CallMediaError::Pending`] and is remembered
    /// ([`MediaCalls::restart_wanted`]).
    pub fn restart(&mut self, call: u64) -> Result<Body, CallMediaError> {
        let c = self
            .calls
            .get_mut(&call)
            .filter(|c| c.started)
            .ok_or(CallMediaError::NoCall(call))?;
        if c.pending.is_some() || c.awaiting.is_some() {
            c.wants_restart = true;
            return Err(CallMediaError::Pending(call));
        }
        let peer = c.peer.clone();
        let rs = self.rs_for(peer.as_ref());
        let rtp_addr = self.ports.allocate(call).map_err(CallMediaError::Port)?;
        let ice = self.ports.ice(call);
        let c = self
            .calls
            .get_mut(&call)
            .ok_or(CallMediaError::NoCall(call))?;
        let before = c.local.clone();
        let mut local = before.clone();
        local.rtp_addr = rtp_addr;
        local.ice = ice;
        local.session_version += 1;
        let pending = match PendingOffer::with_retained(local.clone(), c.role, rs) {
            Ok(p) => p,
            Err(e) => {
                self.ports.release(call);
                return Err(e.into());
            }
        };
        c.local = local;
        c.restart = Some(before);
        c.wants_restart = false;
        let body = sdp_body(pending.offer());
        c.pending = Some(pending);
        Ok(body)
    }

    /// A restart of ours or the peer's did not complete: the new port is
    /// given back and the old local media stays in force.
    fn restart_failed(&mut self, call: u64) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let Some(before) = c.restart.take() {
            c.local.rtp_addr = before.rtp_addr;
            c.local.ice = before.ice;
            c.wants_restart = true;
            self.ports.release(call);
        }
    }

    /// Whether `call`'s media still has to move after a network change,
    /// and can now (no exchange in flight).
    pub fn restart_wanted(&self, call: u64) -> bool {
        self.calls.get(&call).is_some_and(|c| {
            c.started && c.wants_restart && c.pending.is_none() && c.awaiting.is_none()
        })
    }

    /// Forgets that `call`'s media has to move (the peer cannot take it).
    pub fn drop_restart(&mut self, call: u64) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.wants_restart = false;
        }
    }

    /// Whether we hold `call` (our last offer or answer made it
    /// `sendonly`): what call waiting and swap look at.
    pub fn holding(&self, call: u64) -> bool {
        self.calls
            .get(&call)
            .is_some_and(|c| c.local.direction == Direction::SendOnly)
    }

    /// Whether we placed `call` (the Call-ID's owner, RFC 3261 14.1).
    pub fn is_caller(&self, call: u64) -> bool {
        self.calls
            .get(&call)
            .is_some_and(|c| c.role == Role::Caller)
    }

    /// The action that installs `negotiated`: a move to the new port when
    /// a restart was in flight, else a re-key in place.
    fn install(&mut self, call: u64, negotiated: Negotiated) {
        let restarted = self
            .calls
            .get_mut(&call)
            .and_then(|c| {
                let before = c.restart.take();
                if before.is_some() {
                    c.wants_restart = false;
                }
                before
            })
            .is_some();
        self.actions.push_back(if restarted {
            MediaAction::Restart { call, negotiated }
        } else {
            MediaAction::Update { call, negotiated }
        });
    }

    /// Answers the peer's re-INVITE offer; the body goes in our 200.
    /// SDES-only answers re-key at once (`Some` info); a committed offer
    /// re-keys when its ACK's key checks ([`MediaCalls::ack`]), so the
    /// info is `None` until then. [`CallMediaError::Pending`] asks for
    /// 491, others for 488.
    pub fn reinvite(
        &mut self,
        call: u64,
        body: &Body,
    ) -> Result<(Body, Option<MediaInfo>), CallMediaError> {
        let c = self
            .calls
            .get(&call)
            .filter(|c| c.started)
            .ok_or(CallMediaError::NoCall(call))?;
        if c.pending.is_some() {
            return Err(CallMediaError::Pending(call));
        }
        let rs = self.rs_for(c.peer.as_ref());
        let c = self
            .calls
            .get_mut(&call)
            .ok_or(CallMediaError::NoCall(call))?;
        let offer = parse_sdp(body)?;
        let mut local = c.local.clone();
        local.session_version += 1;
        let restarted = is_restart(c.negotiated.as_ref(), &offer);
        let role = c.role;
        if restarted {
            // The peer moved (an ICE restart): we restart too, on a new
            // port with new credentials (RFC 8445 9).
            local.rtp_addr = self.ports.allocate(call).map_err(CallMediaError::Port)?;
            local.ice = self.ports.ice(call);
        }
        let (desc, outcome) = match answer(&local, role, &offer, rs.as_ref()) {
            Ok(a) => a,
            Err(e) => {
                if restarted {
                    self.ports.release(call);
                }
                return Err(e.into());
            }
        };
        let c = self
            .calls
            .get_mut(&call)
            .ok_or(CallMediaError::NoCall(call))?;
        if restarted {
            c.restart = Some(c.local.clone());
        }
        c.local = local;
        match outcome {
            AnswerOutcome::Ready(negotiated) => {
                c.awaiting = None;
                let shown = info(&negotiated);
                c.negotiated = Some(negotiated.clone());
                self.install(call, negotiated);
                Ok((sdp_body(&desc), Some(shown)))
            }
            waiting => {
                c.awaiting = Some(waiting);
                Ok((sdp_body(&desc), None))
            }
        }
    }

    /// The final response to our re-INVITE: re-keys on 2xx. `Ok(None)`
    /// when no offer of ours was pending.
    pub fn reinvite_response(
        &mut self,
        call: u64,
        status: u16,
        body: &Body,
    ) -> Result<Option<MediaInfo>, CallMediaError> {
        let Some(c) = self.calls.get_mut(&call) else {
            return Ok(None);
        };
        let Some(pending) = c.pending.take() else {
            return Ok(None);
        };
        if !(200..300).contains(&status) {
            self.restart_failed(call);
            let Some(c) = self.calls.get_mut(&call) else {
                return Err(CallMediaError::Refused(status));
            };
            // Our offer is void: the direction we wished did not happen.
            if let Some(n) = &c.negotiated {
                c.local.direction = match n.direction {
                    Direction::SendOnly | Direction::Inactive => Direction::SendOnly,
                    _ => Direction::SendRecv,
                };
            }
            return Err(CallMediaError::Refused(status));
        }
        let negotiated = pending.accept_answer(&parse_sdp(body)?)?;
        let negotiated = self.complete(call, negotiated);
        let shown = info(&negotiated);
        if let Some(c) = self.calls.get_mut(&call) {
            c.negotiated = Some(negotiated.clone());
        }
        self.install(call, negotiated);
        Ok(Some(shown))
    }

    /// Mutes or unmutes our microphone.
    pub fn mute(&mut self, call: u64, on: bool) -> Result<(), CallMediaError> {
        self.calls
            .get(&call)
            .filter(|c| c.started)
            .ok_or(CallMediaError::NoCall(call))?;
        self.actions.push_back(MediaAction::Mute { call, on });
        Ok(())
    }

    /// Sends DTMF digits (RFC 4733), all or none.
    pub fn dtmf(&mut self, call: u64, digits: &str) -> Result<(), CallMediaError> {
        self.calls
            .get(&call)
            .filter(|c| c.started)
            .ok_or(CallMediaError::NoCall(call))?;
        if let Some(bad) = digits.chars().find(|d| digit_to_event(*d).is_none()) {
            return Err(CallMediaError::Dtmf(bad));
        }
        for digit in digits.chars() {
            self.actions.push_back(MediaAction::Dtmf { call, digit });
        }
        Ok(())
    }

    /// The call is over (or was never set up): stop and free its port.
    pub fn end(&mut self, call: u64) {
        if let Some(c) = self.calls.remove(&call) {
            if c.started {
                self.actions.push_back(MediaAction::Stop { call });
            }
            self.ports.release(call);
        }
    }

    /// The calls whose media runs, in call order.
    pub fn running(&self) -> Vec<u64> {
        let mut calls: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.started)
            .map(|(id, _)| *id)
            .collect();
        calls.sort_unstable();
        calls
    }

    /// The next thing the driver must do.
    pub fn poll_action(&mut self) -> Option<MediaAction> {
        self.actions.pop_front()
    }
}

/// The agent's side of call media: events for the UI, re-INVITEs.
impl super::Agent {
    /// Keeps the retained secrets of key continuity in `store` (once media
    /// is enabled; before, nothing happens).
    pub fn set_retained_store(&mut self, store: Box<dyn RetainedStore>) {
        self.media = self.media.take().map(|m| m.with_retained(store));
    }

    /// Continuity and store warnings after a negotiation was shown.
    fn media_security_events(&mut self, call: u64, continuity: Continuity) {
        if let Some((verified, message)) = continuity_text(continuity) {
            self.events.push_back(AgentEvent::KeyContinuity {
                call,
                verified,
                message: message.to_string(),
            });
        }
        while let Some(message) = self.media.as_mut().and_then(MediaCalls::poll_warning) {
            self.error(message);
        }
    }

    pub(super) fn media_started(&mut self, call: u64, i: MediaInfo) {
        self.events.push_back(AgentEvent::MediaStarted {
            call,
            codec: i.codec.into(),
            cipher: i.cipher.into(),
            escrow_resistant: i.escrow_resistant,
            sas: i.sas,
        });
        if let Some(message) = i.notice {
            self.events
                .push_back(AgentEvent::MediaNotice { call, message });
        }
        self.media_security_events(call, i.continuity);
    }

    pub(super) fn media_updated(&mut self, call: u64, i: MediaInfo) {
        self.events.push_back(AgentEvent::MediaUpdated {
            call,
            direction: i.direction.into(),
            codec: i.codec.into(),
            cipher: i.cipher.into(),
            escrow_resistant: i.escrow_resistant,
            sas: i.sas,
        });
        if let Some(message) = i.notice {
            self.events
                .push_back(AgentEvent::MediaNotice { call, message });
        }
        self.media_security_events(call, i.continuity);
    }

    /// The media of a call failed for good: tell the user and hang up.
    fn media_failed(&mut self, now: Instant, call: CallId, e: CallMediaError) {
        if let CallMediaError::Reveal(_) = e {
            self.events.push_back(AgentEvent::MediaNotice {
                call: call.0,
                message: e.to_string(),
            });
        }
        self.error(format!("call {}: ended, no media keys agreed: {e}", call.0));
        self.ua.handle_command(now, ua::Command::Hangup { call });
    }

    /// Puts our key, revealed, in the ACK of the answer to our offer (and
    /// nothing when the offer has no key: no stale value of an earlier one).
    fn arm_reveal(&mut self, call: u64) {
        if let Some(m) = self.media.as_ref() {
            let value = m.reveal(call);
            self.ua.set_ack_reveal(CallId(call), value);
        }
    }

    /// The SDP offer of a new outgoing call to `target`.
    pub(super) fn media_offer(
        &mut self,
        call: u64,
        target: &str,
    ) -> Option<Result<Body, CallMediaError>> {
        self.media.as_mut().map(|m| m.offer(call, Some(target)))
    }

    /// The call's INVITE left: its ACK will reveal our key.
    pub(super) fn media_placed(&mut self, call: u64) {
        self.arm_reveal(call);
    }

    /// The call is up (`verified`: the peer's signed identity).
    pub(super) fn media_answered(
        &mut self,
        now: Instant,
        call: CallId,
        body: &Body,
        verified: Option<&str>,
    ) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        m.answered_by(call.0, verified);
        match m.answered(call.0, body) {
            Ok(i) => {
                if let Some(ibesip_dh) = m.take_info_reveal(call.0) {
                    self.ua
                        .handle_command(now, ua::Command::RevealInInfo { call, ibesip_dh });
                }
                self.media_started(call.0, i)
            }
            Err(e) => self.media_failed(now, call, e),
        }
    }

    /// An ACK arrived with its `Ibesip-Dh` value and body.
    pub(super) fn media_ack(
        &mut self,
        now: Instant,
        call: CallId,
        reveal: Option<&str>,
        body: &Body,
    ) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        match m.ack(call.0, reveal, body) {
            Ok(Some(i)) => self.media_updated(call.0, i),
            Ok(None) => {}
            Err(e) => return self.media_failed(now, call, e),
        }
        self.after_exchange(now, call.0, 200);
    }

    /// The user confirmed the SAS of `call`.
    pub(super) fn confirm_sas(&mut self, call: u64) {
        let Some(m) = self.media.as_mut() else {
            return self.error("this agent runs no media".into());
        };
        match m.confirm_sas(call) {
            Ok(peer) => self
                .events
                .push_back(AgentEvent::SasConfirmed { call, peer }),
            Err(e) => self.error(format!("call {call}: {e}")),
        }
    }

    /// Runs a media command of the application; errors become events.
    pub(super) fn media_command(
        &mut self,
        now: Instant,
        call: u64,
        f: impl FnOnce(&mut MediaCalls) -> Result<Option<Body>, CallMediaError>,
    ) {
        let Some(m) = self.media.as_mut() else {
            return self.error("this agent runs no media".into());
        };
        match f(m) {
            Ok(Some(body)) => {
                self.ua.handle_command(
                    now,
                    ua::Command::InDialog {
                        call: CallId(call),
                        method: rsip::Method::Invite,
                        body,
                    },
                );
                self.arm_reveal(call);
            }
            Ok(None) => {}
            Err(e) => self.error(format!("call {call}: {e}")),
        }
    }

    /// The network changed: every call whose media runs gets a re-INVITE
    /// that moves it (see [`MediaCalls::restart`]). Returns those calls.
    pub(super) fn move_calls(&mut self, now: Instant) -> Vec<u64> {
        let calls = self
            .media
            .as_ref()
            .map(MediaCalls::running)
            .unwrap_or_default();
        for &call in &calls {
            self.move_call(now, call);
        }
        calls
    }

    /// Re-INVITEs `call` to move its media; with another exchange in
    /// flight the move waits for it (see [`Self::after_exchange`]).
    fn move_call(&mut self, now: Instant, call: u64) {
        self.media_command(now, call, |m| match m.restart(call) {
            Ok(body) => Ok(Some(body)),
            Err(CallMediaError::Pending(_)) => Ok(None),
            Err(e) => Err(e),
        });
    }

    /// The calls whose move met glare or a timeout: tried again.
    pub(super) fn retry_moves(&mut self, now: Instant) {
        let calls: Vec<u64> = self
            .media
            .as_ref()
            .map(|m| {
                m.running()
                    .into_iter()
                    .filter(|c| m.restart_wanted(*c))
                    .collect()
            })
            .unwrap_or_default();
        for call in calls {
            self.move_call(now, call);
        }
    }

    /// An exchange of `call` ended with `status` (an ACK we received
    /// counts as 200): a move that waited for it goes now; a move refused
    /// by glare (491), a timeout or a server error is tried again after
    /// RFC 3261 14.1's wait (2.1 to 4 s for the Call-ID's owner, up to
    /// 2 s for the other side); any other refusal ends the attempt.
    fn after_exchange(&mut self, now: Instant, call: u64, status: u16) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        if !m.restart_wanted(call) {
            return;
        }
        match status {
            200..=299 => self.move_call(now, call),
            408 | 491 | 500..=599 => {
                let mut b = [0u8; 2];
                let r = u64::from(u16::from_le_bytes(if getrandom::fill(&mut b).is_ok() {
                    b
                } else {
                    [0, 0]
                }));
                let wait_ms = if m.is_caller(call) {
                    2100 + r % 1901
                } else {
                    r % 2001
                };
                let at = now + std::time::Duration::from_millis(wait_ms);
                self.restart_retry = Some(self.restart_retry.map_or(at, |t| t.min(at)));
            }
            _ => m.drop_restart(call),
        }
    }

    pub(super) fn on_reinvite(&mut self, now: Instant, call: CallId, body: &Body) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        let (status, body) = match m.reinvite(call.0, body) {
            Ok((answer, i)) => {
                if let Some(i) = i {
                    self.media_updated(call.0, i);
                }
                (200, answer)
            }
            Err(CallMediaError::Pending(_)) => (491, Body::default()),
            Err(e) => {
                self.error(format!("call {}: re-INVITE refused: {e}", call.0));
                (488, Body::default())
            }
        };
        self.ua
            .handle_command(now, ua::Command::RespondInDialog { call, status, body });
    }

    pub(super) fn on_reinvite_response(
        &mut self,
        now: Instant,
        call: CallId,
        status: u16,
        body: &Body,
    ) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        match m.reinvite_response(call.0, status, body) {
            Ok(Some(i)) => {
                self.media_updated(call.0, i);
                self.after_exchange(now, call.0, status);
            }
            Ok(None) => {}
            Err(CallMediaError::Refused(s @ (408 | 491 | 500..=599)))
                if m.restart_wanted(call.0) =>
            {
                // A move met glare or no answer: tried again shortly.
                self.after_exchange(now, call.0, s);
            }
            Err(e @ CallMediaError::Refused(_)) => {
                self.error(format!("call {}: {e}", call.0));
                self.after_exchange(now, call.0, status);
            }
            Err(e) => {
                self.error(format!(
                    "call {}: ended, the re-INVITE answer is not acceptable: {e}",
                    call.0
                ));
                self.ua.handle_command(now, ua::Command::Hangup { call });
            }
        }
    }
}

#[cfg(test)]
#[path = "media_tests.rs"]
mod tests;
