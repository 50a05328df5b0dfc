//! Identities (spec section 2): the canonical address of record of a SIP URI,
//! the key period label, and `ID = AOR || "#" || period`.

use super::IbeError;
use core::fmt;
use percent_encoding::percent_decode_str;

/// A canonical address of record `sip:user@host`: user part percent-decoded
/// with its case kept, host in lower case, everything else dropped.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Aor(String);

impl Aor {
    /// Canonicalizes a `sip:`/`sips:` URI, a name-addr (`"Bob" <sip:...>`,
    /// with header parameters after it), or a bare addr-spec. Fails with a
    /// clear error for URIs without a user part, other schemes (`tel:`...),
    /// empty or malformed input; never panics.
    pub fn parse(input: &str) -> Result<Self, IbeError> {
        let bad = |why: &str| IbeError::InvalidUri(format!("{why}: {:?}", truncate(input)));
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("empty"));
        }
        // name-addr: take what is inside the angle brackets.
        let uri = match s.find('<') {
            Some(open) => {
                let rest = &s[open + 1..];
                let close = rest.find('>').ok_or_else(|| bad("unterminated '<'"))?;
                &rest[..close]
            }
            None => s,
        };
        let colon = uri.find(':').ok_or_else(|| bad("no scheme"))?;
        let scheme = &uri[..colon];
        if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
            return Err(bad("not a sip: or sips: URI"));
        }
        let rest = &uri[colon + 1..];
        // Neither host, URI parameters nor headers may hold an unescaped '@'
        // (RFC 3261 25.1), so the last '@' ends the userinfo, which itself
        // may contain '?' and ';'. Headers start at the first '?' after it.
        let at = rest.rfind('@').ok_or_else(|| bad("no user part"))?;
        let userinfo = &rest[..at];
        // Spec 2: a user part holding '@' (unescaped, which RFC 3261 refuses,
        // or percent-encoded) has no identity: `alice%40atlanta.com@evil.com`
        // must never be shown as `alice@atlanta.com@...`.
        if userinfo.contains('@') {
            return Err(bad("user part holds '@'"));
        }
        let hostport_params = rest[at + 1..].split('?').next().unwrap_or_default();
        // user ":" password: the password is dropped.
        let user_raw = userinfo.split(':').next().unwrap_or_default();
        if user_raw.is_empty() {
            return Err(bad("empty user part"));
        }
        if user_raw
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'<' || b == b'>' || b == b'"')
        {
            return Err(bad("invalid character in user part"));
        }
        let user = percent_decode_str(user_raw)
            .decode_utf8()
            .map_err(|_| bad("user part is not UTF-8 after percent-decoding"))?;
        if user.chars().any(|c| c.is_control()) {
            return Err(bad("control character in user part"));
        }
        if user.contains('@') {
            return Err(bad("user part holds '@' after percent-decoding"));
        }
        let hostport = hostport_params.split(';').next().unwrap_or_default();
        let host = parse_host(hostport).ok_or_else(|| bad("invalid host"))?;
        Ok(Aor(format!("sip:{user}@{host}")))
    }

    /// Accepts an AOR that is already canonical (`sip:` + decoded user +
    /// `@` + lower-case host, as found in an identity string or a signer
    /// attribute). Unlike [`Aor::parse`] it does not percent-decode, so a
    /// decoded user part such as `carol smith` is taken as it is; anything
    /// that is not exactly canonical is an error.
    pub fn from_canonical(aor: &str) -> Result<Self, IbeError> {
        let bad = |why: &str| IbeError::InvalidUri(format!("{why}: {:?}", truncate(aor)));
        let body = aor
            .strip_prefix("sip:")
            .ok_or_else(|| bad("not a canonical sip: AOR"))?;
        let at = body.rfind('@').ok_or_else(|| bad("no user part"))?;
        let (user, host) = (&body[..at], &body[at + 1..]);
        if user.is_empty() || user.contains('@') || user.chars().any(|c| c.is_control()) {
            return Err(bad("invalid user part"));
        }
        match parse_host(host) {
            Some(h) if h == host => Ok(Aor(aor.to_string())),
            _ => Err(bad("host is not canonical")),
        }
    }

    /// The canonical string, e.g. `sip:bob@biloxi.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The user part (percent-decoded).
    pub fn user(&self) -> &str {
        let body = &self.0[4..];
        &body[..body.rfind('@').unwrap_or(0)]
    }

    /// The host part (lower case): the provider's domain.
    pub fn host(&self) -> &str {
        let body = &self.0[4..];
        &body[body.rfind('@').map_or(0, |i| i + 1)..]
    }
}

/// Host of `host[:port]`, lower-cased; IPv6 references keep their brackets.
fn parse_host(hostport: &str) -> Option<String> {
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        let close = v6.find(']')?;
        let addr = &v6[..close];
        let after = &v6[close + 1..];
        if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
            return None;
        }
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        format!("[{addr}]")
    } else {
        let (h, port) = match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        if let Some(p) = port {
            if !valid_port(p) {
                return None;
            }
        }
        if h.is_empty()
            || h.starts_with('.')
            || h.starts_with('-')
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return None;
        }
        h.to_string()
    };
    Some(host.to_ascii_lowercase())
}

fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

impl fmt::Display for Aor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Aor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Aor({})", self.0)
    }
}

/// A key period label. With the default rule (`"period": "month"`) it is the
/// UTC calendar month `YYYY-MM`; the type guarantees the label is non-empty
/// printable ASCII without `#`, so `ID` stays unambiguous.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period(String);

impl Period {
    /// A monthly label `YYYY-MM`, validated (year 1970-9999, month 01-12).
    pub fn month(label: &str) -> Result<Self, IbeError> {
        let bad = || IbeError::InvalidPeriod(format!("{:?} is not YYYY-MM", truncate(label)));
        let b = label.as_bytes();
        if b.len() != 7 || b[4] != b'-' {
            return Err(bad());
        }
        let digits = |r: core::ops::Range<usize>| -> Option<u32> {
            let s = label.get(r)?;
            if s.bytes().all(|c| c.is_ascii_digit()) {
                s.parse().ok()
            } else {
                None
            }
        };
        let year = digits(0..4).ok_or_else(bad)?;
        let month = digits(5..7).ok_or_else(bad)?;
        if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Period(label.to_string()))
    }

    /// The monthly period containing `unix_secs` (UTC).
    pub fn month_at(unix_secs: u64) -> Self {
        let (y, m) = year_month_from_days(unix_secs / 86_400);
        Period(format!("{y:04}-{m:02}"))
    }

    /// The month before this one (monthly labels only).
    pub fn previous_month(&self) -> Result<Self, IbeError> {
        let (y, m) = self.year_month()?;
        let (y, m) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
        Period::month(&format!("{y:04}-{m:02}"))
    }

    /// The month after this one (monthly labels only).
    pub fn next_month(&self) -> Result<Self, IbeError> {
        let (y, m) = self.year_month()?;
        let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Period::month(&format!("{y:04}-{m:02}"))
    }

    fn year_month(&self) -> Result<(u32, u32), IbeError> {
        let p = Period::month(&self.0)?;
        let y = p.0[..4]
            .parse()
            .map_err(|_| IbeError::InvalidPeriod(self.0.clone()))?;
        let m = p.0[5..]
            .parse()
            .map_err(|_| IbeError::InvalidPeriod(self.0.clone()))?;
        Ok((y, m))
    }

    /// The label as it appears in `ID`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Civil (proleptic Gregorian) year and month of a day count since
/// 1970-01-01 (H. Hinnant's `civil_from_days`; written by hand because it is
/// ten lines and the only calendar arithmetic this layer needs).
fn year_month_from_days(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Period({})", self.0)
    }
}

/// One user for one key period: `ID = AOR || "#" || period`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    aor: Aor,
    period: Period,
    id: String,
}

impl Identity {
    /// The identity of `aor` in `period`.
    pub fn new(aor: Aor, period: Period) -> Self {
        let id = format!("{}#{}", aor.as_str(), period.as_str());
        Identity { aor, period, id }
    }

    /// Parses the identity string form `sip:user@host#YYYY-MM` (canonical
    /// AOR, see [`Aor::from_canonical`]).
    pub fn parse(id: &str) -> Result<Self, IbeError> {
        let (aor, period) = id
            .rsplit_once('#')
            .ok_or_else(|| IbeError::InvalidUri(format!("{:?} has no '#period'", truncate(id))))?;
        Ok(Identity::new(
            Aor::from_canonical(aor)?,
            Period::month(period)?,
        ))
    }

    /// The address of record.
    pub fn aor(&self) -> &Aor {
        &self.aor
    }

    /// The key period.
    pub fn period(&self) -> &Period {
        &self.period
    }

