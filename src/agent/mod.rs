//! The user agent the application talks to: SIP core + tunnel + keys,
//! speaking one [`AgentCommand`] enum in and one [`AgentEvent`] enum out
//! (JSON lines in headless mode; the desktop app and the tests are other
//! subscribers of the same stream).
//!
//! Calls carry media (spec 6) once [`Agent::enable_media`] is on: the core
//! makes and checks the SDP offers and answers ([`media`]), the driver runs
//! the SRTP sessions ([`media_io`]).

pub mod config;
pub mod filter;
mod gather;
pub mod headless;
pub mod key_inbox;
pub mod keylog;
pub mod keys;
pub mod logging;
pub mod media;
pub mod media_io;
pub mod relay;
pub mod renewal;
pub mod retained;
pub(crate) mod route;
pub mod sip_tls;
pub(crate) mod transfer;

use crate::sip::driver::Core;
use crate::sip::ua::{self, Body, CallId, EndReason, UserAgent};
use crate::sip::Dest;
use filter::{MessageSecurity, SecurityLog, SecurityPolicy};
use media::{MediaAction, MediaCalls, MediaCounters};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the application asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum AgentCommand {
    /// Register with the registrar (and keep refreshing).
    Register,
    /// Remove the registration.
    Unregister,
    /// Call `to` (`bob`, `bob@biloxi.com` or a SIP URI); the agent answers
    /// with events naming the call number it chose.
    Call {
        /// Callee.
        to: String,
    },
    /// Answer an incoming call.
    Answer {
        /// Call number.
        call: u64,
    },
    /// Refuse an incoming call (default 486 Busy Here).
    Reject {
        /// Call number.
        call: u64,
        /// Status.
        #[serde(default)]
        status: Option<u16>,
    },
    /// Hang up (CANCEL, reject or BYE as needed).
    Hangup {
        /// Call number.
        call: u64,
    },
    /// Send a secure text message.
    Message {
        /// Recipient.
        to: String,
        /// Text.
        text: String,
    },
    /// Mute (`on`: send silence) or unmute our microphone in a call.
    Mute {
        /// Call number.
        call: u64,
        /// Muted?
        on: bool,
    },
    /// Put the peer on hold: re-INVITE `a=sendonly` with fresh keys.
    Hold {
        /// Call number.
        call: u64,
    },
    /// Take the call off hold: re-INVITE `a=sendrecv` with fresh keys.
    Resume {
        /// Call number.
        call: u64,
    },
    /// Place call `call` as plain SIP after a `plain_fallback` event with
    /// `needs_consent` (policy `ask`): the user agreed to an unprotected
    /// call. `hangup` declines instead.
    CallPlain {
        /// Call number.
        call: u64,
    },
    /// Send DTMF digits (`0-9*#A-D`, RFC 4733) in a call.
    Dtmf {
        /// Call number.
        call: u64,
        /// The digits, sent one after the other.
        digits: String,
    },
    /// The users compared the call's SAS aloud and it matched: keep the
    /// call's retained secret for the verified peer (key continuity, spec
    /// 6), so later calls prove it instead of asking again.
    ConfirmSas {
        /// Call number.
        call: u64,
    },
    /// Blind transfer (RFC 3515): ask the peer of `call` to call `to`
    /// (`carol`, `carol@example.com` or a SIP URI) with a REFER in the
    /// call's tunnel. Progress comes as `transfer_progress`; our call
    /// ends when the peer reports the new call answered, and stays (with
    /// `transfer_failed`) when it did not work.
    Transfer {
        /// Call number.
        call: u64,
        /// The transfer target.
        to: String,
    },
    /// Call waiting: make `call` the active call; every other call in
    /// progress is put on hold, `call` is resumed if we held it.
    Swap {
        /// Call number.
        call: u64,
    },
}

