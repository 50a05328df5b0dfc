//! The registrar of the embedded provider (RFC 3261 10.3): digest
//! authentication of REGISTER against a [`UserLookup`] (the PKG's user
//! database implements it), bindings in the [`LocationService`], and
//! throttling of probes for unknown users.
//!
//! Decisions:
//! - a REGISTER without credentials is challenged whether or not the user
//!   exists (SHA-256 first, then MD5, RFC 8760), and wrong credentials get
//!   403 for known and unknown users alike, so the answers do not tell which
//!   users exist;
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

use crate::sip::digest::{Algorithm, Challenge, Credentials, NonceSigner, NonceState};
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
}

impl UserLookup for HashMap<String, UserRecord> {
    fn lookup(&self, user: &str) -> Option<UserRecord> {
        self.get(user).cloned()
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
    epoch: Option<Instant>,
    /// Bindings.
    pub location: LocationService,
    /// Probe throttle.
    pub throttle: Throttle,
    min_expires: u32,
    max_expires: u32,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("domain", &self.domain)
            .finish()
    }
}

impl Registrar {
    /// A registrar for `domain` (also the digest realm).
    pub fn new(domain: &str, users: Box<dyn UserLookup>) -> Self {
        Registrar {
            domain: domain.to_ascii_lowercase(),
            users,
            nonces: NonceSigner::new(300_000),
            epoch: None,
            location: LocationService::new(100_000, 10),
            throttle: Throttle::new(20, Duration::from_secs(60), 10_000),
            min_expires: 60,
            max_expires: 7200,
        }
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

    fn challenge(&mut self, now: Instant, req: &Message, stale: bool) -> Message {
        let ms = self.ms(now);
        let nonce = self.nonces.issue(&self.domain, ms);
        let mut r =
            Message::response_to(req, 401, "Unauthorized", Some(&crate::sip::random_token(6)));
        for algorithm in [Algorithm::Sha256, Algorithm::Md5] {
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
        if record.is_none() && !self.throttle.allow(now, from.addr.ip()) {
            tracing::info!(ip = %from.addr.ip(), "REGISTER probe throttled");
            return None;
        }
        let Some(creds) = req.header("Authorization").and_then(Credentials::parse) else {
            return Some(self.challenge(now, req, false));
        };
        let ms = self.ms(now);
        match self.nonces.check(&creds.nonce, &self.domain, ms) {
            NonceState::Fresh => {}
            NonceState::Stale => return Some(self.challenge(now, req, true)),
            NonceState::Invalid => return Some(self.challenge(now, req, false)),
        }
        let ha1 = record
            .as_ref()
            .filter(|r| r.enabled)
            .and_then(|r| match creds.algorithm {
                Algorithm::Md5 => r.ha1_md5.clone(),
                Algorithm::Sha256 => r.ha1_sha256.clone(),
            })
            .map(zeroize::Zeroizing::new);
        let ok = creds.realm == self.domain
            && creds.username == user
            && ha1.is_some_and(|h| creds.verify(&h, "REGISTER"));
        if !ok {
            tracing::info!(ip = %from.addr.ip(), "REGISTER with bad credentials");
            return reply(403, "Forbidden");
        }
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
            match self.location.update(now, aor, b) {
                Ok(()) => {}
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
