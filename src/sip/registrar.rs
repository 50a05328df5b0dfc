//! The registrar of the embedded provider (RFC 3261 10.3): digest
//! authentication of REGISTER against a [`UserLookup`] (the PKG's user
//! database implements it), bindings in the `LocationService`, and
//! throttling of probes for unknown users.
//!
//! Decisions:
//! - a REGISTER without credentials is challenged whether or not the user
//!   exists (by default SHA-256 first, then MD5, RFC 8760; the list and its
//!   order are [`AuthConfig::algorithms`]; credentials of an algorithm not
//!   in the list are challenged again), and wrong credentials get 403 for
//!   known and unknown users alike, so the answers do not tell which users
//!   exist;
//! - a user may hold several credentials (one per device,
//!   [`UserLookup::credentials`]); any live one authenticates the user;
//! - a nonce is signed over the realm and the Call-ID of the REGISTER it
//!   challenged: an Authorization moved to another Call-ID is challenged
//!   again; a nonce count must grow with each use of a nonce
//!   ([`NonceCounts`]), so a captured Authorization replayed with another
//!   Contact, `Contact: *` or anything else is challenged again (401, no
//!   binding touched); an expired nonce gets `stale=true`;
//! - failed authentications of known users are counted per user, and all
//!   failures per source address (IPv4 address, IPv6 /64). A locked user
//!   gets the same 403 as a wrong password without any check (the lock
//!   says nothing an attacker could not learn from 403); a locked address
//!   is dropped silently, like a probe for unknown users;
//! - the authenticated user must be the user of the To AOR (403 otherwise):
//!   nobody registers contacts for someone else (hijack attempt);
//! - REGISTER and OPTIONS aimed at unknown users count against the source
//!   IP in a [`Throttle`]; past the limit the proxy drops them silently;
//! - a replayed REGISTER (same Call-ID, CSeq not higher) is refused (500)
//!   and leaves the bindings untouched;
//! - a binding records the flow the REGISTER came on (RFC 5626: transport
//!   and source address as received); with `+sip.instance` and `reg-id`
//!   it replaces the earlier binding of that instance and reg-id, and the
//!   200 says `Require: outbound`;
//! - a Contact URI already bound to another AOR is refused (403): the
//!   proxy routes in-dialog requests by Contact URI, so registering
//!   someone else's Contact would hijack their calls.

use crate::sip::digest::{Algorithm, Challenge, Credentials, NonceCounts, NonceSigner, NonceState};
use crate::sip::location::{Binding, LocationError, LocationService};
use crate::sip::message::{addr_parse, addr_uri, param, Message};
use crate::sip::Dest;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What the registrar knows of a user.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// `MD5(user:realm:password)`, hex.
    pub ha1_md5: Option<String>,
    /// `SHA-256(user:realm:password)`, hex.
    pub ha1_sha256: Option<String>,
    /// Disabled users cannot register and are not reachable.
    pub enabled: bool,
}

impl Drop for UserRecord {
    /// HA1 is password-equivalent for digest: wiped when the record goes.
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for h in [&mut self.ha1_md5, &mut self.ha1_sha256]
            .into_iter()
            .flatten()
        {
            h.zeroize();
        }
    }
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("ha1", &"[redacted]")
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// The user database, by user part of the AOR.
pub trait UserLookup: Send {
    /// The record of `user`, if the user exists.
    fn lookup(&self, user: &str) -> Option<UserRecord>;

    /// Every live digest credential of `user` (one per device); any of
    /// them authenticates the user. Default: the HA1s of [`Self::lookup`]
    /// when the user is enabled.
    fn credentials(&self, user: &str) -> Vec<UserRecord> {
        self.lookup(user)
            .filter(|r| r.enabled)
            .into_iter()
            .collect()
    }
}

impl UserLookup for HashMap<String, UserRecord> {
    fn lookup(&self, user: &str) -> Option<UserRecord> {
        self.get(user).cloned()
    }
}

/// The throttling key of a source address: the IPv4 address, or the /64
/// of an IPv6 address (one home or host usually holds a whole /64).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
    }
}

