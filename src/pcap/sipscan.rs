//! A lenient reader of SIP messages as they appear in a capture: start
//! line, headers (compact forms expanded, folded lines joined) and body.
//! Written by hand on purpose: the proof tool must describe whatever bytes
//! were captured, including malformed or hostile ones, where a strict
//! parser (rsip) would refuse the message and hide it from the report.
//! What is malformed is not hidden either: it is listed in
//! [`SipMessage::problems`] and the judge counts the message as a leak.

pub(crate) use crate::tunnel::message::{long_name, StartLine};

/// One SIP message read from captured bytes.
#[derive(Debug, Clone)]
pub struct SipMessage {
    /// The first line as captured.
    pub first_line: String,
    /// Request or response.
    pub start: StartLine,
    /// Headers in order, names in lower-case long form.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// What is wrong with the message's framing or header section (a
    /// Content-Length past the datagram's end, bytes after the body, a
    /// header line without a colon...); empty for a well-formed message.
    pub problems: Vec<String>,
}

/// Number of CR/LF bytes at the start of `bytes` (RFC 3261 7.5: a receiver
/// ignores CRLFs before the start line).
pub(crate) fn leading_crlf(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count()
}

/// Whether `bytes` start like a SIP message (request or status line),
/// ignoring CR/LF bytes before it.
pub(crate) fn looks_like_sip(bytes: &[u8]) -> bool {
    let bytes = &bytes[leading_crlf(bytes)..];
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let line = String::from_utf8_lossy(&bytes[..line_end]);
    parse_start(line.trim_end_matches('\r')).is_some()
}

impl SipMessage {
    /// Reads one message from the start of a stream (`bytes`, CRLFs before
    /// the start line skipped); returns it with the number of bytes it used,
    /// or `None` when the start line is not SIP, or the header section or
    /// the body (per Content-Length) is incomplete, or the Content-Length
    /// cannot be read (the stream cannot be cut). A missing Content-Length
    /// (mandatory on streams, RFC 3261 20.14) means an empty body and is
    /// recorded in [`SipMessage::problems`].
    pub fn parse(bytes: &[u8]) -> Option<(SipMessage, usize)> {
        let skip = leading_crlf(bytes);
        let bytes = &bytes[skip..];
        let (head_len, sep_len) = find_header_end(bytes)?;
        let mut m = Self::head(&bytes[..head_len])?;
        let body_start = head_len + sep_len;
        let available = bytes.len() - body_start;
        let body_len = match content_length(&mut m) {
            Length::Missing => {
                m.problems
                    .push("no Content-Length on a stream transport".into());
                0
            }
            Length::Invalid => return None,
            Length::Declared(n) if n > available => return None,
            Length::Declared(n) => n,
        };
        m.body = bytes[body_start..body_start + body_len].to_vec();
        Some((m, skip + body_start + body_len))
    }

    /// Reads the message a whole UDP datagram holds (CRLFs before the start
    /// line skipped). `None` only when the start line is not SIP: whatever
    /// else is wrong (no end of the header section, a Content-Length past
    /// the end or short of it with other bytes after the body, a
    /// Content-Length that cannot be read) is recorded in
    /// [`SipMessage::problems`] and the body is what the datagram holds.
    pub fn parse_datagram(bytes: &[u8]) -> Option<SipMessage> {
        let bytes = &bytes[leading_crlf(bytes)..];
        let (head_len, sep_len, complete) = match find_header_end(bytes) {
            Some((h, s)) => (h, s, true),
            None => (bytes.len(), 0, false),
        };
        let mut m = Self::head(&bytes[..head_len])?;
        if !complete {
            m.problems
                .push("no empty line ends the header section".into());
        }
        let rest = &bytes[head_len + sep_len..];
        match content_length(&mut m) {
            Length::Declared(n) if n > rest.len() => {
                m.problems.push(format!(
                    "Content-Length {n} is past the datagram's end ({} body bytes)",
                    rest.len()
                ));
                m.body = rest.to_vec();
            }
            Length::Declared(n) => {
                let extra = &rest[n..];
                if !extra.iter().all(|b| b.is_ascii_whitespace() || *b == 0) {
                    m.problems.push(format!(
                        "{} bytes after the body that Content-Length {n} declares",
                        extra.len()
                    ));
                }
                m.body = rest[..n].to_vec();
            }
            Length::Missing | Length::Invalid => m.body = rest.to_vec(),
        }
        Some(m)
    }