/// What the agent reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    /// Registered for `expires` seconds.
    Registered {
        /// Granted lifetime.
        expires: u32,
    },
    /// Registration refused or timed out.
    RegistrationFailed {
        /// Final status.
        status: u16,
    },
    /// Registration removed.
    Unregistered,
    /// We sent a call's INVITE (again, with the same number, when a call
    /// falls back to plain SIP).
    Calling {
        /// Call number.
        call: u64,
        /// Callee URI.
        to: String,
        /// Whether the INVITE is tunneled; `false` only after a
        /// `plain_fallback`.
        tunneled: bool,
    },
    /// The callee is outside the tunnel: it answered `415` without
    /// `application/pkcs7-mime` in `Accept`, or its domain has no known
    /// parameters. Under `allow-plain` the call is placed again as plain
    /// SIP at once (a `calling` with `tunneled: false` follows); under
    /// `ask` it waits for `call_plain` or `hangup` (`needs_consent`).
    /// Under `require` there is no fallback: the call ends. A plain call's
    /// signaling, and the SDES keys in its SDP, travel in the clear.
    PlainFallback {
        /// Call number.
        call: u64,
        /// Callee URI.
        to: String,
        /// Why the tunnel could not carry the call, for people.
        reason: String,
        /// The user must agree before the plain call is placed.
        needs_consent: bool,
    },
    /// The network changed under us (a new local address towards the
    /// proxy, or a new public address): the phone registered again and
    /// sent a re-INVITE with new media addresses (an ICE restart) in each
    /// of `calls`.
    NetworkChanged {
        /// The address named in Via and Contact now.
        local: String,
        /// Our new public address as the registrar sees it, when that is
        /// what moved.
        public: Option<String>,
        /// The calls whose media is being moved.
        calls: Vec<u64>,
    },
    /// The SIP proxy in use stopped answering (a REGISTER timed out,
    /// `status` 408, or could not connect, 503): the phone moved on to
    /// the next target of the provider's list (RFC 3263 4.3) and
    /// registers there; a `registered` or `registration_failed` follows.
    ProxyChanged {
        /// The target left (`transport:address`).
        from: String,
        /// The target in use now (`transport:address`).
        proxy: String,
        /// What the old target did (408 or 503).
        status: u16,
    },
    /// A call arrives.
    IncomingCall {
        /// Call number.
        call: u64,
        /// The caller's From (inner message when tunneled). Claimed, not
        /// proved: only `verified` is.
        from: String,
        /// The caller's identity when the signature of this very INVITE (or
        /// of the session it opened) verified it; `None` (unverified) for
        /// an unprotected or unsigned call, whatever its From or Call-ID.
        verified: Option<String>,
        /// Whether the call's signaling is tunneled.
        tunneled: bool,
        /// Call waiting: another call is in progress (answering this one
        /// puts it on hold).
        #[serde(default)]
        waiting: bool,
    },
    /// The callee is ringing.
    Ringing {
        /// Call number.
        call: u64,
    },
    /// The call is up.
    Answered {
        /// Call number.
        call: u64,
        /// The peer's verified identity, if any.
        verified: Option<String>,
        /// Whether the call's signaling is tunneled.
        tunneled: bool,
    },
    /// The call ended.
    Ended {
        /// Call number.
        call: u64,
        /// Why, for people.
        reason: String,
    },
    /// The verified peer of `call` transferred us (REFER): we place
    /// `new_call` to `to` (a secured call, reported like any other:
    /// `calling`, `answered` with its verified identity) and end `call`
    /// once it is answered.
    TransferRequested {
        /// The call whose peer asked.
        call: u64,
        /// The canonical AOR we call.
        to: String,
        /// The verified identity (AOR) that asked.
        by: Option<String>,
        /// The call number of the new call.
        new_call: u64,
    },
    /// Progress of the transfer we asked for in `call` (`transfer`): the
    /// REFER accepted (202), then the status of the peer's call to the
    /// target as its NOTIFYs report it; `done` on the final one. A 2xx
    /// final ends our call.
    TransferProgress {
        /// Call number.
        call: u64,
        /// Status code.
        status: u16,
        /// Reason phrase (as received; at most 64 characters).
        reason: String,
        /// Whether this is the final status.
        done: bool,
    },
    /// The transfer we asked for in `call` did not happen (the REFER was
    /// refused or the new call failed); `call` goes on.
    TransferFailed {
        /// Call number.
        call: u64,
        /// Status code.
        status: u16,
        /// A sentence for people.
        reason: String,
    },
    /// A text message arrived.
    MessageReceived {
        /// From.
        from: String,
        /// Text.
        text: String,
        /// Sender's verified identity, if any.
        verified: Option<String>,
        /// Whether it was tunneled.
        tunneled: bool,
    },
    /// A MESSAGE, OPTIONS or in-dialog request we sent completed.
    RequestCompleted {
        /// Method.
        method: String,
        /// Final status.
        status: u16,
    },
    /// A message was rejected by the tunnel or the policy (logged, no state changed).
    Rejected {
        /// Why.
        reason: String,
    },
    /// Something went wrong that the user should know.
    Error {
        /// A sentence for people.
        message: String,
    },
    /// Encrypted media runs (after `answered`). `cipher` is the SRTP
    /// suite (`none` only for plain RTP under `allow-plain`); `sas` is the
    /// short authentication string to compare aloud, present exactly when
    /// the keys are escrow-resistant.
    MediaStarted {
        /// Call number.
        call: u64,
        /// `opus`, `PCMU` or `PCMA`.
        codec: String,
        /// SRTP suite.
        cipher: String,
        /// Whether the PKG is unable to recover the media keys.
        escrow_resistant: bool,
        /// Short authentication string (4 z-base-32 characters).
        sas: Option<String>,
    },
    /// The media keys are not escrow-resistant (peer without
    /// `a=ibesip-dh`, a provider-recoverable provider, or plain RTP): the
    /// UI must show `message`.
    MediaNotice {
        /// Call number.
        call: u64,
        /// A sentence for people.
        message: String,
    },
    /// A re-INVITE (hold, resume) re-keyed the media: new keys, new SAS.
    MediaUpdated {
        /// Call number.
        call: u64,
        /// Our direction now (`sendonly` while we hold, `recvonly` while held).
        direction: String,
        /// The codec now (a re-INVITE may change it).
        codec: String,
        /// SRTP suite.
        cipher: String,
        /// Whether the PKG is unable to recover the media keys.
        escrow_resistant: bool,
        /// The new short authentication string.
        sas: Option<String>,
    },
    /// Key continuity (spec 6) of the media just started or re-keyed,
    /// when we hold a retained secret for the peer: `verified` (the peer
    /// proved the keys of the confirmed call: no SAS to compare) or a loud
    /// warning to show (`verified: false`).
    KeyContinuity {
        /// Call number.
        call: u64,
        /// The peer proved the retained secret.
        verified: bool,
        /// A sentence for people.
        message: String,
    },
    /// The SAS confirmation of `confirm_sas` is kept for `peer`.
    SasConfirmed {
        /// Call number.
        call: u64,
        /// The verified peer AOR the retained secret is kept for.
        peer: String,
    },
    /// A DTMF digit from the peer.
    Dtmf {
        /// Call number.
        call: u64,
        /// The digit.
        digit: char,
    },
    /// ICE nominated the candidate pair the call's media flows on.
    MediaPath {
        /// Call number.
        call: u64,
        /// Our candidate's kind (`host`; `relay` through a TURN server).
        local: String,
        /// The peer's candidate's kind (`host`, `srflx`, `prflx`, `relay`).
        remote: String,
    },
    /// Media counters, once a second while the call runs.
    MediaStats {
        /// Call number.
        call: u64,
        /// Counters so far.
        stats: MediaCounters,
    },
    /// The media session ended (its audio output is closed).
    MediaStopped {
        /// Call number.
        call: u64,
        /// Final counters.
        stats: MediaCounters,
    },
    /// The audio input (a WAV file) has played out.
    AudioSourceEnded {
        /// Call number.
        call: u64,
    },
    /// The sound device or audio file failed; the call goes on without it.
    AudioFailed {
        /// Call number.
        call: u64,
        /// What failed.
        message: String,
    },
}

