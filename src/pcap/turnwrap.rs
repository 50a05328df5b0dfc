//! Looking inside TURN (RFC 8656): a relayed packet crosses the wire
//! either as ChannelData (12.4: a 4-byte header, the channel number and
//! the length, then the peer's datagram) or in the DATA attribute of a
//! Send or Data indication (11.4, 11.6). Either way, what the relay hands
//! on to the peer is the application's own datagram, judged like a direct
//! one by [`super::verdict`]. The codecs are the `turn` and `stun`
//! crates'; this module only says what is inside and why it is malformed.

use stun::attributes::ATTR_DATA;
use stun::message::Message;
use turn::proto::chandata::ChannelData;

/// How deep TURN may nest inside TURN before the judge gives up (a
/// relay's own ChannelData is depth 1; nothing the phone sends nests).
pub(crate) const MAX_DEPTH: usize = 2;

/// True when `p` is shaped like a STUN message (RFC 8489 6): the two top
/// bits zero, the magic cookie, and a length that is the rest of the
/// datagram, a multiple of 4.
pub(crate) fn is_stun_shaped(p: &[u8]) -> bool {
    let Some((head, body)) = p.split_first_chunk::<20>() else {
        return false;
    };
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    head[0] < 4 && head[4..8] == [0x21, 0x12, 0xa4, 0x42] && len == body.len() && len % 4 == 0
}

/// True when `p` is TURN or STUN on the outside: a STUN-shaped message
/// or a well-formed ChannelData message. Such a datagram is never framed
/// as SIP (its payload may read like SIP, a start line after the 4-byte
/// ChannelData header): it is opened, and what it carries judged.
pub(crate) fn is_turn(p: &[u8]) -> bool {
    is_stun_shaped(p) || (is_channel_data_shaped(p) && channel_data(p).is_ok())
}

/// True when the first byte of `p` is in the ChannelData range (64..=127,
/// RFC 7983's demultiplexing of STUN/DTLS/TURN channels/RTP): such a
/// datagram must decode as ChannelData, see [`channel_data`].
pub(crate) fn is_channel_data_shaped(p: &[u8]) -> bool {
    p.first().is_some_and(|b| (0x40..=0x7f).contains(b))
}

