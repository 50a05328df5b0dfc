//! A strict, read-only view of one SIP message: just what the tunnel needs
//! (start line, the headers of 5.1, Content-Length), in either the full or
//! the compact header form. It never rewrites the bytes: the inner message
//! must travel byte for byte, so the tunnel works on raw messages rather
//! than on a parsed-and-reprinted `rsip` value.

use thiserror::Error;

/// Why bytes are not a SIP message the tunnel accepts: what the sender got
/// wrong.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// No empty line ends the headers.
    #[error("no end of headers")]
    NoEndOfHeaders,
    /// The start line and headers are not UTF-8.
    #[error("headers are not UTF-8")]
    NotUtf8,
    /// The start line is neither a request line nor a status line.
    #[error("malformed start line")]
    StartLine,
    /// The status code is not three digits in 100..=699.
    #[error("bad status code")]
    StatusCode,
    /// The version is not `SIP/2.0`.
    #[error("not SIP/2.0")]
    Version,
    /// A continuation line comes before any header.
    #[error("folded line before any header")]
    FoldedFirstLine,
    /// A CR, LF or NUL inside a header line.
    #[error("stray line break or NUL in headers")]
    StrayLineBreak,
    /// A header line without a colon.
    #[error("header line without ':'")]
    NoColon,
    /// A header name with characters outside RFC 3261 `token`.
    #[error("invalid header name")]
    HeaderName,
    /// Content-Length is not a number.
    #[error("Content-Length is not a number")]
    ContentLengthNotNumber,
    /// Content-Length differs from the body length.
    #[error("Content-Length {declared} but body has {actual} bytes")]
    ContentLengthMismatch {
        /// The declared length.
        declared: usize,
        /// The real body length.
        actual: usize,
    },
    /// A header that must be present exactly once is missing.
    #[error("{0} missing")]
    Missing(String),
    /// A header that must be present exactly once is repeated.
    #[error("{0} repeated")]
    Repeated(String),
    /// CSeq is not `number method`.
    #[error("malformed CSeq")]
    CSeq,
    /// A name-addr with `<` but no `>`.
    #[error("unterminated '<'")]
    Unterminated,
    /// A Call-ID that is not 128 random bits without a host (spec 5.1).
    #[error("Call-ID must be at least 128 random bits without a host")]
    CallId,
}

/// Request or response line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD Request-URI SIP/2.0`.
    Request {
        /// Method.
        method: String,
        /// Request-URI.
        uri: String,
    },
    /// `SIP/2.0 code reason`.
    Response {
        /// Status code.
        code: u16,
    },
}

/// A parsed message; header values borrow from the message bytes.
#[derive(Debug, Clone)]
pub struct SipView<'a> {
    /// The start line.
    pub start: StartLine,
    /// The SIP version of the start line (always `SIP/2.0` here).
    pub version: &'a str,
    /// Headers in order: lower-case long name and trimmed value.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: &'a [u8],
}

/// The long form of a compact header name (RFC 3261 7.3.3 and the compact
/// forms registered since), lower-cased; other names are lower-cased.
/// Shared with the capture reader (`pcap::sipscan`).
pub fn long_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let long = match lower.as_str() {
        "a" => "accept-contact",
        "b" => "referred-by",
        "c" => "content-type",
        "d" => "request-disposition",
        "e" => "content-encoding",
        "f" => "from",
        "i" => "call-id",
        "j" => "reject-contact",
        "k" => "supported",
        "l" => "content-length",
        "m" => "contact",
        "n" => "identity-info",
        "o" => "event",
        "r" => "refer-to",
        "s" => "subject",
        "t" => "to",
        "u" => "allow-events",
        "v" => "via",
        "x" => "session-expires",
        "y" => "identity",
        _ => return lower,
    };
    long.to_string()
}

