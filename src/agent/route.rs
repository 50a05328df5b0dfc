//! Which local address we name to the world for a socket bound to a
//! wildcard: the address of the interface that routes towards the peer
//! (a UDP socket connected to it tells; nothing is sent). Used for Via and
//! Contact (SIP) and for the SDP `c=` line and ICE host candidates (RTP).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The local interface address that routes towards `peer`, or `None`
/// when the system has no route (or names no address) for it.
pub(crate) fn route_towards(peer: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    std::net::UdpSocket::bind(any)
        .and_then(|s| s.connect(peer).and_then(|()| s.local_addr()))
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
}

/// The address we name for a socket bound to `bound`: itself, unless it is
/// a wildcard address; then the address of the interface that routes
/// towards `peer`, with `bound`'s port. That is never 0.0.0.0, and
/// 127.0.0.1 only when `peer` is on loopback. Without any route the bound
/// address is returned as it is (and a warning logged).
pub(crate) fn advertised_addr(bound: SocketAddr, peer: SocketAddr) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    match route_towards(peer) {
        Some(ip) => SocketAddr::new(ip, bound.port()),
        None => {
            tracing::warn!(%peer, "no route towards the peer: advertising the bound address");
            bound
        }
    }
}
