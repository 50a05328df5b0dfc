//! A TURN client (RFC 8656) for one call's socket, sans-I/O: bytes and
//! time in, datagrams for the TURN server and events out. It allocates a
//! relayed address with long-term credentials (RFC 8489 9.2: the first
//! Allocate is answered 401 with REALM and NONCE, the retry carries
//! USERNAME, REALM, NONCE and MESSAGE-INTEGRITY; 438 Stale Nonce is
//! retried with the new nonce), keeps it alive (Refresh before expiry),
//! installs a permission for every peer address (CreatePermission,
//! refreshed every [`PERMISSION_REFRESH`], under the 5 minutes of RFC 8656
//! 9) and binds a channel per peer (ChannelBind, ChannelData; Send and
//! Data indications until the channel is confirmed). At the end of the
//! call [`TurnClient::close`] deallocates (Refresh with LIFETIME 0).
//!
//! The client speaks to its server over UDP, or over TCP or TLS
//! ([`ServerTransport`], RFC 8656 3.1: the relayed transport stays UDP).
//! On a stream the driver frames its messages ([`super::turn_stream`]);
//! requests are then sent once and time out after [`STREAM_TIMEOUT`]
//! (RFC 8489 6.2.2: no retransmission over a reliable transport), and the
//! XOR-MAPPED-ADDRESS of the allocation is not reported (it is the TCP
//! mapping, not a UDP server-reflexive address).
//!
//! Messages are encoded and read by webrtc-rs's `stun` crate and the
//! TURN attributes of its `turn` crate (`turn::proto`); this module writes
//! no STUN or TURN codec of its own.
//!
//! Decisions:
//! - Every answer to an authenticated request must carry a valid
//!   MESSAGE-INTEGRITY under our key, or it is ignored (a forged answer
//!   changes nothing; the request is retransmitted and finally times out).
//!   A success to the first, anonymous Allocate is ignored too: the
//!   provider's relay always asks for a login, and taking it would let
//!   anyone on the path hand us a relayed address of their choosing.
//!   Error answers are taken without it (RFC 8489 does not protect them),
//!   but a second 401 to a request that carried credentials fails the
//!   allocation rather than looping.
//! - An Allocate success without XOR-RELAYED-ADDRESS, or with a relayed
//!   address of another family than the server's or unspecified, or with
//!   a LIFETIME of 0, fails the allocation ([`TurnError::Malformed`]).
//! - Lifetimes the server grants are clamped to at least
//!   [`MIN_LIFETIME`] for our timers, so a hostile server cannot make the
//!   client refresh in a loop.
//! - A peer whose permission the server refuses (403: the relay does not
//!   relay to private addresses) is remembered as refused and never asked
//!   for again; data to it is dropped.
//! - The password is a secret: it lives in a [`Zeroizing`] string, only
//!   its long-term key (MD5 of `user:realm:password`) is kept once the
//!   realm is known, and `Debug` prints neither.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::{
    ErrorCodeAttribute, CODE_ALLOC_MISMATCH, CODE_STALE_NONCE, CODE_UNAUTHORIZED,
};
use stun::integrity::MessageIntegrity;
use stun::message::{
    Getter, Message, MessageClass, MessageType, Method, Setter, CLASS_ERROR_RESPONSE,
    CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH, METHOD_SEND,
};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use thiserror::Error;
use turn::proto::chandata::ChannelData;
use turn::proto::channum::{ChannelNumber, MAX_CHANNEL_NUMBER, MIN_CHANNEL_NUMBER};
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;
use zeroize::{Zeroize, Zeroizing};

