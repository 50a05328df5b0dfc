//! From segments to SIP messages: one message per UDP datagram (non-SIP
//! datagrams are kept apart as media candidates); TCP byte streams are
//! reassembled per direction and cut into messages by `Content-Length`
//! (RFC 3261 18.3).
//!
//! TCP reassembly orders segments by sequence number (out-of-order
//! delivery is fine), drops exact retransmissions, and reports what it
//! cannot vouch for instead of skipping it: a gap (a segment the capture
//! missed: nothing after it can be cut into messages), a retransmission
//! whose bytes differ from the first copy, and bytes that never form a
//! complete SIP message (TLS, WebSocket, a message cut by the end of the
//! capture). A TCP direction that starts like TLS is cut into TLS
//! records instead ([`TlsDirection`]); [`frame_tls`] pairs them into
//! connections and, given the TLS secrets, frames the SIP inside.

use super::capture::{Segment, Transport};
use super::dns::is_dns_port;
use super::sipscan::{leading_crlf, looks_like_sip, SipMessage};
use super::tls::{looks_like_tls, split_records, Record, TlsKeys};
use super::turnwrap::{is_turn, starts_like_turn_stream, stream_message_len};
use super::Unjudged;
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

/// One direction of a TCP connection that carries TLS records.
#[derive(Debug, Clone)]
pub struct TlsDirection {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Its whole TLS records, in order.
    pub records: Vec<Record>,
    /// (stream offset, frame) where each captured piece starts.
    starts: Vec<(usize, usize)>,
    /// Frame of the first byte.
    pub first_frame: usize,
}

impl TlsDirection {
    /// The frame holding stream offset `offset`.
    pub fn frame_at(&self, offset: usize) -> usize {
        self.starts
            .iter()
            .rev()
            .find(|(start, _)| *start <= offset)
            .map_or(self.first_frame, |(_, f)| *f)
    }
}

/// SIP messages and other datagrams of a capture, in capture order.
#[derive(Debug, Default)]
pub struct Framing {
    /// TCP directions made of TLS records (their SIP is judged only when
    /// decrypted, see [`frame_tls`]).
    pub tls: Vec<TlsDirection>,
    /// SIP messages, ordered by the frame where each starts.
    pub messages: Vec<Framed>,
    /// Non-SIP UDP payloads (keep-alives of CR/LF only left out).
    pub datagrams: Vec<Datagram>,
    /// Messages cut out of TCP streams that are not SIP: TURN over TCP
    /// (STUN and ChannelData, RFC 8656 12.5) and DNS over TCP (RFC 1035
    /// 4.2.2), each judged like the datagram it would be over UDP.
    pub stream_messages: Vec<Datagram>,
    /// TCP bytes that never formed a complete SIP message, all streams.
    pub unframed_tcp_bytes: usize,
    /// TCP gaps, retransmissions that differ and unframed bytes, each with
    /// its reason.
    pub unjudged: Vec<Unjudged>,
}

/// One TCP segment kept for reassembly.
struct Piece {
    seq: u32,
    frame: usize,
    order: usize,
    payload: Vec<u8>,
}

/// One direction of one TCP connection (a new SYN starts a new one).
struct Direction {
    src: SocketAddr,
    dst: SocketAddr,
    /// Sequence number of the first data byte, when the SYN was captured.
    isn: Option<u32>,
    pieces: Vec<Piece>,
}

/// Frames every SIP message in `segments`.
pub fn frame_messages(segments: &[Segment]) -> Framing {
    let mut out = Framing::default();
    let mut open: HashMap<(SocketAddr, SocketAddr), Direction> = HashMap::new();
    let mut closed: Vec<Direction> = Vec::new();
    for (order, seg) in segments.iter().enumerate() {
        match seg.transport {
            // Segments are UDP or TCP; TLS is found in TCP streams.
            Transport::Tls => {}
            Transport::Udp => udp(seg, &mut out),
            Transport::Tcp => {
                let key = (seg.src, seg.dst);
                if seg.syn {
                    if let Some(old) = open.remove(&key) {
                        if old.isn != Some(seg.seq.wrapping_add(1)) || !old.pieces.is_empty() {
                            closed.push(old);
                        }
                    }
                }
                let dir = open.entry(key).or_insert_with(|| Direction {
                    src: seg.src,
                    dst: seg.dst,
                    isn: None,
                    pieces: Vec::new(),
                });
                let mut seq = seg.seq;
                if seg.syn {
                    // The SYN takes one sequence number; data in a SYN
                    // (TCP Fast Open) follows it.
                    seq = seq.wrapping_add(1);
                    dir.isn = Some(seq);
                }
                if !seg.payload.is_empty() {
                    dir.pieces.push(Piece {
                        seq,
                        frame: seg.frame,
                        order,
                        payload: seg.payload.clone(),
                    });
                }
            }
        }
    }
    closed.extend(open.into_values());
    closed.sort_by_key(|d| d.pieces.first().map_or(0, |p| p.order));
    for dir in closed {
        tcp_direction(dir, &mut out);
    }
    out.messages.sort_by_key(|m| m.frame);
    out.unjudged.sort_by_key(|u| u.frame);
    out
}

