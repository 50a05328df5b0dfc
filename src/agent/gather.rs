//! Gathering a call's ICE candidates on its socket before the call
//! starts: the server-reflexive address from a STUN server, and a relayed
//! one from the provider's TURN relays, tried over UDP, TCP and TLS in
//! turn (staggered, first allocation wins). Blocking: it runs on the RTP
//! ports' thread while the call's offer or answer is built.

use crate::media::ice::{Outbound, StunBinding};
use crate::media::turn_client::{ServerTransport, TurnClient, TurnEvent, TurnServer};
use crate::media::turn_stream::StreamLink;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// How long one STUN binding request waits for its answer, and how many
/// are sent, when a call's candidates are gathered.
const STUN_WAIT: std::time::Duration = std::time::Duration::from_millis(250);
const STUN_TRIES: usize = 3;
/// How long a call's TURN allocation may take before the call goes
/// without a relay: two round trips over UDP (the 401 challenge, then the
/// allocation), and room for the fallbacks over TCP and TLS (a connection,
/// a TLS handshake, the same two round trips).
const TURN_WAIT: std::time::Duration = std::time::Duration::from_millis(2000);
/// How long a TURN server may stay silent before the next one (the next
/// transport) is tried beside it; one that fails outright gives way at
/// once.
const TURN_STAGGER: std::time::Duration = std::time::Duration::from_millis(300);

/// What gathering found on a call's socket.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    /// Our address as the STUN (or TURN) server saw it.
    pub(super) mapped: Option<SocketAddr>,
    /// The TURN client holding a relayed address.
    pub(super) turn: Option<TurnClient>,
    /// Its connection, when its server is reached over TCP or TLS.
    pub(super) relay: Option<(std::net::TcpStream, StreamLink)>,
}

/// How one TURN server being tried is reached.
enum Reach {
    /// Datagrams on the call's socket.
    Udp,
    /// The TCP connection is being made (on its own thread: a connect
    /// must not stall the other attempts).
    Connecting(std::sync::mpsc::Receiver<std::io::Result<std::net::TcpStream>>),
    /// Connected (non-blocking), messages framed by the link.
    Stream(std::net::TcpStream, Box<StreamLink>),
}

/// One TURN server being tried while a call's candidates are gathered.
struct Attempt {
    client: TurnClient,
    reach: Reach,
}

impl Attempt {
    fn start(server: &TurnServer, now: Instant) -> Attempt {
        let reach = if server.transport.is_stream() {
            let (tx, rx) = std::sync::mpsc::channel();
            let addr = server.addr;
            std::thread::spawn(move || {
                let _ = tx.send(std::net::TcpStream::connect_timeout(&addr, TURN_WAIT));
            });
            Reach::Connecting(rx)
        } else {
            Reach::Udp
        };
        Attempt {
            client: TurnClient::new(server.clone(), now),
            reach,
        }
    }

    /// Moves the attempt on: the connection made, bytes read and written,
    /// timers, requests sent. False once it failed.
    fn poll(&mut self, sock: &std::net::UdpSocket, now: Instant) -> bool {
        if let Reach::Connecting(rx) = &self.reach {
            match rx.try_recv() {
                Err(std::sync::mpsc::TryRecvError::Empty) => return true,
                Ok(Ok(tcp)) => {
                    let link = match self.client.transport() {
                        ServerTransport::Tls(tls) => StreamLink::tls(tls),
                        _ => Ok(StreamLink::tcp()),
                    };
                    match (link, tcp.set_nonblocking(true)) {
                        (Ok(link), Ok(())) => {
                            let _ = tcp.set_nodelay(true);
                            self.reach = Reach::Stream(tcp, Box::new(link));
                        }
                        (Err(e), _) => return self.failed(&e.to_string()),
                        (_, Err(e)) => return self.failed(&e.to_string()),
                    }
                }
                Ok(Err(e)) => return self.failed(&e.to_string()),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return self.failed("connect thread ended")
                }
            }
        }
        if let Reach::Stream(tcp, link) = &mut self.reach {
            let mut buf = [0u8; 4096];
            loop {
                match std::io::Read::read(tcp, &mut buf) {
                    Ok(n) => {
                        link.receive(buf.get(..n).unwrap_or_default());
                        if n == 0 {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        link.receive(&[]);
                        break;
                    }
                }
            }
            while let Some(m) = link.poll_message() {
                self.client.handle_datagram(now, &m);
            }
        }
        if self.client.poll_timeout().is_some_and(|due| due <= now) {
            self.client.handle_timeout(now);
        }
        self.send_pending(sock);
        if let Reach::Stream(_, link) = &self.reach {
            if let Some(e) = link.failed() {
                return self.failed(&e.to_string());
            }
        }
        !self.client.is_done()
    }

    /// Sends what the client has queued, by datagram or on the stream
    /// (nothing while the connection is being made: it waits in the
    /// client).
    fn send_pending(&mut self, sock: &std::net::UdpSocket) {
        if matches!(self.reach, Reach::Connecting(_)) {
            return;
        }
        while let Some(b) = self.client.poll_transmit() {
            match &mut self.reach {
                Reach::Stream(_, link) => {
                    link.send(&b);
                }
                _ => {
                    let _ = sock.send_to(&b, self.client.server());
                }
            }
        }
        if let Reach::Stream(tcp, link) = &mut self.reach {
            write_pending(tcp, link);
        }
    }

