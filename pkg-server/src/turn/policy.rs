//! What the relay refuses, independent of sockets: peers it never relays
//! to ([`PeerFilter`]) and what one user may use ([`Quotas`]: allocations
//! and bandwidth). Time is an argument (`now: Instant`), so the token
//! buckets are tested in test time.

use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Ranges no relay may send to unless explicitly allowed: the provider's
/// own loopback and private networks, link-local, multicast, broadcast,
/// unspecified and the other special-purpose blocks of RFC 6890 that are
/// not globally reachable.
pub const DENIED_BY_DEFAULT: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Why a configuration of the filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{list}: {value:?} is not an address range (CIDR, like 10.0.0.0/8)")]
pub struct BadRange {
    /// `denied_peer_ips` or `allowed_peer_ips`.
    pub list: &'static str,
    /// The value given.
    pub value: String,
}

/// The peer address filter: an address is relayed to when it is in an
/// allowed range, or in no denied range. IPv4-mapped and NAT64
/// (`64:ff9b::/96`) IPv6 addresses are judged as the IPv4 address inside,
/// so `::ffff:127.0.0.1` is loopback.
#[derive(Debug, Clone)]
pub struct PeerFilter {
    denied: Vec<IpNet>,
    allowed: Vec<IpNet>,
}

fn parse_ranges(list: &'static str, values: &[String]) -> Result<Vec<IpNet>, BadRange> {
    values
        .iter()
        .map(|v| {
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| BadRange {
                    list,
                    value: v.clone(),
                })
        })
        .collect()
}

impl PeerFilter {
    /// The default ranges plus `denied`, with the exceptions `allowed`
    /// (CIDR strings or single addresses).
    pub fn new(denied: &[String], allowed: &[String]) -> Result<PeerFilter, BadRange> {
        let builtin: Vec<String> = DENIED_BY_DEFAULT.iter().map(|s| s.to_string()).collect();
        let mut d = parse_ranges("built-in", &builtin)?;
        d.extend(parse_ranges("denied_peer_ips", denied)?);
        Ok(PeerFilter {
            denied: d,
            allowed: parse_ranges("allowed_peer_ips", allowed)?,
        })
    }

    /// Whether the relay may exchange packets with `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        !self.denied.iter().any(|n| n.contains(&ip))
    }
}

/// IPv4-mapped and NAT64 IPv6 addresses as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let o = v6.octets();
                return IpAddr::V4(std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// Why an allocation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// The user holds `max_allocations_per_user` already.
    #[error("allocation quota of the user reached")]
    UserAllocations,
    /// The server holds `max_allocations` already.
    #[error("the relay is full")]
    ServerFull,
}

/// A direction of relayed traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the user to a peer.
    ToPeer,
    /// From a peer to the user.
    FromPeer,
}

/// A token bucket of `rate` bytes per second holding at most one second.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, rate: f64, bytes: usize, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + dt * rate).min(rate);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct UserUse {
    allocations: u32,
    to_peer: Bucket,
    from_peer: Bucket,
}

#[derive(Debug)]
struct QuotaState {
    users: HashMap<String, Arc<Mutex<UserUse>>>,
    total: u32,
}

/// Per-user allocation counts and bandwidth, shared by every listener of
/// the relay.
#[derive(Debug, Clone)]
pub struct Quotas {
    per_user: u32,
    total_max: u32,
    /// Bytes per second per user and direction.
    rate: f64,
    state: Arc<Mutex<QuotaState>>,
}

/// One granted allocation: it counts against its user until released or
/// dropped, and meters the allocation's traffic.
#[derive(Debug)]
pub struct Ticket {
    user: String,
    usage: Arc<Mutex<UserUse>>,
    quotas: Quotas,
    released: bool,
}

impl Quotas {
    /// At most `per_user` allocations per user and `total_max` on the
    /// server; `kbps` kbit/s per user and direction.
    pub fn new(per_user: u32, total_max: u32, kbps: u32) -> Quotas {
        Quotas {
            per_user,
            total_max,
            rate: f64::from(kbps) * 1000.0 / 8.0,
            state: Arc::new(Mutex::new(QuotaState {
                users: HashMap::new(),
                total: 0,
            })),
        }
    }

