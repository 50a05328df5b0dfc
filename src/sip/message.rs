//! SIP messages: parsing with `rsip`, a small owned representation, and
//! serialisation with a choice of full or compact header names.
//!
//! `rsip` 0.4 tokenises the start line, the headers and the URIs. What it
//! lacks is written here by hand, and only that:
//! - compact header names (RFC 3261 7.3.3): `rsip` keeps `v`, `f`, `i`, ...
//!   as unknown headers, so names are mapped to their full form on input;
//! - Content-Length framing: `rsip` takes every byte after the blank line as
//!   the body; we cut the body at Content-Length (RFC 3261 18.3) and refuse a
//!   body shorter than announced;
//! - header parameter access (`tag`, `branch`, `received`, `rport`) on the
//!   raw header values, and comma-separated header lists, because the typed
//!   `rsip` headers reorder or drop parameters they do not know (`rport`);
//! - writing the message, so that the header names can be compact.
//!
//! Headers are kept as (canonical name, raw value) pairs in wire order, so a
//! proxy forwards what it received untouched apart from the headers it edits.
//! Every function here is total: malformed input is an [`ParseError`], never a
//! panic (property test `parser_never_panics`, fuzz target `sip_parse`).

use rsip::{Method, Uri};
use std::fmt::Write as _;

/// Largest message we accept (UDP datagram limit, and a TCP framing bound).
pub const MAX_MESSAGE_LEN: usize = 65_535;

