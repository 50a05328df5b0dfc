//! ICE (RFC 8445) for the one audio stream of a call, sans-I/O: the SDP
//! attributes (`a=ice-ufrag`, `a=ice-pwd`, `a=candidate`, RFC 8839), the
//! discovery of our server-reflexive address (a STUN binding request to
//! the configured server, RFC 8489), and the running agent of a call
//! ([`IceSession`]: connectivity checks, nomination, consent freshness).
//!
//! The agent is the sans-I/O ICE agent of str0m, published on its own as
//! the `is` crate, with its STUN codec (`is::stun`) for the checks; the
//! binding request to the STUN server is webrtc-rs's `stun` crate's. The media driver owns the one socket per call; STUN and
//! SRTP share it and are told apart by their first byte (RFC 7983).
//!
//! Decisions (pinned by the tests below and in `sdp_tests.rs`):
//! - The offerer is the controlling agent (RFC 8445 6.1.1, both sides full
//!   agents); the answerer is controlled.
//! - ICE runs only when both SDPs carry credentials; otherwise the call
//!   runs on the `c=`/`m=` address with latching (see [`super::srtp`]).
//! - Only UDP candidates of component 1 are used (rtcp-mux: no RTCP
//!   component); others are skipped, at most [`MAX_CANDIDATES`] are kept.
//! - Triggered checks (RFC 8445 7.3.1.4): a check we answer before our own
//!   check to its sender succeeded makes us check that sender at once
//!   (once per address), which the `is` agent does not do on its own; see
//!   [`IceSession`]'s `triggered_check`. Media still waits for a pair our
//!   own check found valid: an answered request is no proof that the
//!   peer consents to what we send (RFC 7675), so nothing is sent to an
//!   address before its check succeeded.
//! - Media before the nomination (RFC 8445 12.1: an agent MAY send data
//!   on any valid pair until a pair is selected): the controlled agent
//!   sends on the first direct pair (no relayed candidate on either
//!   side) its own check found valid until the controlling agent's
//!   nomination arrives, then on the nominated pair only. The nomination's check leaves one pacing interval (Ta, 50 ms)
//!   after the check that found the pair, so the callee's first words
//!   no longer wait for it. The controlling agent nominates its first
//!   valid pair at once and needs no such step.
//! - Consent (RFC 7675): the agent keeps checking the nominated pair; while
//!   those checks go unanswered (state `Disconnected`) no media is sent,
//!   and it resumes when they are answered again.
//! - Relayed candidates (RFC 8656): the call's [`TurnClient`] allocates
//!   on the same socket while candidates are gathered; its relayed
//!   address becomes a `typ relay` candidate and the [`IceSession`] owns
//!   the client from then on. Checks and media whose local candidate is
//!   the relayed one go through the client (ChannelData, or Send
//!   indications until the channel is bound); datagrams from the TURN
//!   server are read by the client first and what it relays is fed back
//!   as if it had arrived at the relayed address. Every remote candidate's
//!   address gets a permission. The default candidate (`c=`) stays the
//!   server-reflexive one: a peer without ICE can reach it without a
//!   permission on our relay.
//! - A relay allocation is held only while it may be needed: once ICE
//!   nominates a pair whose local candidate is not the relayed one, and
//!   that stays so for [`RELAY_GRACE`] (the 3 s of RFC 8445 8.3 after
//!   which an agent may free candidates outside the selected pair), the
//!   relayed candidate is dropped from the agent and the allocation is
//!   deallocated (Refresh with LIFETIME 0, RFC 8656 7.3). A direct call
//!   then holds no relay for its whole duration; a later network change
//!   gathers a new one (ICE restart on a fresh socket).
//! - A relay reached over TCP or TLS (RFC 8656 3.1) still gives a `typ
//!   relay` UDP candidate: what the relay exchanges with peers is UDP.
//!   Its messages leave as [`Outbound::RelayStream`] (the driver writes
//!   them on the connection) and come back through
//!   [`IceSession::handle_relay_message`]; a datagram on the socket from
//!   the server's address is then not the relay's and is not taken as
//!   such.

use super::turn_client::{TurnClient, TurnEvent, TurnReceived};
use is::stun::{StunMessage, StunPacket};
use is::{
    Candidate, CandidateKind, IceAgent, IceAgentEvent, IceConnectionState, IceCreds, Protocol,
};
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;
use thiserror::Error;

/// Most candidates read from one SDP (the rest are ignored).
pub const MAX_CANDIDATES: usize = 16;

/// The first retransmission time of a connectivity check (the `is`
/// agent's default, RFC 8445 14.3 leaves it to the agent; set explicitly
/// because [`IceSession`] toggles it to clear the agent's check timers).
const INITIAL_RTO: std::time::Duration = std::time::Duration::from_millis(250);

