//! STUN binding requests and answers (RFC 8489), sans-I/O, as SIP flows
//! use them for keep-alives over UDP (RFC 5626 4.4.2 and 8.4) and as the
//! media layer uses them to learn its server-reflexive address.
//!
//! - A phone sends a [`BindingRequest`] to its outbound proxy on the SIP
//!   UDP port; the answer's XOR-MAPPED-ADDRESS is where the NAT maps the
//!   flow. No answer, or another address than before, means the flow
//!   failed (a NAT rebooted or renumbered) and the phone registers again.
//! - The proxy answers a binding request on its SIP port with
//!   [`binding_success`]: the source it saw, under the request's
//!   transaction id. It answers nothing else that looks like STUN.
//!
//! Messages are encoded and read by webrtc-rs's `stun` crate (no codec
//! here). The requests carry no credentials: RFC 5626 8.4 keep-alives are
//! unauthenticated, and the 96-bit random transaction id is what keeps an
//! off-path sender from forging an answer.

use std::net::SocketAddr;
use stun::message::{Getter, Message, BINDING_REQUEST, BINDING_SUCCESS};
use stun::xoraddr::XorMappedAddress;

/// The fixed STUN magic cookie (RFC 8489 5).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// Why a STUN message could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// The `stun` crate refused to encode the message.
    #[error("cannot encode a STUN message: {0}")]
    Encode(#[source] stun::Error),
}

/// Whether a datagram on a SIP port is STUN rather than SIP (RFC 5626
/// 4.4.2, RFC 7983): the first two bits zero (a SIP message starts with a
/// letter), a header whose length field covers the rest in 4-byte words,
/// and the magic cookie.
pub fn is_stun_message(datagram: &[u8]) -> bool {
    if datagram.len() < 20 || datagram[0] & 0xc0 != 0 || datagram[4..8] != MAGIC_COOKIE {
        return false;
    }
    let len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    len % 4 == 0 && datagram.len() == 20 + len
}

/// One binding request: keep the value to read its answer, send the bytes.
#[derive(Debug, Clone)]
pub struct BindingRequest {
    id: stun::agent::TransactionId,
}

impl BindingRequest {
    /// A fresh request under a random transaction id.
    pub fn new() -> Result<(Self, Vec<u8>), StunError> {
        let id = stun::agent::TransactionId::new();
        let mut msg = Message::new();
        msg.build(&[Box::new(id), Box::new(BINDING_REQUEST)])
            .map_err(StunError::Encode)?;
        Ok((BindingRequest { id }, msg.raw))
    }

    /// The mapped address in `response` if it is the success answer to
    /// this request; any other datagram (another transaction, an error
    /// answer, a request, garbage) gives `None`.
    pub fn mapped(&self, response: &[u8]) -> Option<SocketAddr> {
        let mut msg = Message::new();
        msg.raw = response.to_vec();
        msg.decode().ok()?;
        if msg.typ != BINDING_SUCCESS || msg.transaction_id != self.id {
            return None;
        }
        let mut xor = XorMappedAddress::default();
        xor.get_from(&msg).ok()?;
        Some(SocketAddr::new(xor.ip, xor.port))
    }
}

/// The server's answer to `request` if it is a binding request: a
/// success carrying `source` (where the request came from) in
/// XOR-MAPPED-ADDRESS under the request's transaction id. Anything else
/// (an answer, an indication, another method, bytes that do not decode)
/// gets `None`: nothing is sent back.
pub fn binding_success(request: &[u8], source: SocketAddr) -> Option<Vec<u8>> {
    let mut req = Message::new();
    req.raw = request.to_vec();
    req.decode().ok()?;
    if req.typ != BINDING_REQUEST {
        return None;
    }
    let mut msg = Message::new();
    msg.build(&[
        Box::new(req.transaction_id),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress {
            ip: source.ip(),
            port: source.port(),
        }),
    ])
    .ok()?;
    Some(msg.raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_request_is_answered_with_its_source_and_read_back() {
        let (req, bytes) = BindingRequest::new().unwrap();
        assert!(is_stun_message(&bytes));
        assert_eq!(&bytes[0..2], &[0, 1], "a binding request");
        let seen = addr("203.0.113.1:40000");
        let answer = binding_success(&bytes, seen).unwrap();
        assert!(is_stun_message(&answer));
        assert_eq!(req.mapped(&answer), Some(seen));
        let v6 = addr("[2001:db8::1]:5062");
        assert_eq!(req.mapped(&binding_success(&bytes, v6).unwrap()), Some(v6));
    }

    #[test]
    fn only_the_answer_to_our_own_transaction_counts() {
        let (req, _) = BindingRequest::new().unwrap();
        let (_, other) = BindingRequest::new().unwrap();
        let seen = addr("203.0.113.1:40000");
        assert_eq!(req.mapped(&binding_success(&other, seen).unwrap()), None);
        assert_eq!(req.mapped(b"SIP/2.0 200 OK\r\n\r\n"), None);
        assert_eq!(req.mapped(&[]), None);
    }

    #[test]
    fn the_server_answers_only_binding_requests() {
        let (_, bytes) = BindingRequest::new().unwrap();
        let seen = addr("203.0.113.1:40000");
        let answer = binding_success(&bytes, seen).unwrap();
        // An answer is not answered (no ping-pong between two servers).
        assert_eq!(binding_success(&answer, seen), None);
        // A truncated request is not answered.
        assert_eq!(binding_success(&bytes[..19], seen), None);
        assert_eq!(
            binding_success(b"OPTIONS sip:x SIP/2.0\r\n\r\n", seen),
            None
        );
    }

    #[test]
    fn sip_text_and_crlf_are_not_stun() {
        assert!(!is_stun_message(
            b"REGISTER sip:atlanta.test SIP/2.0\r\n\r\n"
        ));
        assert!(!is_stun_message(b"\r\n\r\n"));
        let (_, mut bytes) = BindingRequest::new().unwrap();
        bytes[5] ^= 1; // no magic cookie: an RFC 3489 client or garbage
        assert!(!is_stun_message(&bytes));
        let (_, mut bytes) = BindingRequest::new().unwrap();
        bytes.push(0); // length field disagrees with the datagram
        assert!(!is_stun_message(&bytes));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let (req, _) = BindingRequest::new().unwrap();
            let _ = is_stun_message(&bytes);
            let _ = req.mapped(&bytes);
            let _ = binding_success(&bytes, addr("203.0.113.1:1"));
        }
    }
}