fn udp(seg: &Segment, out: &mut Framing) {
    if seg.payload.iter().all(|b| matches!(b, b'\r' | b'\n')) {
        return; // keep-alive (RFC 5626), or an empty datagram
    }
    match (looks_like_sip(&seg.payload) && !is_turn(&seg.payload))
        .then(|| SipMessage::parse_datagram(&seg.payload))
        .flatten()
    {
        Some(message) => out.messages.push(Framed {
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

/// Reassembles one direction and frames its messages.
fn tcp_direction(dir: Direction, out: &mut Framing) {
    let Some(first) = dir.pieces.first() else {
        return;
    };
    // Without the SYN, the stream starts at the lowest sequence number seen
    // (offsets taken relative to the first segment, modulo 2^32).
    let base = dir.isn.unwrap_or_else(|| {
        let reference = first.seq;
        let earliest = dir
            .pieces
            .iter()
            .map(|p| p.seq.wrapping_sub(reference) as i32)
            .min()
            .unwrap_or(0);
        reference.wrapping_add(earliest as u32)
    });
    let mut pieces: Vec<(u64, &Piece)> = dir
        .pieces
        .iter()
        .map(|p| (u64::from(p.seq.wrapping_sub(base)), p))
        .collect();
    pieces.sort_by_key(|(off, p)| (*off, p.order));
    let mut stream: Vec<u8> = Vec::new();
    // (stream offset, frame) where each captured piece starts contributing.
    let mut starts: Vec<(usize, usize)> = Vec::new();
    let mut cut: Option<(usize, u64, usize)> = None;
    for (i, &(off, p)) in pieces.iter().enumerate() {
        let len = stream.len() as u64;
        if off > len {
            // Before the SYN (seq below the ISN) wraps to a huge offset too.
            let after = pieces[i..].iter().map(|(_, p)| p.payload.len()).sum();
            cut = Some((p.frame, off - len, after));
            break;
        }
        let off = off as usize;
        let overlap = (stream.len() - off).min(p.payload.len());
        if stream[off..off + overlap] != p.payload[..overlap] {
            out.unjudged.push(Unjudged {
                frame: Some(p.frame),
                why: format!(
                    "TCP {} -> {}: a retransmission carries other bytes than the first copy",
                    dir.src, dir.dst
                ),
            });
        }
        if overlap < p.payload.len() {
            starts.push((stream.len(), p.frame));
            stream.extend_from_slice(&p.payload[overlap..]);
        }
    }
    let frame_at = |offset: usize| {
        starts
            .iter()
            .rev()
            .find(|(start, _)| *start <= offset)
            .map_or(first.frame, |(_, f)| *f)
    };
    if looks_like_tls(&stream) {
        let (records, mut used) = split_records(&stream);
        // SIP in clear after the records is judged as SIP (a leak is
        // found, not hidden behind the TLS framing).
        if looks_like_sip(&stream[used..]) {
            let at = |o: usize| frame_at(used + o);
            used += frame_sip(&stream[used..], &at, Transport::Tcp, dir.src, dir.dst, out);
        }
        let left = stream.len() - used;
        if left > 0 {
            out.unframed_tcp_bytes += left;
            out.unjudged.push(Unjudged {
                frame: Some(frame_at(used)),
                why: format!(
                    "TCP {} -> {}: {left} bytes after the TLS records are not a whole TLS record",
                    dir.src, dir.dst
                ),
            });
        }
        out.tls.push(TlsDirection {
            src: dir.src,
            dst: dir.dst,
            records,
            starts: starts.clone(),
            first_frame: first.frame,
        });
    } else if is_dns_port(dir.src, dir.dst) || starts_like_turn_stream(&stream) {
        let dns = is_dns_port(dir.src, dir.dst);
        let (pos, why) = if dns {
            cut_dns(&stream)
        } else {
            cut_turn(&stream)
        };
        for (start, end) in pos.iter().copied() {
            out.stream_messages.push(Datagram {
                frame: frame_at(start),
                src: dir.src,
                dst: dir.dst,
                payload: stream[start..end].to_vec(),
            });
        }
        let used = pos.last().map_or(0, |(_, end)| *end);
        let left = stream.len() - used;
        if left > 0 {
            out.unframed_tcp_bytes += left;
            let what = if dns { "DNS" } else { "TURN" };
            out.unjudged.push(Unjudged {
                frame: Some(frame_at(used)),
                why: format!(
                    "TCP {} -> {}: {left} bytes are not a whole {what} message ({why})",
                    dir.src, dir.dst
                ),
            });
        }
    } else {
        let pos = frame_sip(&stream, &frame_at, Transport::Tcp, dir.src, dir.dst, out);
        let left = stream.len() - pos;
        if left > 0 {
            out.unframed_tcp_bytes += left;
            let what = if looks_like_sip(&stream[pos..]) {
                "an incomplete SIP message"
            } else {
                "not SIP"
            };
            out.unjudged.push(Unjudged {
                frame: Some(frame_at(pos)),
                why: format!(
                    "TCP {} -> {}: {left} bytes do not form a complete SIP message ({what})",
                    dir.src, dir.dst
                ),
            });
        }
    }
    if let Some((frame, missing, after)) = cut {
        out.unframed_tcp_bytes += after;
        out.unjudged.push(Unjudged {
            frame: Some(frame),
            why: format!(
                "TCP {} -> {}: {missing} bytes missing from the capture before this segment; \
                 the {after} bytes after the gap cannot be cut into messages",
                dir.src, dir.dst
            ),
        });
    }
}

/// Cuts DNS messages off a TCP stream (RFC 1035 4.2.2: each after its
/// 2-byte length): their (start, end) in `stream`, and why the cutting
/// stopped before the end (if it did).
fn cut_dns(stream: &[u8]) -> (Vec<(usize, usize)>, String) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < stream.len() {
        let Some(len) = stream.get(pos..pos + 2) else {
            return (out, "a length prefix cut short".into());
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (start, end) = (pos + 2, pos + 2 + len);
        if len == 0 || end > stream.len() {
            return (out, "a message shorter than its length prefix".into());
        }
        out.push((start, end));
        pos = end;
    }
    (out, String::new())
}

/// Cuts TURN messages (STUN, padded ChannelData) off a TCP stream: their
/// (start, end) in `stream`, and why the cutting stopped before the end.
fn cut_turn(stream: &[u8]) -> (Vec<(usize, usize)>, String) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < stream.len() {
        match stream_message_len(&stream[pos..]) {
            Ok(Some(n)) if pos + n <= stream.len() => {
                out.push((pos, pos + n));
                pos += n;
            }
            Ok(_) => return (out, "a message cut short".into()),
            Err(why) => return (out, why),
        }
    }
    (out, String::new())
}

/// Cuts SIP messages off `stream` (CRLF keep-alives skipped) into `out`;
/// returns where the first byte that is not a whole message starts.
fn frame_sip(
    stream: &[u8],
    frame_at: &dyn Fn(usize) -> usize,
    transport: Transport,
    src: SocketAddr,
    dst: SocketAddr,
    out: &mut Framing,
) -> usize {
    let mut pos = 0usize;
    while pos < stream.len() {
        pos += leading_crlf(&stream[pos..]);
        if pos >= stream.len() {
            break;
        }
        match SipMessage::parse(&stream[pos..]) {
            Some((message, used)) if used > 0 => {
                out.messages.push(Framed {
                    frame: frame_at(pos),
                    transport,
                    src,
                    dst,
                    message,
                });
                pos += used;
            }
            _ => break,
        }
    }
    pos
}

/// What became of one TLS connection of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConnection {
    /// The client (sender of the ClientHello), when seen.
    pub client: SocketAddr,
    /// The server.
    pub server: SocketAddr,
    /// Whole TLS records, both directions.
    pub records: usize,
    /// SIP messages decrypted out of it; `Err` says why it was not
    /// decrypted (framing judged only).
    pub decrypted: Result<usize, String>,
}

/// Pairs the TLS directions of `framing` into connections and, with
/// `keys`, decrypts each connection whose secrets the log holds and frames
/// the SIP inside into `framing.messages` (transport [`Transport::Tls`]).
/// Decrypted bytes that are not whole SIP messages are unjudged.
pub fn frame_tls(framing: &mut Framing, keys: Option<&TlsKeys>) -> Vec<TlsConnection> {
    let dirs = std::mem::take(&mut framing.tls);
    let mut used = vec![false; dirs.len()];
    let mut conns = Vec::new();
    for i in 0..dirs.len() {
        if used[i] {
            continue;
        }
        used[i] = true;
        let a = &dirs[i];
        let peer =
            (0..dirs.len()).find(|&j| !used[j] && dirs[j].src == a.dst && dirs[j].dst == a.src);
        if let Some(j) = peer {
            used[j] = true;
        }
        let b = peer.map(|j| &dirs[j]);
        // The client is the side whose first record is a ClientHello.
        let (client, server) = match b {
            Some(b) if super::tls::client_random(&b.records).is_some() => (Some(b), Some(a)),
            _ => (Some(a), b),
        };
        let records = client.map_or(0, |d| d.records.len()) + server.map_or(0, |d| d.records.len());
        let (client_addr, server_addr) = match client {
            Some(c) => (c.src, c.dst),
            None => (a.src, a.dst),
        };
        let decrypted = match keys {
            None => Err("no key log given: TLS framing judged only".to_string()),
            Some(keys) => decrypt_pair(client, server, keys, framing),
        };
        conns.push(TlsConnection {
            client: client_addr,
            server: server_addr,
            records,
            decrypted,
        });
    }
    framing.messages.sort_by_key(|m| m.frame);
    framing.unjudged.sort_by_key(|u| u.frame);
    conns
}

fn decrypt_pair(
    client: Option<&TlsDirection>,
    server: Option<&TlsDirection>,
    keys: &TlsKeys,
    out: &mut Framing,
) -> Result<usize, String> {
    let (Some(client), Some(server)) = (client, server) else {
        return Err("only one direction captured".to_string());
    };
    let random = super::tls::client_random(&client.records)
        .ok_or("the ClientHello is not in the capture")?;
    let suite =
        super::tls::cipher_suite(&server.records).ok_or("the ServerHello is not in the capture")?;
    let before = out.messages.len();
    for (dir, from_client) in [(client, true), (server, false)] {
        let data = super::tls::decrypt_direction(&dir.records, suite, &random, from_client, keys)?;
        let mut plain = Vec::new();
        // (plaintext offset, frame) of each record's content.
        let mut starts: Vec<(usize, usize)> = Vec::new();
        for (offset, bytes) in data {
            starts.push((plain.len(), dir.frame_at(offset)));
            plain.extend_from_slice(&bytes);
        }
        let frame_at = |offset: usize| {
            starts
                .iter()
                .rev()
                .find(|(start, _)| *start <= offset)
                .map_or(dir.first_frame, |(_, f)| *f)
        };
        let pos = frame_sip(&plain, &frame_at, Transport::Tls, dir.src, dir.dst, out);
        let left = plain.len() - pos;
        if left > 0 {
            out.unjudged.push(Unjudged {
                frame: Some(frame_at(pos)),
                why: format!(
                    "TLS {} -> {}: {left} decrypted bytes do not form a complete SIP message",
                    dir.src, dir.dst
                ),
            });
        }
    }
    Ok(out.messages.len() - before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(frame: usize, seq: u32, syn: bool, payload: &[u8]) -> Segment {
        Segment {
            frame,
            transport: Transport::Tcp,
            src: ([127, 0, 0, 1], 40000).into(),
            dst: ([127, 0, 0, 1], 5060).into(),
            seq,
            syn,
            payload: payload.to_vec(),
        }
    }

    const MSG: &[u8] = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";

    /// Without the SYN the stream starts at the lowest sequence number,
    /// across the 2^32 wrap and out of order.
    #[test]
    fn no_syn_out_of_order_across_the_wrap() {
        let (a, b) = MSG.split_at(20);
        let start = u32::MAX - 9;
        let framing = frame_messages(&[
            seg(1, start.wrapping_add(20), false, b),
            seg(2, start, false, a),
        ]);
        assert_eq!(framing.messages.len(), 1, "{:?}", framing.unjudged);
        assert_eq!(framing.messages[0].frame, 2);
        assert!(framing.unjudged.is_empty());
    }

    /// Data in a SYN (TCP Fast Open) is part of the stream; a new SYN on the
    /// same address pair starts a new stream.
    #[test]
    fn syn_data_and_a_new_connection() {
        let framing = frame_messages(&[
            seg(1, 100, true, MSG),
            seg(2, 101 + MSG.len() as u32, false, MSG),
            seg(3, 7000, true, &[]),
            seg(4, 7001, false, MSG),
        ]);
        assert_eq!(framing.messages.len(), 3, "{:?}", framing.unjudged);
        assert!(framing.unjudged.is_empty());
        assert_eq!(framing.unframed_tcp_bytes, 0);
    }

    /// A stream without Content-Length cannot be cut reliably: the message
    /// is kept with its problem.
    #[test]
    fn missing_content_length_on_a_stream_is_a_problem() {
        let framing =
            frame_messages(&[seg(1, 1, true, b"BYE sip:x SIP/2.0\r\nCSeq: 2 BYE\r\n\r\n")]);
        assert_eq!(framing.messages.len(), 1);
        assert!(!framing.messages[0].message.problems.is_empty());
    }
}
