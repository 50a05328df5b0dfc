//! TURN messages on a byte stream (RFC 8656 section 12.5, TURN over TCP
//! or TLS), sans-I/O: a STUN message is its 20-byte header plus the
//! length the header names; ChannelData is its 4-byte header plus the
//! length it names, padded with zeros to a multiple of 4 on streams.
//! [`frame`] writes one message for a stream; [`FrameDecoder`] cuts
//! received bytes back into messages, whatever the chunks they arrive in.
//!
//! The first two bits tell the two apart (RFC 7983): `00` STUN, `01`
//! ChannelData. Anything else cannot be resynchronised on a stream (there
//! is no marker to look for), so the decoder fails for good and the
//! caller closes the connection. The 16-bit length field bounds every
//! frame, and so the decoder's buffer, at [`MAX_FRAME`] bytes.

use thiserror::Error;

/// Bytes of a STUN message header.
const STUN_HEADER: usize = 20;
/// Bytes of a ChannelData header.
const CHANNEL_HEADER: usize = 4;
/// The largest frame the 16-bit length field allows (a STUN header plus
/// 65535 bytes); the decoder never holds more than this plus one read.
pub const MAX_FRAME: usize = STUN_HEADER + u16::MAX as usize;

/// Why a stream of TURN frames cannot be read on.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramingError {
    /// A frame starts with bits `10` or `11`: neither STUN nor
    /// ChannelData; the stream is out of step.
    #[error("a TURN stream frame that is neither STUN nor ChannelData (first byte {0:#04x})")]
    Unknown(u8),
}

/// From the first 4 bytes of a frame: the bytes of the message and the
/// bytes it takes on the stream (ChannelData padded to 4).
pub fn frame_len(head: [u8; 4]) -> Result<(usize, usize), FramingError> {
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    match head[0] >> 6 {
        0b00 => Ok((STUN_HEADER + len, STUN_HEADER + len)),
        0b01 => {
            let msg = CHANNEL_HEADER + len;
            Ok((msg, msg.div_ceil(4) * 4))
        }
        _ => Err(FramingError::Unknown(head[0])),
    }
}

/// `message` (a STUN message or ChannelData, as the TURN client made it)
/// as it goes on a stream: ChannelData padded with zeros to a multiple of
/// 4 (none added when it already is), STUN as it is (always a multiple
/// of 4).
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = message.to_vec();
    if message.first().is_some_and(|b| b >> 6 == 0b01) {
        // Padding the client's encoder already added is kept, not doubled:
        // only the declared length counts.
        if let Some(&[_, _, h, l]) = message.get(..CHANNEL_HEADER) {
            let msg = CHANNEL_HEADER + usize::from(u16::from_be_bytes([h, l]));
            out.truncate(msg.max(CHANNEL_HEADER));
            out.resize(out.len().div_ceil(4) * 4, 0);
        }
    }
    out
}

