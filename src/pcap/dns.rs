//! Judging DNS (UDP port 53) in a capture.
//!
//! The phone resolves its provider (SRV, NAPTR, A, AAAA: the discovery of
//! `pkg_client::discovery`), so a capture on the internet side of a home
//! holds DNS. A lookup is not the users' secret: it names the provider's
//! domain and hosts, which the connections that follow show anyway, and
//! none of a user's identity. But port 53 must not be a way around the
//! judge, so a datagram to or from port 53 is judged clean only when it is
//! a well-formed DNS lookup of the kind the phone makes:
//!
//! - it decodes completely as one DNS message (RFC 1035 4.1, EDNS
//!   allowed), with no byte left after it;
//! - a standard query (opcode QUERY) going to port 53, or the response to
//!   one coming from it;
//! - exactly one question, class IN, of type A, AAAA, SRV or NAPTR;
//! - every record of every section one a lookup of those returns: A,
//!   AAAA, SRV, NAPTR, CNAME, or in the authority section SOA and NS.
//!
//! Anything else on port 53 (bytes that are no DNS, trailing bytes, TXT
//! or NULL records, the usual carriers of DNS tunnels, another opcode) is
//! not judged, so the capture cannot be clean. What the judge cannot see
//! is data hidden in the labels of a well-formed name; it does not know
//! the provider's domain, so it does not try.

use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::{DNSClass, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use std::net::SocketAddr;

/// The DNS port.
pub const DNS_PORT: u16 = 53;

/// True when a datagram goes to or comes from port 53.
pub fn is_dns_port(src: SocketAddr, dst: SocketAddr) -> bool {
    src.port() == DNS_PORT || dst.port() == DNS_PORT
}

/// Question types the phone asks.
const QUESTION_TYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::NAPTR,
];

/// Record types an answer to those holds.
const ANSWER_TYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::NAPTR,
    RecordType::CNAME,
];

/// Judges a datagram between `src` and `dst` (one of them port 53):
/// `Ok` with a one-line summary (`query SRV _sips._tcp.atlanta.test.`)
/// when it is a well-formed lookup as the module doc says, else `Err`
/// with the reason.
pub fn judge(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Result<String, String> {
    let mut decoder = BinDecoder::new(payload);
    let message = Message::read(&mut decoder)
        .map_err(|e| format!("not a DNS message ({} bytes): {e}", payload.len()))?;
    if !decoder.is_empty() {
        return Err(format!("{} bytes after the DNS message", decoder.len()));
    }
    let expected = if dst.port() == DNS_PORT {
        MessageType::Query
    } else if src.port() == DNS_PORT {
        MessageType::Response
    } else {
        return Err("neither side is port 53".into());
    };
    if message.metadata.message_type != expected {
        return Err(format!(
            "DNS {:?} where a {expected:?} belongs",
            message.metadata.message_type
        ));
    }
    if message.metadata.op_code != OpCode::Query {
        return Err(format!(
            "DNS opcode {:?}, not a standard query",
            message.metadata.op_code
        ));
    }
    let [question] = message.queries.as_slice() else {
        return Err(format!(
            "{} questions in one DNS message (a lookup asks one)",
            message.queries.len()
        ));
    };
    if question.query_class() != DNSClass::IN || !QUESTION_TYPES.contains(&question.query_type()) {
        return Err(format!(
            "DNS question {} {} {}: not a lookup the phone makes",
            question.query_class(),
            question.query_type(),
            question.name()
        ));
    }
    let sections = [
        ("answer", &message.answers, ANSWER_TYPES),
        (
            "authority",
            &message.authorities,
            &[RecordType::SOA, RecordType::NS][..],
        ),
        ("additional", &message.additionals, ANSWER_TYPES),
    ];
    for (section, records, allowed) in sections {
        if let Some(r) = records
            .iter()
            .find(|r| r.dns_class != DNSClass::IN || !allowed.contains(&r.record_type()))
        {
            return Err(format!(
                "DNS {section} record {} {}: not one a lookup returns",
                r.dns_class,
                r.record_type()
            ));
        }
    }
    let kind = if expected == MessageType::Query {
        "query"
    } else {
        "response"
    };
    Ok(format!(
        "{kind} {} {}",
        question.query_type(),
        question.name()
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, TXT};
    use hickory_proto::rr::{Name, RData, Record};

    pub(crate) fn client() -> SocketAddr {
        "10.0.0.2:40000".parse().unwrap()
    }

    pub(crate) fn server() -> SocketAddr {
        "10.0.0.1:53".parse().unwrap()
    }

    /// A query for `name`/`qtype` and its response with `answer`.
    pub(crate) fn lookup(qtype: RecordType, answer: RData) -> (Vec<u8>, Vec<u8>) {
        let name = Name::from_ascii("pkg.atlanta.test.").unwrap();
        let mut q = Message::new(0x8123, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(name.clone(), qtype));
        let mut r = q.clone();
        r.metadata.message_type = MessageType::Response;
        r.add_answer(Record::from_rdata(name, 60, answer));
        (q.to_vec().unwrap(), r.to_vec().unwrap())
    }

    #[test]
    fn a_lookup_and_its_answer_pass() {
        let (q, r) = lookup(RecordType::A, RData::A(A::new(10, 0, 0, 1)));
        assert_eq!(
            judge(client(), server(), &q).unwrap(),
            "query A pkg.atlanta.test."
        );
        assert!(judge(server(), client(), &r).is_ok());
    }

    #[test]
    fn what_is_no_lookup_fails() {
        let (q, r) = lookup(RecordType::A, RData::A(A::new(10, 0, 0, 1)));
        // Direction: a response sent to port 53, a query coming from it.
        assert!(judge(client(), server(), &r).is_err());
        assert!(judge(server(), client(), &q).is_err());
        // Bytes smuggled after a well-formed message.
        let mut tail = q.clone();
        tail.extend_from_slice(b"INVITE sip:bob@atlanta.test SIP/2.0");
        let why = judge(client(), server(), &tail).unwrap_err();
        assert!(why.contains("after the DNS message"), "{why}");
        // A TXT answer, a DNS tunnel's carrier.
        let (_, txt) = lookup(
            RecordType::A,
            RData::TXT(TXT::new(vec!["v=0 o=alice".into()])),
        );
        assert!(judge(server(), client(), &txt).is_err());
        // Not DNS at all: SIP, or a cut message.
        let sip = b"REGISTER sip:atlanta.test SIP/2.0\r\n\r\n";
        assert!(judge(client(), server(), sip).is_err());
        assert!(judge(client(), server(), &q[..q.len() - 3]).is_err());
    }
}
