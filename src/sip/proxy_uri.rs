//! The outbound proxy a phone is configured with: `sips:host[:port]`,
//! `sip:host[:port][;transport=udp|tcp|tls]`, or a bare `host:port`
//! (UDP, as before). A `sips:` URI or `;transport=tls` means SIP over TLS
//! (RFC 3261 26.2), port 5061 unless given; the other forms 5060.
//!
//! Parsing only: resolving the host is the caller's business (the agent
//! does it when it loads its configuration).

use crate::sip::Transport;
use std::net::IpAddr;
use thiserror::Error;

/// Why a proxy URI is refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyUriError {
    /// No host in it.
    #[error("proxy {0:?}: no host")]
    NoHost(String),
    /// The port is not a number in 1..=65535.
    #[error("proxy {0:?}: the port is not a number from 1 to 65535")]
    BadPort(String),
    /// A `transport` parameter other than udp, tcp and tls.
    #[error("proxy {0:?}: transport must be udp, tcp or tls")]
    BadTransport(String),
    /// `sips:` asks for TLS on every hop; another transport contradicts it.
    #[error("proxy {0:?}: a sips: URI goes over TLS only")]
    SipsNotTls(String),
    /// A user part, headers or a scheme other than sip/sips.
    #[error("proxy {0:?}: give sips:host[:port], sip:host[:port][;transport=...] or host:port")]
    Syntax(String),
}

/// A parsed outbound proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUri {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (the transport's default when the URI has none).
    pub port: u16,
    /// Transport to reach it.
    pub transport: Transport,
}

impl ProxyUri {
    /// Parses one of the three accepted forms; anything else is an error
    /// naming the input, never a panic.
    pub fn parse(text: &str) -> Result<ProxyUri, ProxyUriError> {
        let t = text.trim();
        let err_syntax = || ProxyUriError::Syntax(t.to_string());
        let lower = t.to_ascii_lowercase();
        let (sips, rest) = if lower.starts_with("sips:") {
            (true, &t[5..])
        } else if lower.starts_with("sip:") {
            (false, &t[4..])
        } else if t.contains(':') && !t.contains([';', '@', '/']) {
            // host:port, [v6]:port or a bare IPv6 address without a port.
            return Self::host_port(t, t, Transport::Udp);
        } else {
            return Err(err_syntax());
        };
        if rest.contains('@') || rest.contains('?') {
            return Err(err_syntax());
        }
        let mut parts = rest.split(';');
        let hostport = parts.next().unwrap_or("");
        let mut transport = None;
        for p in parts {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            if name.trim().eq_ignore_ascii_case("transport") {
                transport = Some(match value.trim().to_ascii_lowercase().as_str() {
                    "udp" => Transport::Udp,
                    "tcp" => Transport::Tcp,
                    "tls" => Transport::Tls,
                    _ => return Err(ProxyUriError::BadTransport(t.to_string())),
                });
            }
        }
        let transport = match (sips, transport) {
            (true, None | Some(Transport::Tls)) => Transport::Tls,
            // RFC 5630: `sips:...;transport=tcp` is the old spelling of TLS.
            (true, Some(Transport::Tcp)) => Transport::Tls,
            (true, Some(Transport::Udp)) => return Err(ProxyUriError::SipsNotTls(t.to_string())),
            (false, Some(x)) => x,
            (false, None) => Transport::Udp,
        };
        Self::host_port(t, hostport, transport)
    }

    fn host_port(
        text: &str,
        hostport: &str,
        transport: Transport,
    ) -> Result<ProxyUri, ProxyUriError> {
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| ProxyUriError::Syntax(text.to_string()))?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(ProxyUriError::Syntax(text.to_string())),
            }
        } else if hostport.parse::<IpAddr>().is_ok() {
            (hostport, None)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let host = host.trim();
        let valid_host = !host.is_empty()
            && (host.parse::<IpAddr>().is_ok()
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        if host.is_empty() {
            return Err(ProxyUriError::NoHost(text.to_string()));
        }
        if !valid_host {
            return Err(ProxyUriError::Syntax(text.to_string()));
        }
        let port = match port {
            Some(p) => match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(ProxyUriError::BadPort(text.to_string())),
            },
            None => transport.default_port(),
        };
        Ok(ProxyUri {
            host: host.to_string(),
            port,
            transport,
        })
    }

    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl std::fmt::Display for ProxyUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.transport {
            Transport::Tls => write!(f, "sips:{host}:{}", self.port),
            Transport::Tcp => write!(f, "sip:{host}:{};transport=tcp", self.port),
            Transport::Udp => write!(f, "sip:{host}:{}", self.port),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Result<(String, u16, Transport), ProxyUriError> {
        ProxyUri::parse(s).map(|u| (u.host, u.port, u.transport))
    }

    #[test]
    fn tls_forms_default_to_5061() {
        let tls = |h: &str, port| Ok((h.to_string(), port, Transport::Tls));
        assert_eq!(
            p("sips:sip.atlanta.invalid"),
            tls("sip.atlanta.invalid", 5061)
        );
        assert_eq!(p("SIPS:10.0.0.1:6001"), tls("10.0.0.1", 6001));
        assert_eq!(p("sip:10.0.0.1;transport=TLS"), tls("10.0.0.1", 5061));
        assert_eq!(p("sips:[::1]"), tls("::1", 5061));
        assert_eq!(p("sips:[::1]:7000;lr"), tls("::1", 7000));
        assert_eq!(p("sips:h.invalid;transport=tcp"), tls("h.invalid", 5061));
    }

    #[test]
    fn plain_forms_stay_udp_or_tcp() {
        assert_eq!(
            p("127.0.0.1:5060"),
            Ok(("127.0.0.1".into(), 5060, Transport::Udp))
        );
        assert_eq!(p("[::1]:5070"), Ok(("::1".into(), 5070, Transport::Udp)));
        assert_eq!(
            p("sip:h.invalid"),
            Ok(("h.invalid".into(), 5060, Transport::Udp))
        );
        assert_eq!(
            p("sip:h.invalid:5080;transport=tcp"),
            Ok(("h.invalid".into(), 5080, Transport::Tcp))
        );
    }

    #[test]
    fn contradictions_and_junk_are_refused() {
        assert!(matches!(
            p("sips:h.invalid;transport=udp"),
            Err(ProxyUriError::SipsNotTls(_))
        ));
        assert!(matches!(
            p("sip:h.invalid;transport=sctp"),
            Err(ProxyUriError::BadTransport(_))
        ));
        assert!(matches!(
            p("sip:h.invalid:0"),
            Err(ProxyUriError::BadPort(_))
        ));
        assert!(matches!(
            p("sip:h.invalid:99999"),
            Err(ProxyUriError::BadPort(_))
        ));
        assert!(matches!(p("sips:"), Err(ProxyUriError::NoHost(_))));
        assert!(matches!(
            p("sip:alice@h.invalid"),
            Err(ProxyUriError::Syntax(_))
        ));
        assert!(matches!(
            p("http://h.invalid"),
            Err(ProxyUriError::Syntax(_))
        ));
        assert!(matches!(p("sips:h invalid"), Err(ProxyUriError::Syntax(_))));
        assert!(matches!(p("sips:[::1"), Err(ProxyUriError::Syntax(_))));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "sips:h.invalid:5061",
            "sip:10.0.0.1:5060;transport=tcp",
            "sips:[::1]:5061",
        ] {
            assert_eq!(ProxyUri::parse(s).unwrap().to_string(), s);
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,60}") {
            let _ = ProxyUri::parse(&s);
        }
    }
}