/// The allocation lifetime we ask for (RFC 8656 default, 10 minutes).
pub const REQUESTED_LIFETIME: Duration = Duration::from_secs(600);
/// The shortest lifetime our timers believe (a server granting less is
/// refreshed at this pace, not faster).
pub const MIN_LIFETIME: Duration = Duration::from_secs(30);
/// How long before expiry an allocation or channel is refreshed (at most
/// half its lifetime).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// A permission lasts 300 s (RFC 8656 9); it is refreshed after this.
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// A channel binding lasts 600 s (RFC 8656 12); it is refreshed after this.
pub const CHANNEL_REFRESH: Duration = Duration::from_secs(480);
/// First retransmission timeout of a request over UDP (RFC 8489 6.2.1).
pub const RTO: Duration = Duration::from_millis(500);
/// Longest wait between two retransmissions.
const MAX_RTO: Duration = Duration::from_secs(4);
/// Sends of one request before it is given up (RFC 8489 Rc).
pub const MAX_SENDS: u32 = 7;
/// How long a request sent on a stream waits for its answer (RFC 8489
/// 6.2.2, Ti = 39.5 s).
pub const STREAM_TIMEOUT: Duration = Duration::from_millis(39_500);
/// Most 438 or 401 answers one request may get before it is given up.
const MAX_AUTH_RETRIES: u32 = 2;
/// Most peers with a permission, and most channels (a call has a few
/// remote candidates; more is a hostile SDP).
pub const MAX_PEERS: usize = 32;

/// How the phone reaches its TURN server (RFC 8656 3.1): the
/// client-server transport. What the relay sends to and receives from
/// peers is UDP whichever it is.
#[derive(Clone)]
pub enum ServerTransport {
    /// `turn:...?transport=udp`: one datagram per message.
    Udp,
    /// `turn:...?transport=tcp`: messages framed on a TCP connection.
    Tcp,
    /// `turns:`: framed inside TLS, the server checked as the client says
    /// (the phone pins the PKG's certificate, see `agent::sip_tls`).
    Tls(crate::sip::driver::TlsClient),
}

impl ServerTransport {
    /// Whether messages travel on a stream (TCP or TLS), not as datagrams.
    pub fn is_stream(&self) -> bool {
        !matches!(self, ServerTransport::Udp)
    }

    /// `udp`, `tcp` or `tls`.
    pub fn name(&self) -> &'static str {
        match self {
            ServerTransport::Udp => "udp",
            ServerTransport::Tcp => "tcp",
            ServerTransport::Tls(_) => "tls",
        }
    }
}

impl fmt::Debug for ServerTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerTransport::Tls(t) => write!(f, "Tls({:?})", t.server_name),
            other => f.write_str(other.name()),
        }
    }
}

/// The TURN server of a call and the long-term credentials to use on it.
#[derive(Clone)]
pub struct TurnServer {
    /// Where the server listens (on UDP, or TCP for a stream transport).
    pub addr: SocketAddr,
    /// How it is reached.
    pub transport: ServerTransport,
    /// USERNAME (for the provider's relay, `<unix expiry>:<user>`).
    pub username: String,
    /// The password (secret: wiped on drop, never printed).
    pub password: Zeroizing<String>,
}

impl TurnServer {
    /// The server at `addr` over UDP with these long-term credentials
    /// (the password is moved into wiped storage).
    pub fn new(addr: SocketAddr, username: String, password: String) -> Self {
        TurnServer {
            addr,
            transport: ServerTransport::Udp,
            username,
            password: Zeroizing::new(password),
        }
    }

    /// The same server and credentials reached over `transport`.
    pub fn over(mut self, transport: ServerTransport) -> Self {
        self.transport = transport;
        self
    }
}

