//! Discovery (pkg-api.md "Discovery and provider services"): from the
//! domain of a user's address to the PKG's URL (DNS SRV
//! `_ibephone-pkg._tcp.<domain>`, else `https://pkg.<domain>`) and to the
//! SIP proxy (the parameters' `services.sip`, else RFC 3263 on the domain:
//! NAPTR, SRV, A/AAAA).
//!
//! The rules are sans-I/O functions over records ([`order_srv`],
//! [`pkg_urls`], [`SipUri::parse`], [`sip_plan`]); the lookups go through
//! the [`Dns`] trait, implemented on a real resolver by [`SystemDns`]
//! (hickory-resolver, the system's configuration or a given nameserver
//! address, so tests can point it at a loopback DNS server).
//!
//! Decisions:
//! - SRV order is RFC 2782: lowest priority first; within one priority a
//!   weighted random draw (zero weights first in the running sum, so they
//!   are picked only with a small chance); the random source is an input;
//! - an SRV answer whose only target is `.` means "no such service here":
//!   no fallback is tried for it;
//! - the PKG's SRV answer gives `https://<target>:<port>` URLs in that
//!   order; without SRV records, `https://pkg.<domain>` (port 443);
//! - RFC 3263 for a SIP URI: a numeric host or an explicit port skips
//!   NAPTR and SRV; a `transport` parameter skips NAPTR; otherwise NAPTR
//!   records of services `SIPS+D2T`, `SIP+D2T`, `SIP+D2U` (by order, then
//!   preference) name the SRV owners; without NAPTR records the SRV owners
//!   `_sips._tcp`, `_sip._tcp`, `_sip._udp` are tried in that order (only
//!   `_sips._tcp` for a `sips:` URI); without any, A/AAAA of the host on
//!   5061 (TLS) or 5060 (UDP);
//! - names from DNS are checked (letters, digits, `-`, `.`; at most 253
//!   characters) before they are used in a URL or a query.

use std::net::{IpAddr, SocketAddr};

/// The SRV owner of the PKG service.
pub const PKG_SRV_PREFIX: &str = "_ibephone-pkg._tcp.";

/// Discovery failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The address has no `@domain`, or the domain is not a host name.
    #[error("{0:?} is not an address such as alice@atlanta.com")]
    BadAddress(String),
    /// A SIP URI that cannot be used.
    #[error("SIP URI {0:?} cannot be used: {1}")]
    BadUri(String, &'static str),
    /// DNS failed (not: "no such record", which is an empty answer).
    #[error("DNS lookup of {name} failed: {why}")]
    Dns {
        /// The name asked for.
        name: String,
        /// What the resolver said.
        why: String,
    },
    /// DNS says the service is not offered (SRV target `.`), or nothing
    /// resolved to an address.
    #[error("no {service} found for {domain}")]
    NotFound {
        /// What was looked for.
        service: &'static str,
        /// The domain.
        domain: String,
    },
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is preferred.
    pub priority: u16,
    /// Relative weight within a priority.
    pub weight: u16,
    /// Port.
    pub port: u16,
    /// Target host name (without the trailing dot).
    pub target: String,
}

/// One NAPTR record (only what RFC 3263 needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaptrRecord {
    /// Lower first.
    pub order: u16,
    /// Lower first within an order.
    pub preference: u16,
    /// Flags (`s` for SRV).
    pub flags: String,
    /// Service (`SIPS+D2T`, `SIP+D2T`, `SIP+D2U`).
    pub service: String,
    /// Replacement: the SRV owner name.
    pub replacement: String,
}

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SipTransport {
    /// TLS over TCP (`sips:` or `transport=tls`).
    Tls,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl SipTransport {
    /// Default port (RFC 3261 19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            SipTransport::Tls => 5061,
            SipTransport::Tcp | SipTransport::Udp => 5060,
        }
    }

    fn srv_prefix(self) -> &'static str {
        match self {
            SipTransport::Tls => "_sips._tcp.",
            SipTransport::Tcp => "_sip._tcp.",
            SipTransport::Udp => "_sip._udp.",
        }
    }

    fn naptr_service(self) -> &'static str {
        match self {
            SipTransport::Tls => "SIPS+D2T",
            SipTransport::Tcp => "SIP+D2T",
            SipTransport::Udp => "SIP+D2U",
        }
    }
}

impl From<SipTransport> for crate::sip::Transport {
    fn from(t: SipTransport) -> Self {
        match t {
            SipTransport::Tls => crate::sip::Transport::Tls,
            SipTransport::Tcp => crate::sip::Transport::Tcp,
            SipTransport::Udp => crate::sip::Transport::Udp,
        }
    }
}

impl From<crate::sip::Transport> for SipTransport {
    fn from(t: crate::sip::Transport) -> Self {
        match t {
            crate::sip::Transport::Tls => SipTransport::Tls,
            crate::sip::Transport::Tcp => SipTransport::Tcp,
            crate::sip::Transport::Udp => SipTransport::Udp,
        }
    }
}

