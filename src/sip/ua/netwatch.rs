//! Network change detection, sans-I/O: the user agent keeps the local
//! address that routes towards its outbound proxy and compares it with
//! what the driver sees when it looks again ([`RouteProbe`]: a connected
//! UDP socket's `local_addr`, done by the driver since it is I/O). The
//! driver looks every [`NetWatch::interval`] and at once after a flow
//! failure ([`NetWatch::check_now`]).
//!
//! A change is:
//! - listening on a wildcard address: the route's source address is
//!   another one (new Wi-Fi, a renumbered LAN); nothing to rebind, but
//!   Via, Contact and SDP must name the new address;
//! - listening on one address: that address is gone from the host (the
//!   driver could not bind it any more); the socket is rebound on the
//!   address that routes towards the proxy now, same port.
//!
//! No route at all (the network is down) is not a change: the old address
//! is kept until a route comes back, and only a different one counts. A
//! new public address (`received`/`rport` of a REGISTER response) is
//! detected by the registration itself (see `UserAgent::on_register_response`).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// What the driver saw when it looked at the route towards the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteProbe {
    /// The local address that routes towards the proxy now (`None`: no
    /// route).
    pub route: Option<IpAddr>,
    /// Whether the address the SIP socket is bound to is still one of the
    /// host's (always true for a wildcard bind).
    pub bound_alive: bool,
}

/// A network change the user agent acted on; the driver rebinds when
/// `rebind` says so and drops its stream connections (they were bound to
/// the old address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteChange {
    /// The local address towards the proxy before the change, if known.
    pub old: Option<IpAddr>,
    /// The address we name in Via, Contact and SDP from now on.
    pub local: SocketAddr,
    /// Bind the SIP sockets here (a non-wildcard bind whose address is
    /// gone); `None`: the bound sockets stay.
    pub rebind: Option<SocketAddr>,
}

/// The detector: where the SIP socket is bound, the address last seen
/// towards the proxy, and when to look again.
#[derive(Debug, Clone)]
pub struct NetWatch {
    bound: SocketAddr,
    interval: Duration,
    current: Option<IpAddr>,
    next_check: Option<Instant>,
}

impl NetWatch {
    /// Watches a SIP socket bound to `bound` whose address towards the
    /// proxy is `current` now, looking again every `interval`.
    pub fn new(bound: SocketAddr, current: Option<IpAddr>, interval: Duration) -> Self {
        NetWatch {
            bound,
            interval,
            current,
            next_check: None,
        }
    }

    /// The address the SIP sockets are bound to.
    pub fn bound(&self) -> SocketAddr {
        self.bound
    }

    /// How often the route is looked up.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the driver should look next (`now + interval` after the first
    /// look; at once before it).
    pub fn due(&self, now: Instant) -> Instant {
        self.next_check.unwrap_or(now)
    }

    /// Asks for a look at once (a flow to the proxy failed).
    pub fn check_now(&mut self, now: Instant) {
        self.next_check = Some(now);
    }

    /// The driver looked at `now` and saw `probe`: the change, if it is
    /// one.
    pub fn observe(&mut self, now: Instant, probe: RouteProbe) -> Option<RouteChange> {
        self.next_check = Some(now + self.interval);
        let route = probe.route?;
        let wildcard = self.bound.ip().is_unspecified();
        if wildcard {
            if self.current == Some(route) {
                return None;
            }
            let old = self.current.replace(route);
            return Some(RouteChange {
                old,
                local: SocketAddr::new(route, self.bound.port()),
                rebind: None,
            });
        }
        if probe.bound_alive || route.is_ipv4() != self.bound.is_ipv4() {
            return None;
        }
        let old = Some(self.bound.ip());
        self.bound = SocketAddr::new(route, self.bound.port());
        self.current = Some(route);
        Some(RouteChange {
            old,
            local: self.bound,
            rebind: Some(self.bound),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn seen(route: &str) -> RouteProbe {
        RouteProbe {
            route: Some(ip(route)),
            bound_alive: true,
        }
    }

    #[test]
    fn a_wildcard_bind_changes_when_the_route_does() {
        let t0 = Instant::now();
        let every = Duration::from_secs(2);
        let mut w = NetWatch::new(
            "0.0.0.0:5062".parse().unwrap(),
            Some(ip("192.168.1.10")),
            every,
        );
        assert_eq!(w.due(t0), t0, "the first look is at once");
        assert_eq!(w.observe(t0, seen("192.168.1.10")), None);
        assert_eq!(w.due(t0), t0 + every);
        // The network went away: no route is no change, the old address stays.
        let none = RouteProbe {
            route: None,
            bound_alive: true,
        };
        assert_eq!(w.observe(t0 + every, none), None);
        // A new Wi-Fi: a new address, same port, nothing to rebind.
        let c = w.observe(t0 + every * 2, seen("10.0.0.7")).unwrap();
        assert_eq!(
            c,
            RouteChange {
                old: Some(ip("192.168.1.10")),
                local: "10.0.0.7:5062".parse().unwrap(),
                rebind: None,
            }
        );
        // Reported once.
        assert_eq!(w.observe(t0 + every * 3, seen("10.0.0.7")), None);
        // A flow failure asks for a look at once.
        w.check_now(t0 + every * 3);
        assert_eq!(w.due(t0 + every * 4), t0 + every * 3);
    }

    #[test]
    fn an_explicit_bind_is_rebound_only_when_its_address_is_gone() {
        let t0 = Instant::now();
        let every = Duration::from_secs(2);
        let bound: SocketAddr = "127.0.0.2:5062".parse().unwrap();
        let mut w = NetWatch::new(bound, Some(ip("127.0.0.2")), every);
        // The route to the proxy leaves from another address, but ours is
        // still there (an explicit choice): no change.
        assert_eq!(w.observe(t0, seen("127.0.0.1")), None);
        assert_eq!(w.bound(), bound);
        // Our address is gone: rebind where the route leaves from.
        let gone = RouteProbe {
            route: Some(ip("192.168.1.20")),
            bound_alive: false,
        };
        let c = w.observe(t0 + every, gone).unwrap();
        assert_eq!(c.old, Some(ip("127.0.0.2")));
        assert_eq!(c.local, "192.168.1.20:5062".parse().unwrap());
        assert_eq!(c.rebind, Some(c.local));
        assert_eq!(w.bound(), c.local);
        // Gone but no route yet, or only a route of the other family:
        // nothing to rebind on.
        let mut w = NetWatch::new(bound, None, every);
        let no_route = RouteProbe {
            route: None,
            bound_alive: false,
        };
        assert_eq!(w.observe(t0, no_route), None);
        let v6 = RouteProbe {
            route: Some(ip("2001:db8::1")),
            bound_alive: false,
        };
        assert_eq!(w.observe(t0, v6), None);
    }
}