    /// The identity string `ID` that is hashed to the public keys.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// `SHA-256(ID)` cut to 20 bytes: the CMS `subjectKeyIdentifier`.
    pub fn key_identifier(&self) -> [u8; 20] {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(self.id.as_bytes());
        let mut out = [0u8; 20];
        out.copy_from_slice(&d[..20]);
        out
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn aor_cases() {
        for (input, want) in crate::ibe::kat::AOR_CASES {
            let got = Aor::parse(input).ok().map(|a| a.as_str().to_string());
            assert_eq!(got.as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn aor_parts() {
        let a = Aor::parse("sip:a.b@c.org").unwrap();
        assert_eq!(a.user(), "a.b");
        assert_eq!(a.host(), "c.org");
    }

    /// Spec 2: `sip:alice%40atlanta.com@evil.com` would be shown as the
    /// identity `alice@atlanta.com@evil.com`, which reads as alice of
    /// atlanta.com; every spelling of an '@' in the user part is refused.
    #[test]
    fn at_sign_in_user_part_is_refused() {
        for uri in [
            "sip:alice%40atlanta.com@evil.com",
            "sip:alice%40atlanta.com:pw@evil.com",
            "\"Alice\" <sips:alice%40atlanta.com@evil.com;transport=tls>",
            "sip:alice@atlanta.com@evil.com",
            "sip:%40@evil.com",
        ] {
            match Aor::parse(uri) {
                Err(IbeError::InvalidUri(why)) => assert!(why.contains('@'), "{uri}: {why}"),
                other => panic!("{uri}: {other:?}"),
            }
        }
        for id in [
            "sip:alice@atlanta.com@evil.com#2026-11",
            "sip:@@evil.com#2026-11",
        ] {
            assert!(
                matches!(Identity::parse(id), Err(IbeError::InvalidUri(_))),
                "{id}"
            );
        }
        assert!(Aor::from_canonical("sip:alice@atlanta.com@evil.com").is_err());
    }

    #[test]
    fn periods() {
        assert!(Period::month("2026-11").is_ok());
        for bad in [
            "2026-13", "2026-00", "26-11", "2026/11", "2026-1", "", "abcd-ef", "2026-11#",
        ] {
            assert!(Period::month(bad).is_err(), "{bad}");
        }
        assert_eq!(Period::month_at(0).as_str(), "1970-01");
        // 2026-11-22T00:00:00Z
        assert_eq!(Period::month_at(1_795_305_600).as_str(), "2026-11");
        // 2024-02-29T23:59:59Z then 2024-03-01T00:00:00Z
        assert_eq!(Period::month_at(1_709_251_199).as_str(), "2024-02");
        assert_eq!(Period::month_at(1_709_251_200).as_str(), "2024-03");
        let p = Period::month("2026-01").unwrap();
        assert_eq!(p.previous_month().unwrap().as_str(), "2025-12");
        assert_eq!(p.next_month().unwrap().as_str(), "2026-02");
        assert_eq!(
            Period::month("2026-12")
                .unwrap()
                .next_month()
                .unwrap()
                .as_str(),
            "2027-01"
        );
    }

    #[test]
    fn identity_string() {
        let id = Identity::new(
            Aor::parse("sip:bob@biloxi.com").unwrap(),
            Period::month("2026-11").unwrap(),
        );
        assert_eq!(id.as_str(), "sip:bob@biloxi.com#2026-11");
        assert_eq!(Identity::parse(id.as_str()).unwrap(), id);
        assert!(Identity::parse("sip:Bob@BILOXI.com#2026-11").is_err());
        assert!(Identity::parse("sip:bob@biloxi.com:5060#2026-11").is_err());
        assert!(Identity::parse("sips:bob@biloxi.com#2026-11").is_err());
        let spaced = Identity::parse("sip:carol smith@biloxi.com#2026-11").unwrap();
        assert_eq!(spaced.aor().user(), "carol smith");
        assert!(Identity::parse("sip:bob@biloxi.com").is_err());
    }

    proptest! {
        #[test]
        fn aor_parse_never_panics(s in "\\PC*") {
            let _ = Aor::parse(&s);
        }

        #[test]
        fn canonical_aor_is_a_fixed_point(user in "[a-zA-Z0-9._+-]{1,20}", host in "[a-zA-Z0-9]{1,10}(\\.[a-zA-Z]{2,5}){0,2}", port in proptest::option::of(1u16..)) {
            let uri = match port { Some(p) => format!("sip:{user}@{host}:{p}"), None => format!("sips:{user}@{host}") };
            let a = Aor::parse(&uri).unwrap();
            prop_assert_eq!(Aor::parse(a.as_str()).unwrap(), a.clone());
            prop_assert_eq!(a.user(), user.as_str());
        }

        /// However the '@' is spelled (`%40` or raw) and
        /// wherever it sits in the user part, there is no identity; the same
        /// user part without it canonicalizes.
        #[test]
        fn user_part_with_at_sign_has_no_identity(
            pre in "[a-zA-Z0-9._+-]{0,12}",
            post in "[a-zA-Z0-9._+-]{0,12}",
            at in prop_oneof![Just("%40"), Just("@")],
            host in "[a-z0-9]{1,10}(\\.[a-z]{2,5}){0,2}",
            scheme in prop_oneof![Just("sip"), Just("sips"), Just("SIP")],
        ) {
            let uri = format!("{scheme}:{pre}{at}{post}@{host}");
            prop_assert!(matches!(Aor::parse(&uri), Err(IbeError::InvalidUri(_))), "{}", uri);
            let name_addr = format!("\"x\" <{uri};transport=udp>;tag=1");
            prop_assert!(Aor::parse(&name_addr).is_err(), "{}", name_addr);
            let canonical = format!("sip:{pre}@{post}@{host}");
            prop_assert!(Aor::from_canonical(&canonical).is_err(), "{}", canonical);
            if !(pre.is_empty() && post.is_empty()) {
                let clean = Aor::parse(&format!("{scheme}:{pre}{post}@{host}")).unwrap();
                prop_assert!(!clean.user().contains('@'));
                prop_assert_eq!(clean.host(), host.as_str());
            }
        }

        #[test]
        fn month_matches_next(secs in 0u64..253_402_300_799) {
            let p = Period::month_at(secs);
            prop_assert!(Period::month(p.as_str()).is_ok());
            let q = Period::month_at(secs + 32 * 86_400);
            prop_assert!(q == p.next_month().unwrap() || q == p.next_month().unwrap().next_month().unwrap());
        }
    }
}