/// A resolved SIP next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipTarget {
    /// Transport to use.
    pub transport: SipTransport,
    /// Address.
    pub addr: SocketAddr,
}

impl From<SipTarget> for crate::sip::Dest {
    fn from(t: SipTarget) -> Self {
        crate::sip::Dest {
            addr: t.addr,
            transport: t.transport.into(),
        }
    }
}

impl From<crate::sip::Dest> for SipTarget {
    fn from(d: crate::sip::Dest) -> Self {
        SipTarget {
            transport: d.transport.into(),
            addr: d.addr,
        }
    }
}

/// The targets to fall back on once `chosen` stops answering (RFC 3263
/// 4.3): those after it in `targets`' order, then those before it, each
/// once and never `chosen` itself.
pub fn fallbacks_after(targets: &[SipTarget], chosen: SipTarget) -> Vec<SipTarget> {
    let at = targets.iter().position(|t| *t == chosen).unwrap_or(0);
    let mut out: Vec<SipTarget> = Vec::new();
    for t in targets.iter().skip(at).chain(targets.iter().take(at)) {
        if *t != chosen && !out.contains(t) {
            out.push(*t);
        }
    }
    out
}

/// RFC 8305 section 5's Connection Attempt Delay: the next address is
/// tried this long after the previous attempt began.
pub const CONNECTION_ATTEMPT_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

/// How long a UDP target is given to answer the STUN probe of
/// [`first_reachable`] (its request is sent again every
/// [`UDP_PROBE_RETRANSMIT`]); shorter than a stream target's connect
/// timeout, since a proxy that does not speak STUN on its SIP port (a
/// Kamailio without the `stun` module) costs this much when it is the
/// only kind of target there is.
pub const UDP_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Interval between the STUN probe's retransmissions to a UDP target.
pub const UDP_PROBE_RETRANSMIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Which of `targets` (in RFC 3263 order, IPv6 before IPv4 within a host)
/// to use, tried the way of RFC 8305 ("Happy Eyeballs"): each target in
/// order, each `delay` after the previous began; the index of the first
/// that answers. A stream target (TLS, TCP) answers when a TCP connection
/// to it completes within `timeout`; a UDP target when it answers a STUN
/// binding request on its SIP port (RFC 5626 8.4: an outbound edge proxy
/// answers STUN there) within `timeout` or [`UDP_PROBE_TIMEOUT`],
/// whichever is shorter. So an address that does not answer (an AAAA
/// record of a host without IPv6 reachability, a dead server of the
/// provider's list) costs `delay`, not a registration. When nothing
/// answers, the first UDP target (a proxy may well take SIP over UDP
/// without answering STUN), else `None`. The probe connections and
/// sockets are closed at once.
pub async fn first_reachable(
    targets: &[SipTarget],
    delay: std::time::Duration,
    timeout: std::time::Duration,
) -> Option<usize> {
    let mut attempts = tokio::task::JoinSet::new();
    for (i, t) in targets.iter().enumerate() {
        let wait = delay.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
        let (addr, transport) = (t.addr, t.transport);
        attempts.spawn(async move {
            tokio::time::sleep(wait).await;
            let answered = match transport {
                SipTransport::Udp => udp_answers(addr, timeout.min(UDP_PROBE_TIMEOUT)).await,
                SipTransport::Tls | SipTransport::Tcp => tcp_answers(addr, timeout).await,
            };
            answered.then_some(i)
        });
    }
    while let Some(done) = attempts.join_next().await {
        if let Ok(Some(i)) = done {
            return Some(i);
        }
    }
    targets
        .iter()
        .position(|t| t.transport == SipTransport::Udp)
}

/// Whether a TCP connection to `addr` completes within `timeout`.
async fn tcp_answers(addr: SocketAddr, timeout: std::time::Duration) -> bool {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::info!(%addr, error = %e, "SIP proxy address does not answer");
            false
        }
        Err(_) => {
            tracing::info!(%addr, "SIP proxy address timed out");
            false
        }
    }
}

/// Whether `addr` answers a STUN binding request within `timeout` (the
/// request sent again every [`UDP_PROBE_RETRANSMIT`]); only the success
/// answer to this request counts. The socket is connected to `addr`, so
/// only `addr` is heard and an ICMP "port unreachable" ends the probe at
/// once.
async fn udp_answers(addr: SocketAddr, timeout: std::time::Duration) -> bool {
    let probe = async {
        let local: SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(local).await.ok()?;
        socket.connect(addr).await.ok()?;
        let (request, bytes) = crate::sip::stun::BindingRequest::new().ok()?;
        let mut buf = [0u8; 1500];
        loop {
            socket.send(&bytes).await.ok()?;
            let until = tokio::time::Instant::now() + UDP_PROBE_RETRANSMIT;
            while let Ok(got) = tokio::time::timeout_at(until, socket.recv(&mut buf)).await {
                let n = got.ok()?;
                if buf.get(..n).is_some_and(|b| request.mapped(b).is_some()) {
                    return Some(());
                }
            }
        }
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Some(())) => true,
        _ => {
            tracing::info!(%addr, "SIP proxy address (UDP) does not answer STUN");
            false
        }
    }
}

