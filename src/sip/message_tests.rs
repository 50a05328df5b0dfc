//! Tests of the message layer.
use super::*;
use proptest::prelude::*;

const INVITE: &str = "INVITE sip:bob@example.invalid SIP/2.0\r\n\
    v: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKabc;rport\r\n\
    Max-Forwards: 70\r\n\
    f: <sip:anonymous@anonymous.invalid>;tag=a1\r\n\
    t: <sip:bob@example.invalid>\r\n\
    i: x7Yy\r\n\
    CSeq: 1 INVITE\r\n\
    m: <sip:127.0.0.1:5062>\r\n\
    c: application/pkcs7-mime;smime-type=authEnveloped-data;name=smime.p7m\r\n\
    l: 4\r\n\r\n\x00\x01\x02\x03garbage";

#[test]
fn compact_headers_are_accepted_and_body_cut_at_content_length() {
    let m = Message::parse(INVITE.as_bytes()).unwrap();
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(m.branch(), Some("z9hG4bKabc"));
    assert_eq!(m.from_tag(), Some("a1"));
    assert_eq!(m.call_id(), Some("x7Yy"));
    assert_eq!(m.cseq(), Some((1, Method::Invite)));
    assert_eq!(m.body, vec![0, 1, 2, 3]);
    assert!(param(m.header("Via").unwrap(), "rport").is_some());
    m.validate().unwrap();
}

#[test]
fn short_body_is_refused() {
    let s = INVITE.replace("l: 4", "l: 400");
    assert_eq!(Message::parse(s.as_bytes()), Err(ParseError::Truncated));
}

#[test]
fn cseq_method_mismatch_is_invalid() {
    let s = INVITE.replace("1 INVITE", "1 BYE");
    let m = Message::parse(s.as_bytes()).unwrap();
    assert_eq!(m.validate(), Err(ParseError::BadHeader("CSeq")));
}

#[test]
fn full_and_compact_round_trip() {
    let m = Message::parse(INVITE.as_bytes()).unwrap();
    for form in [HeaderForm::Full, HeaderForm::Compact] {
        let bytes = m.to_bytes(form);
        let again = Message::parse(&bytes).unwrap();
        assert_eq!(again, m);
    }
    let full = String::from_utf8_lossy(&m.to_bytes(HeaderForm::Full)).to_string();
    assert!(full.contains("\r\nCall-ID: x7Yy\r\n"));
}

#[test]
fn list_headers_split_outside_quotes_and_brackets() {
    let v = r#"<sip:a@b;lr>, "x,y" <sip:c@d>;p=1 , <sip:e>"#;
    assert_eq!(
        split_list(v),
        vec!["<sip:a@b;lr>", r#""x,y" <sip:c@d>;p=1"#, "<sip:e>"]
    );
}

#[test]
fn remove_first_of_combined_via() {
    let mut m = Message::parse(INVITE.as_bytes()).unwrap();
    m.prepend_header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp");
    assert_eq!(m.branch(), Some("z9hG4bKp"));
    m.remove_first("Via");
    assert_eq!(m.branch(), Some("z9hG4bKabc"));
}

#[test]
fn unparseable_request_still_gets_400() {
    let raw = b"FROB sip:x@example.invalid SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKf\r\ni: abc\r\nCSeq: 1 FROB\r\n\r\n";
    assert!(Message::parse(raw).is_err());
    let r = bad_request_for(raw).unwrap();
    assert_eq!(r.status(), Some(400));
    assert_eq!(r.branch(), Some("z9hG4bKf"));
    assert_eq!(r.call_id(), Some("abc"));
    assert!(bad_request_for(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n").is_none());
    assert!(bad_request_for(b"ACK sip:x SIP/2.0\r\nVia: x\r\n\r\n").is_none());
    assert!(bad_request_for(b"FROB sip:x SIP/2.0\r\n\r\n").is_none());
}

proptest! {
    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::parse(&bytes);
        let _ = bad_request_for(&bytes);
    }

    #[test]
    fn parser_never_panics_on_mutated_messages(pos in 0usize..400, b in any::<u8>(), cut in 0usize..450) {
        let mut v = INVITE.as_bytes().to_vec();
        if pos < v.len() { v[pos] = b; }
        v.truncate(cut.max(1));
        if let Ok(m) = Message::parse(&v) { let _ = m.validate(); let _ = m.to_bytes(HeaderForm::Compact); }
    }

    #[test]
    fn build_then_parse_round_trips(
        user in "[a-z][a-z0-9]{0,10}",
        tag in "[A-Za-z0-9]{1,12}",
        call_id in "[A-Za-z0-9_-]{8,30}",
        cseq in 1u32..1_000_000,
        body in proptest::collection::vec(any::<u8>(), 0..200),
        compact in any::<bool>(),
    ) {
        let uri = Uri::try_from(format!("sip:{user}@example.invalid").as_str()).unwrap();
        let mut m = Message::request(Method::Message, uri);
        m.push_header("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1");
        m.push_header("From", format!("<sip:a@example.invalid>;tag={tag}"));
        m.push_header("To", format!("<sip:{user}@example.invalid>"));
        m.push_header("Call-ID", call_id.clone());
        m.push_header("CSeq", format!("{cseq} MESSAGE"));
        m.body = body;
        let form = if compact { HeaderForm::Compact } else { HeaderForm::Full };
        let again = Message::parse(&m.to_bytes(form)).unwrap();
        prop_assert_eq!(&again.body, &m.body);
        prop_assert_eq!(again.call_id(), Some(call_id.as_str()));
        prop_assert_eq!(again.cseq(), Some((cseq, Method::Message)));
        prop_assert_eq!(again.from_tag(), Some(tag.as_str()));
        again.validate().unwrap();
    }
}

/// A parse error names no input: for a decrypted inner message the input
/// is content, and the reason reaches `rejected` events and the log.
#[test]
fn a_parse_error_quotes_nothing_of_the_message() {
    let mut refused = 0;
    for bytes in [
        &b"INVITE sip:secret-callee@x SIP/2.0 garbage\r\nVia: ???\r\n\r\n"[..],
        &b"SIP/2.0 2OO secret-reason\r\n\r\n"[..],
        &b"secret-text without any SIP at all\r\n\r\n"[..],
    ] {
        if let Err(e) = Message::parse(bytes) {
            refused += 1;
            assert!(!e.to_string().contains("secret"), "{e}");
        }
    }
    assert!(refused >= 2, "only {refused} refused");
}
