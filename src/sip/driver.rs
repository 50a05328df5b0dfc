//! The thin tokio driver: owns a UDP socket, TCP and TLS listeners and
//! the stream connections, reads `Instant::now()`, and moves bytes between
//! them and a sans-I/O [`Core`] ([`UserAgent`] or [`Proxy`]).
//!
//! TLS (RFC 3261 26.2) is a stream like TCP once its handshake is done:
//! the handshake runs in a spawned task with a timeout (accepted ones at
//! most [`MAX_HANDSHAKES`] at once, [`MAX_HANDSHAKES_PER_SOURCE`] from
//! one address), and who is trusted is the
//! [`TlsClient`] configuration's verifier (the agent pins the provider's
//! certificate). TCP and TLS streams are framed by Content-Length ([`take_frame`]; RFC 3261
//! 18.3); CRLF keep-alives (RFC 5626 4.4.1) are taken off first
//! ([`take_keepalives`]): a double-CRLF ping is answered with a CRLF pong,
//! a pong is reported to the core, and a UDP datagram of CRLFs only is a
//! keep-alive, not a message. Connections are kept by peer address:
//! responses and requests to a peer that connected to us reuse its
//! connection, otherwise the driver connects in a spawned task (never in
//! the loop), and only for cores that may ([`Core::connects_out`]).
//! Whether a message goes over TCP is the core's choice; `rport` (RFC
//! 3581) is handled in the transaction layer, from the source address the
//! driver reports.
//!
//! Network changes: when the core asks ([`Core::route_check`]) the driver
//! looks at the local address that routes towards the proxy (a UDP socket
//! connected to it, nothing sent) and whether the bound address still
//! exists, and reports it ([`Core::handle_route`]); the core decides
//! whether that is a change. On one, the stream connections are closed
//! (they left from the old address; a connect under way is forgotten) and
//! the sockets are rebound when the core says so.

use crate::sip::message::{content_length_value, MAX_MESSAGE_LEN};
use crate::sip::proxy::Proxy;
use crate::sip::ua::{Command, Event, RouteChange, RouteCheck, RouteProbe, UserAgent};
use crate::sip::{Dest, Transmit, Transport};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// A sans-I/O SIP core the driver can run.
pub trait Core: Send {
    /// Commands the application sends.
    type Command: Send;
    /// Events the core reports.
    type Event: Send;
    /// Feeds one message that arrived from `from`.
    fn handle_datagram(&mut self, now: Instant, from: Dest, bytes: &[u8]);
    /// Carries out a command.
    fn handle_command(&mut self, now: Instant, cmd: Self::Command);
    /// Runs due timers.
    fn handle_timeout(&mut self, now: Instant);
    /// Next deadline.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Next message to send.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// Next event.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// Whether the driver may open connections for this core. A proxy
    /// answers false: it reaches phones only over the flows they opened
    /// (RFC 5626), never by connecting towards them.
    fn connects_out(&self) -> bool {
        true
    }
    /// A CRLF keep-alive pong arrived on the stream from `from`.
    fn handle_pong(&mut self, _now: Instant, _from: Dest) {}
    /// The stream with `peer` ended.
    fn handle_flow_closed(&mut self, _now: Instant, _peer: Dest) {}
    /// A connection towards `peer` could not be opened; `reason` says
    /// why (refused, timed out, a TLS certificate not trusted).
    fn handle_connect_failed(&mut self, _now: Instant, _peer: Dest, _reason: &str) {}
    /// When the driver should look at the local address that routes
    /// towards the proxy (network change detection), if the core
    /// watches it.
    fn route_check(&self, _now: Instant) -> Option<RouteCheck> {
        None
    }
    /// What the driver saw when it looked; a change the core acted on
    /// says whether to rebind (the driver drops its stream connections
    /// either way: they left from the old address).
    fn handle_route(&mut self, _now: Instant, _probe: RouteProbe) -> Option<RouteChange> {
        None
    }
}

