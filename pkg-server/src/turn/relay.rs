//! The glue between the webrtc-rs `turn` server and our rules: a
//! listener socket that refuses peers before the server sees the request
//! ([`GuardedListener`]), the relay sockets of allocations that enforce
//! the peer filter and the user's bandwidth on every packet
//! ([`RelaySocket`]), the allocator that charges the user's allocation
//! quota ([`Allocator`]) and the REST credential check ([`RestAuth`]).
//!
//! Decisions:
//! - the `turn` crate's server handles the messages of one listener one
//!   after the other (`recv_from`, handle, `recv_from`), so the user of
//!   the Allocate request being handled is known to the allocator through
//!   [`Pending`], set by the listener when it hands the request over;
//! - a refused peer gets `403 Forbidden` from the listener (its
//!   CreatePermission or ChannelBind never reaches the server), and the
//!   relay socket refuses it again (a Send indication, or a permission
//!   made some other way, still cannot reach it);
//! - a refused allocation is answered `486 Allocation Quota Reached` (the
//!   server's own answer, 508, is rewritten on its way out).

use super::credentials::{check_username, SharedSecret};
use super::policy::{Direction, PeerFilter, QuotaError, Quotas, Ticket};
use async_trait::async_trait;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use stun::attributes::ATTR_XOR_PEER_ADDRESS;
use stun::error_code::{ErrorCode, ErrorCodeAttribute, CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN};
use stun::message::{
    Getter, Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST,
    METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_SEND,
};
use stun::textattrs::Username;
use tokio::net::UdpSocket;
use turn::proto::peeraddr::PeerAddress;
use webrtc_util::Conn;

type UtilResult<T> = Result<T, webrtc_util::Error>;

/// The accounts allowed to relay: enabled users of the database, reloaded
/// periodically by the service (a disabled user's credentials stop working
/// at the next reload, not at their expiry).
#[derive(Debug, Default)]
pub(crate) struct Accounts(RwLock<HashSet<String>>);

impl Accounts {
    /// Replaces the set of enabled accounts.
    pub(crate) fn replace(&self, names: HashSet<String>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = names;
    }

    /// Whether `user` is an enabled account.
    pub(crate) fn contains(&self, user: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(user)
    }
}

/// The long-term key of a REST user name: only for well-formed, unexpired
/// user names of enabled accounts, in our realm.
pub(crate) struct RestAuth {
    /// The shared secret.
    pub secret: SharedSecret,
    /// The realm the server announces.
    pub realm: String,
    /// Enabled accounts.
    pub accounts: Arc<Accounts>,
}

impl turn::auth::AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        _src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        if realm != self.realm {
            return Err(turn::Error::Other("foreign realm".into()));
        }
        let user = check_username(username, crate::http::now_unix().max(0) as u64)
            .map_err(|e| turn::Error::Other(e.to_string()))?;
        if !self.accounts.contains(user) {
            return Err(turn::Error::Other("account not allowed".into()));
        }
        let password = self.secret.password(username);
        Ok(turn::auth::generate_auth_key(username, realm, &password))
    }
}

/// What the listener knows about the request being handled: the account
/// of an Allocate request, and an allocation refused by a quota.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    user: Option<String>,
    transaction: [u8; 12],
    refused: Option<QuotaError>,
}

/// A listener socket of the TURN server with the peer filter in front.
pub(crate) struct GuardedListener {
    inner: Arc<dyn Conn + Send + Sync>,
    filter: Arc<PeerFilter>,
    pending: Arc<Mutex<Pending>>,
}

impl GuardedListener {
    /// Guards `inner`; `pending` is shared with this listener's
    /// [`Allocator`].
    pub(crate) fn new(
        inner: Arc<dyn Conn + Send + Sync>,
        filter: Arc<PeerFilter>,
        pending: Arc<Mutex<Pending>>,
    ) -> Self {
        GuardedListener {
            inner,
            filter,
            pending,
        }
    }

    /// What to do with a datagram from a client: `None` passes it to the
    /// server, `Some(answer)` drops it and sends `answer` when not empty.
    fn judge(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        // ChannelData (first two bits 01) goes to a bound, checked peer.
        if bytes.first().is_some_and(|b| b & 0xC0 == 0x40) {
            return None;
        }
        let mut m = Message::new();
        m.raw = bytes.to_vec();
        if m.decode().is_err() {
            return None; // the server answers or drops it itself
        }
        let is_req = m.typ.class == CLASS_REQUEST;
        if is_req && m.typ.method == METHOD_ALLOCATE {
            let mut u = Username::new(stun::attributes::ATTR_USERNAME, String::new());
            let user = u
                .get_from(&m)
                .ok()
                .and_then(|_| check_username(&u.text, 0).ok().map(str::to_string));
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.user = user;
            p.transaction = m.transaction_id.0;
            p.refused = None;
            return None;
        }
        let peer_checked = (is_req
            && (m.typ.method == METHOD_CREATE_PERMISSION || m.typ.method == METHOD_CHANNEL_BIND))
            || (m.typ.class == CLASS_INDICATION && m.typ.method == METHOD_SEND);
        if !peer_checked {
            return None;
        }
        let denied = peer_addresses(&m).iter().any(|ip| !self.filter.allows(*ip));
        if !denied {
            return None;
        }
        if !is_req {
            return Some(Vec::new());
        }
        Some(error_answer(&m, m.typ.method, CODE_FORBIDDEN, "Forbidden IP").unwrap_or_default())
    }

