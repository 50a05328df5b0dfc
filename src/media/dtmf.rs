//! RFC 4733 telephone-event payloads (DTMF), sans-I/O sender and receiver.
//!
//! Events 0-15 are the DTMF digits `0-9 * # A-D` (RFC 4733 3.2); event 16
//! (flash) is accepted on receive, as our `a=fmtp:101 0-16` announces.

/// Events per RFC 4733 table 3: digits, `*`, `#`, `A`-`D`.
const DIGITS: &[u8; 16] = b"0123456789*#ABCD";

/// The RTP timestamp duration of one event packet at 8 kHz (20 ms).
const STEP: u16 = 160;

/// Number of 20 ms packets a sent digit lasts before its end packets.
const TONE_PACKETS: u16 = 5;

/// How often the final (end) packet is sent (RFC 4733 2.5.1.4: three times).
const END_REPEATS: u8 = 3;

/// One telephone-event payload (RFC 4733 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TelephoneEvent {
    /// Event code, 0-255.
    pub event: u8,
    /// The E bit: the event has ended.
    pub end: bool,
    /// Power level in -dBm0, 0-63.
    pub volume: u8,
    /// Duration in timestamp units since the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// The 4-byte payload.
    pub(crate) fn encode(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }

    /// Reads a payload; `None` when it is not 4 bytes (RFC 4733 allows
    /// several events per packet only with redundancy, which we do not offer).
    pub(crate) fn decode(payload: &[u8]) -> Option<Self> {
        let [event, flags, d0, d1]: [u8; 4] = payload.try_into().ok()?;
        Some(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }
}

/// The event code of a DTMF character, if it is one.
pub(crate) fn digit_to_event(digit: char) -> Option<u8> {
    let up = digit.to_ascii_uppercase();
    DIGITS
        .iter()
        .position(|&d| char::from(d) == up)
        .map(|p| p as u8)
}

/// The DTMF character of an event code, if it is one.
pub(crate) fn event_to_digit(event: u8) -> Option<char> {
    DIGITS.get(usize::from(event)).map(|&d| char::from(d))
}

/// One packet the sender wants on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DtmfPacket {
    /// The payload.
    pub event: TelephoneEvent,
    /// Set the RTP marker bit (first packet of an event).
    pub marker: bool,
}

/// Sends digits one after the other, each as a sequence of 20 ms packets
/// sharing one RTP timestamp, then three end packets. Durations count in
/// the RTP clock of the call's codec (8 kHz by default, 48 kHz for Opus).
#[derive(Debug)]
pub(crate) struct DtmfSender {
    current: Option<(u8, u16, u8)>,
    queue: std::collections::VecDeque<u8>,
    step: u16,
}

impl Default for DtmfSender {
    /// A sender for an 8 kHz clock.
    fn default() -> Self {
        DtmfSender {
            current: None,
            queue: std::collections::VecDeque::new(),
            step: STEP,
        }
    }
}

/// Digits waiting beyond this are refused (a stuck UI must not queue forever).
const MAX_QUEUED: usize = 32;

impl DtmfSender {
    /// A sender whose 20 ms packets step `clock_rate / 50` timestamp units
    /// (the whole tone, 5 packets, must fit the 16-bit duration: clocks
    /// above 600 kHz are capped).
    pub(crate) fn for_clock_rate(clock_rate: u32) -> Self {
        DtmfSender {
            step: u16::try_from(clock_rate / 50)
                .unwrap_or(u16::MAX)
                .min(u16::MAX / TONE_PACKETS),
            ..DtmfSender::default()
        }
    }

    /// Queues a digit; refuses characters that are not DTMF (and digits
    /// beyond a queue of 32).
    pub(crate) fn start(&mut self, digit: char) -> bool {
        match digit_to_event(digit) {
            Some(ev) if self.queue.len() < MAX_QUEUED => {
                self.queue.push_back(ev);
                true
            }
            _ => false,
        }
    }

    /// Whether a digit is being sent or waits (its packets replace audio packets).
    #[cfg(test)]
    pub(crate) fn busy(&self) -> bool {
        self.current.is_some() || !self.queue.is_empty()
    }