/// Who a call's peer is proved to be, fixed by the message that made the
/// call: the incoming INVITE (callee side) or the 2xx that answered ours
/// (caller side).
#[derive(Debug, Clone, PartialEq, Eq)]
struct CallSecurity {
    verified: Option<String>,
    tunneled: bool,
}

/// The agent core: a [`UserAgent`] whose filter is the tunnel, plus the
/// bookkeeping that turns core events into [`AgentEvent`]s with their
/// security facts. Sans-I/O like the core it wraps.
///
/// Security facts come only from the filter's record of the message the
/// core acted on in the same datagram ([`SecurityLog::current`], cleared
/// before each datagram): an `incoming_call` or `message_received` shows
/// the identity proved for that INVITE or MESSAGE, the caller's `answered`
/// the one proved for the 2xx that answered, the callee's `answered` the
/// one of its INVITE. Nothing is looked up by Call-ID.
pub struct Agent {
    ua: UserAgent,
    log: Arc<Mutex<SecurityLog>>,
    domain: String,
    /// SIP Call-ID of each outgoing call (for the plain fallback).
    calls: HashMap<u64, String>,
    /// Proved facts of each call, set by the message that made it.
    security: HashMap<u64, CallSecurity>,
    /// The filter's facts of the message of the datagram being handled.
    current: Option<MessageSecurity>,
    next_call: u64,
    events: VecDeque<AgentEvent>,
    media: Option<MediaCalls>,
    policy: SecurityPolicy,
    /// Callee URI of each outgoing call (for a plain retry).
    targets: HashMap<u64, String>,
    /// Calls waiting for the user's consent to go plain (`ask`).
    awaiting_consent: HashSet<u64>,
    /// Tunnel session (hex) of each incoming call, from its INVITE.
    incoming_sessions: HashMap<u64, String>,
    /// Incoming calls being ended because a verified first message on
    /// their Call-ID superseded their unsigned session.
    superseded_calls: HashSet<u64>,
    /// When the calls whose media must still move after a network change
    /// (glare, a timeout) are re-INVITEd again.
    restart_retry: Option<Instant>,
    /// Calls answered and not ended (call waiting, swap, transfer).
    live: HashSet<u64>,
    /// Calls we placed because the peer of another call transferred us:
    /// new call -> the call whose peer asked.
    transfers_in: HashMap<u64, u64>,
    /// Transfers we asked for (REFER sent), by call: the target.
    transfers_out: HashMap<u64, String>,
}