    /// Grants one allocation to `user` at `now`, or says which quota
    /// refuses it.
    pub fn allocate(&self, user: &str, now: Instant) -> Result<Ticket, QuotaError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.total >= self.total_max {
            return Err(QuotaError::ServerFull);
        }
        let usage = st
            .users
            .entry(user.to_string())
            .or_insert_with(|| {
                Arc::new(Mutex::new(UserUse {
                    allocations: 0,
                    to_peer: Bucket {
                        tokens: self.rate,
                        at: now,
                    },
                    from_peer: Bucket {
                        tokens: self.rate,
                        at: now,
                    },
                }))
            })
            .clone();
        {
            let mut u = usage.lock().unwrap_or_else(|p| p.into_inner());
            if u.allocations >= self.per_user {
                return Err(QuotaError::UserAllocations);
            }
            u.allocations += 1;
        }
        st.total += 1;
        Ok(Ticket {
            user: user.to_string(),
            usage,
            quotas: self.clone(),
            released: false,
        })
    }

    /// Allocations held by `user` now.
    pub fn allocations_of(&self, user: &str) -> u32 {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.users.get(user).map_or(0, |u| {
            u.lock().unwrap_or_else(|p| p.into_inner()).allocations
        })
    }

    /// Allocations on the server now.
    pub fn total(&self) -> u32 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Ticket {
    /// The user the allocation belongs to.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether `bytes` more may pass in `dir` at `now` (false: drop the
    /// packet). The user's allocations share one budget per direction.
    pub fn admit(&self, dir: Direction, bytes: usize, now: Instant) -> bool {
        let mut u = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let rate = self.quotas.rate;
        match dir {
            Direction::ToPeer => u.to_peer.take(rate, bytes, now),
            Direction::FromPeer => u.from_peer.take(rate, bytes, now),
        }
    }

    /// Gives the allocation back (idempotent; dropping does it too).
    pub fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let mut st = self.quotas.state.lock().unwrap_or_else(|p| p.into_inner());
        st.total = st.total.saturating_sub(1);
        let empty = {
            let mut u = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            u.allocations = u.allocations.saturating_sub(1);
            u.allocations == 0
        };
        if empty {
            // Forget idle users so the map does not grow with every name
            // ever seen (a later allocation starts with a full bucket:
            // at most one second of burst).
            st.users.remove(&self.user);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_and_private_networks_are_refused() {
        let f = PeerFilter::new(&[], &[]).unwrap();
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.1.1",
            "172.31.0.1",
            "192.168.1.10",
            "169.254.1.1",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:192.168.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!f.allows(ip(bad)), "{bad}");
        }
        for good in ["203.0.113.1", "8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(f.allows(ip(good)), "{good}");
        }
        let g = PeerFilter::new(&["203.0.113.0/24".into()], &["127.0.0.1".into()]).unwrap();
        assert!(g.allows(ip("127.0.0.1")));
        assert!(!g.allows(ip("127.0.0.2")));
        assert!(!g.allows(ip("203.0.113.9")));
        assert!(PeerFilter::new(&["nonsense".into()], &[]).is_err());
        assert!(PeerFilter::new(&[], &["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn allocation_quotas_per_user_and_server() {
        let now = Instant::now();
        let q = Quotas::new(2, 3, 64);
        let a1 = q.allocate("alice", now).unwrap();
        let mut a2 = q.allocate("alice", now).unwrap();
        assert_eq!(
            q.allocate("alice", now).unwrap_err(),
            QuotaError::UserAllocations
        );
        let _b1 = q.allocate("bob", now).unwrap();
        assert_eq!(
            q.allocate("carol", now).unwrap_err(),
            QuotaError::ServerFull
        );
        a2.release();
        a2.release();
        assert_eq!(q.allocations_of("alice"), 1);
        assert_eq!(q.total(), 2);
        drop(a1);
        assert_eq!(q.allocations_of("alice"), 0);
        let _c = q.allocate("carol", now).unwrap();
        assert_eq!(q.total(), 2);
    }

    #[test]
    fn bandwidth_is_metered_per_user_and_direction() {
        let t0 = Instant::now();
        // 64 kbit/s = 8000 bytes/s per direction, shared by the user's
        // allocations.
        let q = Quotas::new(4, 10, 64);
        let a = q.allocate("alice", t0).unwrap();
        let b = q.allocate("alice", t0).unwrap();
        let other = q.allocate("bob", t0).unwrap();
        assert!(a.admit(Direction::ToPeer, 5000, t0));
        assert!(!b.admit(Direction::ToPeer, 5000, t0));
        assert!(b.admit(Direction::FromPeer, 5000, t0));
        assert!(other.admit(Direction::ToPeer, 8000, t0));
        // Refills at the rate, never beyond one second.
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.admit(Direction::ToPeer, 7000, t1));
        assert!(!b.admit(Direction::ToPeer, 100, t1));
        let t2 = t1 + Duration::from_secs(60);
        assert!(!a.admit(Direction::ToPeer, 8001, t2));
        assert!(a.admit(Direction::ToPeer, 8000, t2));
        // A clock that goes back takes nothing and gives nothing.
        assert!(!a.admit(Direction::ToPeer, 1, t0));
    }
}