    /// The next packet for this 20 ms tick, if a digit is in progress. A
    /// packet with `marker` begins a new event (a new RTP timestamp).
    pub(crate) fn next_packet(&mut self) -> Option<DtmfPacket> {
        if self.current.is_none() {
            self.current = self.queue.pop_front().map(|ev| (ev, 0, 0));
        }
        let (event, sent, ends) = self.current?;
        let duration = self.step.saturating_mul(sent + 1);
        if sent + 1 < TONE_PACKETS {
            self.current = Some((event, sent + 1, 0));
            return Some(DtmfPacket {
                event: TelephoneEvent {
                    event,
                    end: false,
                    volume: 10,
                    duration,
                },
                marker: sent == 0,
            });
        }
        let total = self.step.saturating_mul(TONE_PACKETS);
        self.current = if ends + 1 < END_REPEATS {
            Some((event, sent, ends + 1))
        } else {
            None
        };
        Some(DtmfPacket {
            event: TelephoneEvent {
                event,
                end: true,
                volume: 10,
                duration: total,
            },
            marker: false,
        })
    }
}

/// Turns received event packets into one digit per event, however often
/// its packets (or end packets) are repeated.
#[derive(Debug, Default)]
pub(crate) struct DtmfReceiver {
    last_timestamp: Option<u32>,
}

impl DtmfReceiver {
    /// Feeds one packet (its RTP timestamp and payload); returns a digit
    /// the first time an event is seen.
    pub(crate) fn receive(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        let ev = TelephoneEvent::decode(payload)?;
        if self.last_timestamp == Some(timestamp) {
            return None;
        }
        self.last_timestamp = Some(timestamp);
        event_to_digit(ev.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc4733_figure_shape() {
        // Digit 5, end bit, volume 10, duration 800 (100 ms).
        let ev = TelephoneEvent {
            event: 5,
            end: true,
            volume: 10,
            duration: 800,
        };
        assert_eq!(ev.encode(), [5, 0x8a, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::decode(&ev.encode()), Some(ev));
        assert_eq!(TelephoneEvent::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn digits_map_both_ways() {
        for (i, c) in "0123456789*#ABCD".chars().enumerate() {
            assert_eq!(digit_to_event(c), Some(i as u8));
            assert_eq!(event_to_digit(i as u8), Some(c));
        }
        assert_eq!(digit_to_event('x'), None);
        assert_eq!(event_to_digit(16), None);
    }

    #[test]
    fn one_digit_is_received_once() {
        let mut tx = DtmfSender::default();
        assert!(tx.start('7'));
        assert!(!tx.start('x'), "not a DTMF digit");
        let mut rx = DtmfReceiver::default();
        let mut got = Vec::new();
        let mut packets = 0;
        while let Some(p) = tx.next_packet() {
            packets += 1;
            assert_eq!(p.marker, packets == 1);
            if let Some(d) = rx.receive(1000, &p.event.encode()) {
                got.push(d);
            }
        }
        assert_eq!(packets, 4 + 3);
        assert_eq!(got, vec!['7']);
        assert!(!tx.busy());
        assert!(tx.start('#'));
        assert!(tx.start('9'));
        let mut ts = 2000;
        let mut got = Vec::new();
        while let Some(p) = tx.next_packet() {
            if p.marker {
                ts += 1000;
            }
            got.extend(rx.receive(ts, &p.event.encode()));
        }
        assert_eq!(got, vec!['#', '9']);
    }

    #[test]
    fn durations_count_in_the_codec_clock() {
        // 8 kHz: 160 per packet; 48 kHz (Opus): 960, the tone 100 ms either way.
        for (rate, step) in [(8000, 160u16), (48_000, 960)] {
            let mut tx = DtmfSender::for_clock_rate(rate);
            tx.start('1');
            let d: Vec<(u16, bool)> = std::iter::from_fn(|| tx.next_packet())
                .map(|p| (p.event.duration, p.event.end))
                .collect();
            assert_eq!(d[0], (step, false));
            assert_eq!(d[3], (4 * step, false));
            assert_eq!(d[4..], [(5 * step, true); 3]);
        }
        assert_eq!(
            DtmfSender::for_clock_rate(8000).step,
            DtmfSender::default().step
        );
        assert_eq!(DtmfSender::for_clock_rate(u32::MAX).step, u16::MAX / 5);
    }

    proptest! {
        #[test]
        fn payload_round_trip(event in any::<u8>(), end in any::<bool>(), volume in 0u8..64, duration in any::<u16>()) {
            let ev = TelephoneEvent { event, end, volume, duration };
            prop_assert_eq!(TelephoneEvent::decode(&ev.encode()), Some(ev));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
            let _ = TelephoneEvent::decode(&bytes);
        }
    }
}
