//! TURN credentials from the provider (`POST /v1/turn-credentials`,
//! pkg-api.md): the checked, typed form of the answer and the relay URIs
//! it names (RFC 7064 `stun:`, RFC 7065 `turn:`/`turns:`).
//!
//! The password is a [`SecretString`] (wiped on drop, `[redacted]` in
//! `Debug`). An answer that breaks the REST form (a user name without the
//! `expiry:` prefix, an expiry in the past, no usable URI) is refused as a
//! whole: the phone then simply has no relay, never a half-checked one.

use super::api::{SecretString, TurnCredentialsResponse};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest lifetime the phone accepts; a longer one is capped (a relay
/// credential that lives for months is a leak waiting to happen).
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a TURN answer or URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// `username` is not `<unix expiry>:<user>`.
    #[error("TURN user name {0:?} is not <unix expiry>:<user>")]
    BadUsername(String),
    /// The credentials had already expired when they arrived.
    #[error("TURN credentials expired at {expiry} (now {now})")]
    Expired {
        /// Expiry from the user name (Unix seconds).
        expiry: u64,
        /// The phone's clock (Unix seconds).
        now: u64,
    },
    /// `ttl` is zero.
    #[error("TURN credentials with a zero ttl")]
    ZeroTtl,
    /// The password is empty.
    #[error("TURN credentials without a password")]
    EmptyPassword,
    /// A URI that is not `stun:`, `turn:` or `turns:` of RFC 7064/7065.
    #[error("bad relay URI {uri:?}: {reason}")]
    BadUri {
        /// The URI (shortened).
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// None of the URIs is a TURN relay.
    #[error("no turn: or turns: URI in the answer")]
    NoRelay,
}

/// Scheme of a relay URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnScheme {
    /// `stun:` (RFC 7064): binding requests only.
    Stun,
    /// `turn:` (RFC 7065): TURN over UDP or TCP.
    Turn,
    /// `turns:` (RFC 7065): TURN over TLS.
    Turns,
}

/// Transport of a relay URI (`?transport=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnTransport {
    /// UDP (the default of `stun:` and `turn:`).
    Udp,
    /// TCP (the default, and only choice, of `turns:`).
    Tcp,
}

/// One parsed relay URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnUri {
    /// The scheme.
    pub scheme: TurnScheme,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (3478, or 5349 for `turns:`, when absent).
    pub port: u16,
    /// Transport.
    pub transport: TurnTransport,
}

/// The URI in the form [`TurnUri::parse`] reads back to the same value:
/// `scheme:host:port`, an IPv6 host in brackets, and `?transport=` for
/// `turn:` and `turns:`.
impl std::fmt::Display for TurnUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            TurnScheme::Stun => "stun",
            TurnScheme::Turn => "turn",
            TurnScheme::Turns => "turns",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}:[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{scheme}:{}:{}", self.host, self.port)?;
        }
        match (self.scheme, self.transport) {
            (TurnScheme::Stun, _) => Ok(()),
            (_, TurnTransport::Udp) => f.write_str("?transport=udp"),
            (_, TurnTransport::Tcp) => f.write_str("?transport=tcp"),
        }
    }
}