/// The SIP next hop to use among `targets` (RFC 3263 order): a single
/// target as it is; else the first that answers ([`first_reachable`],
/// RFC 8305 spacing, `timeout` per stream attempt); when none answers,
/// the first target, so that the registration says why. `None` only for
/// an empty list. The wizard and the phone's own start both choose
/// through this one function.
pub async fn choose_sip_target(
    targets: &[SipTarget],
    timeout: std::time::Duration,
) -> Option<SipTarget> {
    if targets.len() <= 1 {
        return targets.first().copied();
    }
    let pick = first_reachable(targets, CONNECTION_ATTEMPT_DELAY, timeout)
        .await
        .unwrap_or(0);
    let chosen = targets.get(pick).or(targets.first()).copied();
    if let Some(t) = chosen.filter(|_| pick > 0) {
        tracing::info!(proxy = %t.addr, "SIP proxy: first address that answered");
    }
    chosen
}

/// The DNS lookups discovery needs. An empty answer (NXDOMAIN, no
/// records) is `Ok(vec![])`; only failures are errors.
pub trait Dns {
    /// SRV records of `name`.
    fn srv(
        &self,
        name: &str,
    ) -> impl std::future::Future<Output = Result<Vec<SrvRecord>, DiscoveryError>> + Send;
    /// NAPTR records of `name`.
    fn naptr(
        &self,
        name: &str,
    ) -> impl std::future::Future<Output = Result<Vec<NaptrRecord>, DiscoveryError>> + Send;
    /// A and AAAA records of `name` (IPv6 first, then IPv4).
    fn ips(
        &self,
        name: &str,
    ) -> impl std::future::Future<Output = Result<Vec<IpAddr>, DiscoveryError>> + Send;
}

/// Whether `name` is a plausible DNS host name.
pub fn valid_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The domain of an address (`alice@atlanta.com`, `sip:alice@atlanta.com`),
/// lower-cased.
pub fn domain_of(address: &str) -> Result<String, DiscoveryError> {
    let a = address.trim();
    let a = a
        .strip_prefix("sips:")
        .or_else(|| a.strip_prefix("sip:"))
        .unwrap_or(a);
    let bad = || DiscoveryError::BadAddress(address.chars().take(100).collect());
    let (user, domain) = a.rsplit_once('@').ok_or_else(bad)?;
    let domain = domain.to_ascii_lowercase();
    if user.is_empty() || domain.contains('_') || !valid_host_name(&domain) {
        return Err(bad());
    }
    Ok(domain)
}

/// RFC 2782 order of `records`: by priority, and within a priority by a
/// weighted draw where `rand(n)` returns a number in `0..=n`.
pub fn order_srv(mut records: Vec<SrvRecord>, mut rand: impl FnMut(u32) -> u32) -> Vec<SrvRecord> {
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let p = records[0].priority;
        let end = records.iter().take_while(|r| r.priority == p).count();
        let mut group: Vec<SrvRecord> = records.drain(..end).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = rand(total).min(total);
            let mut running = 0u32;
            let mut idx = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                running += u32::from(r.weight);
                if running >= pick {
                    idx = i;
                    break;
                }
            }
            out.push(group.remove(idx));
        }
    }
    out
}

/// A random number in `0..=n` from the OS (0 when it has none).
pub fn os_rand(n: u32) -> u32 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0;
    }
    u32::from_le_bytes(b) % n.saturating_add(1).max(1)
}

/// True when an SRV answer says the service is not offered (one record,
/// target `.`).
fn srv_says_none(records: &[SrvRecord]) -> bool {
    records.len() == 1 && (records[0].target.is_empty() || records[0].target == ".")
}

/// The PKG URLs to try for `domain` given its SRV answer (already
/// ordered): `https://target:port` each, or `https://pkg.<domain>` when
/// there is none. Targets that are not host names are skipped.
pub fn pkg_urls(domain: &str, srv: &[SrvRecord]) -> Result<Vec<String>, DiscoveryError> {
    if srv_says_none(srv) {
        return Err(DiscoveryError::NotFound {
            service: "PKG",
            domain: domain.to_string(),
        });
    }
    let urls: Vec<String> = srv
        .iter()
        .filter(|r| valid_host_name(&r.target))
        .map(|r| format!("https://{}:{}", r.target.trim_end_matches('.'), r.port))
        .collect();
    if urls.is_empty() {
        Ok(vec![format!("https://pkg.{domain}")])
    } else {
        Ok(urls)
    }
}

/// Finds the PKG of the domain of `address`: its URLs in order of
/// preference.
pub async fn discover_pkg(dns: &impl Dns, address: &str) -> Result<Vec<String>, DiscoveryError> {
    let domain = domain_of(address)?;
    let srv = dns.srv(&format!("{PKG_SRV_PREFIX}{domain}")).await?;
    pkg_urls(&domain, &order_srv(srv, os_rand))
}