impl Agent {
    /// An agent around a user agent whose filter shares `log`.
    pub fn new(ua: UserAgent, log: Arc<Mutex<SecurityLog>>, domain: &str) -> Self {
        Agent {
            ua,
            log,
            domain: domain.to_string(),
            calls: HashMap::new(),
            security: HashMap::new(),
            current: None,
            next_call: 1,
            events: VecDeque::new(),
            media: None,
            policy: SecurityPolicy::Require,
            targets: HashMap::new(),
            awaiting_consent: HashSet::new(),
            incoming_sessions: HashMap::new(),
            superseded_calls: HashSet::new(),
            restart_retry: None,
            live: HashSet::new(),
            transfers_in: HashMap::new(),
            transfers_out: HashMap::new(),
        }
    }

    /// The policy for calls the tunnel cannot carry (the filter's policy;
    /// `require` until set): see [`AgentEvent::PlainFallback`].
    pub fn with_policy(mut self, policy: SecurityPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Calls carry SDP offers/answers and run media (spec 6): the agent
    /// then decides keys per call and reports [`MediaAction`]s through
    /// [`Agent::poll_media`] for the driver to carry out.
    pub fn enable_media(&mut self, media: MediaCalls) {
        self.ua.defer_reinvite_answers(true);
        self.media = Some(media);
    }

    /// The next media action for the driver.
    pub fn poll_media(&mut self) -> Option<MediaAction> {
        self.media.as_mut().and_then(MediaCalls::poll_action)
    }

    fn pump(&mut self, now: Instant) {
        while let Some(e) = self.ua.poll_event() {
            self.translate(now, e);
        }
    }

    fn error(&mut self, message: String) {
        tracing::warn!(%message, "agent error");
        self.events.push_back(AgentEvent::Error { message });
    }

    /// `bob` -> `sip:bob@<our domain>`, `bob@x` -> `sip:bob@x`, URIs as they are.
    pub fn target_uri(&self, to: &str) -> String {
        let to = to.trim();
        if to.starts_with("sip:") || to.starts_with("sips:") {
            to.to_string()
        } else if to.contains('@') {
            format!("sip:{to}")
        } else {
            format!("sip:{to}@{}", self.domain)
        }
    }

    /// The facts of the message the core acted on in this datagram, when
    /// it is the one `matches` describes; taken, so no later event reuses
    /// them. Anything else proves nothing: unverified, not tunneled.
    fn proved_by_current(
        &mut self,
        matches: impl FnOnce(&MessageSecurity) -> bool,
    ) -> CallSecurity {
        match self.current.take() {
            Some(f) if matches(&f) => CallSecurity {
                verified: f.verified_peer.filter(|_| f.tunneled),
                tunneled: f.tunneled,
            },
            _ => CallSecurity {
                verified: None,
                tunneled: false,
            },
        }
    }

    /// Ends the incoming calls whose unsigned session a verified first
    /// message superseded (the tunnel no longer holds it, so nothing can
    /// be sent in it: the call ends locally).
    fn end_superseded(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .take_log(|l| l.superseded.drain(..).collect())
            .unwrap_or_default();
        if gone.is_empty() {
            return;
        }
        let calls: Vec<u64> = self
            .incoming_sessions
            .iter()
            .filter(|(_, s)| gone.contains(s))
            .map(|(c, _)| *c)
            .collect();
        for call in calls {
            self.superseded_calls.insert(call);
            if let Some(m) = self.media.as_mut() {
                m.end(call);
            }
            // Nothing may be sent: the session is gone, and a response
            // sealed by dialog lookup would land in the signed call's.
            self.ua
                .handle_command(now, ua::Command::Forget { call: CallId(call) });
        }
        self.pump(now);
    }

    fn take_log<T>(&self, f: impl FnOnce(&mut SecurityLog) -> T) -> Option<T> {
        self.log.lock().ok().map(|mut l| f(&mut l))
    }

    fn translate(&mut self, now: Instant, e: ua::Event) {
        let ev = match e {
            ua::Event::Registered { expires } => AgentEvent::Registered { expires },
            ua::Event::RegistrationFailed { status } => AgentEvent::RegistrationFailed { status },
            ua::Event::ChallengeRefused { realm, status } => {
                let realm: String = realm.chars().take(80).collect();
                self.error(format!(
                    "registrar challenged ({status}) for realm {realm:?}, not our domain: not answered"
                ));
                return;
            }
            ua::Event::Unregistered => AgentEvent::Unregistered,
            ua::Event::NetworkChanged { local, public } => {
                let calls = self.move_calls(now);
                AgentEvent::NetworkChanged {
                    local,
                    public: public.map(|p| p.to_string()),
                    calls,
                }
            }
            ua::Event::ProxyChanged {
                from,
                proxy,
                status,
            } => AgentEvent::ProxyChanged {
                from: target_text(from),
                proxy: target_text(proxy),
                status,
            },
            ua::Event::TransportFailed { reason } => AgentEvent::Error {
                message: format!("cannot reach the SIP proxy: {reason}"),
            },
            ua::Event::IncomingCall { call, from, body } => {
                let session = self.current.as_ref().and_then(|f| f.session_id.clone());
                let facts = self.proved_by_current(|f| {
                    f.initial && f.status.is_none() && f.method == "INVITE" && f.from == from
                });
                if let Some(session) = session.filter(|_| facts.tunneled) {
                    self.incoming_sessions.insert(call.0, session);
                }
                self.security.insert(call.0, facts.clone());
                let CallSecurity { verified, tunneled } = facts;
                let refused = self
                    .media
                    .as_mut()
                    .and_then(|m| m.incoming(call.0, &body, verified.as_deref()).err());
                self.events.push_back(AgentEvent::IncomingCall {
                    call: call.0,
                    from: from.clone(),
                    verified,
                    tunneled,
                    waiting: !self.live.is_empty(),
                });
                if let Some(e) = refused {
                    self.error(format!("call {} from {from} refused (488): {e}", call.0));
                    self.ua
                        .handle_command(now, ua::Command::Reject { call, status: 488 });
                }
                return;
            }
            ua::Event::Ringing { call } => {
                self.transfer_ringing(now, call.0);
                AgentEvent::Ringing { call: call.0 }
            }
            ua::Event::Answered { call, body } => {
                let facts = match self.security.get(&call.0) {
                    // Callee: the INVITE's facts.
                    Some(f) => f.clone(),
                    // Caller: the facts of the 2xx that answered this call.
                    None => {
                        let cid = self.calls.get(&call.0).cloned();
                        let facts = self.proved_by_current(|f| {
                            f.method == "INVITE"
                                && f.status.is_some_and(|s| (200..300).contains(&s))
                                && Some(&f.call_id) == cid.as_ref()
                        });
                        self.security.insert(call.0, facts.clone());
                        facts
                    }
                };
                let CallSecurity { verified, tunneled } = facts;
                self.live.insert(call.0);
                self.events.push_back(AgentEvent::Answered {
                    call: call.0,
                    verified: verified.clone(),
                    tunneled,
                });
                self.transfer_answered(now, call.0);
                return self.media_answered(now, call, &body, verified.as_deref());
            }
            ua::Event::AckReceived {
                call,
                ibesip_dh,
                body,
            } => {
                return self.media_ack(now, call, ibesip_dh.as_deref(), &body);
            }
            ua::Event::Ended { call, reason } => {
                if let EndReason::Rejected(status) = reason {
                    // A transferred call is never placed plain.
                    if !self.is_transfer_call(call.0) && self.fall_back(now, call.0, status) {
                        return;
                    }
                }
                self.live.remove(&call.0);
                self.transfer_ended(now, call.0, &reason);
                if let Some(m) = self.media.as_mut() {
                    m.end(call.0);
                }
                self.targets.remove(&call.0);
                self.security.remove(&call.0);
                self.calls.remove(&call.0);
                self.incoming_sessions.remove(&call.0);
                if self.superseded_calls.remove(&call.0) {
                    self.events.push_back(AgentEvent::Ended {
                        call: call.0,
                        reason: "superseded: a signed call on the same Call-ID replaced this \
                                 unverified one"
                            .into(),
                    });
                    return;
                }
                AgentEvent::Ended {
                    call: call.0,
                    reason: match reason {
                        EndReason::LocalHangup => "local hangup".into(),
                        EndReason::RemoteHangup => "remote hangup".into(),
                        EndReason::Cancelled => "cancelled".into(),
                        EndReason::Rejected(s) => format!("rejected {s}"),
                        EndReason::Timeout => "timeout".into(),
                        EndReason::Forgotten => "ended locally".into(),
                    },
                }
            }
            ua::Event::MessageReceived { from, body } => {
                let CallSecurity { verified, tunneled } = self.proved_by_current(|f| {
                    f.status.is_none() && f.method == "MESSAGE" && f.from == from
                });
                AgentEvent::MessageReceived {
                    from,
                    text: String::from_utf8_lossy(&body.bytes).to_string(),
                    verified,
                    tunneled,
                }
            }
            ua::Event::RequestCompleted { method, status } => AgentEvent::RequestCompleted {
                method: method.to_string(),
                status,
            },
            ua::Event::Rejected { reason } => AgentEvent::Rejected { reason },
            ua::Event::InDialogRequest { call, method, body } => {
                if method == rsip::Method::Invite {
                    self.on_reinvite(now, call, &body);
                } else if method == rsip::Method::Notify {
                    self.on_notify(now, call.0, &body);
                }
                return;
            }
            ua::Event::ReferReceived { call, refer_to, .. } => {
                return self.on_refer(now, call, &refer_to)
            }
            ua::Event::InDialogResponse {
                call,
                method,
                status,
                body,
            } => {
                if method == rsip::Method::Invite {
                    self.on_reinvite_response(now, call, status, &body);
                } else if method == rsip::Method::Refer {
                    self.refer_answered(call.0, status);
                }
                return;
            }
        };
        log_event(&ev);
        self.events.push_back(ev);
    }
}

impl Core for Agent {
    type Command = AgentCommand;
    type Event = AgentEvent;