/// True when a TCP stream starts like TURN over TCP (RFC 8656 3.1): a
/// STUN header with the magic cookie (a client's connection opens with an
/// Allocate request, the server's with its answer). Such a stream is cut
/// with [`stream_message_len`], not as SIP.
pub(crate) fn starts_like_turn_stream(stream: &[u8]) -> bool {
    stream.len() >= 20 && stream[0] < 4 && stream[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

/// The length of the TURN message at the start of `stream` (TURN over
/// TCP or TLS, RFC 8656 12.5: STUN messages as they are, ChannelData
/// padded to a multiple of 4): `Ok(None)` when more bytes are needed to
/// tell, `Err` when the bytes are neither a STUN header (magic cookie,
/// length a multiple of 4) nor a ChannelData header (first byte 0x40..=0x4f).
pub(crate) fn stream_message_len(stream: &[u8]) -> Result<Option<usize>, String> {
    let Some(first) = stream.first() else {
        return Ok(None);
    };
    match first {
        0..=3 => {
            let Some(head) = stream.get(..20) else {
                return Ok(None);
            };
            if head[4..8] != [0x21, 0x12, 0xa4, 0x42] {
                return Err("a STUN header without the magic cookie".into());
            }
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            if len % 4 != 0 {
                return Err(format!("a STUN length {len} that is not a multiple of 4"));
            }
            Ok(Some(20 + len))
        }
        0x40..=0x4f => {
            let Some(head) = stream.get(..4) else {
                return Ok(None);
            };
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            Ok(Some(4 + len.next_multiple_of(4)))
        }
        b => Err(format!(
            "first byte {b:#04x} is neither STUN nor ChannelData"
        )),
    }
}

/// The channel number and the peer's datagram of a ChannelData message.
/// `Err` says why it is not a well-formed one: too short, a channel
/// number outside 0x4000..=0x4FFF (RFC 8656 12: 0x5000..=0xFFFF are
/// reserved), a length beyond the datagram, or more than 3 bytes of
/// padding after the data (12.5: padding to a multiple of 4 only).
pub(crate) fn channel_data(p: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut cd = ChannelData {
        raw: p.to_vec(),
        ..ChannelData::default()
    };
    cd.decode()
        .map_err(|e| format!("malformed ChannelData ({} bytes): {e}", p.len()))?;
    let number = cd.number.0;
    if number > 0x4fff {
        return Err(format!(
            "ChannelData on reserved channel number {number:#06x} (RFC 8656 12)"
        ));
    }
    let trailing = p.len() - 4 - cd.data.len();
    if trailing > 3 {
        return Err(format!(
            "ChannelData on channel {number:#06x} with {trailing} bytes after its {}-byte datagram (padding is at most 3)",
            cd.data.len()
        ));
    }
    Ok((number, cd.data))
}

/// What a STUN message carries for a peer: the value of each of its DATA
/// attributes (a Send or Data indication has exactly one; any other
/// message with one is unwrapped too, so nothing rides in it unjudged).
/// `Err` when the message does not decode (attributes that do not add up
/// to its length).
pub(crate) fn stun_data(p: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut m = Message::new();
    m.unmarshal_binary(p)
        .map_err(|e| format!("malformed STUN message ({} bytes): {e}", p.len()))?;
    Ok(m.attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_DATA)
        .map(|a| a.value.clone())
        .collect())
}

/// The STUN method and class of a message, for reports (`Send
/// indication`); `p` must be STUN-shaped.
pub(crate) fn stun_kind(p: &[u8]) -> String {
    let mut m = Message::new();
    match m.unmarshal_binary(p) {
        Ok(()) => m.typ.to_string(),
        Err(_) => "STUN".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun::message::{MessageType, CLASS_INDICATION, METHOD_SEND};
    use turn::proto::chandata::ChannelData;
    use turn::proto::channum::ChannelNumber;
    use turn::proto::data::Data;

    fn encode_channel(number: u16, data: &[u8]) -> Vec<u8> {
        let mut cd = ChannelData {
            data: data.to_vec(),
            number: ChannelNumber(number),
            raw: Vec::new(),
        };
        cd.encode();
        cd.raw
    }

    #[test]
    fn channel_data_round_trips_with_and_without_padding() {
        let raw = encode_channel(0x4001, &[1, 2, 3, 4, 5]);
        assert_eq!(raw.len(), 12, "padded to 4");
        assert_eq!(channel_data(&raw).unwrap(), (0x4001, vec![1, 2, 3, 4, 5]));
        assert_eq!(
            channel_data(&raw[..9]).unwrap(),
            (0x4001, vec![1, 2, 3, 4, 5])
        );
    }

    #[test]
    fn malformed_channel_data_is_an_error_not_a_panic() {
        for bad in [
            vec![0x40],
            vec![0x40, 0x01, 0x00],
            vec![0x40, 0x01, 0x00, 0x09, 1, 2, 3],
            vec![0x40, 0x01, 0xff, 0xff],
        ] {
            assert!(channel_data(&bad).is_err(), "{bad:?}");
        }
        // Reserved channel numbers and bytes hidden after the data.
        assert!(channel_data(&encode_channel(0x5000, &[1; 8])).is_err());
        let mut tail = encode_channel(0x4001, &[1; 8]);
        tail.extend_from_slice(&[0; 4]);
        let why = channel_data(&tail).unwrap_err();
        assert!(why.contains("4 bytes after"), "{why}");
    }

    #[test]
    fn every_data_attribute_of_a_stun_message_is_found() {
        let mut m = Message::new();
        m.typ = MessageType::new(METHOD_SEND, CLASS_INDICATION);
        m.write_header();
        use stun::message::Setter;
        Data(b"first".to_vec()).add_to(&mut m).unwrap();
        Data(b"second".to_vec()).add_to(&mut m).unwrap();
        assert_eq!(
            stun_data(&m.raw).unwrap(),
            vec![b"first".to_vec(), b"second".to_vec()]
        );
        assert_eq!(stun_kind(&m.raw), "Send indication");
        let mut cut = m.raw.clone();
        cut.truncate(cut.len() - 4);
        assert!(stun_data(&cut).is_err());
    }
}