/// Why bytes are not a usable SIP message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The peer sent something that is not a SIP message at all.
    #[error("not a SIP message: {0}")]
    Syntax(String),
    /// The peer sent a message bigger than [`MAX_MESSAGE_LEN`].
    #[error("message too large")]
    TooLarge,
    /// The peer announced a Content-Length longer than the body it sent.
    #[error("body shorter than Content-Length")]
    Truncated,
    /// The peer left out or garbled a header that RFC 3261 8.1.1 requires.
    #[error("missing or malformed {0} header")]
    BadHeader(&'static str),
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`
    Request {
        /// The method.
        method: Method,
        /// The Request-URI.
        uri: Uri,
    },
    /// `SIP/2.0 code reason`
    Response {
        /// The status code (100..=699).
        status: u16,
        /// The reason phrase.
        reason: String,
    },
}

/// How header names are written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderForm {
    /// `Via`, `From`, `Call-ID`, ...
    Full,
    /// `v`, `f`, `i`, ... where RFC 3261 7.3.3 defines a compact name.
    #[default]
    Compact,
}

/// An owned SIP message: start line, headers in wire order, opaque body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request or status line.
    pub start: StartLine,
    headers: Vec<(String, String)>,
    /// The body, never interpreted by the SIP core.
    pub body: Vec<u8>,
}

/// (compact, full) header names of RFC 3261 7.3.3 and later RFCs.
const COMPACT: &[(&str, &str)] = &[
    ("v", "Via"),
    ("f", "From"),
    ("t", "To"),
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("e", "Content-Encoding"),
    ("s", "Subject"),
    ("k", "Supported"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("u", "Allow-Events"),
];

/// Full names we spell canonically (rsip writes some differently).
const CANONICAL: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Content-Length",
    "Content-Type",
    "Content-Disposition",
    "Max-Forwards",
    "Route",
    "Record-Route",
    "Expires",
    "Min-Expires",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Authorization",
    "Proxy-Authorization",
    "Accept",
    "Allow",
    "Supported",
    "Require",
    "User-Agent",
    "Server",
];

fn canonical_name(name: &str) -> String {
    let name = name.trim();
    if let Some((_, full)) = COMPACT.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)) {
        return (*full).to_string();
    }
    if let Some(full) = CANONICAL.iter().find(|f| f.eq_ignore_ascii_case(name)) {
        return (*full).to_string();
    }
    name.to_string()
}

fn compact_name(full: &str) -> Option<&'static str> {
    COMPACT
        .iter()
        .find(|(_, f)| f.eq_ignore_ascii_case(full))
        .map(|(c, _)| *c)
}

/// Reads a Content-Length value as RFC 3261 25.1 writes it (`1*DIGIT`,
/// surrounding white space allowed); `None` for anything else, a sign, or
/// a number too large for memory. The stream framer and the parser both
/// read lengths through this one function, so they cannot disagree on
/// where a message ends.
pub fn content_length_value(value: &str) -> Option<usize> {
    let digits = value.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Message {
    /// Parses one message from `bytes` (a whole datagram or one framed TCP
    /// message). Accepts full and compact header names.
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge);
        }
        // Keep-alives (RFC 5626 CRLF) and leading blank lines are not messages.
        let start = bytes
            .iter()
            .position(|b| *b != b'\r' && *b != b'\n')
            .ok_or_else(|| ParseError::Syntax("empty".into()))?;
        let bytes = &bytes[start..];
        // rsip's error quotes the input it stopped at; for a decrypted
        // inner message that is message content, and the reason travels
        // into `rejected` events and the log. Only the fact is kept.
        let parsed = rsip::SipMessage::try_from(bytes)
            .map_err(|_| ParseError::Syntax("unparseable start line or headers".into()))?;
        let (start, headers, body) = match parsed {
            rsip::SipMessage::Request(r) => (
                StartLine::Request {
                    method: r.method,
                    uri: r.uri,
                },
                r.headers,
                r.body,
            ),
            rsip::SipMessage::Response(r) => {
                let status: u16 = r.status_code.code();
                if !(100..=699).contains(&status) {
                    return Err(ParseError::Syntax("status code out of range".into()));
                }
                let reason = r.status_code.to_string();
                let reason = reason
                    .split_once(' ')
                    .map(|(_, r)| r.to_string())
                    .unwrap_or_default();
                (StartLine::Response { status, reason }, r.headers, r.body)
            }
        };
        let mut out = Vec::new();
        for h in headers.iter() {
            // rsip writes every header as `Name: value`.
            let text = h.to_string();
            let (name, value) = text
                .split_once(':')
                .ok_or_else(|| ParseError::Syntax("header without colon".into()))?;
            if name.is_empty() || name.contains(|c: char| c.is_whitespace()) {
                return Err(ParseError::Syntax("bad header name".into()));
            }
            out.push((canonical_name(name), value.trim().to_string()));
        }
        let mut msg = Message {
            start,
            headers: out,
            body,
        };
        let lengths: Vec<&str> = msg.header_values("Content-Length").collect();
        // Two lengths are how a request is smuggled past a framer that
        // reads the other one (RFC 9112 6.3 makes the same rule).
        let announced = match lengths.as_slice() {
            [] => None,
            [one] => {
                Some(content_length_value(one).ok_or(ParseError::BadHeader("Content-Length"))?)
            }
            _ => return Err(ParseError::BadHeader("Content-Length")),
        };
        if let Some(n) = announced {
            if n > msg.body.len() {
                return Err(ParseError::Truncated);
            }
            msg.body.truncate(n);
        }
        Ok(msg)
    }

    /// A new request with no headers.
    pub fn request(method: Method, uri: Uri) -> Message {
        Message {
            start: StartLine::Request { method, uri },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response to `req` (RFC 3261 8.2.6.2): copies Via, From, To, Call-ID,
    /// CSeq and, for 1xx/2xx, Record-Route. Adds `to_tag` to To if To has
    /// none and a tag is given.
    pub fn response_to(req: &Message, status: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let mut resp = Message {
            start: StartLine::Response {
                status,
                reason: reason.to_string(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        };
        for (name, value) in &req.headers {
            let copy = matches!(name.as_str(), "Via" | "From" | "Call-ID" | "CSeq")
                || (name == "Record-Route" && (100..300).contains(&status) && status != 100);
            if copy {
                resp.headers.push((name.clone(), value.clone()));
            } else if name == "To" {
                let mut v = value.clone();
                if let Some(tag) = to_tag {
                    if param(value, "tag").is_none() && status != 100 {
                        let _ = write!(v, ";tag={tag}");
                    }
                }
                resp.headers.push((name.clone(), v));
            }
        }
        resp
    }

    /// Writes the message; Content-Length is always recomputed and written last.
    pub fn to_bytes(&self, form: HeaderForm) -> Vec<u8> {
        let mut s = String::with_capacity(256 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(s, "{method} {uri} SIP/2.0\r\n");
            }
            StartLine::Response { status, reason } => {
                let _ = write!(s, "SIP/2.0 {status} {reason}\r\n");
            }
        }
        for (name, value) in &self.headers {
            if name == "Content-Length" {
                continue;
            }
            let n = match form {
                HeaderForm::Compact => compact_name(name).unwrap_or(name),
                HeaderForm::Full => name,
            };
            let _ = write!(s, "{n}: {value}\r\n");
        }
        let n = match form {
            HeaderForm::Compact => "l",
            HeaderForm::Full => "Content-Length",
        };
        let _ = write!(s, "{n}: {}\r\n\r\n", self.body.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// The method of a request, or the CSeq method of a response.
    pub fn method(&self) -> Option<Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(*method),
            StartLine::Response { .. } => self.cseq().map(|(_, m)| m),
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The Request-URI of a request.
    pub fn uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The first value of header `name` (full name, case-insensitive); for
    /// list headers (Via, Route, ...) this is the first list element.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).next()
    }

    /// Every value of header `name`, comma-separated lists split, in order.
    pub fn header_values(&self, name: &str) -> impl Iterator<Item = &str> + '_ {
        let list = is_list_header(name);
        let mut out = Vec::new();
        for (n, v) in &self.headers {
            if n.eq_ignore_ascii_case(name) {
                if list {
                    out.extend(split_list(v));
                } else {
                    out.push(v.as_str());
                }
            }
        }
        out.into_iter()
    }

    /// Appends a header.
    pub fn push_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((canonical_name(name), value.into()));
    }

    /// Inserts a header before every other header of the same name (Via,
    /// Record-Route), or at the top if there is none.
    pub fn prepend_header(&mut self, name: &str, value: impl Into<String>) {
        let name = canonical_name(name);
        let pos = self
            .headers
            .iter()
            .position(|(n, _)| *n == name)
            .unwrap_or(0);
        self.headers.insert(pos, (name, value.into()));
    }

    /// Replaces every header `name` by one with `value`.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.remove_header(name);
        self.push_header(name, value);
    }

    /// Removes every header `name`.
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Removes the first element of list header `name` (top Via, top Route).
    pub fn remove_first(&mut self, name: &str) {
        let Some(i) = self
            .headers
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        else {
            return;
        };
        let rest: Vec<String> = split_list(&self.headers[i].1)
            .into_iter()
            .skip(1)
            .map(str::to_string)
            .collect();
        if rest.is_empty() {
            self.headers.remove(i);
        } else {
            self.headers[i].1 = rest.join(", ");
        }
    }

    /// Replaces the first element of list header `name`.
    pub fn replace_first(&mut self, name: &str, value: String) {
        self.remove_first(name);
        self.prepend_header(name, value);
    }

    /// All headers, in wire order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, Method)> {
        let v = self.header("CSeq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        let m = it.next()?.parse().ok()?;
        Some((n, m))
    }

    /// Tag of From.
    pub fn from_tag(&self) -> Option<&str> {
        param(self.header("From")?, "tag")
    }

    /// Tag of To.
    pub fn to_tag(&self) -> Option<&str> {
        param(self.header("To")?, "tag")
    }

    /// Branch of the top Via.
    pub fn branch(&self) -> Option<&str> {
        param(self.header("Via")?, "branch")
    }

    /// Checks the headers RFC 3261 8.1.1 requires for the core to work on a
    /// message: Via with a branch, From, To, Call-ID, CSeq (agreeing with the
    /// request method), and a From tag on requests.
    pub fn validate(&self) -> Result<(), ParseError> {
        if self.branch().is_none() {
            return Err(ParseError::BadHeader("Via"));
        }
        if self.header("From").is_none() {
            return Err(ParseError::BadHeader("From"));
        }
        if self.header("To").is_none() {
            return Err(ParseError::BadHeader("To"));
        }
        if self.call_id().is_none_or(str::is_empty) {
            return Err(ParseError::BadHeader("Call-ID"));
        }
        let (_, cseq_method) = self.cseq().ok_or(ParseError::BadHeader("CSeq"))?;
        if let StartLine::Request { method, .. } = &self.start {
            if *method != cseq_method {
                return Err(ParseError::BadHeader("CSeq"));
            }
            if self.from_tag().is_none() {
                return Err(ParseError::BadHeader("From"));
            }
        }
        Ok(())
    }
}

/// A `400 Bad Request` for bytes that [`Message::parse`] refused but that
/// still look like a request (a `... SIP/2.0` request line, not ACK) with
/// a Via: the answer RFC 3261 21.4.1 asks for, built from the raw Via, From,
/// To, Call-ID and CSeq lines. None when no response is possible.
pub fn bad_request_for(bytes: &[u8]) -> Option<Message> {
    let text = String::from_utf8_lossy(bytes.get(..bytes.len().min(MAX_MESSAGE_LEN))?);
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let first = lines.next()?.trim_start();
    if !first.ends_with(" SIP/2.0") || first.starts_with("SIP/") || first.starts_with("ACK ") {
        return None;
    }
    let mut resp = Message {
        start: StartLine::Response {
            status: 400,
            reason: "Bad Request".into(),
        },
        headers: Vec::new(),
        body: Vec::new(),
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = canonical_name(name);
        if matches!(name.as_str(), "Via" | "From" | "To" | "Call-ID" | "CSeq") {
            resp.headers.push((name, value.trim().to_string()));
        }
    }
    resp.header("Via")?;
    Some(resp)
}

fn is_list_header(name: &str) -> bool {
    [
        "Via",
        "Route",
        "Record-Route",
        "Contact",
        "Allow",
        "Supported",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}

/// Splits a comma-separated header value, ignoring commas inside quotes
/// and angle brackets.
pub fn split_list(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut start) = (false, false, 0);
    let bytes = v.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(last) = v.get(start..) {
        if !last.trim().is_empty() {
            out.push(last.trim());
        }
    }
    out
}

/// The header parameters of a name-addr / Via value: the `;a=b` parts after
/// the URI (after `>` if the URI is bracketed).
pub fn params(value: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    let tail = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value.split_once(';').map(|(_, t)| t).unwrap_or(""),
    };
    tail.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        })
}

/// Value of header parameter `name` (case-insensitive name).
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    params(value)
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.unwrap_or(""))
}

/// The value of URI parameter `name` (case-insensitive name) in the URI
/// text `uri` (`sip:host;a=b;c`): parameters end at `?` (headers).
pub fn uri_param<'a>(uri: &'a str, name: &str) -> Option<&'a str> {
    let end = uri.find('?').unwrap_or(uri.len());
    uri[..end].split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The URI text of a name-addr (`"x" <sip:a@b>;tag=1` gives `sip:a@b`) or
/// addr-spec (`sip:a@b;tag=1` gives `sip:a@b`).
pub fn addr_uri(value: &str) -> &str {
    if let (Some(a), Some(b)) = (value.find('<'), value.find('>')) {
        if a < b {
            return &value[a + 1..b];
        }
    }
    value.split(';').next().unwrap_or("").trim()
}

/// Parses the URI of a name-addr or addr-spec header value.
pub fn addr_parse(value: &str) -> Option<Uri> {
    Uri::try_from(addr_uri(value)).ok()
}

/// `user@host` of a URI, lower-cased host: the AOR key used by the
/// location service and for the outer/inner comparison.
pub fn aor_of(uri: &Uri) -> String {
    let host = uri.host_with_port.host.to_string().to_ascii_lowercase();
    match uri.user() {
        Some(u) => format!("{u}@{host}"),
        None => host,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "message_tests.rs"]
mod tests;