impl TurnUri {
    /// Parses `stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]`
    /// or `turns:host[:port][?transport=tcp]`; anything else (user info,
    /// paths, other query members, `turns` over UDP) is an error.
    pub fn parse(uri: &str) -> Result<TurnUri, TurnError> {
        let bad = |reason| TurnError::BadUri {
            uri: uri.chars().take(100).collect(),
            reason,
        };
        let (scheme, rest) = match uri.split_once(':') {
            Some((s, r)) if s.eq_ignore_ascii_case("stun") => (TurnScheme::Stun, r),
            Some((s, r)) if s.eq_ignore_ascii_case("turn") => (TurnScheme::Turn, r),
            Some((s, r)) if s.eq_ignore_ascii_case("turns") => (TurnScheme::Turns, r),
            _ => return Err(bad("scheme is not stun, turn or turns")),
        };
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let default_transport = match scheme {
            TurnScheme::Turns => TurnTransport::Tcp,
            _ => TurnTransport::Udp,
        };
        let transport = match query {
            None => default_transport,
            Some(_) if scheme == TurnScheme::Stun => return Err(bad("stun: takes no query")),
            Some(q) => match q.to_ascii_lowercase().as_str() {
                "transport=udp" if scheme == TurnScheme::Turn => TurnTransport::Udp,
                "transport=tcp" => TurnTransport::Tcp,
                _ => return Err(bad("query must be transport=udp or transport=tcp")),
            },
        };
        if authority.contains(['@', '/']) {
            return Err(bad("user info or path"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, tail) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("bad IPv6 address"));
            }
            match tail {
                "" => (h, None),
                t => (
                    h,
                    Some(t.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
                ),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && (host.contains(':')
                || host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
        if !host_ok {
            return Err(bad("bad host"));
        }
        let port = match port {
            None if scheme == TurnScheme::Turns => 5349,
            None => 3478,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(bad("bad port")),
            },
        };
        Ok(TurnUri {
            scheme,
            host: host.to_string(),
            port,
            transport,
        })
    }
}

/// Checked TURN credentials: what a phone hands to its ICE agent.
#[derive(Debug, Clone)]
pub struct TurnCredentials {
    /// `<unix expiry>:<user>`, sent as the TURN USERNAME.
    pub username: String,
    /// The TURN password (secret).
    pub password: SecretString,
    /// When they stop working (from the user name, capped at now +
    /// [`MAX_TTL`]).
    pub expires_at: SystemTime,
    /// The relays, in the provider's order; URIs the phone cannot parse
    /// are left out.
    pub uris: Vec<TurnUri>,
}

impl TurnCredentials {
    /// Checks an answer received at wall-clock time `now`.
    pub fn from_response(
        r: TurnCredentialsResponse,
        now: SystemTime,
    ) -> Result<TurnCredentials, TurnError> {
        let (expiry, user) = r
            .username
            .split_once(':')
            .ok_or_else(|| TurnError::BadUsername(r.username.clone()))?;
        let expiry: u64 = match expiry.parse() {
            Ok(e) if !user.is_empty() && expiry.bytes().all(|b| b.is_ascii_digit()) => e,
            _ => return Err(TurnError::BadUsername(r.username.clone())),
        };
        let now_unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if expiry <= now_unix {
            return Err(TurnError::Expired {
                expiry,
                now: now_unix,
            });
        }
        if r.ttl == 0 {
            return Err(TurnError::ZeroTtl);
        }
        if r.password.expose().is_empty() {
            return Err(TurnError::EmptyPassword);
        }
        let uris: Vec<TurnUri> = r
            .uris
            .iter()
            .filter_map(|u| TurnUri::parse(u).ok())
            .collect();
        if !uris.iter().any(|u| u.scheme != TurnScheme::Stun) {
            return Err(TurnError::NoRelay);
        }
        let lifetime = Duration::from_secs(expiry - now_unix).min(MAX_TTL);
        Ok(TurnCredentials {
            username: r.username,
            password: r.password,
            expires_at: now + lifetime,
            uris,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(username: &str, ttl: u64, uris: &[&str]) -> TurnCredentialsResponse {
        TurnCredentialsResponse {
            username: username.into(),
            password: "cGFzcw==".into(),
            ttl,
            uris: uris.iter().map(|u| u.to_string()).collect(),
        }
    }

    #[test]
    fn a_uri_written_out_parses_back_to_itself() {
        for uri in [
            "stun:1.2.3.4",
            "turn:turn.atlanta.com",
            "turn:[2001:db8::1]:80?transport=tcp",
            "turns:turn.atlanta.com:443?transport=tcp",
            "TURN:Relay.example:3479?transport=UDP",
        ] {
            let u = TurnUri::parse(uri).unwrap();
            assert_eq!(TurnUri::parse(&u.to_string()).unwrap(), u, "{uri} -> {u}");
        }
    }

    #[test]
    fn uris_of_rfc_7064_and_7065() {
        let u = TurnUri::parse("turn:turn.atlanta.com:3478?transport=udp").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.transport),
            (
                TurnScheme::Turn,
                "turn.atlanta.com",
                3478,
                TurnTransport::Udp
            )
        );
        let u = TurnUri::parse("turns:turn.atlanta.com?transport=tcp").unwrap();
        assert_eq!((u.port, u.transport), (5349, TurnTransport::Tcp));
        let u = TurnUri::parse("turn:[2001:db8::1]:80?transport=tcp").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("2001:db8::1", 80));
        assert_eq!(TurnUri::parse("stun:1.2.3.4").unwrap().port, 3478);
        for bad in [
            "http://x",
            "turn:",
            "turn:u@host",
            "turn:host:0",
            "turn:host:99999",
            "turn:host/path",
            "turns:host?transport=udp",
            "turn:host?transport=sctp",
            "stun:host?transport=udp",
            "turn:[::1",
            "turn:[nothost]:3478",
            "turn:ho st",
        ] {
            assert!(TurnUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_checked() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ok = TurnCredentials::from_response(
            resp("1800086400:alice", 86400, &["stun:h", "junk", "turn:h"]),
            now,
        )
        .unwrap();
        assert_eq!(ok.uris.len(), 2);
        assert_eq!(ok.expires_at, now + Duration::from_secs(86400));
        assert!(!format!("{ok:?}").contains("cGFzcw"));
        // A far expiry is capped.
        let far =
            TurnCredentials::from_response(resp("1900000000:alice", 1, &["turn:h"]), now).unwrap();
        assert_eq!(far.expires_at, now + MAX_TTL);
        let err = |u: &str, ttl, uris: &[&str]| {
            TurnCredentials::from_response(resp(u, ttl, uris), now).unwrap_err()
        };
        assert!(matches!(
            err("alice", 1, &["turn:h"]),
            TurnError::BadUsername(_)
        ));
        assert!(matches!(
            err("+1800086400:alice", 1, &["turn:h"]),
            TurnError::BadUsername(_)
        ));
        assert!(matches!(
            err("1800086400:", 1, &["turn:h"]),
            TurnError::BadUsername(_)
        ));
        assert!(matches!(
            err("1800000000:alice", 1, &["turn:h"]),
            TurnError::Expired { .. }
        ));
        assert_eq!(err("1800086400:alice", 0, &["turn:h"]), TurnError::ZeroTtl);
        assert_eq!(err("1800086400:alice", 1, &["stun:h"]), TurnError::NoRelay);
        let mut empty = resp("1800086400:alice", 1, &["turn:h"]);
        empty.password = "".into();
        assert_eq!(
            TurnCredentials::from_response(empty, now).unwrap_err(),
            TurnError::EmptyPassword
        );
    }
}