    /// Gives the attempt up (deallocating, if it got that far).
    fn close(mut self, sock: &std::net::UdpSocket, now: Instant) {
        self.client.close(now);
        self.send_pending(sock);
    }

    fn failed(&self, why: &str) -> bool {
        tracing::warn!(
            server = %self.client.server(),
            transport = self.client.transport().name(),
            why,
            "TURN server unreachable"
        );
        false
    }
}

/// Writes what `link` has for the (non-blocking) connection, as far as
/// it takes it now.
fn write_pending(tcp: &mut std::net::TcpStream, link: &mut StreamLink) {
    while !link.pending().is_empty() {
        match std::io::Write::write(tcp, link.pending()) {
            Ok(0) => {
                link.receive(&[]);
                break;
            }
            Ok(n) => link.written(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => {
                link.receive(&[]);
                break;
            }
        }
    }
}

/// Asks the STUN server for our server-reflexive address (at most
/// [`STUN_TRIES`] x [`STUN_WAIT`]) and, at the same time, the TURN servers
/// for a relayed address (at most [`TURN_WAIT`]) on `sock`, blocking.
/// Either may fail: the call then has fewer candidates. Other datagrams
/// arriving meanwhile are dropped (the call has not started: nothing else
/// is expected on the socket).
///
/// The TURN servers (the same relay over UDP, TCP, TLS, in the order of
/// [`turn_server`]) are tried as RFC 8305 tries addresses: the first at
/// once, the next one beside it once the earlier ones have been silent
/// for [`TURN_STAGGER`] or have failed, and the first allocation wins (the
/// other attempts are closed). Where UDP works its answer comes within a
/// round trip and no stream is ever opened; where UDP is blocked (a
/// corporate network) TCP, then TLS, follow within a fraction of a second
/// instead of after a full UDP timeout.
pub(super) fn gather(
    sock: &std::net::UdpSocket,
    stun: Option<SocketAddr>,
    turn: &[TurnServer],
) -> Gathered {
    let mut out = Gathered::default();
    let start = Instant::now();
    let mut binding: Option<(StunBinding, Instant)> = None;
    let mut stun_tries = 0;
    let mut stun_done = stun.is_none();
    let mut buf = [0u8; 1500];
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut untried = turn.iter();
    let mut next_start = start;
    let mut winner: Option<Attempt> = None;
    let mut turn_done = turn.is_empty();
    loop {
        let now = Instant::now();
        // STUN: a fresh request every STUN_WAIT, STUN_TRIES times.
        if let (Some(server), false) = (stun, stun_done) {
            if binding
                .as_ref()
                .is_none_or(|(_, at)| now >= *at + STUN_WAIT)
            {
                if stun_tries == STUN_TRIES {
                    tracing::warn!(%server, "the STUN server did not answer");
                    stun_done = true;
                    binding = None;
                } else if let Ok((req, bytes)) = StunBinding::new() {
                    stun_tries += 1;
                    let _ = sock.send_to(&bytes, server);
                    binding = Some((req, now));
                } else {
                    stun_done = true;
                }
            }
        }
        if !turn_done {
            if now >= start + TURN_WAIT {
                tracing::warn!("no TURN server allocated in time: no relayed candidate");
                for a in attempts.drain(..) {
                    a.close(sock, now);
                }
                turn_done = true;
            } else {
                if now >= next_start {
                    if let Some(server) = untried.next() {
                        tracing::debug!(server = %server.addr, transport = server.transport.name(), "trying a TURN server");
                        attempts.push(Attempt::start(server, now));
                        next_start = now + TURN_STAGGER;
                    }
                }
                let mut i = 0;
                while i < attempts.len() {
                    if attempts[i].poll(sock, now) {
                        i += 1;
                    } else {
                        // Failed: the next transport starts at once.
                        attempts.remove(i);
                        next_start = now;
                    }
                }
                if let Some(i) = attempts.iter().position(|a| a.client.relayed().is_some()) {
                    let won = attempts.remove(i);
                    for a in attempts.drain(..) {
                        a.close(sock, now);
                    }
                    winner = Some(won);
                    turn_done = true;
                } else if attempts.is_empty() && untried.len() == 0 {
                    tracing::warn!("no TURN server allocated: no relayed candidate");
                    turn_done = true;
                }
            }
        }
        if let Some(w) = winner.as_mut() {
            while let Some(e) = w.client.poll_event() {
                if let TurnEvent::Allocated { relayed, mapped } = e {
                    tracing::debug!(%relayed, transport = w.client.transport().name(), "TURN allocation");
                    out.mapped = out.mapped.or(mapped);
                }
            }
        }
        if stun_done && turn_done {
            break;
        }
        // Wait for the next datagram, at most until the next timer (and
        // briefly while connections are polled).
        let mut wait = std::time::Duration::from_millis(50);
        if let Some((_, at)) = &binding {
            wait = wait.min((*at + STUN_WAIT).saturating_duration_since(now));
        }
        for a in &attempts {
            if let Some(due) = a.client.poll_timeout() {
                wait = wait.min(due.saturating_duration_since(now));
            }
            if !matches!(a.reach, Reach::Udp) {
                wait = wait.min(std::time::Duration::from_millis(5));
            }
        }
        if !turn_done && untried.len() > 0 {
            wait = wait.min(next_start.saturating_duration_since(now));
        }
        if sock
            .set_read_timeout(Some(wait.max(std::time::Duration::from_millis(1))))
            .is_err()
        {
            break;
        }
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let d = buf.get(..n).unwrap_or_default();
        if let Some((req, _)) = binding.as_ref().filter(|_| Some(from) == stun) {
            if let Some(mapped) = req.mapped(d) {
                // The STUN server's view wins over the TURN server's.
                out.mapped = Some(mapped);
                stun_done = true;
                binding = None;
                continue;
            }
        }
        if let Some(a) = attempts
            .iter_mut()
            .find(|a| matches!(a.reach, Reach::Udp) && a.client.server() == from)
        {
            a.client.handle_datagram(Instant::now(), d);
        }
    }
    if stun.is_some() && out.mapped.is_none() {
        tracing::warn!("no server-reflexive candidate");
    }
    if let Some(w) = winner {
        out.relay = match w.reach {
            Reach::Stream(tcp, link) => Some((tcp, *link)),
            _ => None,
        };
        out.turn = Some(w.client);
    }
    out
}

/// Sends what a call's ICE (or its relay's deallocation) has for the
/// network before the call's session runs: datagrams on `sock`, messages
/// for a relay reached over TCP or TLS on its connection (written as far
/// as it takes them now: a lost deallocation only lets the allocation
/// expire).
pub(super) fn send_before_session(
    sock: &std::net::UdpSocket,
    relay: &mut Option<(std::net::TcpStream, StreamLink)>,
    messages: Vec<(Outbound, Vec<u8>)>,
) {
    for (to, bytes) in messages {
        match (to, relay.as_mut()) {
            (Outbound::Udp(addr), _) => {
                let _ = sock.send_to(&bytes, addr);
            }
            (Outbound::RelayStream, Some((tcp, link))) => {
                link.send(&bytes);
                write_pending(tcp, link);
            }
            (Outbound::RelayStream, None) => {}
        }
    }
}

/// The TURN relays of `creds` (the provider's answer to `POST
/// /v1/turn-credentials`) whose hosts resolve, in the order a call tries
/// them: over UDP first, then TCP, then TLS (`turns:`), the provider's
/// order kept within each. UDP first because it is TURN's native
/// transport (no head-of-line blocking of audio behind a lost segment,
/// RFC 8656 3.1); TCP and TLS are for networks that block UDP, TLS last
/// as the one a restrictive network lets through when nothing else
/// passes. A `turns:` relay is checked as SIP over TLS checks the proxy
/// (`agent::sip_tls`): by the PKG's certificate `pin` when given, else by
/// the platform's roots for the URI's host; each certificate a `turns:`
/// connection refuses for not being the pin is told to `refusals`.
/// Empty: no relay.
pub async fn turn_server(
    creds: &crate::pkg_client::TurnCredentials,
    pin: Option<[u8; 32]>,
    refusals: Option<crate::pkg_client::tls::PinRefusals>,
) -> Vec<TurnServer> {
    use crate::pkg_client::turn::{TurnScheme, TurnTransport};
    let mut found = Vec::new();
    for uri in &creds.uris {
        let rank = match (uri.scheme, uri.transport) {
            (TurnScheme::Stun, _) => continue,
            (TurnScheme::Turn, TurnTransport::Udp) => 0,
            (TurnScheme::Turn, TurnTransport::Tcp) => 1,
            (TurnScheme::Turns, _) => 2,
        };
        let addr = match uri.host.parse::<IpAddr>() {
            Ok(ip) => Some(SocketAddr::new(ip, uri.port)),
            Err(_) => tokio::net::lookup_host((uri.host.as_str(), uri.port))
                .await
                .ok()
                .and_then(|mut a| a.next()),
        };
        let Some(addr) = addr else {
            tracing::warn!(host = %uri.host, "TURN relay does not resolve");
            continue;
        };
        let transport = match rank {
            0 => ServerTransport::Udp,
            1 => ServerTransport::Tcp,
            _ => match super::sip_tls::turn_client(
                Some(&uri.host),
                addr,
                pin,
                None,
                refusals.clone(),
            ) {
                Ok(tls) => ServerTransport::Tls(tls),
                Err(error) => {
                    tracing::warn!(host = %uri.host, %error, "turns: relay skipped");
                    continue;
                }
            },
        };
        let server = TurnServer::new(
            addr,
            creds.username.clone(),
            creds.password.expose().to_string(),
        )
        .over(transport);
        found.push((rank, server));
    }
    found.sort_by_key(|(rank, _)| *rank);
    found.into_iter().map(|(_, s)| s).collect()
}
