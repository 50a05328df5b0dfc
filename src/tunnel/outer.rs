//! The outer message of spec 5.1: only what routing needs, compact header
//! forms, anonymous From and a user-less Contact when privacy is on; the
//! outer binding of 5.3; and the outer/inner agreement check of 5.1.

use super::message::{MessageError, NameAddr, SipView, StartLine};
use crate::ibe::Aor;
use sha2::{Digest, Sha256};

/// Content-Type of a tunneled message.
pub const OUTER_CONTENT_TYPE: &str =
    "application/pkcs7-mime;smime-type=authEnveloped-data;name=smime.p7m";
/// Content-Disposition of a tunneled message.
pub const OUTER_DISPOSITION: &str = "attachment;handling=required;filename=smime.p7m";
/// The anonymous From URI of RFC 3323.
pub const ANONYMOUS_URI: &str = "sip:anonymous@anonymous.invalid";

/// `sip:user@host;params` without its user part: `sip:host;params`.
fn strip_user(uri: &str) -> String {
    let (scheme, rest) = uri.split_once(':').unwrap_or(("sip", uri));
    // The userinfo ends at the last '@' before any ';' or '?'.
    let end = rest.find([';', '?']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}:{}", &rest[at + 1..]),
        None => format!("{scheme}:{rest}"),
    }
}

fn with_tag(uri: &str, tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("<{uri}>;tag={t}"),
        None => format!("<{uri}>"),
    }
}

/// The outer message's start line and headers (without Content-Length and
/// the blank line), built from `inner`.
pub fn outer_head(
    inner: &SipView<'_>,
    inner_first_line: &str,
    privacy: bool,
) -> Result<String, MessageError> {
    let mut h = String::with_capacity(512);
    match &inner.start {
        // Inside a dialog the Request-URI is the peer's Contact: with
        // privacy on, its user part (often the AOR's user) stays inside.
        // Proxies route it by host and port; the receiver does not compare
        // Request-URIs (spec 5.1).
        StartLine::Request { method, uri } if privacy && inner.to()?.tag().is_some() => {
            h.push_str(&format!("{method} {} SIP/2.0", strip_user(uri)));
        }
        _ => h.push_str(inner_first_line),
    }
    h.push_str("\r\n");
    for via in inner.all("via") {
        h.push_str(&format!("v: {via}\r\n"));
    }
    for route in inner.all("route") {
        h.push_str(&format!("Route: {route}\r\n"));
    }
    for rr in inner.all("record-route") {
        h.push_str(&format!("Record-Route: {rr}\r\n"));
    }
    if let Some(mf) = inner.header("max-forwards") {
        h.push_str(&format!("Max-Forwards: {mf}\r\n"));
    }
    let from = inner.from()?;
    let from_uri = if privacy { ANONYMOUS_URI } else { from.uri };
    if privacy {
        h.push_str(&format!(
            "f: \"Anonymous\" {}\r\n",
            with_tag(from_uri, from.tag())
        ));
    } else {
        h.push_str(&format!("f: {}\r\n", with_tag(from_uri, from.tag())));
    }
    let to = inner.to()?;
    h.push_str(&format!("t: {}\r\n", with_tag(to.uri, to.tag())));
    h.push_str(&format!("i: {}\r\n", inner.call_id()?));
    h.push_str(&format!("CSeq: {}\r\n", inner.one("cseq")?));
    if let Some(contact) = inner.header("contact") {
        let uri = NameAddr::parse(contact)?.uri;
        let uri = if privacy {
            strip_user(uri)
        } else {
            uri.to_string()
        };
        h.push_str(&format!("m: <{uri}>\r\n"));
    }
    h.push_str(&format!("c: {OUTER_CONTENT_TYPE}\r\n"));
    h.push_str(&format!("Content-Disposition: {OUTER_DISPOSITION}\r\n"));
    Ok(h)
}