/// The initial RTO while a triggered check is sent (see
/// `IceSession::triggered_check`): the agent computes RTOs in whole
/// milliseconds, doubling per retransmission, so a pair checked `n` times
/// is due again `2^(n-1)` ms after its last check.
const TRIGGER_RTO: std::time::Duration = std::time::Duration::from_millis(1);

/// How long after a triggered check that could not leave it is tried
/// again (then twice that, ...): a pair checked once is due
/// [`TRIGGER_RTO`] after its check, one checked `n` times `2^(n-1)` times
/// that.
const RETRIGGER_AFTER: std::time::Duration = std::time::Duration::from_millis(2);

/// How many times a triggered check that could not leave is tried again.
const RETRIGGER_TRIES: u8 = 3;

/// Most candidate pairs [`IceSession`] remembers (nominated by the peer,
/// or found valid): our few candidates times the peer's, prflx included.
const MAX_PAIRS: usize = 4 * MAX_CANDIDATES;

/// How long a nominated pair that does not use our relayed candidate must
/// stay nominated before the relay allocation is released (RFC 8445 8.3:
/// three seconds after completion).
pub const RELAY_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Why ICE parameters or a candidate were refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IceError {
    /// An `a=ice-ufrag`/`a=ice-pwd` value is malformed, or repeated.
    #[error("malformed ICE attribute: {0}")]
    Attr(&'static str),
    /// A local address cannot be a candidate.
    #[error("not a usable ICE candidate: {0}")]
    Candidate(String),
}

/// One side's ICE parameters as the SDP carries them: credentials and
/// candidate lines (each checked to parse as a UDP candidate of
/// component 1). The password is a secret of the call: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct IceParams {
    /// `a=ice-ufrag` (4 to 256 ice-chars).
    pub ufrag: String,
    /// `a=ice-pwd` (22 to 256 ice-chars).
    pub pwd: String,
    /// `a=candidate` values, without `a=` (`candidate:1 1 udp ...`).
    pub candidates: Vec<String>,
}

impl fmt::Debug for IceParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceParams")
            .field("ufrag", &self.ufrag)
            .field("pwd", &"[redacted]")
            .field("candidates", &self.candidates)
            .finish()
    }
}