/// The parts of a SIP URI that RFC 3263 looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:` scheme.
    pub secure: bool,
    /// Host name or address literal (no brackets).
    pub host: String,
    /// Explicit port.
    pub port: Option<u16>,
    /// `transport` parameter.
    pub transport: Option<SipTransport>,
}

impl SipUri {
    /// Parses `sip:host[:port][;params]` or `sips:...` (a user part is
    /// allowed and ignored).
    pub fn parse(uri: &str) -> Result<SipUri, DiscoveryError> {
        let bad = |why| DiscoveryError::BadUri(uri.chars().take(200).collect(), why);
        let u = uri.trim();
        let (secure, rest) = if let Some(r) = u.strip_prefix("sips:") {
            (true, r)
        } else if let Some(r) = u.strip_prefix("sip:") {
            (false, r)
        } else {
            return Err(bad("not a sip: or sips: URI"));
        };
        let mut parts = rest.split(';');
        let hostport = parts.next().unwrap_or("");
        let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse().map_err(|_| bad("bad port"))?),
                None if after.is_empty() => None,
                None => return Err(bad("junk after ]")),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse().map_err(|_| bad("bad port"))?)),
                None => (hostport.to_string(), None),
            }
        };
        if host.parse::<IpAddr>().is_err() && (host.contains('_') || !valid_host_name(&host)) {
            return Err(bad("bad host"));
        }
        let mut transport = None;
        for p in parts {
            if let Some(t) = p.trim().strip_prefix("transport=") {
                transport = Some(match t.to_ascii_lowercase().as_str() {
                    "tls" => SipTransport::Tls,
                    "tcp" if secure => SipTransport::Tls,
                    "tcp" => SipTransport::Tcp,
                    "udp" if secure => return Err(bad("sips: over UDP")),
                    "udp" => SipTransport::Udp,
                    _ => return Err(bad("unknown transport")),
                });
            }
        }
        Ok(SipUri {
            secure,
            host: host.to_ascii_lowercase(),
            port,
            transport,
        })
    }

    /// The transports this URI allows, in RFC 3263's order of preference.
    fn transports(&self) -> Vec<SipTransport> {
        match (self.transport, self.secure) {
            (Some(t), _) => vec![t],
            (None, true) => vec![SipTransport::Tls],
            (None, false) => vec![SipTransport::Tls, SipTransport::Tcp, SipTransport::Udp],
        }
    }
}

/// The SRV owner names to look up for `uri` given its NAPTR answer, in
/// order, with their transports (RFC 3263 4.1). Empty when the URI needs
/// no SRV lookup (numeric host or explicit port).
pub fn sip_plan(uri: &SipUri, naptr: &[NaptrRecord]) -> Vec<(SipTransport, String)> {
    if uri.port.is_some() || uri.host.parse::<IpAddr>().is_ok() {
        return Vec::new();
    }
    let allowed = uri.transports();
    let mut usable: Vec<(&NaptrRecord, SipTransport)> = naptr
        .iter()
        .filter(|n| n.flags.eq_ignore_ascii_case("s") && valid_host_name(&n.replacement))
        .filter_map(|n| {
            allowed
                .iter()
                .find(|t| n.service.eq_ignore_ascii_case(t.naptr_service()))
                .map(|t| (n, *t))
        })
        .collect();
    if uri.transport.is_none() && !usable.is_empty() {
        usable.sort_by_key(|(n, _)| (n.order, n.preference));
        return usable
            .into_iter()
            .map(|(n, t)| (t, n.replacement.trim_end_matches('.').to_string()))
            .collect();
    }
    allowed
        .into_iter()
        .map(|t| (t, format!("{}{}", t.srv_prefix(), uri.host)))
        .collect()
}

/// The default transport of a URI resolved without SRV (RFC 3263 4.1:
/// UDP for `sip:`, TLS for `sips:`, or its `transport` parameter).
fn plain_transport(uri: &SipUri) -> SipTransport {
    uri.transport.unwrap_or(if uri.secure {
        SipTransport::Tls
    } else {
        SipTransport::Udp
    })
}