impl fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnServer")
            .field("addr", &self.addr)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// Why the allocation, or one of its requests, failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnError {
    /// The server answered with an error code.
    #[error("the TURN server refused {method}: {code} {reason}")]
    Refused {
        /// The request (`Allocate`, `Refresh`, ...).
        method: &'static str,
        /// The STUN error code.
        code: u16,
        /// The server's reason phrase (shortened, printable ASCII).
        reason: String,
    },
    /// The server asked for credentials again after they were given: the
    /// user name or password is wrong (or expired).
    #[error("the TURN server refused our credentials ({method})")]
    Unauthorized {
        /// The request.
        method: &'static str,
    },
    /// No answer after [`MAX_SENDS`] sends.
    #[error("the TURN server did not answer {0}")]
    Timeout(&'static str),
    /// A success answer that breaks RFC 8656.
    #[error("malformed TURN answer to {method}: {why}")]
    Malformed {
        /// The request.
        method: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// A request could not be encoded (an over-long user name, realm or
    /// nonce).
    #[error("cannot encode a TURN request: {0}")]
    Encode(String),
}

/// What the client tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// The relayed address is ours (and, when the server said so, the
    /// server-reflexive address it saw us at).
    Allocated {
        /// XOR-RELAYED-ADDRESS.
        relayed: SocketAddr,
        /// XOR-MAPPED-ADDRESS, if given.
        mapped: Option<SocketAddr>,
    },
    /// The allocation failed, or was lost (a refresh failed): no relay.
    Failed(TurnError),
    /// The server refused a permission for this peer: nothing is relayed
    /// to or from it.
    PermissionRefused {
        /// The peer's address.
        peer: IpAddr,
        /// Why.
        error: TurnError,
    },
}

/// What a datagram from the TURN server was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnReceived {
    /// Data relayed from a peer (ChannelData or a Data indication).
    Data {
        /// The peer's address as the relay saw it.
        peer: SocketAddr,
        /// The peer's datagram.
        data: Vec<u8>,
    },
    /// An answer of ours (or something the client chose to ignore).
    Handled,
    /// Not a TURN message: the caller may try other readers.
    NotTurn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Allocate,
    Refresh { lifetime: Duration },
    Permission(IpAddr),
    ChannelBind { peer: SocketAddr, number: u16 },
}

impl Request {
    fn method(self) -> Method {
        match self {
            Request::Allocate => METHOD_ALLOCATE,
            Request::Refresh { .. } => METHOD_REFRESH,
            Request::Permission(_) => METHOD_CREATE_PERMISSION,
            Request::ChannelBind { .. } => METHOD_CHANNEL_BIND,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Request::Allocate => "Allocate",
            Request::Refresh { .. } => "Refresh",
            Request::Permission(_) => "CreatePermission",
            Request::ChannelBind { .. } => "ChannelBind",
        }
    }
}

/// One request in flight.
struct Transaction {
    id: TransactionId,
    request: Request,
    raw: Vec<u8>,
    authenticated: bool,
    sends: u32,
    next: Instant,
    rto: Duration,
    auth_retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Allocate sent, waiting.
    Allocating,
    /// The relayed address is ours until `expires`; refreshed at `refresh_at`.
    Allocated {
        relayed: SocketAddr,
        refresh_at: Instant,
    },
    /// Failed or lost; nothing more is sent.
    Failed,
    /// Deallocated by [`TurnClient::close`].
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// Asked, not yet answered.
    Pending,
    /// Installed; refreshed at the instant.
    Installed(Instant),
    /// Refused by the server: never asked again.
    Refused,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    number: u16,
    state: Grant,
}

/// The TURN client of one call: see the module documentation.
pub struct TurnClient {
    server: TurnServer,
    /// The long-term key, once the realm is known.
    key: Option<Zeroizing<Vec<u8>>>,
    realm: Option<String>,
    nonce: Option<String>,
    state: State,
    transactions: Vec<Transaction>,
    permissions: HashMap<IpAddr, Grant>,
    channels: HashMap<SocketAddr, Channel>,
    next_channel: u16,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<TurnEvent>,
}

impl fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnClient")
            .field("server", &self.server)
            .field("state", &self.state)
            .field("permissions", &self.permissions.len())
            .field("channels", &self.channels.len())
            .finish()
    }
}

