//! Judging each captured SIP message against the tunnel spec: tunneled
//! (5.1/5.3), plain but allowed (5.5), or a leak; and finding
//! identity-revealing values in clear (display names, caller AORs,
//! User-Agent and friends, SDP, Call-IDs with hosts, headers the outer
//! message may not carry).
//!
//! The verdict on the capture is [`Verdict::Clean`] only when every frame
//! was read and judged: anything the judge could not read (see
//! [`Unjudged`]) and a capture with nothing in it make it
//! [`Verdict::CannotJudge`], never clean.

use super::capture::{read_capture, Transport};
use super::dns::{self, is_dns_port};
use super::icmp;
use super::rtpflow::{is_rtp_shaped, judge_flows, rtcp_shape, MediaFlow, MediaVerdict, RtcpShape};
use super::sipscan::looks_like_sip;
use super::sipscan::{SipMessage, StartLine};
use super::stream::{frame_messages, frame_tls, Datagram, TlsConnection};
use super::tls::TlsKeys;
use super::turnwrap::{self, is_stun_shaped};
use super::{PcapError, Unjudged};
use crate::tunnel::cms::decode_envelope;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;

/// The headers a tunneled outer message may carry (spec 5.1).
const OUTER_HEADERS: &[&str] = &[
    "via",
    "max-forwards",
    "to",
    "from",
    "call-id",
    "cseq",
    "contact",
    "route",
    "record-route",
    "content-type",
    "content-disposition",
    "content-length",
];

/// Unjudged items printed in full; the rest are counted.
const UNJUDGED_SHOWN: usize = 20;

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
    "warning",
    "identity",
    "identity-info",
    "history-info",
    "diversion",
    "p-called-party-id",
    "p-associated-uri",
    "refer-to",
];

/// The verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// The Content-Type is `application/pkcs7-mime` and the body decodes as
    /// the spec's AuthEnvelopedData profile (5.3): the message is tunneled.
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
    /// STUN messages (RFC 8489: ICE checks and consent, binding requests
    /// to a STUN server): judged, they carry random ICE credentials and
    /// addresses as the network saw them, nothing of the users.
    pub stun: usize,
    /// SRTCP datagrams (RTCP whose reports are encrypted, see
    /// [`super::rtpflow::rtcp_shape`]): judged, nothing in clear but the
    /// first header and the sender's SSRC.
    pub srtcp: usize,
    /// Compound RTCP packets in clear (frame, sender, receiver): a leak
    /// (CNAME, SSRCs and reception figures readable).
    pub plain_rtcp: Vec<(usize, SocketAddr, SocketAddr)>,
    /// TURN ChannelData messages (RFC 8656 12.4) opened; what each carried
    /// is judged like a direct datagram and counted as such (STUN, SRTCP,
    /// RTP-shaped in [`Report::media`]). Send and Data indications are
    /// counted in [`Report::stun`] and opened the same way.
    pub channel_data: usize,
    /// Well-formed DNS lookups on UDP port 53 (see [`super::dns`]):
    /// judged, they name the provider only.
    pub dns: usize,
    /// ICMP errors whose quote is a prefix of a UDP datagram of the
    /// capture (see [`super::icmp`]): judged, they show nothing new.
    pub icmp_errors: usize,
    /// SIP found inside TURN (frame, sender, receiver, what): a leak.
    pub relayed_leaks: Vec<(usize, SocketAddr, SocketAddr, String)>,
    /// Other non-SIP UDP datagrams (each also in [`Report::unjudged`]).
    pub other_datagrams: usize,
    /// TCP bytes left that did not form a complete SIP message.
    pub unframed_tcp_bytes: usize,
    /// Frames in the capture file.
    pub frames: usize,
    /// What the judge could not read or judge, with the reason.
    pub unjudged: Vec<Unjudged>,
    /// TLS connections: whole TLS records show nothing in clear; with a
    /// key log, the SIP decrypted out of them is in [`Report::messages`].
    pub tls: Vec<TlsConnection>,
}

/// The verdict on a whole capture, as `ibephone pcap verify` exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every frame was judged and nothing readable about the users leaked.
    Clean,
    /// A leak was found (whatever else the capture holds).
    Leaks,
    /// No leak found, but something could not be judged, or there was
    /// nothing to judge: the capture proves nothing.
    CannotJudge,
}

impl Verdict {
    /// The process exit code: 0 clean, 1 leaks, 2 cannot judge (the code
    /// of an unreadable file too).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Clean => 0,
            Verdict::Leaks => 1,
            Verdict::CannotJudge => 2,
        }
    }
}

