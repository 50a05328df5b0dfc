//! From segments to SIP messages: one message per UDP datagram (non-SIP
//! datagrams are kept apart as media candidates); TCP byte streams are
//! reassembled per direction (retransmitted segments dropped by sequence
//! number) and cut into messages by `Content-Length` (RFC 3261 18.3).

use super::capture::{Segment, Transport};
use super::sipscan::{looks_like_sip, SipMessage};
use std::collections::HashMap;
use std::net::SocketAddr;

/// A SIP message found in the capture.
#[derive(Debug, Clone)]
pub struct Framed {
    /// Frame (1-based) where the message starts.
    pub frame: usize,
    /// UDP or TCP.
    pub transport: Transport,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// The message.
    pub message: SipMessage,
}

/// A UDP datagram that is not SIP (RTP/SRTP or anything else).
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Frame number.
    pub frame: usize,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Payload.
    pub payload: Vec<u8>,
}

/// SIP messages and other datagrams of a capture, in capture order.
#[derive(Debug, Default)]
pub struct Framing {
    /// SIP messages.
    pub messages: Vec<Framed>,
    /// Non-SIP UDP payloads.
    pub datagrams: Vec<Datagram>,
    /// TCP bytes that never formed a complete SIP message, per stream.
    pub unframed_tcp_bytes: usize,
}

#[derive(Default)]
struct TcpDirection {
    next_seq: Option<u32>,
    buffer: Vec<u8>,
    first_frame: usize,
}

/// Frames every SIP message in `segments`.
pub fn frame_messages(segments: &[Segment]) -> Framing {
    let mut out = Framing::default();
    let mut tcp: HashMap<(SocketAddr, SocketAddr), TcpDirection> = HashMap::new();
    for seg in segments {
        match seg.transport {
            Transport::Udp => {
                if seg.payload.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    continue; // keep-alive (RFC 5626)
                }
                match looks_like_sip(&seg.payload)
                    .then(|| SipMessage::parse(&seg.payload))
                    .flatten()
                {
                    Some((message, _)) => out.messages.push(Framed {
                        frame: seg.frame,
                        transport: Transport::Udp,
                        src: seg.src,
                        dst: seg.dst,
                        message,
                    }),
                    None => out.datagrams.push(Datagram {
                        frame: seg.frame,
                        src: seg.src,
                        dst: seg.dst,
                        payload: seg.payload.clone(),
                    }),
                }
            }
            Transport::Tcp => {
                let dir = tcp.entry((seg.src, seg.dst)).or_default();
                if seg.syn {
                    dir.next_seq = Some(seg.seq.wrapping_add(1));
                    continue;
                }
                if seg.payload.is_empty() {
                    continue;
                }
                let expected = *dir.next_seq.get_or_insert(seg.seq);
                if seg.seq != expected {
                    // A retransmission (already seen) or a gap we cannot fill.
                    continue;
                }
                dir.next_seq = Some(seg.seq.wrapping_add(seg.payload.len() as u32));
                if dir.buffer.is_empty() {
                    dir.first_frame = seg.frame;
                }
                dir.buffer.extend_from_slice(&seg.payload);
                drain_stream(dir, seg, &mut out);
            }
        }
    }
    out.unframed_tcp_bytes = tcp.values().map(|d| d.buffer.len()).sum();
    out
}

fn drain_stream(dir: &mut TcpDirection, seg: &Segment, out: &mut Framing) {
    loop {
        // Skip CRLF keep-alives between messages.
        let skip = dir
            .buffer
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        dir.buffer.drain(..skip);
        if dir.buffer.is_empty() {
            return;
        }
        match SipMessage::parse(&dir.buffer) {
            Some((message, used)) if used > 0 => {
                out.messages.push(Framed {
                    frame: dir.first_frame,
                    transport: Transport::Tcp,
                    src: seg.src,
                    dst: seg.dst,
                    message,
                });
                dir.buffer.drain(..used);
                dir.first_frame = seg.frame;
            }
            _ => return, // incomplete: wait for more bytes
        }
    }
}