impl Core for UserAgent {
    type Command = Command;
    type Event = Event;
    fn handle_datagram(&mut self, now: Instant, from: Dest, bytes: &[u8]) {
        UserAgent::handle_datagram(self, now, from, bytes)
    }
    fn handle_command(&mut self, now: Instant, cmd: Command) {
        UserAgent::handle_command(self, now, cmd)
    }
    fn handle_timeout(&mut self, now: Instant) {
        UserAgent::handle_timeout(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        UserAgent::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        UserAgent::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        UserAgent::poll_event(self)
    }
    fn handle_pong(&mut self, now: Instant, from: Dest) {
        UserAgent::handle_pong(self, now, from)
    }
    fn handle_flow_closed(&mut self, now: Instant, peer: Dest) {
        UserAgent::handle_flow_closed(self, now, peer)
    }
    fn handle_connect_failed(&mut self, now: Instant, peer: Dest, reason: &str) {
        UserAgent::handle_connect_failed(self, now, peer, reason)
    }
    fn route_check(&self, now: Instant) -> Option<RouteCheck> {
        UserAgent::route_check(self, now)
    }
    fn handle_route(&mut self, now: Instant, probe: RouteProbe) -> Option<RouteChange> {
        UserAgent::handle_route(self, now, probe)
    }
}

impl Core for Proxy {
    type Command = std::convert::Infallible;
    type Event = std::convert::Infallible;
    fn handle_datagram(&mut self, now: Instant, from: Dest, bytes: &[u8]) {
        Proxy::handle_datagram(self, now, from, bytes)
    }
    fn handle_command(&mut self, _now: Instant, cmd: Self::Command) {
        match cmd {}
    }
    fn handle_timeout(&mut self, now: Instant) {
        Proxy::handle_timeout(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Proxy::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Proxy::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Self::Event> {
        None
    }
    fn connects_out(&self) -> bool {
        false
    }
}

/// Why a TCP stream cannot be framed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer sent headers without exactly one well-formed
    /// Content-Length.
    #[error("stream message without exactly one well-formed Content-Length")]
    NoContentLength,
    /// The peer sent a message over [`MAX_MESSAGE_LEN`].
    #[error("stream message too large")]
    TooLarge,
}

/// Takes one whole message off the front of a stream buffer, if there is
/// one; CRLF keep-alives before it are discarded.
pub fn take_frame(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, FrameError> {
    let skip = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    buf.drain(..skip);
    let Some(hdr_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_MESSAGE_LEN {
            return Err(FrameError::TooLarge);
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..hdr_end]);
    let mut lengths = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| {
            let n = n.trim();
            n.eq_ignore_ascii_case("Content-Length") || n.eq_ignore_ascii_case("l")
        })
        .map(|(_, v)| content_length_value(v));
    let len = match (lengths.next(), lengths.next()) {
        (Some(Some(len)), None) => len,
        _ => return Err(FrameError::NoContentLength),
    };
    // A length near usize::MAX must not wrap around to a short frame.
    let total = (hdr_end + 4).checked_add(len).ok_or(FrameError::TooLarge)?;
    if total > MAX_MESSAGE_LEN {
        return Err(FrameError::TooLarge);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let rest = buf.split_off(total);
    Ok(Some(std::mem::replace(buf, rest)))
}

/// A byte stream the driver frames SIP on: a TCP connection or a TLS
/// session over one.
trait SipStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> SipStream for T {}

/// A boxed [`SipStream`].
type BoxStream = Box<dyn SipStream>;

/// What the connection tasks report to the driver's loop.
enum Inbound {
    /// A whole message from a stream.
    Message(Dest, Vec<u8>),
    /// A CRLF pong (RFC 5626 4.4.1) from a stream.
    Pong(Dest),
    /// The stream to this peer ended (the connection's number: a newer
    /// connection to the same peer is not the one that ended).
    Closed(Dest, u64),
    /// An outgoing connection attempt (with its TLS handshake) finished;
    /// the error is a sentence for people. The number is the network
    /// generation it was started in: one started before a network change
    /// left from the old address and is dropped.
    Connected(Dest, Result<BoxStream, String>, u64),
    /// An accepted TLS connection's handshake ended: the stream, or none
    /// when it failed or timed out.
    Accepted(Dest, Option<BoxStream>),
}

/// How long an outgoing connection attempt may take, TLS handshake
/// included (off the loop).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a peer that connected to our TLS port has for its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes of accepted connections in progress at once; a
/// connection arriving past it is closed at once (a flood of half-open
/// handshakes costs bounded memory and never the loop's time).
pub const MAX_HANDSHAKES: usize = 1024;

/// TLS handshakes in progress at once from one source (an IPv4 address,
/// an IPv6 /64), so that one host stalling handshakes cannot take the
/// others' places.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 16;

/// The source a handshake counts against: the IPv4 address, or the /64
/// of an IPv6 address.
fn handshake_source(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => {
            let seg = v6.segments();
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(
                seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 0,
            ))
        }
        v4 => v4,
    }
}

/// Messages queued for one connection; past it new ones are dropped
/// (the transaction layer retransmits or times out), the loop never waits.
const CONN_QUEUE: usize = 64;

/// Takes the keep-alives (RFC 5626 4.4.1) off the front of a stream
/// buffer: how many double-CRLF pings (to answer with a CRLF pong) and
/// whether a single-CRLF pong came.
pub fn take_keepalives(buf: &mut Vec<u8>) -> (usize, bool) {
    let mut pings = 0;
    let mut pong = false;
    loop {
        if buf.starts_with(b"\r\n\r\n") {
            buf.drain(..4);
            pings += 1;
        } else if buf.starts_with(b"\r\n") && (buf.len() == 2 || buf.get(2) != Some(&b'\r')) {
            buf.drain(..2);
            pong = true;
        } else {
            return (pings, pong);
        }
    }
}

async fn read_stream(
    mut rd: tokio::io::ReadHalf<BoxStream>,
    peer: Dest,
    id: u64,
    inbound: mpsc::Sender<Inbound>,
    writer: mpsc::Sender<Vec<u8>>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 8192];
    'read: loop {
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break 'read,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        loop {
            let (pings, pong) = take_keepalives(&mut buf);
            for _ in 0..pings {
                // The pong; a peer that does not read loses it, nothing waits.
                let _ = writer.try_send(b"\r\n".to_vec());
            }
            if pong && inbound.send(Inbound::Pong(peer)).await.is_err() {
                return;
            }
            match take_frame(&mut buf) {
                Ok(Some(msg)) => {
                    if inbound.send(Inbound::Message(peer, msg)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%e, peer = %peer.addr, "closing stream connection");
                    break 'read;
                }
            }
        }
    }
    let _ = inbound.send(Inbound::Closed(peer, id)).await;
}