impl Report {
    /// Messages judged a leak or carrying identity-revealing values.
    pub fn leaks(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| matches!(m.class, Class::Leak(_)) || !m.findings.is_empty())
            .count()
    }

    /// Media flows judged plain RTP, plain RTCP datagrams, and SIP found
    /// inside TURN.
    pub fn media_leaks(&self) -> usize {
        self.media
            .iter()
            .filter(|f| f.verdict == MediaVerdict::PlainRtp)
            .count()
            + self.plain_rtcp.len()
            + self.relayed_leaks.len()
    }

    /// Leaks if any message or flow leaks; else cannot judge if anything
    /// was not judged or nothing was there to judge (no SIP message, no
    /// media flow, no TLS connection); else clean.
    pub fn verdict(&self) -> Verdict {
        if self.leaks() > 0 || self.media_leaks() > 0 {
            Verdict::Leaks
        } else if !self.unjudged.is_empty()
            || (self.messages.is_empty() && self.media.is_empty() && self.tls.is_empty())
        {
            Verdict::CannotJudge
        } else {
            Verdict::Clean
        }
    }

    /// True only when the verdict is [`Verdict::Clean`]: everything was
    /// judged and nothing readable about the users left the phones.
    pub fn clean(&self) -> bool {
        self.verdict() == Verdict::Clean
    }
}

/// Reads a capture and judges every SIP message in it.
pub fn verify_capture(bytes: &[u8]) -> Result<Report, PcapError> {
    verify_capture_with(bytes, None)
}

/// [`verify_capture`], and with `tls_keys` (an agent's key log) the SIP
/// inside each TLS connection the keys open is judged as well. Without
/// keys, or for a connection the log does not cover, a TLS stream is
/// judged by its framing: whole TLS records show nothing in clear.
pub fn verify_capture_with(bytes: &[u8], tls_keys: Option<&TlsKeys>) -> Result<Report, PcapError> {
    let capture = read_capture(bytes)?;
    let mut framing = frame_messages(&capture.segments);
    let tls = frame_tls(&mut framing, tls_keys);
    let mut unjudged = capture.unjudged;
    unjudged.extend(framing.unjudged.iter().cloned());
    let mut icmp_errors = 0;
    for (e, judged) in capture
        .icmp_errors
        .iter()
        .zip(icmp::judge(&capture.icmp_errors, &capture.segments))
    {
        match judged {
            Ok(_) => icmp_errors += 1,
            Err(why) => unjudged.push(Unjudged {
                frame: Some(e.frame),
                why: format!("ICMP error {} -> {}: {why}", e.from, e.to),
            }),
        }
    }
    let mut report = Report {
        unframed_tcp_bytes: framing.unframed_tcp_bytes,
        frames: capture.frames,
        unjudged,
        tls,
        icmp_errors,
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
        let class = classify(m, &failed_invites);
        let findings = findings(m, class == Class::Tunneled);
        report.messages.push(MessageReport {
            frame: f.frame,
            transport: f.transport,
            src: f.src,
            dst: f.dst,
            first_line: m.first_line.clone(),
            class,
            findings,
        });
    }
    let mut media = Vec::new();
    for d in &framing.datagrams {
        judge_datagram(d, "UDP", 0, &mut report, &mut media);
    }
    for d in &framing.stream_messages {
        judge_datagram(d, "TCP", 0, &mut report, &mut media);
    }
    report.media = judge_flows(&media);
    for flow in &report.media {
        if let MediaVerdict::Undetermined(why) = flow.verdict {
            report.unjudged.push(Unjudged {
                frame: Some(flow.first_frame),
                why: format!(
                    "RTP flow {} -> {} SSRC {:08x}: {why}",
                    flow.src, flow.dst, flow.ssrc
                ),
            });
        }
    }
    report.unjudged.sort_by_key(|u| u.frame);
    Ok(report)
}