/// Resolves one SIP URI (RFC 3263) to next hops in order.
pub async fn resolve_sip_uri(
    dns: &impl Dns,
    uri: &SipUri,
) -> Result<Vec<SipTarget>, DiscoveryError> {
    let transport = plain_transport(uri);
    if let Ok(ip) = uri.host.parse::<IpAddr>() {
        let port = uri.port.unwrap_or(transport.default_port());
        return Ok(vec![SipTarget {
            transport,
            addr: SocketAddr::new(ip, port),
        }]);
    }
    let mut out = Vec::new();
    if uri.port.is_none() {
        let naptr = if uri.transport.is_none() {
            dns.naptr(&uri.host).await?
        } else {
            Vec::new()
        };
        for (t, owner) in sip_plan(uri, &naptr) {
            let srv = dns.srv(&owner).await?;
            if srv_says_none(&srv) {
                continue;
            }
            for r in order_srv(srv, os_rand) {
                if !valid_host_name(&r.target) {
                    continue;
                }
                for ip in dns.ips(r.target.trim_end_matches('.')).await? {
                    out.push(SipTarget {
                        transport: t,
                        addr: SocketAddr::new(ip, r.port),
                    });
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
    let port = uri.port.unwrap_or(transport.default_port());
    for ip in dns.ips(&uri.host).await? {
        out.push(SipTarget {
            transport,
            addr: SocketAddr::new(ip, port),
        });
    }
    if out.is_empty() {
        return Err(DiscoveryError::NotFound {
            service: "SIP proxy",
            domain: uri.host.clone(),
        });
    }
    Ok(out)
}

/// The SIP proxy of `domain`: each of `services_sip` (the parameters'
/// `services.sip`, in order) resolved with RFC 3263, or RFC 3263 on the
/// domain itself when there are none. URIs that cannot be used are
/// skipped; an error only when nothing resolved.
pub async fn discover_sip(
    dns: &impl Dns,
    domain: &str,
    services_sip: &[String],
) -> Result<Vec<SipTarget>, DiscoveryError> {
    let uris: Vec<String> = if services_sip.is_empty() {
        vec![format!("sip:{domain}")]
    } else {
        services_sip.to_vec()
    };
    let mut out = Vec::new();
    let mut last = None;
    for u in &uris {
        match SipUri::parse(u) {
            Ok(uri) => match resolve_sip_uri(dns, &uri).await {
                Ok(t) => out.extend(t),
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
    }
    if out.is_empty() {
        return Err(last.unwrap_or(DiscoveryError::NotFound {
            service: "SIP proxy",
            domain: domain.to_string(),
        }));
    }
    Ok(out)
}

/// [`Dns`] on hickory-resolver: the system's resolver configuration, or
/// one given nameserver (address and port, UDP and TCP).
#[derive(Clone)]
pub struct SystemDns {
    resolver: hickory_resolver::TokioResolver,
}

impl std::fmt::Debug for SystemDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemDns")
    }
}

impl SystemDns {
    /// The system's configuration (`/etc/resolv.conf` on Unix).
    pub fn system() -> Result<SystemDns, DiscoveryError> {
        let builder =
            hickory_resolver::TokioResolver::builder_tokio().map_err(|e| DiscoveryError::Dns {
                name: "system configuration".into(),
                why: e.to_string(),
            })?;
        Ok(SystemDns {
            resolver: builder.build().map_err(|e| DiscoveryError::Dns {
                name: "system configuration".into(),
                why: e.to_string(),
            })?,
        })
    }

    /// Only the nameserver at `server` (for tests and the NAT lab: a
    /// loopback DNS server on its own port).
    pub fn nameserver(server: SocketAddr) -> Result<SystemDns, DiscoveryError> {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
        let mut udp = ConnectionConfig::udp();
        udp.port = server.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = server.port();
        let ns = NameServerConfig::new(server.ip(), true, vec![udp, tcp]);
        let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
        let builder = hickory_resolver::TokioResolver::builder_with_config(
            config,
            hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
        );
        Ok(SystemDns {
            resolver: builder.build().map_err(|e| DiscoveryError::Dns {
                name: server.to_string(),
                why: e.to_string(),
            })?,
        })
    }

    async fn lookup(
        &self,
        name: &str,
        rtype: hickory_resolver::proto::rr::RecordType,
    ) -> Result<Vec<hickory_resolver::proto::rr::RData>, DiscoveryError> {
        if !valid_host_name(name) {
            return Err(DiscoveryError::Dns {
                name: name.chars().take(100).collect(),
                why: "not a DNS name".into(),
            });
        }
        // Fully qualified: no search domains appended.
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver.lookup(fqdn.as_str(), rtype).await {
            Ok(l) => Ok(l.answers().iter().map(|r| r.data.clone()).collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(DiscoveryError::Dns {
                name: name.to_string(),
                why: e.to_string(),
            }),
        }
    }
}

fn name_text(n: &hickory_resolver::proto::rr::Name) -> String {
    n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

impl Dns for SystemDns {
    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DiscoveryError> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        Ok(self
            .lookup(name, RecordType::SRV)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::SRV(s) => Some(SrvRecord {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: name_text(&s.target),
                }),
                _ => None,
            })
            .collect())
    }

    async fn naptr(&self, name: &str) -> Result<Vec<NaptrRecord>, DiscoveryError> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        Ok(self
            .lookup(name, RecordType::NAPTR)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::NAPTR(n) => Some(NaptrRecord {
                    order: n.order,
                    preference: n.preference,
                    flags: String::from_utf8_lossy(&n.flags).into_owned(),
                    service: String::from_utf8_lossy(&n.services).into_owned(),
                    replacement: name_text(&n.replacement),
                }),
                _ => None,
            })
            .collect())
    }

    async fn ips(&self, name: &str) -> Result<Vec<IpAddr>, DiscoveryError> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        // A first: a negative AAAA answer must not hide the A records.
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            for d in self.lookup(name, rtype).await? {
                match d {
                    RData::AAAA(a) => v6.push(IpAddr::V6(a.0)),
                    RData::A(a) => v4.push(IpAddr::V4(a.0)),
                    _ => {}
                }
            }
        }
        v6.extend(v4);
        Ok(v6)
    }
}

