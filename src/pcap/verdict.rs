//! Judging each captured SIP message against the tunnel spec: tunneled
//! (5.1/5.3), plain but allowed (5.5), or a leak; and finding
//! identity-revealing values in clear (display names, caller AORs,
//! User-Agent and friends, SDP, Call-IDs with hosts).

use super::capture::{read_segments, Transport};
use super::rtpflow::{is_rtp_shaped, judge_flows, MediaFlow, MediaVerdict};
use super::sipscan::{SipMessage, StartLine};
use super::stream::frame_messages;
use super::PcapError;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;

/// DER prefix of the ContentInfo OID `id-ct-authEnvelopedData`
/// (1.2.840.113549.1.9.16.1.23).
const AUTH_ENVELOPED_OID: &[u8] = &[
    0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
];

/// Headers whose mere presence in clear reveals something about a user.
const REVEALING_HEADERS: &[&str] = &[
    "user-agent",
    "server",
    "subject",
    "organization",
    "call-info",
    "alert-info",
    "p-asserted-identity",
    "p-preferred-identity",
    "remote-party-id",
    "reply-to",
    "in-reply-to",
    "referred-by",
    "priority",
];

/// The verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// The body is a CMS AuthEnvelopedData: the message is tunneled.
    Tunneled,
    /// Plain, and the spec allows it (5.5); the reason says which rule.
    PlainAllowed(&'static str),
    /// Plain (or malformed) where the spec requires the tunnel.
    Leak(String),
}

/// An identity-revealing value seen in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What kind of value (e.g. `display name`, `User-Agent`).
    pub what: String,
    /// The value as captured.
    pub value: String,
}

/// The verdict on one captured SIP message.
#[derive(Debug, Clone)]
pub struct MessageReport {
    /// Frame number where the message starts.
    pub frame: usize,
    /// UDP or TCP.
    pub transport: Transport,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// The start line.
    pub first_line: String,
    /// Tunneled, allowed plain, or leak.
    pub class: Class,
    /// Identity-revealing values in clear.
    pub findings: Vec<Finding>,
}

/// The verdict on a whole capture.
#[derive(Debug, Default)]
pub struct Report {
    /// Every SIP message, in capture order.
    pub messages: Vec<MessageReport>,
    /// Non-SIP UDP datagrams shaped like RTP (version 2, RTCP excluded).
    pub rtp_shaped: usize,
    /// The RTP-shaped datagrams grouped into flows, each judged SRTP or
    /// plain RTP (see [`super::rtpflow`]).
    pub media: Vec<MediaFlow>,
    /// Other non-SIP UDP datagrams.
    pub other_datagrams: usize,
    /// TCP bytes left that did not form a complete SIP message.
    pub unframed_tcp_bytes: usize,
}

impl Report {
    /// Messages judged a leak or carrying identity-revealing values.
    pub fn leaks(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| matches!(m.class, Class::Leak(_)) || !m.findings.is_empty())
            .count()
    }

    /// Media flows judged plain RTP.
    pub fn media_leaks(&self) -> usize {
        self.media
            .iter()
            .filter(|f| f.verdict == MediaVerdict::PlainRtp)
            .count()
    }

    /// True when nothing readable about the users left the phones.
    pub fn clean(&self) -> bool {
        self.leaks() == 0 && self.media_leaks() == 0
    }
}

/// Reads a capture and judges every SIP message in it.
pub fn verify_capture(bytes: &[u8]) -> Result<Report, PcapError> {
    let segments = read_segments(bytes)?;
    let framing = frame_messages(&segments);
    let mut report = Report {
        unframed_tcp_bytes: framing.unframed_tcp_bytes,
        ..Report::default()
    };
    // (Call-ID, CSeq number) of INVITEs that got a non-2xx final response:
    // their ACK is hop-by-hop and stays plain.
    let mut failed_invites: HashSet<(String, u32)> = HashSet::new();
    for f in &framing.messages {
        let m = &f.message;
        if let (StartLine::Response { code }, Some((n, method))) = (&m.start, m.cseq()) {
            if *code >= 300 && method == "INVITE" {
                failed_invites.insert((m.header("call-id").unwrap_or_default().to_string(), n));
            }
        }
        report.messages.push(MessageReport {
            frame: f.frame,
            transport: f.transport,
            src: f.src,
            dst: f.dst,
            first_line: m.first_line.clone(),
            class: classify(m, &failed_invites),
            findings: findings(m),
        });
    }
    for d in &framing.datagrams {
        if is_rtp_shaped(&d.payload) {
            report.rtp_shaped += 1;
        } else {
            report.other_datagrams += 1;
        }
    }
    report.media = judge_flows(&framing.datagrams);
    Ok(report)
}

fn is_auth_enveloped(body: &[u8]) -> bool {
    // ContentInfo ::= SEQUENCE { contentType OID, ... }: skip the SEQUENCE
    // header (short or long length form), then expect the OID.
    if body.first() != Some(&0x30) || body.len() < 2 {
        return false;
    }
    let header = match body[1] {
        n if n < 0x80 => 2,
        0x81 => 3,
        0x82 => 4,
        0x83 => 5,
        _ => return false,
    };
    body.get(header..header + AUTH_ENVELOPED_OID.len()) == Some(AUTH_ENVELOPED_OID)
}