/// Judges one non-SIP UDP datagram, `depth` TURN layers deep (0: as
/// captured): counts it in `report`, records a leak or what could not be
/// judged, and keeps RTP-shaped ones in `media` for [`judge_flows`]. TURN
/// is opened (see [`super::turnwrap`]) and its payload judged the same
/// way, one layer deeper.
fn judge_datagram(
    d: &Datagram,
    over: &'static str,
    depth: usize,
    report: &mut Report,
    media: &mut Vec<Datagram>,
) {
    let p = &d.payload;
    let unjudged = |report: &mut Report, why: String| {
        report.other_datagrams += 1;
        report.unjudged.push(Unjudged {
            frame: Some(d.frame),
            why: format!("{over} {} -> {}: {why}", d.src, d.dst),
        });
    };
    // DNS first: a message ID may look like an RTP or STUN header.
    if depth == 0 && is_dns_port(d.src, d.dst) {
        match dns::judge(d.src, d.dst, p) {
            Ok(_) => report.dns += 1,
            Err(why) => unjudged(report, format!("port 53 but no DNS lookup: {why}")),
        }
    } else if is_rtp_shaped(p) {
        report.rtp_shaped += 1;
        media.push(d.clone());
    } else if let Some(shape) = rtcp_shape(p) {
        match shape {
            RtcpShape::Srtcp => report.srtcp += 1,
            RtcpShape::Plain => report.plain_rtcp.push((d.frame, d.src, d.dst)),
        }
    } else if is_stun_shaped(p) {
        report.stun += 1;
        match turnwrap::stun_data(p) {
            Ok(inner) => {
                let kind = turnwrap::stun_kind(p);
                for data in inner {
                    judge_relayed(d, over, &kind, data, depth, report, media);
                }
            }
            Err(why) => unjudged(report, why),
        }
    } else if turnwrap::is_channel_data_shaped(p) {
        match turnwrap::channel_data(p) {
            Ok((channel, data)) => {
                report.channel_data += 1;
                let kind = format!("ChannelData {channel:#06x}");
                judge_relayed(d, over, &kind, data, depth, report, media);
            }
            Err(why) => unjudged(report, why),
        }
    } else {
        let what = if depth == 0 {
            "neither SIP, RTP, STUN, TURN nor DNS"
        } else {
            "relayed by TURN, and neither RTP nor STUN"
        };
        unjudged(report, format!("{} bytes {what}", p.len()));
    }
}

/// Judges the datagram `data` a TURN message (`kind`) of `outer` carries:
/// SIP inside TURN is a leak (the phone's SIP never takes the media
/// relay, and a relayed message would be read by whoever taps the relay's
/// far side); the rest as a direct datagram, one layer deeper.
fn judge_relayed(
    outer: &Datagram,
    over: &'static str,
    kind: &str,
    data: Vec<u8>,
    depth: usize,
    report: &mut Report,
    media: &mut Vec<Datagram>,
) {
    let leak = |report: &mut Report, why: String| {
        report
            .relayed_leaks
            .push((outer.frame, outer.src, outer.dst, why))
    };
    if looks_like_sip(&data) {
        leak(report, format!("SIP inside {kind}"));
    } else if depth + 1 >= turnwrap::MAX_DEPTH
        && (is_stun_shaped(&data) || turnwrap::is_channel_data_shaped(&data))
    {
        report.other_datagrams += 1;
        report.unjudged.push(Unjudged {
            frame: Some(outer.frame),
            why: format!(
                "{over} {} -> {}: TURN inside {kind} nested deeper than {} layers",
                outer.src,
                outer.dst,
                turnwrap::MAX_DEPTH
            ),
        });
    } else {
        let inner = Datagram {
            frame: outer.frame,
            src: outer.src,
            dst: outer.dst,
            payload: data,
        };
        judge_datagram(&inner, over, depth + 1, report, media);
    }
}

/// The media type of a Content-Type value, lower-cased, parameters cut.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn classify(m: &SipMessage, failed_invites: &HashSet<(String, u32)>) -> Class {
    if !m.problems.is_empty() {
        return Class::Leak(format!(
            "malformed message in clear: {}",
            m.problems.join("; ")
        ));
    }
    let content_types: Vec<String> = m.headers_named("content-type").map(media_type).collect();
    if content_types.len() > 1 {
        return Class::Leak(format!(
            "{} Content-Type headers: a receiver may read another one",
            content_types.len()
        ));
    }
    let content_type = content_types.first().cloned().unwrap_or_default();
    if matches!(
        content_type.as_str(),
        "application/pkcs7-mime" | "application/x-pkcs7-mime"
    ) {
        return match decode_envelope(&m.body) {
            Ok(_) => Class::Tunneled,
            Err(why) => Class::Leak(format!(
                "pkcs7-mime body is not the spec's AuthEnvelopedData: {why}"
            )),
        };
    }
    let body_leak = m.body.iter().any(|b| !b.is_ascii_whitespace()).then(|| {
        let ct = if content_type.is_empty() {
            "no Content-Type"
        } else {
            content_type.as_str()
        };
        format!(
            "{} body bytes in clear ({ct}): only tunnel bodies may cross the wire",
            m.body.len()
        )
    });
    match (plain_rule(m, failed_invites), body_leak) {
        (Ok(why), None) => Class::PlainAllowed(why),
        (Ok(_), Some(body)) => Class::Leak(body),
        (Err(rule), None) => Class::Leak(rule),
        (Err(rule), Some(body)) => Class::Leak(format!("{rule}; {body}")),
    }
}

