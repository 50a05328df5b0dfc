//! A lenient reader of SIP messages as they appear in a capture: start
//! line, headers (compact forms expanded, folded lines joined) and body.
//! Written by hand on purpose: the proof tool must describe whatever bytes
//! were captured, including malformed or hostile ones, where a strict
//! parser (rsip) would refuse the message and hide it from the report.

use crate::tunnel::message::long_name;

pub use crate::tunnel::message::StartLine;

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
}

/// Whether `bytes` start like a SIP message (request or status line).
pub fn looks_like_sip(bytes: &[u8]) -> bool {
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let line = String::from_utf8_lossy(&bytes[..line_end]);
    let line = line.trim_end();
    line.starts_with("SIP/2.0 ") || (line.ends_with(" SIP/2.0") && line.split(' ').count() == 3)
}

impl SipMessage {
    /// Reads one message from the start of `bytes`; returns it with the
    /// number of bytes it used, or `None` when the header section or the
    /// body (per Content-Length) is incomplete or the start line is not SIP.
    pub fn parse(bytes: &[u8]) -> Option<(SipMessage, usize)> {
        if !looks_like_sip(bytes) {
            return None;
        }
        let (head_len, sep_len) = find_header_end(bytes)?;
        let head = String::from_utf8_lossy(&bytes[..head_len]);
        let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
        let first_line = lines.next()?.to_string();
        let start = parse_start(&first_line)?;
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((long_name(name.trim()), value.trim().to_string()));
            }
        }
        let body_start = head_len + sep_len;
        let declared = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let available = bytes.len() - body_start;
        let body_len = match declared {
            Some(n) if n > available => return None,
            Some(n) => n,
            None => available,
        };
        let body = bytes[body_start..body_start + body_len].to_vec();
        Some((
            SipMessage {
                first_line,
                start,
                headers,
                body,
            },
            body_start + body_len,
        ))
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
    (parts.next()? == "SIP/2.0").then_some(StartLine::Request { method, uri })
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
