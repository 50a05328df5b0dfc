//! The thin tokio driver: owns a UDP socket, a TCP listener and the TCP
//! connections, reads `Instant::now()`, and moves bytes between them and a
//! sans-I/O [`Core`] ([`UserAgent`] or [`Proxy`]).
//!
//! TCP streams are framed by Content-Length ([`take_frame`]; RFC 3261
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

use crate::sip::message::MAX_MESSAGE_LEN;
use crate::sip::proxy::Proxy;
use crate::sip::ua::{Command, Event, UserAgent};
use crate::sip::{Dest, Transmit, Transport};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    /// The peer sent headers without a usable Content-Length.
    #[error("stream message without Content-Length")]
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
    let len = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| {
            let n = n.trim();
            n.eq_ignore_ascii_case("Content-Length") || n.eq_ignore_ascii_case("l")
        })
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .ok_or(FrameError::NoContentLength)?;
    let total = hdr_end + 4 + len;
    if total > MAX_MESSAGE_LEN {
        return Err(FrameError::TooLarge);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let rest = buf.split_off(total);
    Ok(Some(std::mem::replace(buf, rest)))
}

/// What the connection tasks report to the driver's loop.
enum Inbound {
    /// A whole message from a stream.
    Message(SocketAddr, Vec<u8>),
    /// A CRLF pong (RFC 5626 4.4.1) from a stream.
    Pong(SocketAddr),
    /// The stream to this peer ended.
    Closed(SocketAddr),
    /// An outgoing connection attempt finished.
    Connected(SocketAddr, std::io::Result<TcpStream>),
}

/// How long an outgoing connection attempt may take (off the loop).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    mut rd: tokio::net::tcp::OwnedReadHalf,
    peer: SocketAddr,
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
                    tracing::debug!(%e, %peer, "closing TCP connection");
                    break 'read;
                }
            }
        }
    }
    let _ = inbound.send(Inbound::Closed(peer)).await;
}

fn attach(
    stream: TcpStream,
    peer: SocketAddr,
    inbound: &mpsc::Sender<Inbound>,
    conns: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
) -> mpsc::Sender<Vec<u8>> {
    // SIP messages are whole writes: without TCP_NODELAY a message that
    // follows another one closely (180 then 200) waits for the peer's
    // delayed ACK (up to 40 ms on Linux) under Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CONN_QUEUE);
    tokio::spawn(read_stream(rd, peer, inbound.clone(), tx.clone()));
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    conns.insert(peer, tx.clone());
    tx
}

/// True for a datagram that is only CRLFs: a UDP keep-alive.
fn is_keepalive(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|b| *b == b'\r' || *b == b'\n')
}

/// Runs `core` until the command channel closes. Events go to `events`
/// (dropped if nobody listens). `tcp` may be None for UDP only.
///
/// Nothing in the loop waits on a peer: connections are made by spawned
/// tasks (only for a core whose [`Core::connects_out`] is true; others
/// send over connections peers opened, or not at all), writes go through
/// bounded per-connection queues that drop when full.
pub async fn run<C: Core>(
    mut core: C,
    udp: UdpSocket,
    tcp: Option<TcpListener>,
    mut commands: mpsc::Receiver<C::Command>,
    events: mpsc::Sender<C::Event>,
) -> std::io::Result<()> {
    let (inbound_tx, mut inbound) = mpsc::channel::<Inbound>(256);
    let mut conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut connecting: HashMap<SocketAddr, Vec<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    loop {
        let deadline = core
            .poll_timeout()
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
                    attach(stream, peer, &inbound_tx, &mut conns);
                }
            }
            Some(ev) = inbound.recv() => match ev {
                Inbound::Message(peer, msg) => core.handle_datagram(
                    Instant::now(),
                    Dest { addr: peer, transport: Transport::Tcp },
                    &msg,
                ),
                Inbound::Pong(peer) => core.handle_pong(
                    Instant::now(),
                    Dest { addr: peer, transport: Transport::Tcp },
                ),
                Inbound::Closed(peer) => {
                    conns.remove(&peer);
                    core.handle_flow_closed(
                        Instant::now(),
                        Dest { addr: peer, transport: Transport::Tcp },
                    );
                }
                Inbound::Connected(peer, r) => {
                    let queued = connecting.remove(&peer).unwrap_or_default();
                    match r {
                        Ok(s) => {
                            let c = attach(s, peer, &inbound_tx, &mut conns);
                            for bytes in queued {
                                let _ = c.try_send(bytes);
                            }
                        }
                        Err(e) => tracing::debug!(%e, %peer, "TCP connect failed"),
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
            match t.dest.transport {
                Transport::Udp => {
                    if let Err(e) = udp.send_to(&t.bytes, t.dest.addr).await {
                        tracing::debug!(%e, "UDP send failed");
                    }
                }
                Transport::Tcp => {
                    let peer = t.dest.addr;
                    if let Some(c) = conns.get(&peer).filter(|c| !c.is_closed()) {
                        if c.try_send(t.bytes).is_err() {
                            tracing::debug!(%peer, "TCP queue full: message dropped");
                        }
                    } else if let Some(q) = connecting.get_mut(&peer) {
                        if q.len() < CONN_QUEUE {
                            q.push(t.bytes);
                        }
                    } else if core.connects_out() {
                        connecting.insert(peer, vec![t.bytes]);
                        let done = inbound_tx.clone();
                        tokio::spawn(async move {
                            let r = match tokio::time::timeout(
                                CONNECT_TIMEOUT,
                                TcpStream::connect(peer),
                            )
                            .await
                            {
                                Ok(r) => r,
                                Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                            };
                            let _ = done.send(Inbound::Connected(peer, r)).await;
                        });
                    } else {
                        tracing::debug!(%peer, "no connection from this peer: message dropped");
                    }
                }
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
    _keep: mpsc::Sender<std::convert::Infallible>,
}

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
    spawn_proxy_with_auth(addr, advertise, domain, users, Default::default()).await
}

/// [`spawn_proxy_with`] whose registrar authenticates by `auth` (digest
/// algorithms and their order, failure limits).
pub async fn spawn_proxy_with_auth(
    addr: SocketAddr,
    advertise: Option<String>,
    domain: &str,
    users: Box<dyn crate::sip::registrar::UserLookup>,
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
    let proxy = Proxy::new(
        ProxyConfig {
            local,
            form: HeaderForm::Compact,
            timers: Timers::default(),
            max_transactions: 1024,
        },
        Registrar::new(domain, users).with_auth(auth),
    );
    let (keep, commands) = mpsc::channel(1);
    let (events, mut drain) = mpsc::channel(16);
    tokio::spawn(async move { while drain.recv().await.is_some() {} });
    tokio::spawn(async move {
        if let Err(e) = run(proxy, udp, tcp, commands, events).await {
            tracing::error!(%e, "proxy driver stopped");
        }
    });
    Ok(ProxyHandle { addr, _keep: keep })
}