/// One stream connection: its write queue, its number, and its two tasks
/// (aborted, which closes it, when the network changes under it).
struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    id: u64,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Numbers stream connections, so an old one's end is told apart from a
/// newer one's to the same peer.
static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn attach(
    stream: BoxStream,
    peer: Dest,
    inbound: &mpsc::Sender<Inbound>,
    conns: &mut HashMap<Dest, Conn>,
) -> mpsc::Sender<Vec<u8>> {
    let (rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CONN_QUEUE);
    let id = NEXT_CONN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let reader = tokio::spawn(read_stream(rd, peer, id, inbound.clone(), tx.clone()));
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            // A TLS session holds records back until flushed.
            if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
    });
    conns.insert(
        peer,
        Conn {
            tx: tx.clone(),
            id,
            tasks: [reader.abort_handle(), writer.abort_handle()],
        },
    );
    tx
}

/// Looks at the route towards `proxy` (nothing is sent): the local
/// address a UDP socket connected to it gets, and whether `bound` (the
/// SIP sockets' address) is still one of the host's.
fn probe_route(proxy: SocketAddr, bound: SocketAddr) -> RouteProbe {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let any: SocketAddr = if proxy.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let route = std::net::UdpSocket::bind(any)
        .and_then(|s| s.connect(proxy).and_then(|()| s.local_addr()))
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified());
    let bound_alive = bound.ip().is_unspecified()
        || !matches!(
            std::net::UdpSocket::bind(SocketAddr::new(bound.ip(), 0)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable
        );
    RouteProbe { route, bound_alive }
}