    fn handle_datagram(&mut self, now: Instant, from: Dest, bytes: &[u8]) {
        // The filter describes the one message of this datagram; nothing
        // from an earlier one may stand in for it.
        self.take_log(|l| l.current = None);
        self.ua.handle_datagram(now, from, bytes);
        self.current = self.take_log(|l| l.current.take()).flatten();
        self.pump(now);
        self.current = None;
        self.end_superseded(now);
    }

    fn handle_command(&mut self, now: Instant, cmd: AgentCommand) {
        self.command(now, cmd);
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.ua.handle_timeout(now);
        self.pump(now);
        if self.restart_retry.is_some_and(|t| t <= now) {
            self.restart_retry = None;
            self.retry_moves(now);
            self.pump(now);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.ua
            .poll_timeout()
            .into_iter()
            .chain(self.restart_retry)
            .min()
    }

    fn poll_transmit(&mut self) -> Option<crate::sip::Transmit> {
        self.ua.poll_transmit()
    }

    fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }

    fn handle_pong(&mut self, now: Instant, from: Dest) {
        self.ua.handle_pong(now, from);
    }

    fn handle_flow_closed(&mut self, now: Instant, peer: Dest) {
        self.ua.handle_flow_closed(now, peer);
        self.pump(now);
    }

    fn handle_connect_failed(&mut self, now: Instant, peer: Dest, reason: &str) {
        self.ua.handle_connect_failed(now, peer, reason);
        self.pump(now);
    }