/// `ibesip-outer-binding` of a message (computed on the outer message).
pub fn outer_binding(view: &SipView<'_>) -> Result<[u8; 32], MessageError> {
    let (cseq, cseq_method) = view.cseq()?;
    let method = match &view.start {
        StartLine::Request { method, .. } => method.as_str(),
        StartLine::Response { .. } => cseq_method,
    };
    let from_tag = view.from()?.tag().unwrap_or_default().to_string();
    let to_tag = view.to()?.tag().unwrap_or_default().to_string();
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(cseq.to_string().as_bytes());
    h.update(b"\n");
    h.update(view.call_id()?.as_bytes());
    h.update(b"\n");
    h.update(from_tag.as_bytes());
    h.update(b"\n");
    h.update(to_tag.as_bytes());
    Ok(h.finalize().into())
}

/// Checks that outer and inner agree as spec 5.1 requires; the error names
/// the first field that differs.
pub fn check_agreement(outer: &SipView<'_>, inner: &SipView<'_>) -> Result<(), &'static str> {
    let same_start = match (&outer.start, &inner.start) {
        (StartLine::Request { method: a, .. }, StartLine::Request { method: b, .. }) => a == b,
        (StartLine::Response { code: a }, StartLine::Response { code: b }) => a == b,
        _ => false,
    };
    if !same_start || outer.version != inner.version {
        return Err("start line");
    }
    let (ot, it) = (outer.to().map_err(|_| "To")?, inner.to().map_err(|_| "To")?);
    if Aor::parse(ot.uri).ok() != Aor::parse(it.uri).ok() || Aor::parse(it.uri).is_err() {
        return Err("To AOR");
    }
    if ot.tag() != it.tag() {
        return Err("To tag");
    }
    let (of, inf) = (
        outer.from().map_err(|_| "From")?,
        inner.from().map_err(|_| "From")?,
    );
    if of.tag() != inf.tag() {
        return Err("From tag");
    }
    if !of.uri.eq_ignore_ascii_case(ANONYMOUS_URI)
        && Aor::parse(of.uri).ok() != Aor::parse(inf.uri).ok()
    {
        return Err("From AOR");
    }
    if outer.call_id().ok() != inner.call_id().ok() {
        return Err("Call-ID");
    }
    if outer.cseq().ok() != inner.cseq().ok() || inner.cseq().is_err() {
        return Err("CSeq");
    }
    Ok(())
}

/// Rejects Call-IDs that carry a host or are too short to be random
/// (spec 5.1: at least 128 random bits, no host name or address).
pub fn check_call_id(call_id: &str) -> Result<(), MessageError> {
    if call_id.contains('@') || call_id.len() < 22 {
        return Err(MessageError::CallId);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_dialog_request_uri_loses_its_user() {
        let inner = b"BYE sip:alice@127.0.0.1:5070 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKx\r\nf: <sip:bob@b.invalid>;tag=2\r\nt: <sip:alice@a.invalid>;tag=1\r\ni: c2VjcmV0c2VjcmV0c2VjcmV0\r\nCSeq: 9 BYE\r\nl: 0\r\n\r\n";
        let view = SipView::parse(inner).unwrap();
        let head = outer_head(&view, "BYE sip:alice@127.0.0.1:5070 SIP/2.0", true).unwrap();
        assert!(
            head.starts_with("BYE sip:127.0.0.1:5070 SIP/2.0\r\n"),
            "{head}"
        );
        let plain = outer_head(&view, "BYE sip:alice@127.0.0.1:5070 SIP/2.0", false).unwrap();
        assert!(plain.starts_with("BYE sip:alice@127.0.0.1:5070 SIP/2.0\r\n"));
    }

    #[test]
    fn user_is_stripped_from_contact() {
        assert_eq!(
            strip_user("sip:alice@127.0.0.1:5070;transport=tcp"),
            "sip:127.0.0.1:5070;transport=tcp"
        );
        assert_eq!(strip_user("sip:127.0.0.1:5070"), "sip:127.0.0.1:5070");
        assert_eq!(strip_user("sips:a:pw@[::1]:5061"), "sips:[::1]:5061");
    }
}