/// How the registrar authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Digest algorithms offered, in order (default SHA-256, MD5).
    pub algorithms: Vec<Algorithm>,
    /// Nonce lifetime.
    pub nonce_lifetime: Duration,
    /// Failed authentications per known user within `failure_window`
    /// before the user is locked for `lockout`.
    pub user_max_failures: u32,
    /// Failed authentications per source address (IPv6: /64) within
    /// `failure_window` before the address is locked for `lockout`.
    pub addr_max_failures: u32,
    /// Counting window of failures.
    pub failure_window: Duration,
    /// Lock length.
    pub lockout: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            nonce_lifetime: Duration::from_secs(300),
            user_max_failures: 10,
            addr_max_failures: 30,
            failure_window: Duration::from_secs(300),
            lockout: Duration::from_secs(300),
        }
    }
}

/// What a [`FailureThrottle`] counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailureKey {
    /// A known user.
    User(String),
    /// A source address ([`address_key`]).
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct FailureEntry {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

/// Counts failed authentications per key in fixed windows; `max` failures
/// in a window lock the key for `lockout`. Bounded: when full, expired
/// entries go first, and a new key that still finds no room is not
/// counted (memory stays bounded under a flood of addresses; the per-user
/// counters of known users, at most one per user, still hold).
#[derive(Debug)]
pub struct FailureThrottle {
    seen: HashMap<FailureKey, FailureEntry>,
    window: Duration,
    lockout: Duration,
    max_entries: usize,
}

impl FailureThrottle {
    /// A throttle with these windows, tracking at most `max_entries` keys.
    pub fn new(window: Duration, lockout: Duration, max_entries: usize) -> Self {
        FailureThrottle {
            seen: HashMap::new(),
            window,
            lockout,
            max_entries,
        }
    }

    /// Whether `key` is locked at `now`.
    pub fn locked(&self, now: Instant, key: &FailureKey) -> bool {
        self.seen
            .get(key)
            .and_then(|e| e.locked_until)
            .is_some_and(|t| now < t)
    }

    /// Counts one failure of `key`; locks it on the `max`-th in a window.
    pub fn fail(&mut self, now: Instant, key: FailureKey, max: u32) {
        if !self.seen.contains_key(&key) && self.seen.len() >= self.max_entries {
            let (window, lockout) = (self.window, self.lockout);
            self.seen.retain(|_, e| {
                now.duration_since(e.window_start) < window.max(lockout)
                    || e.locked_until.is_some_and(|t| now < t)
            });
            if self.seen.len() >= self.max_entries {
                return;
            }
        }
        let e = self.seen.entry(key).or_insert(FailureEntry {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        if now.duration_since(e.window_start) >= self.window {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures >= max.max(1) {
            e.locked_until = Some(now + self.lockout);
            e.failures = 0;
            e.window_start = now;
        }
    }

    /// Forgets the failures of `key` (after a success); a lock stays.
    pub fn reset(&mut self, key: &FailureKey) {
        if self.seen.get(key).is_some_and(|e| e.locked_until.is_none()) {
            self.seen.remove(key);
        }
    }
}

/// Per-source-IP counter of probes for unknown users (fixed window).
#[derive(Debug)]
pub struct Throttle {
    seen: HashMap<IpAddr, (Instant, u32)>,
    limit: u32,
    window: Duration,
    max_entries: usize,
}

impl Throttle {
    /// At most `limit` probes per `window` per IP, tracking at most
    /// `max_entries` IPs (when full, unknown IPs are refused: fail closed).
    pub fn new(limit: u32, window: Duration, max_entries: usize) -> Self {
        Throttle {
            seen: HashMap::new(),
            limit,
            window,
            max_entries,
        }
    }

    /// Counts one probe from `ip`; false once the IP is over its limit.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.seen.len() >= self.max_entries {
            let window = self.window;
            self.seen
                .retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        if !self.seen.contains_key(&ip) && self.seen.len() >= self.max_entries {
            return false;
        }
        let e = self.seen.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= self.limit
    }
}

/// The registrar.
pub struct Registrar {
    domain: String,
    users: Box<dyn UserLookup>,
    nonces: NonceSigner,
    nonce_counts: NonceCounts,
    auth: AuthConfig,
    /// Failed authentications per user and per address.
    pub failures: FailureThrottle,
    epoch: Option<Instant>,
    /// Bindings.
    pub location: LocationService,
    /// Probe throttle.
    pub throttle: Throttle,
    min_expires: u32,
    max_expires: u32,
    /// Flows that a REGISTER replaced (old, new), for the proxy to move
    /// its requests under way ([`Registrar::take_moved_flows`]).
    moved_flows: Vec<(Dest, Dest)>,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("domain", &self.domain)
            .finish()
    }
}

impl Registrar {
    /// A registrar for `domain` (also the digest realm), with the default
    /// [`AuthConfig`].
    pub fn new(domain: &str, users: Box<dyn UserLookup>) -> Self {
        let auth = AuthConfig::default();
        Registrar {
            domain: domain.to_ascii_lowercase(),
            users,
            nonces: NonceSigner::new(ms_of(auth.nonce_lifetime)),
            nonce_counts: NonceCounts::new(100_000, ms_of(auth.nonce_lifetime)),
            failures: FailureThrottle::new(auth.failure_window, auth.lockout, 100_000),
            auth,
            epoch: None,
            location: LocationService::new(100_000, 10),
            throttle: Throttle::new(20, Duration::from_secs(60), 10_000),
            min_expires: 60,
            max_expires: 7200,
            moved_flows: Vec::new(),
        }
    }

    /// The flows replaced by the REGISTERs handled since the last call,
    /// as (old, new): a device that moved (a new address, a rebooted NAT)
    /// registered the same instance and reg-id (or Contact) from a new
    /// flow, after authenticating.
    pub fn take_moved_flows(&mut self) -> Vec<(Dest, Dest)> {
        std::mem::take(&mut self.moved_flows)
    }

    /// The same registrar authenticating by `auth` (an empty algorithm
    /// list keeps the default one).
    pub fn with_auth(mut self, mut auth: AuthConfig) -> Self {
        if auth.algorithms.is_empty() {
            auth.algorithms = AuthConfig::default().algorithms;
        }
        auth.algorithms.dedup();
        self.nonces = NonceSigner::new(ms_of(auth.nonce_lifetime));
        self.nonce_counts = NonceCounts::new(100_000, ms_of(auth.nonce_lifetime));
        self.failures = FailureThrottle::new(auth.failure_window, auth.lockout, 100_000);
        self.auth = auth;
        self
    }

    /// Our domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// True if `user` exists and is enabled.
    pub fn user_enabled(&self, user: &str) -> bool {
        self.users.lookup(user).is_some_and(|u| u.enabled)
    }

    fn ms(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// What a nonce is bound to: the realm and the Call-ID.
    fn nonce_scope(&self, req: &Message) -> String {
        format!("{}\n{}", self.domain, req.call_id().unwrap_or(""))
    }

    fn challenge(&mut self, now: Instant, req: &Message, stale: bool) -> Message {
        let ms = self.ms(now);
        let nonce = self.nonces.issue(&self.nonce_scope(req), ms);
        let mut r =
            Message::response_to(req, 401, "Unauthorized", Some(&crate::sip::random_token(6)));
        for algorithm in self.auth.algorithms.clone() {
            let ch = Challenge {
                realm: self.domain.clone(),
                nonce: nonce.clone(),
                opaque: None,
                algorithm,
                stale,
            };
            r.push_header("WWW-Authenticate", ch.to_header());
        }
        r
    }

    /// Handles a REGISTER that arrived from `from`; None means drop.
    pub fn handle_register(&mut self, now: Instant, from: Dest, req: &Message) -> Option<Message> {
        let tag = crate::sip::random_token(6);
        let reply = |s: u16, r: &str| Some(Message::response_to(req, s, r, Some(&tag)));
        let Some(to) = req.header("To").and_then(addr_parse) else {
            return reply(400, "Bad Request");
        };
        let host = to.host_with_port.host.to_string().to_ascii_lowercase();
        let Some(user) = to.user().map(str::to_string) else {
            return reply(400, "Bad Request");
        };
        if host != self.domain {
            return reply(403, "Forbidden");
        }
        let record = self.users.lookup(&user);
        let addr_key = FailureKey::Addr(address_key(from.addr.ip()));
        if self.failures.locked(now, &addr_key) {
            tracing::info!(ip = %from.addr.ip(), "REGISTER from a locked address dropped");
            return None;
        }
        if record.is_none() && !self.throttle.allow(now, address_key(from.addr.ip())) {
            tracing::info!(ip = %from.addr.ip(), "REGISTER probe throttled");
            return None;
        }
        let Some(creds) = req.header("Authorization").and_then(Credentials::parse) else {
            return Some(self.challenge(now, req, false));
        };
        if !self.auth.algorithms.contains(&creds.algorithm) {
            return Some(self.challenge(now, req, false));
        }
        let ms = self.ms(now);
        match self.nonces.check(&creds.nonce, &self.nonce_scope(req), ms) {
            NonceState::Fresh => {}
            NonceState::Stale => return Some(self.challenge(now, req, true)),
            NonceState::Invalid => return Some(self.challenge(now, req, false)),
        }
        let user_key = FailureKey::User(user.clone());
        let known = record.is_some();
        let ok = creds.realm == self.domain
            && creds.username == user
            && !(known && self.failures.locked(now, &user_key))
            && self.users.credentials(&user).iter().any(|r| {
                let ha1 = match creds.algorithm {
                    Algorithm::Md5 => r.ha1_md5.as_deref(),
                    Algorithm::Sha256 => r.ha1_sha256.as_deref(),
                };
                r.enabled && ha1.is_some_and(|h| creds.verify(h, "REGISTER"))
            });
        if !ok {
            tracing::info!(ip = %from.addr.ip(), "REGISTER with bad credentials");
            if known {
                let max = self.auth.user_max_failures;
                self.failures.fail(now, user_key, max);
            }
            let max = self.auth.addr_max_failures;
            self.failures.fail(now, addr_key, max);
            return reply(403, "Forbidden");
        }
        if let Err(e) = self.nonce_counts.accept(&creds.nonce, &creds.nc, ms) {
            tracing::info!(ip = %from.addr.ip(), error = %e, "REGISTER nonce count refused");
            return Some(self.challenge(now, req, false));
        }
        self.failures.reset(&user_key);
        self.update_bindings(now, from, req, &format!("{user}@{host}"))
    }

    fn update_bindings(
        &mut self,
        now: Instant,
        from: Dest,
        req: &Message,
        aor: &str,
    ) -> Option<Message> {
        let tag = crate::sip::random_token(6);
        let reply = |s: u16, r: &str| Some(Message::response_to(req, s, r, Some(&tag)));
        let call_id = req.call_id().unwrap_or("").to_string();
        let cseq = req.cseq().map(|(n, _)| n).unwrap_or(0);
        let default: u32 = req
            .header("Expires")
            .and_then(|e| e.trim().parse().ok())
            .unwrap_or(3600);
        if self.location.is_replay(aor, &call_id, cseq) {
            return reply(500, "Server Internal Error");
        }
        let mut outbound = false;
        for c in req.header_values("Contact") {
            if c.trim() == "*" {
                if default != 0 {
                    return reply(400, "Bad Request");
                }
                self.location.remove(aor, None);
                continue;
            }
            let contact = addr_uri(c).to_string();
            let expires = param(c, "expires")
                .and_then(|e| e.parse().ok())
                .unwrap_or(default);
            if expires == 0 {
                self.location.remove(aor, Some(&contact));
                continue;
            }
            if expires < self.min_expires {
                let mut r = Message::response_to(req, 423, "Interval Too Brief", Some(&tag));
                r.push_header("Min-Expires", self.min_expires.to_string());
                return Some(r);
            }
            let expires = expires.min(self.max_expires);
            if let Ok(uri) = rsip::Uri::try_from(contact.as_str()) {
                if self
                    .location
                    .owner_of_contact(now, &uri)
                    .is_some_and(|owner| owner != aor)
                {
                    tracing::info!(ip = %from.addr.ip(), "REGISTER of a Contact bound to another user");
                    return reply(403, "Forbidden");
                }
            }
            let instance = instance_of(c);
            let reg_id = instance
                .as_ref()
                .and(param(c, "reg-id"))
                .and_then(|r| r.parse().ok());
            outbound |= reg_id.is_some();
            let b = Binding {
                contact,
                flow: from,
                expires_at: now + Duration::from_secs(u64::from(expires)),
                call_id: call_id.clone(),
                cseq,
                instance,
                reg_id,
            };
            let flow = b.flow;
            match self.location.update(now, aor, b) {
                Ok(None) => {}
                Ok(Some(old)) => self.moved_flows.push((old, flow)),
                Err(LocationError::OutOfOrder) => return reply(500, "Server Internal Error"),
                Err(LocationError::Full) => return reply(503, "Service Unavailable"),
            }
        }
        let mut ok = Message::response_to(req, 200, "OK", Some(&tag));
        if outbound {
            ok.push_header("Require", "outbound");
        }
        for b in self.location.lookup(now, aor) {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            ok.push_header("Contact", format!("<{}>;expires={left}", b.contact));
        }
        Some(ok)
    }
}

/// The `+sip.instance` value of a Contact header value (quoted, with its
/// angle brackets: `"<urn:uuid:...>"`), if any and not absurdly long.
fn instance_of(contact: &str) -> Option<String> {
    let lower = contact.to_ascii_lowercase();
    let at = lower.find("+sip.instance=\"")? + "+sip.instance=\"".len();
    let rest = contact.get(at..)?;
    let end = rest.find('"')?;
    let v = rest.get(..end)?;
    (!v.is_empty() && v.len() <= 128).then(|| v.to_string())
}

fn ms_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sip::digest::{ha1, Password};

    fn registrar() -> Registrar {
        let mut users = HashMap::new();
        for (u, pw) in [("alice", "apw"), ("bob", "bpw"), ("carol", "cpw")] {
            let p = Password::new(pw);
            users.insert(
                u.to_string(),
                UserRecord {
                    ha1_md5: Some(ha1(Algorithm::Md5, u, "example.invalid", &p).to_string()),
                    ha1_sha256: Some(ha1(Algorithm::Sha256, u, "example.invalid", &p).to_string()),
                    enabled: u != "bob",
                },
            );
        }
        Registrar::new("example.invalid", Box::new(users))
    }

    fn register(to_user: &str, cseq: u32) -> Message {
        let uri = rsip::Uri::try_from("sip:example.invalid").unwrap();
        let mut m = Message::request(rsip::Method::Register, uri);
        m.push_header("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr");
        m.push_header("From", format!("<sip:{to_user}@example.invalid>;tag=x"));
        m.push_header("To", format!("<sip:{to_user}@example.invalid>"));
        m.push_header("Call-ID", "reg1");
        m.push_header("CSeq", format!("{cseq} REGISTER"));
        m.push_header("Contact", "<sip:127.0.0.1:5070>");
        m.push_header("Expires", "600");
        m
    }

    fn answer(r: &mut Registrar, now: Instant, req: &Message, user: &str, pw: &str) -> Message {
        let from = Dest::udp("127.0.0.1:5070".parse().unwrap());
        let ch = r.handle_register(now, from, req).unwrap();
        assert_eq!(ch.status(), Some(401));
        let c = Challenge::best(ch.header_values("WWW-Authenticate")).unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        let mut req = req.clone();
        req.push_header(
            "Authorization",
            c.answer(
                user,
                &Password::new(pw),
                "REGISTER",
                "sip:example.invalid",
                1,
                "cn",
            ),
        );
        r.handle_register(now, from, &req).unwrap()
    }

    #[test]
    fn own_credentials_cannot_register_someone_else() {
        let mut r = registrar();
        let now = Instant::now();
        let resp = answer(&mut r, now, &register("carol", 1), "alice", "apw");
        assert_eq!(resp.status(), Some(403));
        let resp = answer(&mut r, now, &register("alice", 2), "alice", "apw");
        assert_eq!(resp.status(), Some(200));
        assert_eq!(r.location.lookup(now, "alice@example.invalid").len(), 1);
        // A replayed (same Call-ID, old CSeq) un-REGISTER removes nothing.
        let mut unreg = register("alice", 2);
        unreg.set_header("Expires", "0");
        let resp = answer(&mut r, now, &unreg, "alice", "apw");
        assert_eq!(resp.status(), Some(500));
        assert_eq!(r.location.lookup(now, "alice@example.invalid").len(), 1);
    }

    #[test]
    fn disabled_user_and_expired_nonce() {
        let mut r = registrar();
        let now = Instant::now();
        assert_eq!(
            answer(&mut r, now, &register("bob", 1), "bob", "bpw").status(),
            Some(403)
        );
        let from = Dest::udp("127.0.0.1:5070".parse().unwrap());
        let ch = r.handle_register(now, from, &register("alice", 1)).unwrap();
        let c = Challenge::best(ch.header_values("WWW-Authenticate")).unwrap();
        let mut req = register("alice", 2);
        let a = c.answer(
            "alice",
            &Password::new("apw"),
            "REGISTER",
            "sip:example.invalid",
            1,
            "cn",
        );
        req.push_header("Authorization", a);
        let later = now + Duration::from_secs(301);
        let resp = r.handle_register(later, from, &req).unwrap();
        assert_eq!(resp.status(), Some(401));
        let again = Challenge::best(resp.header_values("WWW-Authenticate")).unwrap();
        assert!(again.stale);
    }

    fn udp(a: &str) -> Dest {
        Dest::udp(a.parse().unwrap())
    }

    /// A challenge for `req` from `from`, answered as `user`/`pw` with `nc`.
    fn authorized(
        r: &mut Registrar,
        now: Instant,
        from: Dest,
        req: &Message,
        user: &str,
        pw: &str,
    ) -> Message {
        let ch = r.handle_register(now, from, req).unwrap();
        assert_eq!(ch.status(), Some(401));
        let c = Challenge::best(ch.header_values("WWW-Authenticate")).unwrap();
        let mut req = req.clone();
        req.push_header(
            "Authorization",
            c.answer(
                user,
                &Password::new(pw),
                "REGISTER",
                "sip:example.invalid",
                1,
                "cn",
            ),
        );
        req
    }

    fn contacts(r: &Registrar, now: Instant) -> Vec<String> {
        r.location
            .lookup(now, "alice@example.invalid")
            .iter()
            .map(|b| b.contact.clone())
            .collect()
    }

    #[test]
    fn captured_authorization_is_not_accepted_again() {
        let mut r = registrar();
        let now = Instant::now();
        let from = udp("127.0.0.1:5070");
        let good = authorized(&mut r, now, from, &register("alice", 1), "alice", "apw");
        assert_eq!(
            r.handle_register(now, from, &good).unwrap().status(),
            Some(200)
        );
        assert_eq!(contacts(&r, now), ["sip:127.0.0.1:5070"]);
        let auth = good.header("Authorization").unwrap().to_string();
        let attacker = udp("127.0.0.2:5999");

        // The same Authorization with the attacker's Contact and a higher CSeq.
        let mut hijack = register("alice", 5);
        hijack.set_header("Contact", "<sip:127.0.0.2:5999>");
        hijack.push_header("Authorization", auth.clone());
        let resp = r.handle_register(now, attacker, &hijack).unwrap();
        assert_eq!(resp.status(), Some(401), "nonce count replayed");
        // ... with `Contact: *` to remove every binding.
        let mut wipe = register("alice", 6);
        wipe.set_header("Contact", "*");
        wipe.set_header("Expires", "0");
        wipe.push_header("Authorization", auth.clone());
        assert_eq!(
            r.handle_register(now, attacker, &wipe).unwrap().status(),
            Some(401)
        );
        // ... under another Call-ID: the nonce is not valid there.
        let mut other = register("alice", 1);
        other.set_header("Call-ID", "attacker-call");
        other.set_header("Contact", "<sip:127.0.0.2:5999>");
        other.push_header("Authorization", auth);
        let resp = r.handle_register(now, attacker, &other).unwrap();
        assert_eq!(resp.status(), Some(401));
        let c = Challenge::best(resp.header_values("WWW-Authenticate")).unwrap();
        assert!(!c.stale);
        assert_eq!(contacts(&r, now), ["sip:127.0.0.1:5070"]);

        // The phone itself goes on: a fresh challenge, a higher count.
        let next = authorized(&mut r, now, from, &register("alice", 7), "alice", "apw");
        assert_eq!(
            r.handle_register(now, from, &next).unwrap().status(),
            Some(200)
        );
    }

    #[test]
    fn failures_lock_the_user_and_the_address_block() {
        let mut r = registrar().with_auth(AuthConfig {
            user_max_failures: 3,
            addr_max_failures: 5,
            ..AuthConfig::default()
        });
        let now = Instant::now();
        // Three wrong passwords for alice from three addresses lock alice.
        for (i, a) in ["127.0.0.3:1", "127.0.0.4:1", "127.0.0.5:1"]
            .iter()
            .enumerate()
        {
            let req = authorized(
                &mut r,
                now,
                udp(a),
                &register("alice", 1 + i as u32),
                "alice",
                "guess",
            );
            assert_eq!(
                r.handle_register(now, udp(a), &req).unwrap().status(),
                Some(403)
            );
        }
        // Now even the right password is refused, with the same 403.
        let from = udp("127.0.0.1:5070");
        let req = authorized(&mut r, now, from, &register("alice", 10), "alice", "apw");
        assert_eq!(
            r.handle_register(now, from, &req).unwrap().status(),
            Some(403)
        );
        assert!(contacts(&r, now).is_empty());
        // After the lockout the right password works again.
        let later = now + Duration::from_secs(301);
        let req = authorized(&mut r, later, from, &register("alice", 11), "alice", "apw");
        assert_eq!(
            r.handle_register(later, from, &req).unwrap().status(),
            Some(200)
        );

        // Five failures from one IPv6 /64 (several addresses in it, users
        // known or not) lock the whole /64: further REGISTERs are dropped.
        for (i, a) in ["[2001:db8:1:2::1]:5060", "[2001:db8:1:2::2]:5060"]
            .iter()
            .cycle()
            .take(5)
            .enumerate()
        {
            let user = if i % 2 == 0 { "carol" } else { "bob" };
            let req = authorized(
                &mut r,
                later,
                udp(a),
                &register(user, 1 + i as u32),
                user,
                "guess",
            );
            assert_eq!(
                r.handle_register(later, udp(a), &req).unwrap().status(),
                Some(403)
            );
        }
        let same64 = udp("[2001:db8:1:2:ffff::9]:5060");
        assert!(r
            .handle_register(later, same64, &register("alice", 1))
            .is_none());
        let other64 = udp("[2001:db8:1:3::1]:5060");
        let req = authorized(
            &mut r,
            later,
            other64,
            &register("alice", 20),
            "alice",
            "apw",
        );
        assert_eq!(
            r.handle_register(later, other64, &req).unwrap().status(),
            Some(200)
        );
    }

    #[test]
    fn md5_only_setting_offers_and_accepts_md5_only() {
        let mut r = registrar().with_auth(AuthConfig {
            algorithms: vec![Algorithm::Md5],
            ..AuthConfig::default()
        });
        let now = Instant::now();
        let from = udp("127.0.0.1:5070");
        let ch = r.handle_register(now, from, &register("alice", 1)).unwrap();
        let offered: Vec<Challenge> = ch
            .header_values("WWW-Authenticate")
            .filter_map(Challenge::parse)
            .collect();
        assert_eq!(offered.len(), 1);
        assert_eq!(offered[0].algorithm, Algorithm::Md5);
        // A SHA-256 answer (made up on a SHA-256 challenge) is challenged again.
        let sha = Challenge {
            algorithm: Algorithm::Sha256,
            ..offered[0].clone()
        };
        let mut req = register("alice", 2);
        let a = sha.answer(
            "alice",
            &Password::new("apw"),
            "REGISTER",
            "sip:example.invalid",
            1,
            "c",
        );
        req.push_header("Authorization", a);
        assert_eq!(
            r.handle_register(now, from, &req).unwrap().status(),
            Some(401)
        );
        let req = authorized(&mut r, now, from, &register("alice", 3), "alice", "apw");
        assert_eq!(
            r.handle_register(now, from, &req).unwrap().status(),
            Some(200)
        );
        // The default order is SHA-256 first.
        let ch = registrar()
            .handle_register(now, from, &register("alice", 1))
            .unwrap();
        let algs: Vec<Algorithm> = ch
            .header_values("WWW-Authenticate")
            .filter_map(Challenge::parse)
            .map(|c| c.algorithm)
            .collect();
        assert_eq!(algs, [Algorithm::Sha256, Algorithm::Md5]);
    }

    /// A directory whose users hold device credentials only.
    struct Devices(HashMap<String, Vec<String>>);

    impl UserLookup for Devices {
        fn lookup(&self, user: &str) -> Option<UserRecord> {
            self.0.get(user).map(|_| UserRecord {
                ha1_md5: None,
                ha1_sha256: None,
                enabled: true,
            })
        }

        fn credentials(&self, user: &str) -> Vec<UserRecord> {
            let realm = "example.invalid";
            self.0
                .get(user)
                .into_iter()
                .flatten()
                .map(|pw| {
                    let p = Password::new(pw.as_str());
                    UserRecord {
                        ha1_md5: Some(ha1(Algorithm::Md5, user, realm, &p).to_string()),
                        ha1_sha256: Some(ha1(Algorithm::Sha256, user, realm, &p).to_string()),
                        enabled: true,
                    }
                })
                .collect()
        }
    }

    #[test]
    fn any_device_credential_authenticates_and_nothing_else() {
        let devices = Devices(HashMap::from([(
            "alice".to_string(),
            vec!["laptop-secret".to_string(), "phone-secret".to_string()],
        )]));
        let mut r = Registrar::new("example.invalid", Box::new(devices));
        let now = Instant::now();
        let from = udp("127.0.0.1:5070");
        for (cseq, pw, want) in [
            (1, "phone-secret", 200),
            (3, "laptop-secret", 200),
            (5, "apw", 403),
            (7, "", 403),
        ] {
            let req = authorized(&mut r, now, from, &register("alice", cseq), "alice", pw);
            let got = r.handle_register(now, from, &req).unwrap().status();
            assert_eq!(got, Some(want), "{pw}");
        }
    }

    #[test]
    fn ipv6_addresses_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::".parse().unwrap();
        assert_eq!(address_key(a), b);
        let v4: IpAddr = "127.0.0.9".parse().unwrap();
        assert_eq!(address_key(v4), v4);
        let mapped: IpAddr = "::ffff:127.0.0.9".parse().unwrap();
        assert_eq!(address_key(mapped), v4);
    }

    #[test]
    fn a_contact_bound_to_another_user_is_refused() {
        let mut r = registrar();
        let now = Instant::now();
        let mut reg = register("alice", 1);
        reg.set_header(
            "Contact",
            "<sip:tokA@127.0.0.1:5070>;+sip.instance=\"<urn:uuid:a>\";reg-id=1",
        );
        let ok = answer(&mut r, now, &reg, "alice", "apw");
        assert_eq!(ok.status(), Some(200));
        assert_eq!(ok.header("Require"), Some("outbound"));
        let aor = "alice@example.invalid";
        assert_eq!(
            r.location.lookup(now, aor)[0].instance.as_deref(),
            Some("<urn:uuid:a>")
        );
        // carol saw alice's Contact in a call and registers it as hers, to
        // receive alice's in-dialog requests: refused, alice's flow stays.
        let mut hijack = register("carol", 1);
        hijack.set_header("Contact", "<sip:tokA@127.0.0.1:5070>");
        let resp = answer(&mut r, now, &hijack, "carol", "cpw");
        assert_eq!(resp.status(), Some(403));
        assert!(r.location.lookup(now, "carol@example.invalid").is_empty());
        let uri = rsip::Uri::try_from("sip:tokA@127.0.0.1:5070").unwrap();
        assert_eq!(r.location.owner_of_contact(now, &uri), Some(aor));
        // Her own token at the same address (another home, same private
        // address) is hers.
        hijack.set_header("Contact", "<sip:tokC@127.0.0.1:5070>");
        hijack.set_header("CSeq", "2 REGISTER");
        let resp = answer(&mut r, now, &hijack, "carol", "cpw");
        assert_eq!(resp.status(), Some(200));
        assert_eq!(resp.header("Require"), None);
    }

    #[test]
    fn throttle_counts_per_ip_and_window() {
        let mut t = Throttle::new(2, Duration::from_secs(10), 2);
        let now = Instant::now();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(t.allow(now, ip) && t.allow(now, ip));
        assert!(!t.allow(now, ip));
        assert!(t.allow(now + Duration::from_secs(10), ip));
    }
}
