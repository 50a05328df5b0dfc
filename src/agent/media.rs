//! The media of the agent's calls, sans-I/O: per call the SDP offer/answer
//! of spec section 6 (made and checked here, carried inside the tunnel by
//! the SIP core as the INVITE/200 bodies), and the [`MediaAction`]s a
//! driver carries out (start, re-key, stop a media session). The core
//! never touches a socket: it asks a [`MediaPorts`] for the address to
//! announce, and the driver that bound it runs the session.
//!
//! Decisions (pinned by the tests below and in `tests/media/agent_media.rs`):
//! - An INVITE without an SDP offer (delayed offer) is refused with 488
//!   Not Acceptable Here (pinned on the wire by
//!   `an_offerless_invite_is_refused_488_on_the_wire`). Spec 6 (v1.1) does
//!   define the mirrored exchange for an offer in a 2xx (our 2xx commits,
//!   the ACK carries the caller's answer and key, our tunneled INFO
//!   reveals), but it is not implemented, for three reasons: ibephone
//!   itself never sends an offerless INVITE, so only another
//!   implementation could start one; the callee half needs an SDP answer
//!   in the ACK and an INFO with an `Ibesip-Dh` header, neither of which
//!   the SIP core carries today (the ACK of a 2xx is built without a body,
//!   in-dialog requests take no extra headers); and a half-done exchange
//!   would leave a call whose media keys are not escrow-resistant or not
//!   started, while the user sees an answered call. Refusing is fail-
//!   closed and tells the caller why (RFC 3261 488); the caller can retry
//!   with an offer. So is an offer we cannot answer (no common codec or
//!   suite, plain RTP under `require`).
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
//!   and no key derived from it is kept. We never offer in a 2xx (a
//!   delayed offer is refused, see above), so the mirrored exchange (the
//!   reveal in an INFO) never arises.
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
        let local = self.local(call)?;
        let mut c = CallMedia::new(Role::Caller, local.clone(), peer);
        let rs = self.rs_for(c.peer.as_ref());
        let pending = match PendingOffer::with_retained(local, Role::Caller, rs) {
            Ok(p) => p,
            Err(e) => {
                self.ports.release(call);
                return Err(e.into());
            }
        };
        let body = sdp_body(pending.offer());
        c.pending = Some(pending);
        self.calls.insert(call, c);
        Ok(body)
    }

    /// The value of the inner `Ibesip-Dh` header for the ACK of the answer
    /// to our pending offer (base64url of our X25519 key), if we offered one.
    pub fn reveal(&self, call: u64) -> Option<String> {
        let key = self.calls.get(&call)?.pending.as_ref()?.reveal()?;
        Some(URL_SAFE_NO_PAD.encode(key))
    }

    /// Reads the offer of an incoming call from `peer` (its verified
    /// identity, if a signature proved one) and prepares our answer; an
    /// error means the call must be refused with 488.
    pub fn incoming(
        &mut self,
        call: u64,
        body: &Body,
        peer: Option<&str>,
    ) -> Result<(), CallMediaError> {
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

    /// The SDP answer for our 200 to an incoming call.
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

    /// An ACK arrived with `reveal` (its `Ibesip-Dh` value). For a
    /// re-INVITE we answered, checks it and re-keys (`Some` info for the
    /// UI); for the initial INVITE it is kept for [`MediaCalls::answered`].
    /// An error ends the call's escrow-resistant media (the call must end).
    pub fn ack(
        &mut self,
        call: u64,
        reveal: Option<&str>,
    ) -> Result<Option<MediaInfo>, CallMediaError> {
        let Some(c) = self.calls.get_mut(&call) else {
            return Ok(None);
        };
        if !c.started {
            c.revealed.get_or_insert(reveal.map(str::to_string));
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
        self.actions
            .push_back(MediaAction::Update { call, negotiated });
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

    /// The call is up: checks the caller's answer (caller) or the ACK's
    /// reveal (callee) and starts the session. An error means the call
    /// must end (no media without agreed keys).
    pub fn answered(&mut self, call: u64, body: &Body) -> Result<MediaInfo, CallMediaError> {
        let c = self
            .calls
            .get_mut(&call)
            .ok_or(CallMediaError::NoCall(call))?;
        let fresh = if let Some(pending) = c.pending.take() {
            let desc = parse_sdp(body)?;
            Some(pending.accept_answer(&desc)?)
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
        let (desc, outcome) = answer(&local, c.role, &offer, rs.as_ref())?;
        c.local = local;
        match outcome {
            AnswerOutcome::Ready(negotiated) => {
                c.awaiting = None;
                let shown = info(&negotiated);
                c.negotiated = Some(negotiated.clone());
                self.actions
                    .push_back(MediaAction::Update { call, negotiated });
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
        self.actions
            .push_back(MediaAction::Update { call, negotiated });
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
            Ok(i) => self.media_started(call.0, i),
            Err(e) => self.media_failed(now, call, e),
        }
    }

    /// An ACK arrived with its `Ibesip-Dh` value.
    pub(super) fn media_ack(&mut self, now: Instant, call: CallId, reveal: Option<&str>) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        match m.ack(call.0, reveal) {
            Ok(Some(i)) => self.media_updated(call.0, i),
            Ok(None) => {}
            Err(e) => self.media_failed(now, call, e),
        }
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
            Ok(Some(i)) => self.media_updated(call.0, i),
            Ok(None) => {}
            Err(e @ CallMediaError::Refused(_)) => self.error(format!("call {}: {e}", call.0)),
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