    /// The server's answer on its way out: a 508 to an Allocate that a
    /// quota refused becomes 486.
    fn rewrite(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let (transaction, refused) = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            (p.transaction, p.refused.take()?)
        };
        let mut m = Message::new();
        m.raw = bytes.to_vec();
        if m.decode().is_err()
            || m.typ != MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE)
            || m.transaction_id.0 != transaction
        {
            return None;
        }
        let code = match refused {
            QuotaError::UserAllocations => CODE_ALLOC_QUOTA_REACHED,
            _ => stun::error_code::CODE_INSUFFICIENT_CAPACITY,
        };
        error_answer(&m, METHOD_ALLOCATE, code, "Allocation Quota Reached").ok()
    }
}

/// Every XOR-PEER-ADDRESS of `m` (one that does not decode counts as
/// unspecified, which the filter refuses).
fn peer_addresses(m: &Message) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for attr in m
        .attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
    {
        let mut one = Message::new();
        one.transaction_id = m.transaction_id;
        one.add(ATTR_XOR_PEER_ADDRESS, &attr.value);
        let mut pa = PeerAddress::default();
        out.push(match pa.get_from(&one) {
            Ok(()) => pa.ip,
            Err(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        });
    }
    out
}

fn error_answer(
    m: &Message,
    method: stun::message::Method,
    code: ErrorCode,
    reason: &str,
) -> Result<Vec<u8>, stun::Error> {
    let mut out = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(m.transaction_id),
        Box::new(MessageType::new(method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason.as_bytes().to_vec(),
        }),
    ];
    out.build(&setters)?;
    Ok(out.raw)
}

#[async_trait]
impl Conn for GuardedListener {
    async fn connect(&self, addr: SocketAddr) -> UtilResult<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> UtilResult<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> UtilResult<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.inner.recv_from(buf).await?;
            match self.judge(&buf[..n]) {
                None => return Ok((n, from)),
                Some(answer) if answer.is_empty() => {}
                Some(answer) => {
                    let _ = self.inner.send_to(&answer, from).await;
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> UtilResult<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> UtilResult<usize> {
        match self.rewrite(buf) {
            Some(b) => self.inner.send_to(&b, target).await.map(|_| buf.len()),
            None => self.inner.send_to(buf, target).await,
        }
    }

    fn local_addr(&self) -> UtilResult<SocketAddr> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> UtilResult<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// The relayed transport address of one allocation: refuses denied peers
/// both ways and meters the user's bandwidth; holds the allocation's
/// quota [`Ticket`] until closed.
pub(crate) struct RelaySocket {
    socket: UdpSocket,
    filter: Arc<PeerFilter>,
    ticket: Mutex<Ticket>,
}

#[async_trait]
impl Conn for RelaySocket {
    async fn connect(&self, _addr: SocketAddr) -> UtilResult<()> {
        Err(webrtc_util::Error::Other(
            "relay sockets do not connect".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> UtilResult<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> UtilResult<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            if !self.filter.allows(from.ip()) {
                continue;
            }
            let ok = self.ticket.lock().unwrap_or_else(|p| p.into_inner()).admit(
                Direction::FromPeer,
                n,
                Instant::now(),
            );
            if ok {
                return Ok((n, from));
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> UtilResult<usize> {
        Err(webrtc_util::Error::Other(
            "relay sockets send to a peer".into(),
        ))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> UtilResult<usize> {
        if !self.filter.allows(target.ip()) {
            return Err(webrtc_util::Error::Other(format!(
                "peer {} refused by the relay's filter",
                target.ip()
            )));
        }
        let ok = self.ticket.lock().unwrap_or_else(|p| p.into_inner()).admit(
            Direction::ToPeer,
            buf.len(),
            Instant::now(),
        );
        if !ok {
            return Ok(buf.len()); // over the user's bandwidth: dropped
        }
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> UtilResult<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> UtilResult<()> {
        self.ticket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Creates the relay sockets of one listener's allocations, charging the
/// user of the Allocate request being handled.
pub(crate) struct Allocator {
    /// The address written in XOR-RELAYED-ADDRESS.
    pub relay_ip: IpAddr,
    /// The address relay sockets bind to.
    pub bind_ip: IpAddr,
    /// Peer filter.
    pub filter: Arc<PeerFilter>,
    /// Quotas shared by all listeners.
    pub quotas: Quotas,
    /// Shared with this listener's [`GuardedListener`].
    pub pending: Arc<Mutex<Pending>>,
}

#[async_trait]
impl turn::relay::RelayAddressGenerator for Allocator {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        if use_ipv4 != self.relay_ip.is_ipv4() {
            return Err(turn::Error::Other("address family not offered".into()));
        }
        let ticket = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            // Cloned, not taken: for EVEN-PORT the server first calls
            // this once to pick a port (and drops that socket), then again.
            let user = p
                .user
                .clone()
                .ok_or_else(|| turn::Error::Other("allocation without a user".into()))?;
            match self.quotas.allocate(&user, Instant::now()) {
                Ok(t) => t,
                Err(e) => {
                    // The listener rewrites the server's answer to this
                    // request (matched by its transaction id).
                    p.refused = Some(e.clone());
                    return Err(turn::Error::Other(e.to_string()));
                }
            }
        };
        let socket = UdpSocket::bind(SocketAddr::new(self.bind_ip, requested_port))
            .await
            .map_err(|e| turn::Error::Other(format!("binding a relay socket: {e}")))?;
        let port = socket
            .local_addr()
            .map_err(|e| turn::Error::Other(e.to_string()))?
            .port();
        tracing::debug!(user = ticket.user(), port, "allocation");
        Ok((
            Arc::new(RelaySocket {
                socket,
                filter: self.filter.clone(),
                ticket: Mutex::new(ticket),
            }),
            SocketAddr::new(self.relay_ip, port),
        ))
    }
}