/// SIP messages are whole writes: without TCP_NODELAY a message that
/// follows another one closely (180 then 200) waits for the peer's
/// delayed ACK (up to 40 ms on Linux) under Nagle's algorithm.
fn no_delay(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// True for a datagram that is only CRLFs: a UDP keep-alive.
fn is_keepalive(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|b| *b == b'\r' || *b == b'\n')
}

/// The TLS port of a driver: a listener and the server's certificate.
pub struct TlsListener {
    /// Where peers connect.
    pub listener: TcpListener,
    /// The certificate, key and TLS versions offered.
    pub config: Arc<rustls::ServerConfig>,
}

/// How the driver opens TLS connections: the client configuration (whose
/// certificate verifier decides whom to trust) and the name the peer's
/// certificate is checked against (also sent as SNI when it is a name).
#[derive(Clone)]
pub struct TlsClient {
    /// Client configuration (verifier, key log).
    pub config: Arc<rustls::ClientConfig>,
    /// The proxy's host name or IP address.
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// What a driver listens on and how it connects out.
pub struct Sockets {
    /// The UDP socket (always there: responses and keep-alives over UDP).
    pub udp: UdpSocket,
    /// The TCP listener, if any.
    pub tcp: Option<TcpListener>,
    /// The TLS listener, if any.
    pub tls: Option<TlsListener>,
    /// TLS towards peers; without it no TLS connection is opened.
    pub tls_client: Option<TlsClient>,
}

/// Runs `core` until the command channel closes. Events go to `events`
/// (dropped if nobody listens). `tcp` may be None for UDP only. No TLS:
/// [`run_with`] is the one with TLS.
pub async fn run<C: Core>(
    core: C,
    udp: UdpSocket,
    tcp: Option<TcpListener>,
    commands: mpsc::Receiver<C::Command>,
    events: mpsc::Sender<C::Event>,
) -> std::io::Result<()> {
    let sockets = Sockets {
        udp,
        tcp,
        tls: None,
        tls_client: None,
    };
    run_with(core, sockets, commands, events).await
}

/// Opens a connection to `peer` (TCP, or TLS over TCP with `tls`) within
/// [`CONNECT_TIMEOUT`]; the error says what failed, for people.
async fn connect(peer: Dest, tls: Option<TlsClient>) -> Result<BoxStream, String> {
    let attempt = async {
        let tcp = TcpStream::connect(peer.addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", peer.addr))?;
        no_delay(&tcp);
        match (peer.transport, tls) {
            (Transport::Tls, Some(tls)) => {
                let connector = tokio_rustls::TlsConnector::from(tls.config);
                let s = connector
                    .connect(tls.server_name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {} failed: {e}", peer.addr))?;
                Ok(Box::new(s) as BoxStream)
            }
            (Transport::Tls, None) => Err(format!(
                "no TLS client configuration to reach {}",
                peer.addr
            )),
            _ => Ok(Box::new(tcp) as BoxStream),
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "connecting to {} timed out after {} s",
            peer.addr,
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// Binds the SIP sockets anew on `addr` (its address changed): UDP, and
/// TCP on the same port when it is free.
async fn rebind(addr: SocketAddr) -> std::io::Result<(UdpSocket, Option<TcpListener>)> {
    let udp = UdpSocket::bind(addr).await?;
    let tcp = TcpListener::bind(udp.local_addr()?).await.ok();
    Ok((udp, tcp))
}

/// Runs `core` on `sockets` until the command channel closes. Events go
/// to `events` (dropped if nobody listens).
///
/// Nothing in the loop waits on a peer: connections (and their TLS
/// handshakes) are made by spawned tasks (only for a core whose
/// [`Core::connects_out`] is true; others send over connections peers
/// opened, or not at all); accepted TLS connections shake hands in
/// spawned tasks, at most [`MAX_HANDSHAKES`] at once
/// ([`MAX_HANDSHAKES_PER_SOURCE`] from one source) and each within
/// [`HANDSHAKE_TIMEOUT`]; writes go through bounded per-connection queues
/// that drop when full.
pub async fn run_with<C: Core>(
    mut core: C,
    sockets: Sockets,
    mut commands: mpsc::Receiver<C::Command>,
    events: mpsc::Sender<C::Event>,
) -> std::io::Result<()> {
    let Sockets {
        mut udp,
        mut tcp,
        tls,
        tls_client,
    } = sockets;
    // Bumped on every network change: connects started before it are stale.
    let mut generation: u64 = 0;
    let (inbound_tx, mut inbound) = mpsc::channel::<Inbound>(256);
    let mut conns: HashMap<Dest, Conn> = HashMap::new();
    let mut connecting: HashMap<Dest, Vec<Vec<u8>>> = HashMap::new();
    // Accepted TLS connections still shaking hands, by source.
    let mut handshaking: HashMap<std::net::IpAddr, usize> = HashMap::new();
    let acceptor = tls
        .as_ref()
        .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    loop {
        let now = Instant::now();
        if let Some(check) = core.route_check(now).filter(|c| c.due <= now) {
            let probe = probe_route(check.proxy, check.bound);
            if let Some(change) = core.handle_route(now, probe) {
                // Streams left from the old address: closed, and a connect
                // under way is forgotten; the next message connects anew.
                conns.clear();
                connecting.clear();
                generation += 1;
                if let Some(addr) = change.rebind {
                    match rebind(addr).await {
                        Ok((u, t)) => {
                            udp = u;
                            tcp = t;
                            tracing::info!(%addr, "SIP sockets rebound");
                        }
                        Err(e) => tracing::warn!(%e, %addr, "cannot rebind the SIP sockets"),
                    }
                }
            }
        }
        let route_due = core.route_check(now).map(|c| c.due);
        let deadline = core
            .poll_timeout()
            .into_iter()
            .chain(route_due)
            .min()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            r = udp.recv_from(&mut buf) => {
                match r {
                    Ok((n, from)) if !is_keepalive(&buf[..n]) => {
                        core.handle_datagram(Instant::now(), Dest::udp(from), &buf[..n]);
                    }
                    Ok(_) => {}
                    // An ICMP error of an earlier send (port unreachable)
                    // surfaces here on Linux: not the socket's failure.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
                        || e.kind() == std::io::ErrorKind::ConnectionReset => {}
                    Err(e) => return Err(e),
                }
            }
            accepted = async {
                match &tcp { Some(l) => l.accept().await, None => std::future::pending().await }
            } => {
                if let Ok((stream, peer)) = accepted {
                    no_delay(&stream);
                    let peer = Dest { addr: peer, transport: Transport::Tcp };
                    attach(Box::new(stream), peer, &inbound_tx, &mut conns);
                }
            }
            accepted = async {
                match &tls { Some(t) => t.listener.accept().await, None => std::future::pending().await }
            } => {
                if let (Ok((stream, peer)), Some(acceptor)) = (accepted, &acceptor) {
                    let source = handshake_source(peer.ip());
                    let from_source = handshaking.get(&source).copied().unwrap_or(0);
                    let total: usize = handshaking.values().sum();
                    if total >= MAX_HANDSHAKES || from_source >= MAX_HANDSHAKES_PER_SOURCE {
                        tracing::debug!(%peer, "too many TLS handshakes: connection closed");
                    } else {
                        handshaking.insert(source, from_source + 1);
                        no_delay(&stream);
                        let acceptor = acceptor.clone();
                        let done = inbound_tx.clone();
                        tokio::spawn(async move {
                            let r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                            let peer = Dest { addr: peer, transport: Transport::Tls };
                            let s: Option<BoxStream> = match r {
                                Ok(Ok(s)) => Some(Box::new(s)),
                                Ok(Err(e)) => {
                                    tracing::debug!(%e, peer = %peer.addr, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(peer = %peer.addr, "TLS handshake timed out");
                                    None
                                }
                            };
                            let _ = done.send(Inbound::Accepted(peer, s)).await;
                        });
                    }
                }
            }
            Some(ev) = inbound.recv() => match ev {
                Inbound::Message(peer, msg) => core.handle_datagram(Instant::now(), peer, &msg),
                Inbound::Pong(peer) => core.handle_pong(Instant::now(), peer),
                Inbound::Closed(peer, id) => {
                    if conns.get(&peer).is_some_and(|c| c.id == id) {
                        conns.remove(&peer);
                        core.handle_flow_closed(Instant::now(), peer);
                    }
                }
                Inbound::Accepted(peer, s) => {
                    let source = handshake_source(peer.addr.ip());
                    if let Some(n) = handshaking.get_mut(&source) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            handshaking.remove(&source);
                        }
                    }
                    if let Some(s) = s {
                        attach(s, peer, &inbound_tx, &mut conns);
                    }
                }
                Inbound::Connected(_, _, g) if g != generation => {}
                Inbound::Connected(peer, r, _) => {
                    let queued = connecting.remove(&peer).unwrap_or_default();
                    match r {
                        Ok(s) => {
                            let c = attach(s, peer, &inbound_tx, &mut conns);
                            for bytes in queued {
                                let _ = c.try_send(bytes);
                            }
                        }
                        Err(reason) => {
                            tracing::warn!(%reason, "connection failed");
                            core.handle_connect_failed(Instant::now(), peer, &reason);
                        }
                    }
                }
            },
            cmd = commands.recv() => match cmd {
                Some(c) => core.handle_command(Instant::now(), c),
                None => return Ok(()),
            },
            _ = tokio::time::sleep_until(deadline) => core.handle_timeout(Instant::now()),
        }
        while let Some(t) = core.poll_transmit() {
            let peer = t.dest;
            if peer.transport == Transport::Udp {
                if let Err(e) = udp.send_to(&t.bytes, peer.addr).await {
                    tracing::debug!(%e, "UDP send failed");
                }
            } else if let Some(c) = conns.get(&peer).filter(|c| !c.tx.is_closed()) {
                if c.tx.try_send(t.bytes).is_err() {
                    tracing::debug!(peer = %peer.addr, "stream queue full: message dropped");
                }
            } else if let Some(q) = connecting.get_mut(&peer) {
                if q.len() < CONN_QUEUE {
                    q.push(t.bytes);
                }
            } else if core.connects_out() {
                connecting.insert(peer, vec![t.bytes]);
                let done = inbound_tx.clone();
                let tls = tls_client.clone();
                tokio::spawn(async move {
                    let r = connect(peer, tls).await;
                    let _ = done.send(Inbound::Connected(peer, r, generation)).await;
                });
            } else {
                tracing::debug!(peer = %peer.addr, "no connection from this peer: message dropped");
            }
        }
        while let Some(ev) = core.poll_event() {
            let _ = events.try_send(ev);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The embedded proxy answers a phone's STUN keep-alive on its SIP
    /// UDP port with the address it came from (RFC 5626 8.4), and an
    /// answer sent to it (a reflection attempt) gets nothing back.
    #[tokio::test]
    async fn the_proxy_answers_stun_keepalives_on_its_udp_port() {
        use crate::sip::stun::{binding_success, BindingRequest};
        let proxy = spawn_proxy("127.0.0.1:0".parse().unwrap(), "atlanta.test", &[])
            .await
            .unwrap();
        let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (req, bytes) = BindingRequest::new().unwrap();
        phone.send_to(&bytes, proxy.addr).await.unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), phone.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(from, proxy.addr);
        assert_eq!(req.mapped(&buf[..n]), Some(phone.local_addr().unwrap()));
        let answer = binding_success(&bytes, phone.local_addr().unwrap()).unwrap();
        phone.send_to(&answer, proxy.addr).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), phone.recv_from(&mut buf)).await;
        assert!(r.is_err(), "an answer is not answered");
    }

    #[test]
    fn frames_split_on_content_length() {
        let mut buf = b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabcSIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\nSIP".to_vec();
        let one = take_frame(&mut buf).unwrap().unwrap();
        assert!(one.ends_with(b"\r\n\r\nabc"));
        let two = take_frame(&mut buf).unwrap().unwrap();
        assert!(two.starts_with(b"SIP/2.0 200"));
        assert_eq!(take_frame(&mut buf), Ok(None));
        assert_eq!(buf, b"SIP");
        let mut bad = b"OPTIONS sip:a SIP/2.0\r\n\r\n".to_vec();
        assert_eq!(take_frame(&mut bad), Err(FrameError::NoContentLength));
    }

    /// Found by the fuzzer in CI: a Content-Length of usize::MAX overflowed
    /// the frame's end (a panic in debug builds, a frame cut inside the
    /// headers in release builds).
    #[test]
    fn a_huge_content_length_is_too_large_not_a_wrap() {
        let mut buf = b"SIP/2.0 200 OK\r\nl:000000000018446744073709551615\r\n\r\n".to_vec();
        assert_eq!(take_frame(&mut buf), Err(FrameError::TooLarge));
        let mut buf = b"SIP/2.0 200 OK\r\nl: 99999999999999999999999999\r\n\r\n".to_vec();
        assert_eq!(take_frame(&mut buf), Err(FrameError::NoContentLength));
    }

    /// The framer and the parser must agree on where a message ends: a
    /// second Content-Length (a smuggling attempt) or a signed one is
    /// refused by both, never read differently.
    #[test]
    fn framer_and_parser_refuse_the_same_lengths() {
        for head in [
            "OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\nl: 0\r\n\r\nabc",
            "OPTIONS sip:a SIP/2.0\r\nContent-Length: +3\r\n\r\nabc",
            "OPTIONS sip:a SIP/2.0\r\nContent-Length: 0x3\r\n\r\nabc",
        ] {
            let mut buf = head.as_bytes().to_vec();
            assert_eq!(
                take_frame(&mut buf),
                Err(FrameError::NoContentLength),
                "{head}"
            );
            assert!(
                crate::sip::message::Message::parse(head.as_bytes()).is_err(),
                "{head}"
            );
        }
    }

    #[test]
    fn keepalives_are_taken_off_streams() {
        let mut buf = b"\r\n\r\n\r\n\r\nOPTIONS".to_vec();
        assert_eq!(take_keepalives(&mut buf), (2, false));
        assert_eq!(buf, b"OPTIONS");
        let mut buf = b"\r\n".to_vec();
        assert_eq!(take_keepalives(&mut buf), (0, true));
        assert!(buf.is_empty());
        assert!(is_keepalive(b"\r\n\r\n") && !is_keepalive(b"") && !is_keepalive(b"\r\nX"));
    }

    proptest! {
        #[test]
        fn framing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut b = bytes;
            while let Ok(Some(_)) = take_frame(&mut b) {}
        }
    }
}

/// A registrar/proxy running on the tokio runtime; dropping the handle
/// stops it.
#[derive(Debug)]
pub struct ProxyHandle {
    /// Where it listens (UDP and, when the port was free, TCP).
    pub addr: SocketAddr,
    /// Where it listens for TLS, when asked to.
    pub tls_addr: Option<SocketAddr>,
    _keep: mpsc::Sender<std::convert::Infallible>,
}

/// Transactions the embedded registrar/proxy keeps at once. A completed
/// non-INVITE server transaction over UDP lives 64*T1 = 32 s (RFC 3261
/// Timer J) and a REGISTER with digest takes two, so this bound is the
/// sustained capacity: 16384 / 32 s = 512 transactions, 256 registrations
/// per second (1024 gave 16: SIPp at 500 REGISTER/s saw every request past
/// the first 1536 dropped for 32 s). About 1.5 KB each, 25 MB at most.
pub const PROXY_MAX_TRANSACTIONS: usize = 16_384;

/// Binds UDP and TCP on `addr` (port 0: any free port) and runs the
/// registrar/proxy of `domain` for `users` (user name and digest password).
/// For demos and tests on one machine; a provider's registrar reads its
/// users' digest secrets from the PKG's database instead
/// ([`spawn_proxy_with`]).
pub async fn spawn_proxy(
    addr: SocketAddr,
    domain: &str,
    users: &[(&str, &str)],
) -> std::io::Result<ProxyHandle> {
    use crate::sip::digest::{ha1, Algorithm, Password};
    use crate::sip::registrar::UserRecord;
    let records: HashMap<String, UserRecord> = users
        .iter()
        .map(|(user, password)| {
            let p = Password::new(*password);
            let record = UserRecord {
                ha1_md5: Some(ha1(Algorithm::Md5, user, domain, &p).to_string()),
                ha1_sha256: Some(ha1(Algorithm::Sha256, user, domain, &p).to_string()),
                enabled: true,
            };
            (user.to_string(), record)
        })
        .collect();
    spawn_proxy_with(addr, None, domain, Box::new(records)).await
}

/// Binds UDP and TCP on `addr` (port 0: any free port) and runs the
/// registrar/proxy of `domain` whose digest secrets come from `users` (the
/// PKG's user database in `pkg-server`). `advertise` is the `host:port`
/// written in Via and Record-Route (default: the bound address, which must
/// then not be a wildcard address).
pub async fn spawn_proxy_with(
    addr: SocketAddr,
    advertise: Option<String>,
    domain: &str,
    users: Box<dyn crate::sip::registrar::UserLookup>,
) -> std::io::Result<ProxyHandle> {
    spawn_proxy_with_tls(addr, advertise, domain, users, None, Default::default()).await
}

/// The TLS side of a registrar/proxy: where it listens and its
/// certificate (the provider's, the one phones pin).
#[derive(Clone)]
pub struct ProxyTls {
    /// Listen address (port 0: any free port).
    pub listen: SocketAddr,
    /// The server's certificate, key and TLS versions.
    pub config: Arc<rustls::ServerConfig>,
}

/// [`spawn_proxy_with`] that also accepts SIP over TLS on `tls.listen`
/// and whose registrar authenticates by `auth` (digest algorithms and
/// their order, failure limits).
/// Phones reach it over the TLS connections they open (RFC 5626 flows);
/// the proxy never opens one.
pub async fn spawn_proxy_with_tls(
    addr: SocketAddr,
    advertise: Option<String>,
    domain: &str,
    users: Box<dyn crate::sip::registrar::UserLookup>,
    tls: Option<ProxyTls>,
    auth: crate::sip::registrar::AuthConfig,
) -> std::io::Result<ProxyHandle> {
    use crate::sip::message::HeaderForm;
    use crate::sip::proxy::ProxyConfig;
    use crate::sip::registrar::Registrar;
    use crate::sip::timers::Timers;
    let udp = UdpSocket::bind(addr).await?;
    let addr = udp.local_addr()?;
    if advertise.is_none() && addr.ip().is_unspecified() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("SIP address {addr} is a wildcard: give the address to advertise"),
        ));
    }
    let local = advertise.unwrap_or_else(|| addr.to_string());
    let tcp = TcpListener::bind(addr).await.ok();
    let tls = match tls {
        Some(t) => Some(TlsListener {
            listener: TcpListener::bind(t.listen).await?,
            config: t.config,
        }),
        None => None,
    };
    let tls_addr = match &tls {
        Some(t) => Some(t.listener.local_addr()?),
        None => None,
    };
    let proxy = Proxy::new(
        ProxyConfig {
            local,
            form: HeaderForm::Compact,
            timers: Timers::default(),
            max_transactions: PROXY_MAX_TRANSACTIONS,
        },
        Registrar::new(domain, users).with_auth(auth),
    );
    let (keep, commands) = mpsc::channel(1);
    let (events, mut drain) = mpsc::channel(16);
    tokio::spawn(async move { while drain.recv().await.is_some() {} });
    tokio::spawn(async move {
        let sockets = Sockets {
            udp,
            tcp,
            tls,
            tls_client: None,
        };
        if let Err(e) = run_with(proxy, sockets, commands, events).await {
            tracing::error!(%e, "proxy driver stopped");
        }
    });
    Ok(ProxyHandle {
        addr,
        tls_addr,
        _keep: keep,
    })
}