    fn route_check(&self, now: Instant) -> Option<ua::RouteCheck> {
        self.ua.route_check(now)
    }

    fn handle_route(&mut self, now: Instant, probe: ua::RouteProbe) -> Option<ua::RouteChange> {
        let change = self.ua.handle_route(now, probe);
        self.pump(now);
        change
    }
}

impl Agent {
    fn command(&mut self, now: Instant, cmd: AgentCommand) {
        let core = match cmd {
            AgentCommand::Register => ua::Command::Register,
            AgentCommand::Unregister => ua::Command::Unregister,
            AgentCommand::Call { to } => {
                let call = self.next_call;
                self.next_call += 1;
                let target = self.target_uri(&to);
                return self.place_call(now, call, target, false);
            }
            AgentCommand::CallPlain { call } => {
                if !self.awaiting_consent.remove(&call) {
                    return self.error(format!(
                        "call {call} is not waiting for consent to go plain"
                    ));
                }
                let Some(target) = self.targets.get(&call).cloned() else {
                    return self.error(format!("call {call} has no callee"));
                };
                return self.place_call(now, call, target, true);
            }
            AgentCommand::Hangup { call } if self.awaiting_consent.remove(&call) => {
                self.targets.remove(&call);
                self.events.push_back(AgentEvent::Ended {
                    call,
                    reason: "not placed: unprotected call declined".into(),
                });
                return;
            }
            AgentCommand::Transfer { call, to } => return self.transfer(now, call, &to),
            AgentCommand::Swap { call } => return self.swap(now, call),
            AgentCommand::Answer { call } => {
                self.hold_others(now, call);
                ua::Command::Answer {
                    call: CallId(call),
                    body: self
                        .media
                        .as_mut()
                        .and_then(|m| m.answer_body(call))
                        .unwrap_or_default(),
                }
            }
            AgentCommand::Reject { call, status } => ua::Command::Reject {
                call: CallId(call),
                status: status.unwrap_or(486),
            },
            AgentCommand::Hangup { call } => ua::Command::Hangup { call: CallId(call) },
            AgentCommand::Message { to, text } => ua::Command::Message {
                target: self.target_uri(&to),
                body: Body {
                    content_type: Some("text/plain;charset=utf-8".into()),
                    bytes: text.into_bytes(),
                },
            },
            AgentCommand::Mute { call, on } => {
                return self.media_command(now, call, |m| m.mute(call, on).map(|()| None))
            }
            AgentCommand::Hold { call } => {
                return self.media_command(now, call, |m| m.hold(call, true).map(Some))
            }
            AgentCommand::Resume { call } => {
                return self.media_command(now, call, |m| m.hold(call, false).map(Some))
            }
            AgentCommand::Dtmf { call, digits } => {
                return self.media_command(now, call, |m| m.dtmf(call, &digits).map(|()| None))
            }
            AgentCommand::ConfirmSas { call } => return self.confirm_sas(call),
        };
        self.ua.handle_command(now, core);
    }
}

/// Placing calls, and the plain fallback of spec 5.6.
impl Agent {
    /// Sends call `call`'s INVITE to `target`, with a fresh offer; `plain`
    /// asks the filter to send it unsealed (the filter refuses under
    /// `require`).
    fn place_call(&mut self, now: Instant, call: u64, target: String, plain: bool) {
        let body = match self.media_offer(call, &target) {
            Some(Ok(body)) => body,
            Some(Err(e)) => return self.error(format!("cannot call {target}: {e}")),
            None => Body::default(),
        };
        self.take_log(|l| {
            l.last_outgoing_initial = None;
            l.plain_next = plain;
        });
        self.ua.handle_command(
            now,
            ua::Command::Call {
                call: CallId(call),
                target: target.clone(),
                body,
            },
        );
        self.media_placed(call);
        let sent = self
            .take_log(|l| {
                l.plain_next = false;
                let cid = l.last_outgoing_initial.take()?;
                let refused = l.tunnel_refused.contains_key(&cid);
                let tunneled = !l.plain.contains(&cid);
                Some((cid, refused, tunneled))
            })
            .flatten();
        let Some((cid, refused, tunneled)) = sent else {
            if let Some(m) = self.media.as_mut() {
                m.end(call);
            }
            return self.error(format!(
                "could not place a secured call to {target} (no keys or unknown domain)"
            ));
        };
        self.calls.insert(call, cid);
        self.targets.insert(call, target.clone());
        // Refused: nothing was sent; the core's `Ended` follows and
        // `fall_back` decides.
        if !refused {
            self.events.push_back(AgentEvent::Calling {
                call,
                to: target,
                tunneled,
            });
        }
    }