fn reason_text(reason: &[u8]) -> String {
    reason
        .iter()
        .take(80)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

fn encode_err(e: stun::Error) -> TurnError {
    TurnError::Encode(e.to_string())
}

impl TurnClient {
    /// A client of `server` that starts allocating at `now` (the first
    /// Allocate is ready in [`TurnClient::poll_transmit`]).
    pub fn new(server: TurnServer, now: Instant) -> Self {
        let mut c = TurnClient {
            server,
            key: None,
            realm: None,
            nonce: None,
            state: State::Allocating,
            transactions: Vec::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            next_channel: MIN_CHANNEL_NUMBER,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        c.start(now, Request::Allocate, 0);
        c
    }

    /// The server's address: every datagram of [`TurnClient::poll_transmit`]
    /// and [`TurnClient::wrap`] goes there, and only datagrams from there
    /// go to [`TurnClient::handle_datagram`].
    pub fn server(&self) -> SocketAddr {
        self.server.addr
    }

    /// How the server is reached: over a stream ([`ServerTransport::is_stream`])
    /// every message of [`TurnClient::poll_transmit`] and
    /// [`TurnClient::wrap`] goes on the connection, and only what comes
    /// from it goes to [`TurnClient::handle_datagram`].
    pub fn transport(&self) -> &ServerTransport {
        &self.server.transport
    }

    /// The relayed address, while the allocation holds.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// Whether the allocation is still being made.
    pub fn is_allocating(&self) -> bool {
        self.state == State::Allocating
    }

    /// Whether the client is done (failed or closed): it sends nothing more.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Failed | State::Closed)
    }

    /// Asks for a permission for `peer` (a remote candidate's address),
    /// unless one is held, pending or was refused. Only once allocated;
    /// earlier calls are remembered and sent after the allocation.
    pub fn permit(&mut self, now: Instant, peer: IpAddr) {
        if self.is_done()
            || self.permissions.contains_key(&peer)
            || self.permissions.len() >= MAX_PEERS
        {
            return;
        }
        self.permissions.insert(peer, Grant::Pending);
        if self.relayed().is_some() {
            self.start(now, Request::Permission(peer), 0);
        }
    }

    /// `data` for `peer`, wrapped for the server: ChannelData on a bound
    /// channel, else a Send indication (and a ChannelBind is started).
    /// `None` when there is no allocation or the server refused this
    /// peer. A peer without a permission gets one asked for.
    pub fn wrap(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
        self.relayed()?;
        if data.len() > usize::from(u16::MAX) - 64 {
            return None;
        }
        match self.channels.get(&peer) {
            Some(Channel {
                number,
                state: Grant::Installed(_),
            }) => {
                let mut cd = ChannelData {
                    data: data.to_vec(),
                    number: ChannelNumber(*number),
                    raw: Vec::with_capacity(data.len() + 8),
                };
                cd.encode();
                return Some(cd.raw);
            }
            Some(Channel {
                state: Grant::Refused,
                ..
            }) => {}
            Some(_) => {}
            None => self.bind_channel(now, peer),
        }
        match self.permissions.get(&peer.ip()) {
            Some(Grant::Refused) => return None,
            Some(_) => {}
            None => self.permit(now, peer.ip()),
        }
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
            Box::new(PeerAddress {
                ip: peer.ip(),
                port: peer.port(),
            }),
            Box::new(Data(data.to_vec())),
        ])
        .ok()?;
        Some(m.raw)
    }

    fn bind_channel(&mut self, now: Instant, peer: SocketAddr) {
        if self.channels.len() >= MAX_PEERS || self.next_channel > MAX_CHANNEL_NUMBER {
            return;
        }
        if self.permissions.get(&peer.ip()) == Some(&Grant::Refused) {
            return;
        }
        let number = self.next_channel;
        self.next_channel += 1;
        self.channels.insert(
            peer,
            Channel {
                number,
                state: Grant::Pending,
            },
        );
        self.start(now, Request::ChannelBind { peer, number }, 0);
    }

    /// Deallocates (Refresh with LIFETIME 0, sent once: the allocation
    /// expires anyway if it is lost). Nothing is sent after this.
    pub fn close(&mut self, now: Instant) {
        let allocated = self.relayed().is_some();
        self.transactions.clear();
        if allocated {
            self.start(
                now,
                Request::Refresh {
                    lifetime: Duration::ZERO,
                },
                0,
            );
            // One send only: drop the transaction, keep the datagram.
            self.transactions.clear();
        }
        self.state = State::Closed;
    }

    /// The next datagram for the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    /// When [`TurnClient::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut due = self.transactions.iter().map(|t| t.next).min();
        let mut at = |t: Instant| due = Some(due.map_or(t, |d: Instant| d.min(t)));
        if let State::Allocated { refresh_at, .. } = self.state {
            at(refresh_at);
            for g in self.permissions.values() {
                if let Grant::Installed(t) = g {
                    at(*t);
                }
            }
            for c in self.channels.values() {
                if let Grant::Installed(t) = c.state {
                    at(t);
                }
            }
        }
        due
    }

    /// Retransmits what is unanswered, refreshes what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_done() {
            return;
        }
        let mut expired = Vec::new();
        for t in &mut self.transactions {
            if t.next > now {
                continue;
            }
            if t.sends >= MAX_SENDS {
                expired.push(t.id);
                continue;
            }
            t.sends += 1;
            t.rto = (t.rto * 2).min(MAX_RTO);
            t.next = now + t.rto;
            self.transmits.push_back(t.raw.clone());
        }
        for id in expired {
            if let Some(i) = self.transactions.iter().position(|t| t.id == id) {
                let t = self.transactions.remove(i);
                self.fail_request(t.request, TurnError::Timeout(t.request.name()));
            }
        }
        let State::Allocated { refresh_at, .. } = self.state else {
            return;
        };
        let in_flight = |me: &Self, r: Request| me.transactions.iter().any(|t| t.request == r);
        if refresh_at <= now {
            let r = Request::Refresh {
                lifetime: REQUESTED_LIFETIME,
            };
            if !in_flight(self, r) {
                self.start(now, r, 0);
            }
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, g)| matches!(g, Grant::Installed(t) if *t <= now))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            if !in_flight(self, Request::Permission(ip)) {
                self.start(now, Request::Permission(ip), 0);
            }
        }
        let due: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, c)| matches!(c.state, Grant::Installed(t) if t <= now))
            .map(|(p, c)| (*p, c.number))
            .collect();
        for (peer, number) in due {
            let r = Request::ChannelBind { peer, number };
            if !in_flight(self, r) {
                self.start(now, r, 0);
            }
        }
    }

    /// A datagram from the server (the caller checks the source is
    /// [`TurnClient::server`]). Never panics, whatever the bytes.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> TurnReceived {
        match datagram.first() {
            Some(0..=3) => self.handle_stun(now, datagram),
            Some(0x40..=0x4f) => self.handle_channel_data(datagram),
            _ => TurnReceived::NotTurn,
        }
    }

    fn handle_channel_data(&mut self, datagram: &[u8]) -> TurnReceived {
        let mut cd = ChannelData {
            raw: datagram.to_vec(),
            ..Default::default()
        };
        if cd.decode().is_err() {
            return TurnReceived::Handled;
        }
        let peer = self
            .channels
            .iter()
            .find(|(_, c)| c.number == cd.number.0 && matches!(c.state, Grant::Installed(_)))
            .map(|(p, _)| *p);
        match peer {
            Some(peer) if self.relayed().is_some() => TurnReceived::Data {
                peer,
                data: cd.data,
            },
            _ => TurnReceived::Handled,
        }
    }

    fn handle_stun(&mut self, now: Instant, datagram: &[u8]) -> TurnReceived {
        let mut m = Message::new();
        m.raw = datagram.to_vec();
        if m.decode().is_err() {
            return TurnReceived::NotTurn;
        }
        if m.typ == MessageType::new(METHOD_DATA, CLASS_INDICATION) {
            if self.relayed().is_none() {
                return TurnReceived::Handled;
            }
            let mut peer = PeerAddress::default();
            let mut data = Data::default();
            if peer.get_from(&m).is_err() || data.get_from(&m).is_err() {
                return TurnReceived::Handled;
            }
            let peer = SocketAddr::new(peer.ip, peer.port);
            // The relay only forwards from permitted peers; a Data
            // indication naming another is not from our relay.
            if !matches!(
                self.permissions.get(&peer.ip()),
                Some(Grant::Installed(_) | Grant::Pending)
            ) {
                return TurnReceived::Handled;
            }
            return TurnReceived::Data { peer, data: data.0 };
        }
        let class: MessageClass = m.typ.class;
        if class != CLASS_SUCCESS_RESPONSE && class != CLASS_ERROR_RESPONSE {
            return TurnReceived::Handled;
        }
        let Some(i) = self
            .transactions
            .iter()
            .position(|t| t.id == m.transaction_id && t.request.method() == m.typ.method)
        else {
            return TurnReceived::Handled;
        };
        if class == CLASS_SUCCESS_RESPONSE {
            if !self.transactions[i].authenticated || !self.integrity_ok(&mut m) {
                // Not from the server that holds our key (or a success to
                // the first, anonymous Allocate, which only a relay that
                // asks no login, or someone on the path, would send):
                // ignored, the request is retransmitted.
                return TurnReceived::Handled;
            }
            let t = self.transactions.remove(i);
            self.on_success(now, t.request, &m);
        } else {
            let t = self.transactions.remove(i);
            self.on_error(now, t, &m);
        }
        TurnReceived::Handled
    }

    fn integrity_ok(&self, m: &mut Message) -> bool {
        let Some(key) = &self.key else {
            return false;
        };
        let mut mi = MessageIntegrity(key.to_vec());
        let ok = mi.check(m).is_ok();
        mi.0.zeroize();
        ok
    }

    fn on_success(&mut self, now: Instant, request: Request, m: &Message) {
        match request {
            Request::Allocate => {
                let malformed = |why| TurnError::Malformed {
                    method: "Allocate",
                    why,
                };
                let mut relayed = RelayedAddress::default();
                if relayed.get_from(m).is_err() {
                    return self.fail(malformed("no XOR-RELAYED-ADDRESS"));
                }
                let relayed = SocketAddr::new(relayed.ip, relayed.port);
                if relayed.ip().is_unspecified()
                    || relayed.port() == 0
                    || relayed.is_ipv4() != self.server.addr.is_ipv4()
                {
                    return self.fail(malformed("unusable XOR-RELAYED-ADDRESS"));
                }
                let Some(lifetime) = lifetime_of(m) else {
                    return self.fail(malformed("no or zero LIFETIME"));
                };
                let mut mapped = XorMappedAddress::default();
                let mapped = mapped
                    .get_from(m)
                    .ok()
                    .filter(|_| !self.server.transport.is_stream())
                    .map(|_| SocketAddr::new(mapped.ip, mapped.port));
                self.state = State::Allocated {
                    relayed,
                    refresh_at: now + refresh_after(lifetime),
                };
                self.events
                    .push_back(TurnEvent::Allocated { relayed, mapped });
                let waiting: Vec<IpAddr> = self.permissions.keys().copied().collect();
                for ip in waiting {
                    self.start(now, Request::Permission(ip), 0);
                }
            }
            Request::Refresh { lifetime } => {
                if lifetime.is_zero() {
                    return;
                }
                let granted = lifetime_of(m).unwrap_or(MIN_LIFETIME);
                if let State::Allocated { relayed, .. } = self.state {
                    self.state = State::Allocated {
                        relayed,
                        refresh_at: now + refresh_after(granted),
                    };
                }
            }
            Request::Permission(ip) => {
                if let Some(g) = self.permissions.get_mut(&ip) {
                    *g = Grant::Installed(now + PERMISSION_REFRESH);
                }
            }
            Request::ChannelBind { peer, number } => {
                if let Some(c) = self.channels.get_mut(&peer) {
                    if c.number == number {
                        c.state = Grant::Installed(now + CHANNEL_REFRESH);
                    }
                }
                // A channel binding installs a permission too (RFC 8656 12).
                if let Some(g) = self.permissions.get_mut(&peer.ip()) {
                    if *g == Grant::Pending {
                        *g = Grant::Installed(now + PERMISSION_REFRESH);
                    }
                }
            }
        }
    }

    fn on_error(&mut self, now: Instant, t: Transaction, m: &Message) {
        let mut ec = ErrorCodeAttribute::default();
        if ec.get_from(m).is_err() {
            return self.fail_request(
                t.request,
                TurnError::Malformed {
                    method: t.request.name(),
                    why: "error answer without ERROR-CODE",
                },
            );
        }
        let code = ec.code;
        let retry_auth = code == CODE_STALE_NONCE
            || (code == CODE_UNAUTHORIZED && !t.authenticated && self.key.is_none());
        if retry_auth && t.auth_retries < MAX_AUTH_RETRIES {
            let realm = TextAttribute::get_from_as(m, ATTR_REALM).ok();
            let nonce = TextAttribute::get_from_as(m, ATTR_NONCE).ok();
            let Some(nonce) = nonce else {
                return self.fail_request(
                    t.request,
                    TurnError::Malformed {
                        method: t.request.name(),
                        why: "401/438 without NONCE",
                    },
                );
            };
            match (realm, &self.realm) {
                (Some(r), _) => self.set_realm(r.text),
                (None, Some(_)) => {}
                (None, None) => {
                    return self.fail_request(
                        t.request,
                        TurnError::Malformed {
                            method: t.request.name(),
                            why: "401 without REALM",
                        },
                    )
                }
            }
            self.nonce = Some(nonce.text);
            return self.start(now, t.request, t.auth_retries + 1);
        }
        let error = if code == CODE_UNAUTHORIZED {
            TurnError::Unauthorized {
                method: t.request.name(),
            }
        } else {
            TurnError::Refused {
                method: t.request.name(),
                code: code.0,
                reason: reason_text(&ec.reason),
            }
        };
        if code == CODE_ALLOC_MISMATCH && matches!(t.request, Request::Refresh { .. }) {
            // The server no longer knows the allocation.
            return self.fail(error);
        }
        self.fail_request(t.request, error);
    }

    fn set_realm(&mut self, realm: String) {
        if self.realm.as_deref() == Some(realm.as_str()) {
            return;
        }
        // The long-term key of RFC 8489 9.2.2 (MD5 of user:realm:password,
        // the same as `MessageIntegrity::new_long_term_integrity`), hashed
        // part by part so no joined copy of the password is left behind.
        use md5::Digest;
        let mut h = md5::Md5::new();
        h.update(self.server.username.as_bytes());
        h.update(b":");
        h.update(realm.as_bytes());
        h.update(b":");
        h.update(self.server.password.as_bytes());
        self.key = Some(Zeroizing::new(h.finalize().to_vec()));
        self.realm = Some(realm);
    }

    fn fail_request(&mut self, request: Request, error: TurnError) {
        match request {
            Request::Allocate | Request::Refresh { .. } => self.fail(error),
            Request::Permission(ip) => {
                self.permissions.insert(ip, Grant::Refused);
                self.events
                    .push_back(TurnEvent::PermissionRefused { peer: ip, error });
            }
            Request::ChannelBind { peer, .. } => {
                // Data goes on as Send indications while the permission holds.
                if let Some(c) = self.channels.get_mut(&peer) {
                    c.state = Grant::Refused;
                }
            }
        }
    }

    fn fail(&mut self, error: TurnError) {
        if self.is_done() {
            return;
        }
        self.state = State::Failed;
        self.transactions.clear();
        self.events.push_back(TurnEvent::Failed(error));
    }

    /// Starts (or restarts, after 401/438) `request`: encodes it and queues
    /// its first send.
    fn start(&mut self, now: Instant, request: Request, auth_retries: u32) {
        match self.encode(request) {
            Ok((id, raw, authenticated)) => {
                self.transmits.push_back(raw.clone());
                // On a stream: sent once, given up after STREAM_TIMEOUT.
                let (sends, next) = if self.server.transport.is_stream() {
                    (MAX_SENDS, now + STREAM_TIMEOUT)
                } else {
                    (1, now + RTO)
                };
                self.transactions.push(Transaction {
                    id,
                    request,
                    raw,
                    authenticated,
                    sends,
                    next,
                    rto: RTO,
                    auth_retries,
                });
            }
            Err(e) => self.fail_request(request, e),
        }
    }

    fn encode(&self, request: Request) -> Result<(TransactionId, Vec<u8>, bool), TurnError> {
        let id = TransactionId::new();
        let mut attrs: Vec<Box<dyn Setter>> = vec![
            Box::new(id),
            Box::new(MessageType::new(request.method(), CLASS_REQUEST)),
        ];
        match request {
            Request::Allocate => {
                attrs.push(Box::new(RequestedTransport {
                    protocol: PROTO_UDP,
                }));
                attrs.push(Box::new(Lifetime(REQUESTED_LIFETIME)));
            }
            Request::Refresh { lifetime } => attrs.push(Box::new(Lifetime(lifetime))),
            Request::Permission(ip) => attrs.push(Box::new(PeerAddress { ip, port: 0 })),
            Request::ChannelBind { peer, number } => {
                attrs.push(Box::new(ChannelNumber(number)));
                attrs.push(Box::new(PeerAddress {
                    ip: peer.ip(),
                    port: peer.port(),
                }));
            }
        }
        let key = match (&self.key, &self.realm, &self.nonce) {
            (Some(key), Some(realm), Some(nonce)) => {
                attrs.push(Box::new(TextAttribute::new(
                    ATTR_USERNAME,
                    self.server.username.clone(),
                )));
                attrs.push(Box::new(TextAttribute::new(ATTR_REALM, realm.clone())));
                attrs.push(Box::new(TextAttribute::new(ATTR_NONCE, nonce.clone())));
                Some(key)
            }
            _ => None,
        };
        let mut m = Message::new();
        m.build(&attrs).map_err(encode_err)?;
        if let Some(key) = key {
            // MESSAGE-INTEGRITY last; the setter's copy of the key is wiped.
            let mut mi = MessageIntegrity(key.to_vec());
            let added = mi.add_to(&mut m).map_err(encode_err);
            mi.0.zeroize();
            added?;
        }
        Ok((id, m.raw, key.is_some()))
    }
}

