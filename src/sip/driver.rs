//! The thin tokio driver: owns a UDP socket, a TCP listener and the TCP
//! connections, reads `Instant::now()`, and moves bytes between them and a
//! sans-I/O [`Core`] ([`UserAgent`] or [`Proxy`]).
//!
//! TCP streams are framed by Content-Length ([`take_frame`]; RFC 3261
//! 18.3). Connections are kept by peer address: responses and requests to a
//! peer that connected to us reuse its connection, otherwise the driver
//! connects. Whether a message goes over TCP is the core's choice (a
//! request over 1300 bytes, RFC 3261 18.1.1); `rport` (RFC 3581) is handled
//! in the transaction layer, from the source address the driver reports.

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

async fn read_stream(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    peer: SocketAddr,
    inbound: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        loop {
            match take_frame(&mut buf) {
                Ok(Some(msg)) => {
                    if inbound.send((peer, msg)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%e, %peer, "closing TCP connection");
                    return;
                }
            }
        }
    }
}

fn attach(
    stream: TcpStream,
    peer: SocketAddr,
    inbound: &mpsc::Sender<(SocketAddr, Vec<u8>)>,
    conns: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
) -> mpsc::Sender<Vec<u8>> {
    // SIP messages are whole writes: without TCP_NODELAY a message that
    // follows another one closely (180 then 200) waits for the peer's
    // delayed ACK (up to 40 ms on Linux) under Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    tokio::spawn(read_stream(rd, peer, inbound.clone()));
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
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

/// Runs `core` until the command channel closes. Events go to `events`
/// (dropped if nobody listens). `tcp` may be None for UDP only.
pub async fn run<C: Core>(
    mut core: C,
    udp: UdpSocket,
    tcp: Option<TcpListener>,
    mut commands: mpsc::Receiver<C::Command>,
    events: mpsc::Sender<C::Event>,
) -> std::io::Result<()> {
    let (inbound_tx, mut inbound) = mpsc::channel::<(SocketAddr, Vec<u8>)>(256);
    let mut conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    loop {
        let deadline = core
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            r = udp.recv_from(&mut buf) => {
                let (n, from) = r?;
                core.handle_datagram(Instant::now(), Dest::udp(from), &buf[..n]);
            }
            accepted = async {
                match &tcp { Some(l) => l.accept().await, None => std::future::pending().await }
            } => {
                if let Ok((stream, peer)) = accepted {
                    attach(stream, peer, &inbound_tx, &mut conns);
                }
            }
            Some((peer, msg)) = inbound.recv() => {
                core.handle_datagram(Instant::now(), Dest { addr: peer, transport: Transport::Tcp }, &msg);
            }
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
                    let existing = conns.get(&t.dest.addr).filter(|c| !c.is_closed()).cloned();
                    let conn = match existing {
                        Some(c) => Some(c),
                        None => {
                            let s = tokio::time::timeout(
                                Duration::from_secs(2),
                                TcpStream::connect(t.dest.addr),
                            )
                            .await;
                            match s {
                                Ok(Ok(s)) => Some(attach(s, t.dest.addr, &inbound_tx, &mut conns)),
                                _ => None,
                            }
                        }
                    };
                    if let Some(c) = conn {
                        let _ = c.send(t.bytes).await;
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
        Registrar::new(domain, users),
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