    /// The start line and the header section (`head`: without the empty
    /// line that ends it).
    fn head(head: &[u8]) -> Option<SipMessage> {
        let head = String::from_utf8_lossy(head);
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let first_line = lines.next()?.to_string();
        let start = parse_start(&first_line)?;
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut problems = Vec::new();
        for line in lines {
            if line.starts_with(' ') || line.starts_with('\t') {
                match headers.last_mut() {
                    Some(last) => {
                        last.1.push(' ');
                        last.1.push_str(line.trim());
                    }
                    None => problems.push("continuation line before any header".into()),
                }
                continue;
            }
            match line.split_once(':') {
                Some((name, value)) if !name.trim().is_empty() => {
                    headers.push((long_name(name.trim()), value.trim().to_string()))
                }
                _ => problems.push(format!(
                    "header line that is not 'name: value': {:?}",
                    line.chars().take(60).collect::<String>()
                )),
            }
        }
        Some(SipMessage {
            first_line,
            start,
            headers,
            body: Vec::new(),
            problems,
        })
    }

    /// The first value of header `name` (lower-case long form).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of header `name`.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, String)> {
        let v = self.header("cseq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        Some((n, it.next()?.to_ascii_uppercase()))
    }

    /// The method of a request, or the CSeq method of a response.
    pub fn method(&self) -> Option<String> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method.to_ascii_uppercase()),
            StartLine::Response { .. } => self.cseq().map(|(_, m)| m),
        }
    }
}

enum Length {
    Missing,
    Invalid,
    Declared(usize),
}

/// The Content-Length of `m`; two headers that disagree, or one that is not
/// a number, are recorded as problems (a receiver may read another one
/// than the judge).
fn content_length(m: &mut SipMessage) -> Length {
    let values: Vec<&str> = m.headers_named("content-length").collect();
    let Some(first) = values.first() else {
        return Length::Missing;
    };
    let parsed: Vec<Option<usize>> = values.iter().map(|v| v.parse::<usize>().ok()).collect();
    let mut problem = None;
    let out = match parsed[0] {
        Some(n) => {
            if parsed.iter().any(|p| *p != Some(n)) {
                problem = Some(format!("Content-Length headers disagree: {values:?}"));
            }
            Length::Declared(n)
        }
        None => {
            problem = Some(format!(
                "Content-Length is not a number: {:?}",
                first.chars().take(40).collect::<String>()
            ));
            Length::Invalid
        }
    };
    if let Some(p) = problem {
        m.problems.push(p);
    }
    out
}

fn find_header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn parse_start(line: &str) -> Option<StartLine> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let code = rest.split_whitespace().next()?.parse().ok()?;
        return Some(StartLine::Response { code });
    }
    let mut parts = line.split(' ');
    let method = parts.next()?.to_string();
    let uri = parts.next()?.to_string();
    (parts.next()? == "SIP/2.0" && parts.next().is_none() && !method.is_empty())
        .then_some(StartLine::Request { method, uri })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compact_forms_and_bodies() {
        let raw = b"INVITE sip:bob@biloxi.invalid SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1\r\nf: <sip:a@b.invalid>;tag=1\r\nl: 4\r\n\r\nabcdEXTRA";
        let (m, used) = SipMessage::parse(raw).unwrap();
        assert_eq!(m.header("from"), Some("<sip:a@b.invalid>;tag=1"));
        assert_eq!(m.body, b"abcd");
        assert_eq!(used, raw.len() - 5);
        assert!(SipMessage::parse(b"SIP/2.0 200 OK\r\nl: 10\r\n\r\nshort").is_none());
        let (r, _) = SipMessage::parse(b"SIP/2.0 180 Ringing\r\nCSeq: 1 INVITE\r\n\r\n").unwrap();
        assert_eq!(r.start, StartLine::Response { code: 180 });
        assert_eq!(r.method().as_deref(), Some("INVITE"));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = SipMessage::parse(&bytes);
            let mut sip = b"SIP/2.0 200 OK\r\n".to_vec();
            sip.extend_from_slice(&bytes);
            let _ = SipMessage::parse(&sip);
        }
    }
}