/// LIFETIME of a success answer; `None` when absent or zero.
fn lifetime_of(m: &Message) -> Option<Duration> {
    let mut l = Lifetime::default();
    l.get_from(m).ok()?;
    (!l.0.is_zero()).then_some(l.0)
}

/// When to refresh something granted for `lifetime`: [`REFRESH_MARGIN`]
/// before it ends, at most half-way, never sooner than half of
/// [`MIN_LIFETIME`].
fn refresh_after(lifetime: Duration) -> Duration {
    let lifetime = lifetime.max(MIN_LIFETIME);
    lifetime.saturating_sub(REFRESH_MARGIN).max(lifetime / 2)
}

/// Whether a datagram is TURN ChannelData (first byte 64..79, RFC 7983).
pub fn is_channel_data(datagram: &[u8]) -> bool {
    datagram.len() >= 4 && (0x40..=0x4f).contains(&datagram[0])
}

#[cfg(test)]
#[path = "turn_client_tests.rs"]
mod tests;

/// A client holding an allocation on a fake server (tests of other
/// modules).
#[cfg(test)]
pub(crate) fn allocated_for_tests(now: Instant) -> TurnClient {
    tests::allocated(now)
}

/// Whether `datagram` is a Refresh request with LIFETIME 0 (a
/// deallocation; tests of other modules).
#[cfg(test)]
pub(crate) fn is_deallocation_for_tests(datagram: &[u8]) -> bool {
    let mut m = Message::new();
    m.raw = datagram.to_vec();
    if m.decode().is_err() || m.typ != MessageType::new(METHOD_REFRESH, CLASS_REQUEST) {
        return false;
    }
    let mut l = Lifetime::default();
    l.get_from(&m).is_ok() && l.0.is_zero()
}
