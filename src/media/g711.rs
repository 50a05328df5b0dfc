//! G.711 µ-law (PCMU) and A-law (PCMA) companding, ITU-T G.711.
//!
//! Hand-written: the algorithm is twenty lines of bit arithmetic (the
//! public-domain Sun `g711.c` formulation), and the crates that offer it
//! either drag in a codec framework or are unmaintained. It is checked
//! against known values of the ITU tables and by exhaustive round trips
//! over all 256 code words.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Encodes one 16-bit linear sample to a µ-law code word.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample);
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    pcm = pcm.min(CLIP) + BIAS;
    // Segment: position of the highest set bit above bit 7.
    let exponent = (31 - (pcm as u32).leading_zeros()).saturating_sub(7).min(7) as i32;
    let mantissa = (pcm >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decodes one µ-law code word to a 16-bit linear sample.
pub fn ulaw_to_linear(code: u8) -> i16 {
    let u = i32::from(!code);
    let t = (((u & 0x0f) << 3) + BIAS) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { BIAS - t } else { t - BIAS }) as i16
}

/// Encodes one 16-bit linear sample to an A-law code word.
pub fn linear_to_alaw(sample: i16) -> u8 {
    // A-law works on 13-bit magnitudes.
    let mut pcm = i32::from(sample) >> 3;
    let mask = if pcm >= 0 {
        0xd5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let seg = match pcm {
        p if p < 0x20 => 0,
        p if p < 0x40 => 1,
        p if p < 0x80 => 2,
        p if p < 0x100 => 3,
        p if p < 0x200 => 4,
        p if p < 0x400 => 5,
        p if p < 0x800 => 6,
        p if p < 0x1000 => 7,
        _ => 8,
    };
    let aval = if seg >= 8 {
        0x7f
    } else if seg < 2 {
        (seg << 4) | ((pcm >> 1) & 0x0f)
    } else {
        (seg << 4) | ((pcm >> seg) & 0x0f)
    };
    (aval ^ mask) as u8
}

/// Decodes one A-law code word to a 16-bit linear sample.
pub fn alaw_to_linear(code: u8) -> i16 {
    let a = i32::from(code ^ 0x55);
    let mut t = (a & 0x0f) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// A G.711 variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711 {
    /// µ-law, RTP payload type 0.
    Ulaw,
    /// A-law, RTP payload type 8.
    Alaw,
}

impl G711 {
    /// Encodes a frame of linear samples, one byte per sample.
    pub fn encode(self, pcm: &[i16], out: &mut Vec<u8>) {
        out.clear();
        match self {
            G711::Ulaw => out.extend(pcm.iter().map(|&s| linear_to_ulaw(s))),
            G711::Alaw => out.extend(pcm.iter().map(|&s| linear_to_alaw(s))),
        }
    }

    /// Decodes a payload, one sample per byte.
    pub fn decode(self, payload: &[u8], out: &mut Vec<i16>) {
        out.clear();
        match self {
            G711::Ulaw => out.extend(payload.iter().map(|&c| ulaw_to_linear(c))),
            G711::Alaw => out.extend(payload.iter().map(|&c| alaw_to_linear(c))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_from_the_itu_tables() {
        // µ-law: silence is 0xFF (positive zero) / 0x7F, full scale 0x80/0x00.
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(-1), 0x7f);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0xf0), 120);
        // A-law: the idle pattern is 0xD5 (positive) / 0x55, even bits inverted.
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(linear_to_alaw(-8), 0x55);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
        assert_eq!(alaw_to_linear(0x2a), -32256);
        assert_eq!(linear_to_alaw(i16::MAX), 0xaa);
    }

    #[test]
    fn every_code_word_round_trips() {
        for c in 0..=255u8 {
            let u = ulaw_to_linear(c);
            // 0x7F and 0xFF are both zero; everything else is exact.
            if c != 0x7f {
                assert_eq!(linear_to_ulaw(u), c, "ulaw {c:#x}");
            }
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "alaw {c:#x}");
        }
    }

    #[test]
    fn quantisation_error_is_bounded() {
        // Logarithmic companding: error stays within a few percent of the
        // sample (plus a small absolute floor near zero).
        for s in (-32000i16..32000).step_by(37) {
            let e = i32::from(s).abs() / 16 + 64;
            let du = i32::from(ulaw_to_linear(linear_to_ulaw(s))) - i32::from(s);
            let da = i32::from(alaw_to_linear(linear_to_alaw(s))) - i32::from(s);
            assert!(du.abs() <= e, "ulaw {s}: {du}");
            assert!(da.abs() <= e, "alaw {s}: {da}");
        }
    }
}