/// The resolver of discovery: only the nameserver at `IBEPHONE_DNS`
/// (`ip:port`, for test labs with their own DNS server) when that is set,
/// else the system's configuration.
pub fn dns_from_env() -> Result<SystemDns, DiscoveryError> {
    match std::env::var("IBEPHONE_DNS")
        .ok()
        .and_then(|v| v.parse::<SocketAddr>().ok())
    {
        Some(server) => SystemDns::nameserver(server),
        None => SystemDns::system(),
    }
}

/// A PKG client of `url` whose host name is resolved by `dns` (an address
/// literal, or a name `dns` does not resolve, is left to the system).
pub async fn client_for(
    dns: &SystemDns,
    url: &str,
    pin: Option<[u8; 32]>,
) -> Result<super::PkgClient, super::PkgClientError> {
    let client = super::PkgClient::new(url, pin)?;
    let ips = host_addresses(dns, client.host()).await;
    Ok(client.with_addresses(&ips))
}

/// The addresses of a PKG URL's `host` through `dns`; empty for an
/// address literal or when the lookup finds nothing (the client then
/// resolves the host itself).
pub async fn host_addresses(dns: &SystemDns, host: &str) -> Vec<IpAddr> {
    let host = host.trim_matches(['[', ']']);
    if host.parse::<IpAddr>().is_ok() {
        return Vec::new();
    }
    dns.ips(host).await.unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn target(port: u16) -> SipTarget {
        SipTarget {
            transport: SipTransport::Udp,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    #[test]
    fn fallbacks_follow_the_chosen_target_then_wrap() {
        let list = [target(1), target(2), target(3), target(2)];
        let ports = |v: Vec<SipTarget>| v.iter().map(|t| t.addr.port()).collect::<Vec<_>>();
        assert_eq!(ports(fallbacks_after(&list, target(1))), [2, 3]);
        assert_eq!(ports(fallbacks_after(&list, target(2))), [3, 1]);
        assert_eq!(ports(fallbacks_after(&list, target(3))), [2, 1]);
        // A target not in the list (a configured one): all of the list.
        assert_eq!(ports(fallbacks_after(&list, target(9))), [1, 2, 3]);
        assert!(fallbacks_after(&[target(1)], target(1)).is_empty());
    }

    #[test]
    fn srv_order_is_priority_then_weight() {
        let records = vec![
            srv(20, 0, 1, "c.example.invalid"),
            srv(10, 10, 2, "a.example.invalid"),
            srv(10, 90, 3, "b.example.invalid"),
        ];
        // A draw of 0 picks the first in the running sum (a, weight 10),
        // then within what is left b; priority 20 always last.
        let order: Vec<u16> = order_srv(records.clone(), |_| 0)
            .iter()
            .map(|r| r.port)
            .collect();
        assert_eq!(order, [2, 3, 1]);
        // A draw at the top of the sum picks the heavy one first.
        let order: Vec<u16> = order_srv(records.clone(), |n| n)
            .iter()
            .map(|r| r.port)
            .collect();
        assert_eq!(order, [3, 2, 1]);
        // Over many OS draws the 90-weight record leads about 90% of the time.
        let first_b = (0..2000)
            .filter(|_| order_srv(records.clone(), os_rand)[0].port == 3)
            .count();
        assert!((1600..=1950).contains(&first_b), "{first_b}");
        // Zero weights come first in the running sum, so with weight
        // elsewhere they are picked only by a draw of 0.
        let zero = vec![
            srv(1, 5, 7, "w.example.invalid"),
            srv(1, 0, 8, "z.example.invalid"),
        ];
        assert_eq!(order_srv(zero.clone(), |_| 0)[0].port, 8);
        assert_eq!(order_srv(zero, |n| n)[0].port, 7);
    }

    #[test]
    fn pkg_urls_from_srv_or_the_fallback() {
        let d = "atlanta.invalid";
        assert_eq!(pkg_urls(d, &[]).unwrap(), ["https://pkg.atlanta.invalid"]);
        assert_eq!(
            pkg_urls(d, &[srv(1, 1, 8443, "keys.atlanta.invalid.")]).unwrap(),
            ["https://keys.atlanta.invalid:8443"]
        );
        assert!(matches!(
            pkg_urls(d, &[srv(0, 0, 0, ".")]),
            Err(DiscoveryError::NotFound { .. })
        ));
        // A target that is not a host name is never put in a URL.
        assert_eq!(
            pkg_urls(d, &[srv(1, 1, 1, "evil/path?x")]).unwrap(),
            ["https://pkg.atlanta.invalid"]
        );
        assert_eq!(
            domain_of("Alice@Atlanta.Invalid").unwrap(),
            "atlanta.invalid"
        );
        assert_eq!(
            domain_of("sip:bob@biloxi.invalid").unwrap(),
            "biloxi.invalid"
        );
        for bad in [
            "alice",
            "@atlanta.invalid",
            "alice@",
            "a@b c",
            "a@-x.invalid",
        ] {
            assert!(domain_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sip_uris_parse_and_plan() {
        let u = SipUri::parse("sips:sip.atlanta.invalid").unwrap();
        assert!(u.secure && u.port.is_none() && u.transport.is_none());
        let u = SipUri::parse("sip:sip.atlanta.invalid;transport=tcp").unwrap();
        assert_eq!(u.transport, Some(SipTransport::Tcp));
        let u = SipUri::parse("sip:[::1]:5080").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", Some(5080)));
        for bad in [
            "http://x",
            "sip:",
            "sips:x.invalid;transport=udp",
            "sip:a b",
            "sip:x:99999",
        ] {
            assert!(SipUri::parse(bad).is_err(), "{bad}");
        }
        // Without NAPTR: SRV owners in order TLS, TCP, UDP.
        let plain = SipUri::parse("sip:atlanta.invalid").unwrap();
        let owners: Vec<String> = sip_plan(&plain, &[]).into_iter().map(|(_, o)| o).collect();
        assert_eq!(
            owners,
            [
                "_sips._tcp.atlanta.invalid",
                "_sip._tcp.atlanta.invalid",
                "_sip._udp.atlanta.invalid"
            ]
        );
        // NAPTR decides, by order then preference; unknown services ignored.
        let n = |order, preference, service: &str, r: &str| NaptrRecord {
            order,
            preference,
            flags: "s".into(),
            service: service.into(),
            replacement: r.into(),
        };
        let naptr = [
            n(20, 10, "SIP+D2U", "_sip._udp.x.invalid"),
            n(10, 20, "SIP+D2T", "_sip._tcp.x.invalid"),
            n(10, 10, "SIPS+D2T", "_sips._tcp.x.invalid"),
            n(5, 1, "E2U+sip", "nope.invalid"),
        ];
        let plan = sip_plan(&plain, &naptr);
        assert_eq!(
            plan,
            [
                (SipTransport::Tls, "_sips._tcp.x.invalid".to_string()),
                (SipTransport::Tcp, "_sip._tcp.x.invalid".to_string()),
                (SipTransport::Udp, "_sip._udp.x.invalid".to_string())
            ]
        );
        // sips: never falls to TCP or UDP; an explicit port skips SRV.
        let secure = SipUri::parse("sips:atlanta.invalid").unwrap();
        assert_eq!(sip_plan(&secure, &naptr).len(), 1);
        assert!(sip_plan(&SipUri::parse("sip:atlanta.invalid:5070").unwrap(), &naptr).is_empty());
    }

    /// A fake DNS of fixed answers.
    #[derive(Default)]
    struct FakeDns {
        srv: HashMap<String, Vec<SrvRecord>>,
        naptr: HashMap<String, Vec<NaptrRecord>>,
        ips: HashMap<String, Vec<IpAddr>>,
    }

    impl Dns for FakeDns {
        async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DiscoveryError> {
            Ok(self.srv.get(name).cloned().unwrap_or_default())
        }
        async fn naptr(&self, name: &str) -> Result<Vec<NaptrRecord>, DiscoveryError> {
            Ok(self.naptr.get(name).cloned().unwrap_or_default())
        }
        async fn ips(&self, name: &str) -> Result<Vec<IpAddr>, DiscoveryError> {
            Ok(self.ips.get(name).cloned().unwrap_or_default())
        }
    }

    fn tls(addr: SocketAddr) -> SipTarget {
        SipTarget {
            transport: SipTransport::Tls,
            addr,
        }
    }

    /// A loopback port nothing listens on (refuses connections).
    fn closed_port() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn first_reachable_passes_an_address_that_refuses() {
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let targets = [tls(closed_port()), tls(open.local_addr().unwrap())];
        let d = std::time::Duration::from_secs(2);
        assert_eq!(
            first_reachable(&targets, CONNECTION_ATTEMPT_DELAY, d).await,
            Some(1)
        );
    }

    #[tokio::test]
    async fn first_reachable_keeps_the_order_when_all_answer() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let targets = [tls(a.local_addr().unwrap()), tls(b.local_addr().unwrap())];
        let d = std::time::Duration::from_secs(2);
        assert_eq!(
            first_reachable(&targets, CONNECTION_ATTEMPT_DELAY, d).await,
            Some(0)
        );
    }

    #[tokio::test]
    async fn first_reachable_falls_back_to_udp_then_none() {
        let udp = SipTarget {
            transport: SipTransport::Udp,
            addr: closed_port(),
        };
        let d = std::time::Duration::from_secs(2);
        let delay = CONNECTION_ATTEMPT_DELAY;
        assert_eq!(
            first_reachable(&[tls(closed_port()), udp], delay, d).await,
            Some(1)
        );
        assert_eq!(first_reachable(&[tls(closed_port())], delay, d).await, None);
        assert_eq!(first_reachable(&[], delay, d).await, None);
    }

    fn udp(addr: SocketAddr) -> SipTarget {
        SipTarget {
            transport: SipTransport::Udp,
            addr,
        }
    }

    /// A UDP "proxy" on the loopback that answers STUN binding requests
    /// the way the embedded proxy does on its SIP port.
    async fn stun_answerer() -> SocketAddr {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                if let Some(answer) = crate::sip::stun::binding_success(&buf[..n], from) {
                    let _ = s.send_to(&answer, from).await;
                }
            }
        });
        addr
    }

    /// A UDP socket that takes datagrams and never answers (a SIP server
    /// that is down behind a firewall dropping, not refusing).
    fn udp_black_hole() -> (std::net::UdpSocket, SocketAddr) {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = s.local_addr().unwrap();
        (s, a)
    }

    /// The provider's list in RFC 3263 order, the first entry dead: the
    /// wizard and the phone both go on to the second, over TLS and over
    /// UDP; a single target is taken as it is, with no probe.
    #[tokio::test]
    async fn the_next_sip_target_is_chosen_when_the_first_does_not_answer() {
        let d = std::time::Duration::from_secs(2);
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let second = tls(open.local_addr().unwrap());
        assert_eq!(
            choose_sip_target(&[tls(closed_port()), second], d).await,
            Some(second)
        );
        // UDP: the first is silent (no STUN answer at all), the second
        // answers; and one refusing (ICMP) does not cost the timeout.
        let (_hole, silent) = udp_black_hole();
        let alive = udp(stun_answerer().await);
        assert_eq!(
            choose_sip_target(&[udp(silent), alive], d).await,
            Some(alive)
        );
        assert_eq!(
            first_reachable(&[udp(closed_port()), alive], CONNECTION_ATTEMPT_DELAY, d).await,
            Some(1)
        );
        // TLS first even when a later UDP target answers too.
        assert_eq!(choose_sip_target(&[second, alive], d).await, Some(second));
        // Nobody answers: the first, so the registration says why.
        let dead = tls(closed_port());
        assert_eq!(
            choose_sip_target(&[dead, tls(closed_port())], d).await,
            Some(dead)
        );
        assert_eq!(choose_sip_target(&[dead], d).await, Some(dead));
        assert_eq!(choose_sip_target(&[], d).await, None);
    }

    #[tokio::test]
    async fn rfc3263_falls_back_from_srv_to_a_records() {
        let mut dns = FakeDns::default();
        dns.ips
            .insert("atlanta.invalid".into(), vec!["127.0.0.7".parse().unwrap()]);
        // No NAPTR, no SRV: A record of the domain, UDP 5060.
        let t = discover_sip(&dns, "atlanta.invalid", &[]).await.unwrap();
        assert_eq!(t[0].addr, "127.0.0.7:5060".parse().unwrap());
        assert_eq!(t[0].transport, SipTransport::Udp);
        // With a TCP SRV record: that target and port, over TCP.
        dns.srv.insert(
            "_sip._tcp.atlanta.invalid".into(),
            vec![srv(1, 1, 5070, "proxy.atlanta.invalid")],
        );
        dns.ips.insert(
            "proxy.atlanta.invalid".into(),
            vec!["127.0.0.8".parse().unwrap()],
        );
        let t = discover_sip(&dns, "atlanta.invalid", &[]).await.unwrap();
        assert_eq!(
            t[0],
            SipTarget {
                transport: SipTransport::Tcp,
                addr: "127.0.0.8:5070".parse().unwrap()
            }
        );
        // services.sip wins over the domain; a bad entry is skipped.
        let services = vec!["http://nope".to_string(), "sip:127.0.0.9:5090".to_string()];
        let t = discover_sip(&dns, "atlanta.invalid", &services)
            .await
            .unwrap();
        assert_eq!(t[0].addr, "127.0.0.9:5090".parse().unwrap());
        // Nothing at all: NotFound.
        let e = discover_sip(&FakeDns::default(), "nowhere.invalid", &[]).await;
        assert!(matches!(e, Err(DiscoveryError::NotFound { .. })), "{e:?}");
        // The PKG: SRV, else pkg.<domain>.
        assert_eq!(
            discover_pkg(&dns, "alice@atlanta.invalid").await.unwrap(),
            ["https://pkg.atlanta.invalid"]
        );
        dns.srv.insert(
            "_ibephone-pkg._tcp.atlanta.invalid".into(),
            vec![srv(2, 0, 9443, "b.invalid"), srv(1, 0, 8443, "a.invalid")],
        );
        assert_eq!(
            discover_pkg(&dns, "alice@atlanta.invalid").await.unwrap(),
            ["https://a.invalid:8443", "https://b.invalid:9443"]
        );
    }
}