fn classify(m: &SipMessage, failed_invites: &HashSet<(String, u32)>) -> Class {
    let content_type = m
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.contains("application/pkcs7-mime") {
        return if is_auth_enveloped(&m.body) {
            Class::Tunneled
        } else {
            Class::Leak("pkcs7-mime body is not a CMS AuthEnvelopedData".into())
        };
    }
    let method = m.method().unwrap_or_default();
    match &m.start {
        StartLine::Request { method: _, uri } => match method.as_str() {
            "REGISTER" => Class::PlainAllowed("REGISTER (digest-authenticated to the registrar)"),
            "CANCEL" => Class::PlainAllowed("CANCEL (hop by hop)"),
            "ACK" if m.body.is_empty() => {
                let key = (
                    m.header("call-id").unwrap_or_default().to_string(),
                    m.cseq().map_or(0, |c| c.0),
                );
                if failed_invites.contains(&key) {
                    Class::PlainAllowed("ACK of a non-2xx final response")
                } else {
                    Class::Leak("ACK of a 2xx must be tunneled".into())
                }
            }
            _ if !uri_has_user(uri) => {
                Class::PlainAllowed("request addressed to a server, not a user")
            }
            other => Class::Leak(format!("plain {other} between user agents")),
        },
        StartLine::Response { code } => match (*code, method.as_str()) {
            (100, _) => Class::PlainAllowed("100 Trying (hop by hop)"),
            (_, "REGISTER") => Class::PlainAllowed("response of the registrar"),
            (_, "CANCEL") => Class::PlainAllowed("response to CANCEL"),
            (415 | 493, _) => Class::PlainAllowed("wire error of the tunnel (5.6)"),
            (c, _) if c >= 300 && m.body.is_empty() => {
                Class::PlainAllowed("error response without body (proxy or registrar)")
            }
            (c, other) => Class::Leak(format!("plain {c} response to {other} between user agents")),
        },
    }
}

fn uri_has_user(uri: &str) -> bool {
    let rest = uri.split_once(':').map_or(uri, |(_, r)| r);
    rest.split(';').next().unwrap_or_default().contains('@')
}

/// The display name of a name-addr, if any (`"Bob" <sip:..>` or `Bob <sip:..>`).
fn display_name(value: &str) -> Option<String> {
    let open = value.find('<')?;
    let name = value[..open].trim().trim_matches('"').trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The URI of a name-addr or addr-spec header value.
fn header_uri(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if b > a => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or_default(),
    }
}

fn findings(m: &SipMessage) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |what: &str, value: &str| {
        out.push(Finding {
            what: what.to_string(),
            value: value.to_string(),
        })
    };
    let method = m.method().unwrap_or_default();
    for (name, value) in &m.headers {
        if REVEALING_HEADERS.contains(&name.as_str()) {
            add(name, value);
        }
        if matches!(
            name.as_str(),
            "from" | "to" | "contact" | "route" | "record-route"
        ) {
            if let Some(dn) = display_name(value) {
                if !(name == "from" && dn == "Anonymous") {
                    add(&format!("display name in {name}"), &dn);
                }
            }
        }
    }
    if let Some(from) = m.header("from") {
        let uri = header_uri(from);
        let anonymous = uri
            .to_ascii_lowercase()
            .starts_with("sip:anonymous@anonymous.invalid");
        // A REGISTER names its own AOR in From; that is the routing target.
        if !anonymous && method != "REGISTER" && uri_has_user(uri) {
            add("caller AOR in From", uri);
        }
    }
    if method != "REGISTER" {
        for contact in m.headers_named("contact") {
            let uri = header_uri(contact);
            if uri_has_user(uri) {
                add("user part in Contact", uri);
            }
        }
    }
    if let Some(call_id) = m.header("call-id") {
        if call_id.contains('@') {
            add("host in Call-ID", call_id);
        }
    }
    let content_type = m
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = String::from_utf8_lossy(&m.body);
    if content_type.contains("application/sdp")
        || body.starts_with("v=0")
        || body.contains("\nm=audio")
    {
        add(
            "SDP in clear",
            body.lines().find(|l| l.starts_with("o=")).unwrap_or("v=0"),
        );
    }
    out
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.messages {
            let proto = match m.transport {
                Transport::Udp => "udp",
                Transport::Tcp => "tcp",
            };
            let verdict = match &m.class {
                Class::Tunneled => "TUNNELED".to_string(),
                Class::PlainAllowed(why) => format!("plain, allowed: {why}"),
                Class::Leak(why) => format!("LEAK: {why}"),
            };
            let line: String = m.first_line.chars().take(60).collect();
            writeln!(
                f,
                "#{:<5} {proto} {} -> {}  {line}  [{verdict}]",
                m.frame, m.src, m.dst
            )?;
            for finding in &m.findings {
                writeln!(f, "        LEAK: {}: {}", finding.what, finding.value)?;
            }
        }
        for flow in &self.media {
            writeln!(f, "{flow}")?;
        }
        writeln!(
            f,
            "{} SIP messages: {} tunneled, {} plain allowed, {} leaking; {} RTP-shaped datagrams in {} flows: {} SRTP, {} plain RTP; {} other datagrams",
            self.messages.len(),
            self.messages.iter().filter(|m| m.class == Class::Tunneled).count(),
            self.messages.iter().filter(|m| matches!(m.class, Class::PlainAllowed(_))).count(),
            self.leaks(),
            self.rtp_shaped,
            self.media.len(),
            self.media.iter().filter(|m| m.verdict == MediaVerdict::Srtp).count(),
            self.media_leaks(),
            self.other_datagrams,
        )?;
        if self.unframed_tcp_bytes > 0 {
            writeln!(
                f,
                "{} TCP bytes did not form a complete SIP message",
                self.unframed_tcp_bytes
            )?;
        }
        write!(
            f,
            "{}",
            if self.clean() {
                "verdict: nothing readable leaked"
            } else {
                "verdict: LEAKS FOUND"
            }
        )
    }
}