    /// A call ended with `status`: if the tunnel could not carry it, follow
    /// the policy (spec 5.6) and report that instead of the end. Each call
    /// falls back at most once: its plain retry is never recorded as
    /// refused.
    fn fall_back(&mut self, now: Instant, call: u64, status: u16) -> bool {
        let Some(cid) = self.calls.get(&call).cloned() else {
            return false;
        };
        let Some(reason) = self.take_log(|l| l.tunnel_refused.remove(&cid)).flatten() else {
            return false;
        };
        let Some(to) = self.targets.get(&call).cloned() else {
            return false;
        };
        if let Some(m) = self.media.as_mut() {
            m.end(call);
        }
        match self.policy {
            SecurityPolicy::Require => {
                self.targets.remove(&call);
                let what = if status == 415 {
                    "rejected 415"
                } else {
                    "not placed"
                };
                self.events.push_back(AgentEvent::Ended {
                    call,
                    reason: format!(
                        "{what}: {reason}; the policy `require` places no unprotected call"
                    ),
                });
            }
            SecurityPolicy::Ask => {
                self.awaiting_consent.insert(call);
                self.events.push_back(AgentEvent::PlainFallback {
                    call,
                    to,
                    reason,
                    needs_consent: true,
                });
            }
            SecurityPolicy::AllowPlain => {
                self.events.push_back(AgentEvent::PlainFallback {
                    call,
                    to: to.clone(),
                    reason,
                    needs_consent: false,
                });
                self.place_call(now, call, to, true);
            }
        }
        true
    }
}

/// A SIP next hop as the events name it: `udp:203.0.113.10:5060`.
fn target_text(d: crate::sip::Dest) -> String {
    format!("{}:{}", d.transport.uri_param(), d.addr)
}

#[cfg(test)]
#[path = "fallback_tests.rs"]
mod fallback_tests;

/// One line in the diagnostic log for the events a person may ask about
/// later (registration, call ends, refusals, errors): states, status codes
/// and reasons only, never a message text, an SDP or a peer's address.
fn log_event(ev: &AgentEvent) {
    match ev {
        AgentEvent::Registered { expires } => tracing::info!(expires, "registered"),
        AgentEvent::RegistrationFailed { status } => {
            tracing::warn!(status, "registration failed")
        }
        AgentEvent::Unregistered => tracing::info!("unregistered"),
        AgentEvent::ProxyChanged {
            from,
            proxy,
            status,
        } => tracing::warn!(%from, %proxy, status, "SIP proxy does not answer: moved on"),
        AgentEvent::Ended { call, reason } => tracing::info!(call, %reason, "call ended"),
        AgentEvent::Rejected { reason } => tracing::warn!(%reason, "message refused"),
        AgentEvent::Error { message } => tracing::warn!(%message, "agent error"),
        AgentEvent::RequestCompleted { method, status } if *status >= 300 => {
            tracing::info!(%method, status, "request failed")
        }
        _ => {}
    }
}