fn ice_chars(s: &str, min: usize) -> bool {
    (min..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// A candidate line we use: UDP, component 1; `None` for one we skip.
fn usable(value: &str) -> Option<Candidate> {
    let c = Candidate::from_sdp_string(value).ok()?;
    (c.proto() == Protocol::Udp && value.split_whitespace().nth(1) == Some("1")).then_some(c)
}

impl IceParams {
    /// The SDP lines (CRLF ends) of these parameters.
    pub fn to_sdp(&self) -> String {
        let mut s = format!("a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n", self.ufrag, self.pwd);
        for c in &self.candidates {
            s.push_str("a=");
            s.push_str(c);
            s.push_str("\r\n");
        }
        s
    }

    /// The parsed candidates (lines that no longer parse are skipped).
    pub fn parsed_candidates(&self) -> Vec<Candidate> {
        self.candidates.iter().filter_map(|c| usable(c)).collect()
    }
}

/// Collects the ICE attributes of one SDP body while it is parsed.
#[derive(Debug, Default)]
pub struct IceAttrs {
    ufrag: Option<String>,
    pwd: Option<String>,
    candidates: Vec<String>,
}

impl IceAttrs {
    /// Takes the value of one `a=` line (without `a=`): `Ok(true)` when it
    /// was an ICE attribute, `Ok(false)` when it is none of ours.
    pub fn attr(&mut self, value: &str) -> Result<bool, IceError> {
        if let Some(v) = value.strip_prefix("ice-ufrag:") {
            if !ice_chars(v, 4) {
                return Err(IceError::Attr("ice-ufrag"));
            }
            if self.ufrag.replace(v.to_string()).is_some() {
                return Err(IceError::Attr("more than one ice-ufrag"));
            }
        } else if let Some(v) = value.strip_prefix("ice-pwd:") {
            if !ice_chars(v, 22) {
                return Err(IceError::Attr("ice-pwd"));
            }
            if self.pwd.replace(v.to_string()).is_some() {
                return Err(IceError::Attr("more than one ice-pwd"));
            }
        } else if value.starts_with("candidate:") {
            // A line we cannot use (TCP, RTCP component, malformed) is
            // skipped, as RFC 8839 5.1 asks of unknown candidates.
            if self.candidates.len() < MAX_CANDIDATES && usable(value).is_some() {
                self.candidates.push(value.to_string());
            }
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// The parameters, when both credentials were given (candidates alone
    /// mean nothing).
    pub fn finish(self) -> Option<IceParams> {
        Some(IceParams {
            ufrag: self.ufrag?,
            pwd: self.pwd?,
            candidates: self.candidates,
        })
    }
}

/// The kind of a candidate, as RFC 8839 names it.
pub fn kind_name(k: CandidateKind) -> &'static str {
    match k {
        CandidateKind::Host => "host",
        CandidateKind::PeerReflexive => "prflx",
        CandidateKind::ServerReflexive => "srflx",
        CandidateKind::Relayed => "relay",
    }
}

/// Our side of a call's ICE before the answer: fresh credentials, the
/// candidates of the call's socket and, with a relayed candidate, the
/// TURN client that holds its allocation.
pub struct LocalIce {
    creds: IceCreds,
    host: SocketAddr,
    candidates: Vec<Candidate>,
    turn: Option<TurnClient>,
}

impl fmt::Debug for LocalIce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIce")
            .field("host", &self.host)
            .field("candidates", &self.candidates.len())
            .field("turn", &self.turn)
            .finish()
    }
}

impl LocalIce {
    /// Fresh random credentials and the host candidate `host` (the
    /// socket's address as we name it: never a wildcard).
    pub fn new(host: SocketAddr) -> Result<Self, IceError> {
        let c = Candidate::host(host, "udp").map_err(|e| IceError::Candidate(e.to_string()))?;
        Ok(LocalIce {
            creds: IceCreds::new(),
            host,
            candidates: vec![c],
            turn: None,
        })
    }

    /// Adds the relayed candidate of `turn`'s allocation (RFC 8656): from
    /// now on the client belongs to this call's ICE. An error, and no
    /// candidate, when the client holds no allocation.
    pub fn add_relayed(&mut self, turn: TurnClient) -> Result<(), IceError> {
        let relayed = turn
            .relayed()
            .ok_or_else(|| IceError::Candidate("no TURN allocation".into()))?;
        let c = Candidate::relayed(relayed, self.host, "udp")
            .map_err(|e| IceError::Candidate(e.to_string()))?;
        self.candidates.push(c);
        self.turn = Some(turn);
        Ok(())
    }

    /// Deallocates the relayed candidate's allocation (a call that never
    /// started): the messages to send, (where, bytes).
    pub fn close_relay(&mut self, now: Instant) -> Vec<(Outbound, Vec<u8>)> {
        let Some(turn) = self.turn.as_mut() else {
            return Vec::new();
        };
        turn.close(now);
        let to = Outbound::to_server(turn);
        std::iter::from_fn(|| turn.poll_transmit())
            .map(|b| (to, b))
            .collect()
    }

    /// Adds the server-reflexive candidate `mapped` (what the STUN server
    /// saw); nothing when it is the host address (no NAT).
    pub fn add_server_reflexive(&mut self, mapped: SocketAddr) -> Result<(), IceError> {
        if mapped == self.host || self.candidates.iter().any(|c| c.addr() == mapped) {
            return Ok(());
        }
        let c = Candidate::server_reflexive(mapped, self.host, "udp")
            .map_err(|e| IceError::Candidate(e.to_string()))?;
        self.candidates.push(c);
        Ok(())
    }

    /// The host candidate's address (the base of every candidate).
    pub fn host(&self) -> SocketAddr {
        self.host
    }

    /// The default candidate for `c=`/`m=` (RFC 8445 5.1.4): the
    /// server-reflexive one when there is one (reachable from outside our
    /// NAT, so a peer without ICE can reach us), else the host.
    pub fn default_addr(&self) -> SocketAddr {
        self.candidates
            .iter()
            .find(|c| c.kind() == CandidateKind::ServerReflexive)
            .map_or(self.host, Candidate::addr)
    }

    /// The SDP parameters.
    pub fn params(&self) -> IceParams {
        IceParams {
            ufrag: self.creds.ufrag.clone(),
            pwd: self.creds.pass.clone(),
            candidates: self
                .candidates
                .iter()
                .map(Candidate::to_sdp_string)
                .collect(),
        }
    }

    /// The running agent for the peer's `remote` parameters; controlling
    /// when we made the offer.
    pub fn start(self, remote: &IceParams, controlling: bool) -> IceSession {
        let mut agent = IceAgent::new(self.creds);
        agent.set_controlling(controlling);
        agent.set_initial_stun_rto(INITIAL_RTO);
        let relayed_candidate = self
            .candidates
            .iter()
            .find(|c| c.kind() == CandidateKind::Relayed)
            .cloned();
        for c in self.candidates {
            agent.add_local_candidate(c);
        }
        agent.set_remote_credentials(IceCreds {
            ufrag: remote.ufrag.clone(),
            pass: remote.pwd.clone(),
        });
        let mut permits = Vec::new();
        for c in remote.parsed_candidates() {
            permits.push(c.addr().ip());
            agent.add_remote_candidate(c);
        }
        let relayed = self.turn.as_ref().and_then(TurnClient::relayed);
        IceSession {
            agent,
            local: self.host,
            relayed,
            relayed_candidate,
            release_relay_at: None,
            turn: self.turn,
            permits,
            now: None,
            triggered: Vec::new(),
            retrigger: None,
            nominated: None,
            valid: None,
            consent: false,
            peer_nominated: Vec::new(),
            answered: Vec::new(),
            events: Vec::new(),
            transmits: std::collections::VecDeque::new(),
        }
    }
}

/// Whether a datagram is STUN rather than (S)RTP: its first byte is 0..3
/// (RFC 7983), and it is long enough for a STUN header.
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] < 4
}