/// Cuts a received byte stream into TURN messages (padding removed).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    failed: Option<FramingError>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream (ignored once the stream failed).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next complete message, `Ok(None)` until more bytes come; an
    /// error, then the same error on every later call, once the stream is
    /// out of step.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let Some(&[a, b, c, d]) = self.buf.get(..4) else {
            return Ok(None);
        };
        let (msg, total) = match frame_len([a, b, c, d]) {
            Ok(x) => x,
            Err(e) => {
                self.failed = Some(e);
                self.buf = Vec::new();
                return Err(e);
            }
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        let mut message: Vec<u8> = self.buf.drain(..total).collect();
        message.truncate(msg);
        Ok(Some(message))
    }

    /// Bytes held that do not yet make a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stun(len: u16) -> Vec<u8> {
        let mut m = vec![0u8; 20 + usize::from(len)];
        m[0] = 0x01;
        m[1] = 0x01;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m[20..].iter_mut().for_each(|b| *b = 0xAB);
        m
    }

    fn channel_data(number: u16, data: &[u8]) -> Vec<u8> {
        let mut m = number.to_be_bytes().to_vec();
        m.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        m.extend_from_slice(data);
        m
    }

    #[test]
    fn lengths_of_stun_and_channel_data() {
        assert_eq!(frame_len([0x00, 0x01, 0x00, 0x08]), Ok((28, 28)));
        assert_eq!(frame_len([0x40, 0x00, 0x00, 0x05]), Ok((9, 12)));
        assert_eq!(frame_len([0x40, 0x00, 0x00, 0x04]), Ok((8, 8)));
        assert_eq!(frame_len([0x7F, 0xFF, 0xFF, 0xFF]), Ok((65539, 65540)));
        assert_eq!(frame_len([0x3F, 0, 0xFF, 0xFF]), Ok((MAX_FRAME, MAX_FRAME)));
        assert_eq!(frame_len([0x80, 0, 0, 0]), Err(FramingError::Unknown(0x80)));
        assert_eq!(frame_len([0xC0, 0, 0, 0]), Err(FramingError::Unknown(0xC0)));
    }

    #[test]
    fn channel_data_is_padded_on_the_stream_and_unpadded_when_read() {
        let cd = channel_data(0x4000, b"hello");
        let framed = frame(&cd);
        assert_eq!(framed.len(), 12, "4 + 5 padded to 12");
        assert_eq!(&framed[9..], &[0, 0, 0]);
        // Already padded (the turn crate's encoder pads): not padded twice.
        assert_eq!(frame(&framed), framed);
        let mut d = FrameDecoder::new();
        d.push(&framed);
        assert_eq!(d.next_frame().unwrap().unwrap(), cd);
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let msgs = [stun(8), channel_data(0x4001, b"abc"), stun(0)];
        let wire: Vec<u8> = msgs.iter().flat_map(|m| frame(m)).collect();
        for step in [1, 3, 7, 64] {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                d.push(chunk);
                while let Some(m) = d.next_frame().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs, "chunks of {step}");
        }
    }

    #[test]
    fn a_stream_out_of_step_fails_for_good() {
        let mut d = FrameDecoder::new();
        d.push(&[0x80, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(d.next_frame(), Err(FramingError::Unknown(0x80)));
        d.push(&stun(0));
        assert_eq!(d.next_frame(), Err(FramingError::Unknown(0x80)));
        assert_eq!(d.buffered(), 0, "nothing more is held");
    }

    proptest! {
        /// Any sequence of messages, framed and cut into any chunks, is read
        /// back as the same messages; and no input makes the decoder panic
        /// or hold more than one frame plus the last chunk.
        #[test]
        fn framing_round_trips(
            msgs in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
            cuts in proptest::collection::vec(1usize..200, 1..20),
        ) {
            let msgs: Vec<Vec<u8>> = msgs
                .into_iter()
                .map(|(is_stun, body)| {
                    if is_stun {
                        let mut m = stun(0);
                        let body: Vec<u8> = body[..body.len() / 4 * 4].to_vec();
                        m[2..4].copy_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
                        m.extend_from_slice(&body);
                        m
                    } else {
                        channel_data(0x4000, &body)
                    }
                })
                .collect();
            let wire: Vec<u8> = msgs.iter().flat_map(|m| frame(m)).collect();
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            let mut at = 0;
            let mut i = 0;
            while at < wire.len() {
                let n = cuts[i % cuts.len()].min(wire.len() - at);
                d.push(&wire[at..at + n]);
                at += n;
                i += 1;
                while let Some(m) = d.next_frame().unwrap() {
                    got.push(m);
                }
            }
            prop_assert_eq!(got, msgs);
            prop_assert_eq!(d.buffered(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut d = FrameDecoder::new();
            d.push(&bytes);
            while let Ok(Some(m)) = d.next_frame() {
                prop_assert!(m.len() >= 4 && m.len() <= MAX_FRAME);
            }
            prop_assert!(d.buffered() <= bytes.len());
        }
    }
}