impl<'a> SipView<'a> {
    /// Parses one complete message: CRLF line ends, a `SIP/2.0` start line,
    /// `name: value` headers (folded lines joined), a Content-Length that
    /// is present and equals the body length exactly.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MessageError> {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or(MessageError::NoEndOfHeaders)?;
        let head = std::str::from_utf8(&bytes[..end]).map_err(|_| MessageError::NotUtf8)?;
        let body = &bytes[end + 4..];
        let mut lines = head.split("\r\n");
        let first = lines.next().ok_or(MessageError::StartLine)?;
        let (start, version) = parse_start(first)?;
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with(' ') || line.starts_with('\t') {
                let last = headers.last_mut().ok_or(MessageError::FoldedFirstLine)?;
                last.1.push(' ');
                last.1.push_str(line.trim());
                continue;
            }
            if line.bytes().any(|b| b == b'\n' || b == b'\r' || b == 0) {
                return Err(MessageError::StrayLineBreak);
            }
            let (name, value) = line.split_once(':').ok_or(MessageError::NoColon)?;
            let name = name.trim_end();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
            {
                return Err(MessageError::HeaderName);
            }
            headers.push((long_name(name), value.trim().to_string()));
        }
        let view = SipView {
            start,
            version,
            headers,
            body,
        };
        let lengths: Vec<&str> = view.all("content-length").collect();
        match lengths.as_slice() {
            [one] => {
                let n: usize = one
                    .parse()
                    .map_err(|_| MessageError::ContentLengthNotNumber)?;
                if n != body.len() {
                    return Err(MessageError::ContentLengthMismatch {
                        declared: n,
                        actual: body.len(),
                    });
                }
            }
            [] => return Err(MessageError::Missing("content-length".into())),
            _ => return Err(MessageError::Repeated("content-length".into())),
        }
        Ok(view)
    }

    /// The first value of a header (lower-case long name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header, in order (comma-separated values are not split).
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Exactly one value of a header, or an error naming it.
    pub fn one(&self, name: &str) -> Result<&str, MessageError> {
        let mut it = self
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        match (it.next(), it.next()) {
            (Some(v), None) => Ok(v),
            (None, _) => Err(MessageError::Missing(name.to_string())),
            _ => Err(MessageError::Repeated(name.to_string())),
        }
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// `Call-ID`.
    pub fn call_id(&self) -> Result<&str, MessageError> {
        self.one("call-id")
    }

    /// `CSeq` number and method.
    pub fn cseq(&self) -> Result<(u32, &str), MessageError> {
        let v = self.one("cseq")?;
        let (n, m) = v
            .split_once(char::is_whitespace)
            .ok_or(MessageError::CSeq)?;
        let n: u32 = n.parse().map_err(|_| MessageError::CSeq)?;
        let m = m.trim();
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(MessageError::CSeq);
        }
        Ok((n, m))
    }

    /// The method of a request, or the CSeq method of a response.
    pub fn method(&self) -> Result<&str, MessageError> {
        match &self.start {
            StartLine::Request { method, .. } => Ok(method),
            StartLine::Response { .. } => Ok(self.cseq()?.1),
        }
    }

    /// `From` as a name-addr.
    pub fn from(&self) -> Result<NameAddr<'_>, MessageError> {
        NameAddr::parse(self.one("from")?)
    }

    /// `To` as a name-addr.
    pub fn to(&self) -> Result<NameAddr<'_>, MessageError> {
        NameAddr::parse(self.one("to")?)
    }
}

fn parse_start(line: &str) -> Result<(StartLine, &str), MessageError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let code = rest
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or(MessageError::StatusCode)?;
        if !(100..=699).contains(&code) || rest.as_bytes().get(3).is_some_and(|&b| b != b' ') {
            return Err(MessageError::StatusCode);
        }
        return Ok((StartLine::Response { code }, "SIP/2.0"));
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MessageError::StartLine);
    };
    if version != "SIP/2.0" {
        return Err(MessageError::Version);
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || uri.is_empty() {
        return Err(MessageError::StartLine);
    }
    Ok((
        StartLine::Request {
            method: method.to_string(),
            uri: uri.to_string(),
        },
        version,
    ))
}

/// A `From`/`To`/`Contact` value: display name, URI and header parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The URI (inside the angle brackets when there are some).
    pub uri: &'a str,
    /// Header parameters after the URI, e.g. `tag=abc`.
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    /// Parses `["name"] <uri>;params` or `uri;params`.
    pub fn parse(value: &'a str) -> Result<Self, MessageError> {
        if let Some(open) = value.find('<') {
            let close = value[open..].find('>').ok_or(MessageError::Unterminated)? + open;
            let params = value[close + 1..].trim();
            let params = params.strip_prefix(';').unwrap_or(params);
            Ok(NameAddr {
                uri: &value[open + 1..close],
                params,
            })
        } else {
            let (uri, params) = value.split_once(';').unwrap_or((value, ""));
            Ok(NameAddr {
                uri: uri.trim(),
                params,
            })
        }
    }

    /// The value of header parameter `name` (case-insensitive name).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.split(';').find_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a str> {
        self.param("tag")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INVITE: &str = "INVITE sip:bob@biloxi.invalid SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nf: \"Alice\" <sip:alice@atlanta.invalid>;tag=88\r\nTo: <sip:bob@biloxi.invalid>\r\ni: abc\r\nCSeq: 1 INVITE\r\nl: 4\r\n\r\nbody";

    #[test]
    fn parses_compact_and_long_forms() {
        let v = SipView::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(v.method().unwrap(), "INVITE");
        assert_eq!(v.from().unwrap().tag(), Some("88"));
        assert_eq!(v.from().unwrap().uri, "sip:alice@atlanta.invalid");
        assert_eq!(v.to().unwrap().tag(), None);
        assert_eq!(v.call_id().unwrap(), "abc");
        assert_eq!(v.cseq().unwrap(), (1, "INVITE"));
        assert_eq!(v.body, b"body");
    }

    #[test]
    fn content_length_must_be_exact() {
        let lying = INVITE.replace("l: 4", "l: 3");
        assert_eq!(
            SipView::parse(lying.as_bytes()).unwrap_err(),
            MessageError::ContentLengthMismatch {
                declared: 3,
                actual: 4
            }
        );
        let missing = INVITE.replace("l: 4\r\n", "");
        assert_eq!(
            SipView::parse(missing.as_bytes()).unwrap_err(),
            MessageError::Missing("content-length".into())
        );
        let twice = INVITE.replace("l: 4", "l: 4\r\nContent-Length: 4");
        assert_eq!(
            SipView::parse(twice.as_bytes()).unwrap_err(),
            MessageError::Repeated("content-length".into())
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = SipView::parse(&bytes);
            let mut m = b"SIP/2.0 200 OK\r\n".to_vec();
            m.extend_from_slice(&bytes);
            if let Ok(v) = SipView::parse(&m) {
                let _ = (v.cseq(), v.from(), v.to(), v.call_id());
            }
        }
    }
}