/// One STUN binding request to a STUN server, to learn our
/// server-reflexive address: the SIP layer's (also its keep-alive on UDP
/// flows). Encoded and read by webrtc-rs's `stun` crate: the `is` codec
/// reads only ICE checks (it requires MESSAGE-INTEGRITY, which a STUN
/// server's answer to an unauthenticated request lacks).
pub use crate::sip::stun::BindingRequest as StunBinding;

/// Where a message of the call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    /// A datagram on the call's UDP socket to this address (a peer, or a
    /// TURN server reached over UDP).
    Udp(SocketAddr),
    /// One message on the connection to the TURN server (TCP or TLS).
    RelayStream,
}

impl Outbound {
    /// Where the messages of `turn` for its server go.
    fn to_server(turn: &TurnClient) -> Outbound {
        if turn.transport().is_stream() {
            Outbound::RelayStream
        } else {
            Outbound::Udp(turn.server())
        }
    }
}

/// The candidate pair media flows on, by candidate kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcePath {
    /// Our candidate of the pair (its base: `host`, or `relay`).
    pub local: &'static str,
    /// The peer's candidate we send to (`host`, `srflx`, `prflx`, `relay`).
    pub remote: &'static str,
    /// Where we send (through the TURN server when `local` is `relay`).
    pub destination: SocketAddr,
}

impl IcePath {
    /// Whether our side of the pair is the relayed candidate.
    pub fn via_relay(&self) -> bool {
        self.local == "relay"
    }
}

/// What a datagram on the call's socket was, once ICE (and its TURN
/// client) read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceInput {
    /// A STUN or TURN message ICE took (or dropped).
    Consumed,
    /// Not ICE's: media from its sender, as it arrived.
    Media,
    /// Media relayed by our TURN server from `peer`.
    Relayed {
        /// The peer's address as the relay saw it.
        peer: SocketAddr,
        /// The peer's datagram.
        data: Vec<u8>,
    },
}

/// What the running ICE tells the media session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceEvent {
    /// Media goes to this pair from now on.
    Nominated(IcePath),
    /// Consent to send (RFC 7675) was gained (`true`) or lost.
    Consent(bool),
}

/// The running ICE of one call: the `is` agent plus what the session
/// needs to know (where to send, whether it may), and the TURN client of
/// the relayed candidate.
pub struct IceSession {
    agent: IceAgent,
    local: SocketAddr,
    relayed: Option<SocketAddr>,
    /// Our relayed candidate, to drop from the agent when the relay is
    /// released.
    relayed_candidate: Option<Candidate>,
    /// When the allocation is released: [`RELAY_GRACE`] after a pair that
    /// does not use it was nominated.
    release_relay_at: Option<Instant>,
    turn: Option<TurnClient>,
    /// Remote addresses still to get a permission on the relay.
    permits: Vec<std::net::IpAddr>,
    /// The latest time given (for what the TURN client starts meanwhile).
    now: Option<Instant>,
    /// Remote addresses a triggered check went to (once each).
    triggered: Vec<SocketAddr>,
    /// A triggered check that could not leave yet (our own check to that
    /// address left under [`TRIGGER_RTO`] ago): the address, when to try
    /// again, and the tries left.
    retrigger: Option<(SocketAddr, Instant, u8)>,
    nominated: Option<IcePath>,
    /// Controlled agent, before a nomination: the first pair our own
    /// check found valid (RFC 8445 12.1), where media goes meanwhile.
    valid: Option<IcePath>,
    consent: bool,
    /// Controlled agent: the pairs (peer's address, our base) the
    /// controlling agent nominated, in the order of their first
    /// USE-CANDIDATE (see [`IceSession::follow_peer_choice`]).
    peer_nominated: Vec<(SocketAddr, SocketAddr)>,
    /// Pairs (peer's address, our base) a check of ours found valid.
    answered: Vec<(SocketAddr, SocketAddr)>,
    events: Vec<IceEvent>,
    transmits: std::collections::VecDeque<(Outbound, Vec<u8>)>,
}