/// Whether spec 5.5 lets this message travel plain (`Ok` with the rule),
/// whatever its body.
fn plain_rule(
    m: &SipMessage,
    failed_invites: &HashSet<(String, u32)>,
) -> Result<&'static str, String> {
    let method = m.method().unwrap_or_default();
    match &m.start {
        StartLine::Request { .. } => match method.as_str() {
            "REGISTER" => Ok("REGISTER (digest-authenticated to the registrar)"),
            "CANCEL" => Ok("CANCEL (hop by hop)"),
            "ACK" => {
                let key = (
                    m.header("call-id").unwrap_or_default().to_string(),
                    m.cseq().map_or(0, |c| c.0),
                );
                if failed_invites.contains(&key) {
                    Ok("ACK of a non-2xx final response")
                } else {
                    Err("ACK of a 2xx must be tunneled".into())
                }
            }
            other => Err(format!(
                "plain {other}: spec 5.5 lets only REGISTER, CANCEL and the ACK of a non-2xx response travel plain"
            )),
        },
        StartLine::Response { code } => match (*code, method.as_str()) {
            (100, _) => Ok("100 Trying (hop by hop)"),
            (_, "REGISTER") => Ok("response of the registrar"),
            (_, "CANCEL") => Ok("response to CANCEL"),
            (415 | 493, _) => Ok("wire error of the tunnel (5.6)"),
            (c, _) if c >= 300 => Ok("error response (proxy or registrar)"),
            (c, other) => Err(format!(
                "plain {c} response to {other} between user agents"
            )),
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

fn findings(m: &SipMessage, tunneled: bool) -> Vec<Finding> {
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
        } else if tunneled && !OUTER_HEADERS.contains(&name.as_str()) {
            add(
                "header the outer message may not carry (spec 5.1)",
                &format!("{name}: {value}"),
            );
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
                Transport::Tls => "tls",
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
        for (frame, src, dst) in &self.plain_rtcp {
            writeln!(
                f,
                "#{frame:<5} udp {src} -> {dst}  RTCP  [LEAK: plain RTCP]"
            )?;
        }
        for (frame, src, dst, why) in &self.relayed_leaks {
            writeln!(f, "#{frame:<5} udp {src} -> {dst}  TURN  [LEAK: {why}]")?;
        }
        for c in &self.tls {
            let inside = match &c.decrypted {
                Ok(n) => format!("decrypted, {n} SIP messages judged above"),
                Err(why) => format!("nothing in clear ({why})"),
            };
            writeln!(
                f,
                "TLS {} -> {}: {} records, {inside}",
                c.client, c.server, c.records
            )?;
        }
        writeln!(
            f,
            "{} SIP messages: {} tunneled, {} plain allowed, {} leaking; {} RTP-shaped datagrams in {} flows: {} SRTP, {} plain RTP; {} SRTCP, {} plain RTCP; {} STUN; {} TURN ChannelData; {} DNS; {} ICMP errors; {} other datagrams",
            self.messages.len(),
            self.messages.iter().filter(|m| m.class == Class::Tunneled).count(),
            self.messages.iter().filter(|m| matches!(m.class, Class::PlainAllowed(_))).count(),
            self.leaks(),
            self.rtp_shaped,
            self.media.len(),
            self.media.iter().filter(|m| m.verdict == MediaVerdict::Srtp).count(),
            self.media_leaks() - self.plain_rtcp.len() - self.relayed_leaks.len(),
            self.srtcp,
            self.plain_rtcp.len(),
            self.stun,
            self.channel_data,
            self.dns,
            self.icmp_errors,
            self.other_datagrams,
        )?;
        if self.unframed_tcp_bytes > 0 {
            writeln!(
                f,
                "{} TCP bytes did not form a complete SIP message",
                self.unframed_tcp_bytes
            )?;
        }
        for u in self.unjudged.iter().take(UNJUDGED_SHOWN) {
            match u.frame {
                Some(n) => writeln!(f, "#{n:<5} CANNOT JUDGE: {}", u.why)?,
                None => writeln!(f, "       CANNOT JUDGE: {}", u.why)?,
            }
        }
        if self.unjudged.len() > UNJUDGED_SHOWN {
            writeln!(
                f,
                "       ... and {} more not judged",
                self.unjudged.len() - UNJUDGED_SHOWN
            )?;
        }
        match self.verdict() {
            Verdict::Clean => write!(f, "verdict: nothing readable leaked"),
            Verdict::Leaks => write!(f, "verdict: LEAKS FOUND"),
            Verdict::CannotJudge if self.unjudged.is_empty() => write!(
                f,
                "verdict: CANNOT JUDGE: nothing to judge ({} frames, no SIP message, no RTP flow)",
                self.frames
            ),
            Verdict::CannotJudge => write!(
                f,
                "verdict: CANNOT JUDGE: no leak found, but {} items could not be judged",
                self.unjudged.len()
            ),
        }
    }
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
