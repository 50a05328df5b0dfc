//! The media of the agent's calls, sans-I/O: per call the SDP offer/answer
//! of spec section 6 (made and checked here, carried inside the tunnel by
//! the SIP core as the INVITE/200 bodies), and the [`MediaAction`]s a
//! driver carries out (start, re-key, stop a media session). The core
//! never touches a socket: it asks a [`MediaPorts`] for the address to
//! announce, and the driver that bound it runs the session.
//!
//! Decisions (pinned by the tests below and in `tests/agent_media.rs`):
//! - An INVITE without an SDP offer (delayed offer) is refused with 488:
//!   the keys of section 6 travel in the offer and answer, and a peer that
//!   waits for our offer in the 200 gets none. So is an offer we cannot
//!   answer (no common codec or suite, plain RTP under `require`).
//! - Hold is `a=sendonly` from the side that holds (the peer answers
//!   `recvonly`); resume is `a=sendrecv`. Every offer and answer, including
//!   these, carries fresh SDES keys and a fresh X25519 key pair, so each
//!   re-INVITE re-keys and yields a new SAS.
//! - A re-INVITE that arrives while our own offer is pending is answered
//!   491 (RFC 3261 14.2 glare); one we cannot answer gets 488 and the old
//!   keys stay in force. A 2xx answer we cannot accept ends the call: the
//!   peer has switched keys already, and media must not run half-keyed.

use super::AgentEvent;
use crate::media::dtmf::digit_to_event;
use crate::media::keys::{Role, SrtpSuite};
use crate::media::sdp::{
    answer, AudioDescription, Codec, Direction, LocalMedia, MediaKeysPolicy, MediaSecurity,
    Negotiated, PendingOffer, SdesOnlyReason, SdpError, SecurityPolicy,
};
use crate::sip::ua::{self, Body, CallId};
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
    /// Frames concealed by the jitter buffer.
    pub concealed: u64,
    /// Mean jitter-buffer delay, ms.
    pub jitter_mean_ms: u64,
    /// 99th percentile jitter-buffer delay, ms.
    pub jitter_p99_ms: u64,
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
}

struct CallMedia {
    role: Role,
    local: LocalMedia,
    pending: Option<PendingOffer>,
    answer: Option<Body>,
    negotiated: Option<Negotiated>,
    started: bool,
}