impl fmt::Debug for IceSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceSession")
            .field("local", &self.local)
            .field("relayed", &self.relayed)
            .field("state", &self.agent.state())
            .field("nominated", &self.nominated)
            .finish()
    }
}

impl IceSession {
    /// Feeds a STUN datagram from `from` that arrived on the socket; false
    /// when the agent did not take it (wrong credentials, not a STUN
    /// message of ours).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> bool {
        self.now = Some(now);
        self.check(now, from, self.local, datagram)
    }

    fn check(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, datagram: &[u8]) -> bool {
        let Ok(message) = StunMessage::parse(datagram) else {
            return false;
        };
        let packet = StunPacket {
            proto: Protocol::Udp,
            source: from,
            destination: to,
            message,
        };
        if !self.agent.accepts_message(&packet.message) {
            return false;
        }
        let request = packet.message.is_binding_request();
        let nominates = request && packet.message.use_candidate();
        let answered = packet.message.is_successful_binding_response();
        let taken = self.agent.handle_packet(now, packet);
        if taken && !request {
            self.note_valid(from, to);
        }
        if taken
            && answered
            && !self.answered.contains(&(from, to))
            && self.answered.len() < MAX_PAIRS
        {
            self.answered.push((from, to));
        }
        // A nominated pair goes on carrying USE-CANDIDATE in the
        // controlling agent's later checks: only a pair's first one is
        // news (the controlling `is` agent nominates a pair only when it
        // ranks above the one it had selected).
        if taken
            && nominates
            && !self.agent.controlling()
            && !self.peer_nominated.contains(&(from, to))
            && self.peer_nominated.len() < MAX_PAIRS
        {
            tracing::debug!(%from, %to, "the peer nominates a pair");
            self.peer_nominated.push((from, to));
        }
        if taken && request {
            if !self.agent.controlling() {
                self.trigger_nominated_check();
            }
            // The answer first, then our own check.
            while let Some(t) = self.agent.poll_transmit() {
                self.queue_check(t.source, t.destination, t.contents.into());
            }
            self.triggered_check(now, from);
        }
        self.drain();
        taken
    }

    /// A check of ours from `to` (our host address or the relayed one)
    /// to `from` was answered: before any nomination, a controlled agent
    /// takes that pair as where media goes (RFC 8445 12.1), if the agent
    /// holds it valid (the answer matched a check of ours and was
    /// authenticated with the peer's password) and it is direct. A pair
    /// through a relay (ours or the peer's) waits for the nomination: the
    /// controlling agent often nominates another relayed pair, and the
    /// few packets sent meanwhile would be a flow of their own on the
    /// provider's relay, abandoned a moment later.
    fn note_valid(&mut self, from: SocketAddr, to: SocketAddr) {
        if self.agent.controlling()
            || self.nominated.is_some()
            || self.valid.is_some()
            || !self.agent.has_viable_remote_candidate(from)
        {
            return;
        }
        let path = self.path_to(from, to);
        if path.via_relay() || path.remote == "relay" {
            return;
        }
        tracing::debug!(?path, "a valid pair carries media until the nomination");
        self.valid = Some(path);
    }

    /// The pair from our candidate whose base is `source` to `destination`,
    /// named by candidate kind.
    fn path_to(&self, destination: SocketAddr, source: SocketAddr) -> IcePath {
        let remote = self
            .agent
            .remote_candidates()
            .find(|c| c.addr() == destination)
            .map_or("prflx", |c| kind_name(c.kind()));
        let local = if Some(source) == self.relayed {
            "relay"
        } else {
            "host"
        };
        IcePath {
            local,
            remote,
            destination,
        }
    }

    /// Lets the check a nomination calls for leave at once. Once a pair is
    /// nominated, a controlled agent sends media only on it, and only
    /// after its own check found it valid (RFC 8445 7.3.1.5, 8.1.1,
    /// 12.1); when the peer's USE-CANDIDATE
    /// arrives before that check succeeded (typically: our first check hit
    /// the peer's NAT before the peer's own check opened it), RFC 8445
    /// 7.3.1.4 asks for a triggered check at once. The `is` agent gives a
    /// nominated pair's check precedence, but only once it recomputes the
    /// pair's next check time, which it caches until the pair's
    /// retransmission timer (250 ms, then 500 ms) and does not clear on a
    /// nomination; so the callee started sending up to half a second late
    /// (the caller's first audio ~780 ms against ~340 ms the other way).
    /// Changing the initial RTO is the agent's public way to clear that
    /// cache; it is set back at once, nothing else changes.
    fn trigger_nominated_check(&mut self) {
        self.agent
            .set_initial_stun_rto(INITIAL_RTO + std::time::Duration::from_millis(1));
        self.agent.set_initial_stun_rto(INITIAL_RTO);
    }

    /// Reads any datagram of the call's socket: what the TURN server
    /// sends goes to the TURN client (relayed STUN to the agent as
    /// arriving at the relayed address), STUN to the agent, the rest is
    /// media for the caller.
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> IceInput {
        self.now = Some(now);
        if self
            .turn
            .as_ref()
            .is_some_and(|t| t.server() == from && !t.transport().is_stream())
        {
            return self.read_relay(now, datagram);
        }
        if is_stun(datagram) {
            self.check(now, from, self.local, datagram);
            return IceInput::Consumed;
        }
        IceInput::Media
    }

    /// One message the TURN server sent on the connection of a relay
    /// reached over TCP or TLS (ignored when the relay is reached over
    /// UDP): read as [`IceSession::handle_input`] reads the relay's
    /// datagrams.
    pub fn handle_relay_message(&mut self, now: Instant, message: &[u8]) -> IceInput {
        self.now = Some(now);
        if !self
            .turn
            .as_ref()
            .is_some_and(|t| t.transport().is_stream())
        {
            return IceInput::Consumed;
        }
        self.read_relay(now, message)
    }

    /// What the TURN client makes of a message of its server.
    fn read_relay(&mut self, now: Instant, message: &[u8]) -> IceInput {
        let Some(turn) = self.turn.as_mut() else {
            return IceInput::Consumed;
        };
        let got = turn.handle_datagram(now, message);
        self.drain_turn();
        match got {
            TurnReceived::Data { peer, data } => match self.relayed {
                Some(relayed) if is_stun(&data) => {
                    self.check(now, peer, relayed, &data);
                    IceInput::Consumed
                }
                _ => IceInput::Relayed { peer, data },
            },
            TurnReceived::Handled | TurnReceived::NotTurn => IceInput::Consumed,
        }
    }

    /// Where media goes now, with the bytes to send there: the nominated
    /// pair's destination, or the TURN server with `wire` wrapped for the
    /// relay. `None`: no pair, or the relay cannot carry it.
    pub fn route_media(&mut self, now: Instant, wire: Vec<u8>) -> Option<(Outbound, Vec<u8>)> {
        let path = self.path()?;
        if !path.via_relay() {
            return Some((Outbound::Udp(path.destination), wire));
        }
        let turn = self.turn.as_mut()?;
        let wrapped = turn.wrap(now, path.destination, &wire)?;
        let to = Outbound::to_server(turn);
        self.drain_turn();
        Some((to, wrapped))
    }

    /// Advances the agent's and the TURN client's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        if self.release_relay_at.is_some_and(|at| at <= now) {
            self.release_relay(now);
        }
        if let Some(turn) = self.turn.as_mut() {
            for ip in self.permits.drain(..) {
                turn.permit(now, ip);
            }
            turn.handle_timeout(now);
        }
        self.drain_turn();
        if let Some((to, _, tries)) = self.retrigger.filter(|(_, at, _)| *at <= now) {
            self.retrigger = None;
            if !self.agent.has_viable_remote_candidate(to) && !self.send_check_to(now, to) {
                self.retry_trigger(now, to, tries);
            }
            self.drain();
            return;
        }
        self.agent.handle_timeout(now);
        self.drain();
    }

    /// When [`IceSession::handle_timeout`] is due next. The agent's own
    /// timers start with the first call of `handle_timeout`, which the
    /// driver makes when the call's media starts.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let ice = self.agent.poll_timeout();
        let turn = self.turn.as_ref().and_then(TurnClient::poll_timeout);
        let retrigger = self.retrigger.map(|(_, at, _)| at);
        [ice, turn, self.release_relay_at, retrigger]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the call still holds a relay allocation (or is getting
    /// one).
    pub fn holds_relay(&self) -> bool {
        self.turn.as_ref().is_some_and(|t| !t.is_done())
    }

    /// Frees the relayed candidate: no more checks from it, and its
    /// allocation deallocated (the Refresh with LIFETIME 0 is among the
    /// next [`IceSession::poll_transmit`] datagrams).
    fn release_relay(&mut self, now: Instant) {
        self.release_relay_at = None;
        if let Some(c) = self.relayed_candidate.take() {
            self.agent.invalidate_candidate(&c);
        }
        if self.holds_relay() {
            tracing::debug!("a direct pair is in use: relay allocation released");
        }
        self.close(now);
    }

    /// The next message to send: (where, bytes). Checks from the relayed
    /// candidate come out wrapped for the TURN server.
    pub fn poll_transmit(&mut self) -> Option<(Outbound, Vec<u8>)> {
        loop {
            if let Some(t) = self.transmits.pop_front() {
                return Some(t);
            }
            let t = self.agent.poll_transmit()?;
            self.queue_check(t.source, t.destination, t.contents.into());
        }
    }

    /// Queues one message of the agent from our candidate `source` (its
    /// base) to `destination`: on the socket, or through the relay when
    /// `source` is the relayed candidate.
    fn queue_check(&mut self, source: SocketAddr, destination: SocketAddr, contents: Vec<u8>) {
        if Some(source) != self.relayed {
            self.transmits
                .push_back((Outbound::Udp(destination), contents));
            return;
        }
        let (Some(turn), Some(now)) = (self.turn.as_mut(), self.now) else {
            return;
        };
        if let Some(wrapped) = turn.wrap(now, destination, &contents) {
            let to = Outbound::to_server(turn);
            self.transmits.push_back((to, wrapped));
        }
        self.drain_turn();
    }

    /// A triggered check (RFC 8445 7.3.1.4) towards `from`, whose check
    /// we just answered while our own check to it has not succeeded yet.
    ///
    /// Typical case, hole punching: the caller's first check died at the
    /// callee's NAT (the callee had sent nothing yet, it starts only once
    /// it has opened the ACK); the callee's check then passes the
    /// caller's NAT, but the `is` agent does no triggered checks on a pair
    /// already on its list (its TODO on 7.3.1.4), so the caller checked
    /// again only when its retransmission timer ran out (250 ms after its
    /// first check, then 500 ms more) and both sides waited for that to
    /// send media (first audio 380 ms cone/cone, 840 ms none/cone).
    ///
    /// Done with the agent's public API: with the initial RTO at
    /// [`TRIGGER_RTO`], every pair not checked within the last few
    /// milliseconds is due at once (a pair never checked is due anyway),
    /// and each `handle_timeout` sends the check of the pair due longest;
    /// a pair just checked is not due again (at zero it would be, and the
    /// first pair of the list, often a peer's unreachable private address,
    /// would be checked again and again while the pair we want waited). It
    /// is called until the check to `from` has left (at most once per
    /// pair), then the RTO is set back (which recomputes every pair's next
    /// check from its last one). Pairs checked on the way get an early
    /// retransmission, nothing else. Once per remote address per session
    /// (a peer's retransmissions trigger nothing more), and only for a
    /// request the agent took (right credentials and MESSAGE-INTEGRITY).
    fn triggered_check(&mut self, now: Instant, from: SocketAddr) {
        if self.agent.has_viable_remote_candidate(from)
            || self.triggered.contains(&from)
            || self.triggered.len() >= MAX_CANDIDATES
        {
            return;
        }
        self.triggered.push(from);
        if !self.send_check_to(now, from) {
            self.retry_trigger(now, from, RETRIGGER_TRIES);
        }
    }

    /// A triggered check whose pair we had checked under [`TRIGGER_RTO`]
    /// before the peer's check arrived could not leave (the agent holds
    /// that pair not due): typical when both sides' first checks on the
    /// pair cross, ours dying at the peer's NAT a moment before theirs
    /// passes ours. RFC 8445 7.3.1.4 asks for a new check on an
    /// In-Progress pair all the same; without it we waited for the
    /// retransmission timer (first audio of the callee ~340 ms instead of
    /// ~80 ms cone/cone, 2 runs of 11). Tried again
    /// [`RETRIGGER_AFTER`] later, doubling, `tries` more times.
    fn retry_trigger(&mut self, now: Instant, to: SocketAddr, tries: u8) {
        if let Some(left) = tries.checked_sub(1) {
            let wait = RETRIGGER_AFTER * (1 << (RETRIGGER_TRIES - tries));
            self.retrigger = Some((to, now + wait, left));
        }
    }

    /// Runs the agent with the initial RTO at [`TRIGGER_RTO`] until its
    /// check to `to` has left (see [`IceSession::triggered_check`]);
    /// whether it left.
    fn send_check_to(&mut self, now: Instant, to: SocketAddr) -> bool {
        self.agent.set_initial_stun_rto(TRIGGER_RTO);
        let pairs = self.agent.local_candidates().count() * self.agent.remote_candidates().count();
        let mut hit = false;
        'checks: for _ in 0..pairs {
            self.agent.handle_timeout(now);
            let mut sent = false;
            while let Some(t) = self.agent.poll_transmit() {
                sent = true;
                hit = t.destination == to;
                self.queue_check(t.source, t.destination, t.contents.into());
                if hit {
                    break 'checks;
                }
            }
            if !sent {
                break;
            }
        }
        self.agent.set_initial_stun_rto(INITIAL_RTO);
        hit
    }

    /// Ends the call's relay: the allocation is deallocated (the Refresh
    /// is among the next [`IceSession::poll_transmit`] datagrams).
    pub fn close(&mut self, now: Instant) {
        if let Some(turn) = self.turn.as_mut() {
            turn.close(now);
        }
        self.drain_turn();
    }

    /// Moves the TURN client's datagrams to the send queue and logs its
    /// events (none changes where media goes: a lost relay shows as lost
    /// consent on the relayed pair).
    fn drain_turn(&mut self) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        let server = turn.server();
        let to = Outbound::to_server(turn);
        while let Some(b) = turn.poll_transmit() {
            self.transmits.push_back((to, b));
        }
        while let Some(e) = turn.poll_event() {
            match e {
                TurnEvent::Failed(error) => {
                    tracing::warn!(%server, %error, "TURN relay lost");
                }
                TurnEvent::PermissionRefused { peer, error } => {
                    tracing::debug!(%server, %peer, %error, "TURN permission refused");
                }
                TurnEvent::Allocated { .. } => {}
            }
        }
    }

    /// The next event for the media session.
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        if self.events.is_empty() {
            None
        } else {
            Some(self.events.remove(0))
        }
    }

    /// The pair in use, when one is nominated.
    pub fn nominated(&self) -> Option<IcePath> {
        self.nominated
    }

    /// Where media goes: the nominated pair, or before a nomination (the
    /// controlled agent only) the first pair our own check found valid.
    pub fn path(&self) -> Option<IcePath> {
        self.nominated.or(self.valid)
    }

    /// Whether media may be sent now: a pair is nominated and its consent
    /// checks are answered, or, before a nomination, a pair our own check
    /// found valid is still valid (that answer is the consent, RFC 7675).
    pub fn may_send(&self) -> bool {
        match (self.nominated, self.valid) {
            (Some(_), _) => self.consent,
            (None, Some(v)) => self.agent.has_viable_remote_candidate(v.destination),
            (None, None) => false,
        }
    }

    fn drain(&mut self) {
        while let Some(e) = self.agent.poll_event() {
            match e {
                IceAgentEvent::NominatedSend {
                    source,
                    destination,
                    ..
                } => {
                    tracing::debug!(%source, %destination, "the ICE agent selected a pair");
                    if self.agent.controlling() || self.follow_peer_choice().is_none() {
                        self.select(self.path_to(destination, source));
                    }
                }
                IceAgentEvent::IceConnectionStateChange(s) => {
                    let ok = matches!(
                        s,
                        IceConnectionState::Connected | IceConnectionState::Completed
                    );
                    if ok != self.consent {
                        self.consent = ok;
                        self.events.push(IceEvent::Consent(ok));
                    }
                }
                _ => {}
            }
        }
        if let Some(path) = self.follow_peer_choice() {
            self.select(path);
        }
    }

    /// Controlled agent: the pair the controlling agent nominated last
    /// (by its first USE-CANDIDATE), once our own check on it succeeded
    /// and while its remote candidate is viable (RFC 8445 7.3.1.5, 8.1.1:
    /// the selected pair is the one the controlling agent nominated, and
    /// both sides use the same one); `None` leaves the choice to the
    /// `is` agent. The `is` agent instead selects the
    /// highest priority pair among all pairs ever nominated, by its own
    /// priorities, and those differ between the two sides when a pair
    /// has a peer-reflexive candidate (the peer computes the pair with
    /// the candidate's base, a host one, we with the PRIORITY of its
    /// check): when the controlling agent moved on to a better pair, we
    /// kept sending on its first, through a relay it then released
    /// (natlab cone/symmetric: the caller's audio stopped after 3 s).
    fn follow_peer_choice(&self) -> Option<IcePath> {
        if self.agent.controlling() {
            return None;
        }
        let &(remote, base) = self.peer_nominated.last()?;
        if !self.answered.contains(&(remote, base))
            || !self.agent.has_viable_remote_candidate(remote)
        {
            return None;
        }
        Some(self.path_to(remote, base))
    }

    /// Media goes to `path` from now on. The relay is released once a
    /// direct pair has held for [`RELAY_GRACE`]; a relayed pair keeps it.
    fn select(&mut self, path: IcePath) {
        if self.nominated != Some(path) {
            tracing::debug!(?path, "media goes to this pair");
            self.nominated = Some(path);
            self.events.push(IceEvent::Nominated(path));
        }
        self.release_relay_at = match (path.via_relay(), self.now) {
            (false, Some(now)) if self.relayed_candidate.is_some() => {
                self.release_relay_at.or(Some(now + RELAY_GRACE))
            }
            _ => None,
        };
    }
}

#[cfg(test)]
#[path = "ice_tests.rs"]
mod tests;

/// A STUN server's answer to `request` (tests of other modules).
#[cfg(test)]
pub(crate) fn stun_reply_for_tests(request: &[u8], mapped: SocketAddr) -> Vec<u8> {
    tests::stun_reply(request, mapped)
}