/// The media state of every call of one agent.
pub struct MediaCalls {
    policy: MediaPolicy,
    ports: Box<dyn MediaPorts>,
    calls: HashMap<u64, CallMedia>,
    actions: VecDeque<MediaAction>,
    next_session: u64,
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
    let (cipher, escrow_resistant, sas, notice) = match n.security {
        MediaSecurity::EscrowResistant { suite, sas } => {
            (suite.sdp_name(), true, Some(sas.to_base32()), None)
        }
        MediaSecurity::SdesOnly { suite, reason } => (
            suite.sdp_name(),
            false,
            None,
            Some(match reason {
                SdesOnlyReason::PeerWithoutDh => "the peer sent no a=ibesip-dh: plain SDES, not escrow-resistant (the provider could recover this call's media keys)",
                SdesOnlyReason::OwnProviderRecoverable => "our provider is provider-recoverable: it can recover this call's media keys (lawful interception)",
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
    }
}

impl MediaCalls {
    /// Media for calls under `policy`, with RTP ports from `ports`.
    pub fn new(policy: MediaPolicy, ports: Box<dyn MediaPorts>) -> Self {
        MediaCalls {
            policy,
            ports,
            calls: HashMap::new(),
            actions: VecDeque::new(),
            next_session: 1,
        }
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
        })
    }

    /// The SDP offer of a new outgoing call (our fresh keys inside).
    pub fn offer(&mut self, call: u64) -> Result<Body, CallMediaError> {
        let local = self.local(call)?;
        let pending = match PendingOffer::new(local.clone(), Role::Caller) {
            Ok(p) => p,
            Err(e) => {
                self.ports.release(call);
                return Err(e.into());
            }
        };
        let body = sdp_body(pending.offer());
        self.calls.insert(
            call,
            CallMedia {
                role: Role::Caller,
                local,
                pending: Some(pending),
                answer: None,
                negotiated: None,
                started: false,
            },
        );
        Ok(body)
    }

    /// Reads the offer of an incoming call and prepares our answer; an
    /// error means the call must be refused with 488.
    pub fn incoming(&mut self, call: u64, body: &Body) -> Result<(), CallMediaError> {
        let offer = parse_sdp(body)?;
        let local = self.local(call)?;
        let (desc, negotiated) = match answer(&local, Role::Callee, &offer) {
            Ok(a) => a,
            Err(e) => {
                self.ports.release(call);
                return Err(e.into());
            }
        };
        self.calls.insert(
            call,
            CallMedia {
                role: Role::Callee,
                local,
                pending: None,
                answer: Some(sdp_body(&desc)),
                negotiated: Some(negotiated),
                started: false,
            },
        );
        Ok(())
    }

    /// The SDP answer for our 200 to an incoming call.
    pub fn answer_body(&mut self, call: u64) -> Option<Body> {
        self.calls.get_mut(&call).and_then(|c| c.answer.take())
    }

    /// The call is up: checks the caller's answer, starts the session.
    /// An error means the call must end (no media without agreed keys).
    pub fn answered(&mut self, call: u64, body: &Body) -> Result<MediaInfo, CallMediaError> {
        let c = self
            .calls
            .get_mut(&call)
            .ok_or(CallMediaError::NoCall(call))?;
        if let Some(pending) = c.pending.take() {
            let desc = parse_sdp(body)?;
            c.negotiated = Some(pending.accept_answer(&desc)?);
        }
        let negotiated = c.negotiated.clone().ok_or(CallMediaError::NoCall(call))?;
        let shown = info(&negotiated);
        if !c.started {
            c.started = true;
            self.actions
                .push_back(MediaAction::Start { call, negotiated });
        }
        Ok(shown)
    }

    /// A re-INVITE offer that holds (`a=sendonly`) or resumes the call,
    /// with fresh keys.
    pub fn hold(&mut self, call: u64, on: bool) -> Result<Body, CallMediaError> {
        let c = self
            .calls
            .get_mut(&call)
            .filter(|c| c.started)
            .ok_or(CallMediaError::NoCall(call))?;
        if c.pending.is_some() {
            return Err(CallMediaError::Pending(call));
        }
        c.local.direction = if on {
            Direction::SendOnly
        } else {
            Direction::SendRecv
        };
        c.local.session_version += 1;
        let pending = PendingOffer::new(c.local.clone(), c.role)?;
        let body = sdp_body(pending.offer());
        c.pending = Some(pending);
        Ok(body)
    }

    /// Answers the peer's re-INVITE offer and re-keys; the body goes in
    /// our 200. [`CallMediaError::Pending`] asks for 491, others for 488.
    pub fn reinvite(
        &mut self,
        call: u64,
        body: &Body,
    ) -> Result<(Body, MediaInfo), CallMediaError> {
        let c = self
            .calls
            .get_mut(&call)
            .filter(|c| c.started)
            .ok_or(CallMediaError::NoCall(call))?;
        if c.pending.is_some() {
            return Err(CallMediaError::Pending(call));
        }
        let offer = parse_sdp(body)?;
        let mut local = c.local.clone();
        local.session_version += 1;
        let (desc, negotiated) = answer(&local, c.role, &offer)?;
        c.local = local;
        let shown = info(&negotiated);
        c.negotiated = Some(negotiated.clone());
        self.actions
            .push_back(MediaAction::Update { call, negotiated });
        Ok((sdp_body(&desc), shown))
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
        let shown = info(&negotiated);
        c.negotiated = Some(negotiated.clone());
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
            Ok(Some(body)) => self.ua.handle_command(
                now,
                ua::Command::InDialog {
                    call: CallId(call),
                    method: rsip::Method::Invite,
                    body,
                },
            ),
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
                self.media_updated(call.0, i);
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
