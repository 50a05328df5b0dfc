//! How a 32-byte fingerprint (the parameter fingerprint of tunnel spec
//! section 4, or the SHA-256 of a PKG certificate) is shown to people.
//!
//! Two forms, one a prefix of the other so that a person can compare
//! either with what the operator's `pkg-admin` prints:
//!
//! - the **full** form of the spec: 16 groups of 4 lower-case hex digits
//!   (`0b30 557a 9fc4 ... 6186`, all 256 bits);
//! - the **short** form a person compares in the phone: the first
//!   [`SHORT_GROUPS`] groups of the full form (`0b30 557a 9fc4 e90e 3358`,
//!   [`SHORT_BITS`] = 80 bits).
//!
//! Why 80 bits and not fewer: an attacker who wants a user to accept its
//! certificate (or its parameters) must find one whose fingerprint has the
//! same short form as the real one: a second-preimage search over SHA-256
//! truncated to the short form, in which every try is one hash of a freshly
//! minted certificate (a new serial number suffices). At 64 bits that is
//! 2^64 hashes, about two days for a farm of a thousand GPUs at 10^11
//! SHA-256 per second each; at 80 bits it is 2^80, 65 536 times more
//! (hundreds of years for the same farm). The birthday bound does not
//! apply: the attacker does not choose the provider's fingerprint. Hex
//! groups rather than a word list: the operator's tools print hex
//! already, the short form is visibly the start of the full one, and no
//! word list has to be shipped and agreed on.

/// Groups of 4 hex digits in the short form.
pub const SHORT_GROUPS: usize = 5;

/// Bits of the fingerprint the short form shows (`SHORT_GROUPS` × 16).
pub const SHORT_BITS: usize = SHORT_GROUPS * 16;

// Below 80 bits a GPU farm finds a second preimage (see the module doc).
const _: () = assert!(SHORT_BITS >= 80, "the short form must keep 80 bits");

/// All 32 bytes as 16 groups of 4 lower-case hex digits separated by
/// single spaces (tunnel spec section 4).
pub fn full(fp: &[u8; 32]) -> String {
    groups(fp, 16)
}

/// The first [`SHORT_GROUPS`] groups of [`full`] (80 bits), separated by
/// single spaces: always a prefix of the full form.
pub fn short(fp: &[u8; 32]) -> String {
    groups(fp, SHORT_GROUPS)
}

fn groups(fp: &[u8; 32], n: usize) -> String {
    fp.chunks(2)
        .take(n)
        .map(hex::encode)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> [u8; 32] {
        std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
    }

    #[test]
    fn full_form_is_sixteen_groups_of_the_whole_digest() {
        let fp = sample();
        let shown = full(&fp);
        let g: Vec<&str> = shown.split(' ').collect();
        assert_eq!(g.len(), 16);
        assert!(g
            .iter()
            .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_hexdigit())));
        assert_eq!(shown.replace(' ', ""), hex::encode(fp));
        assert_eq!(&shown[..9], "0b30 557a");
    }

    #[test]
    fn short_form_is_the_first_80_bits_and_a_prefix_of_the_full_form() {
        let fp = sample();
        let s = short(&fp);
        assert_eq!(s, "0b30 557a 9fc4 e90e 3358");
        assert_eq!(s.replace(' ', "").len() * 4, SHORT_BITS);
        assert!(full(&fp).starts_with(&s));
    }

    #[test]
    fn any_change_in_the_first_ten_bytes_changes_the_short_form() {
        let fp = sample();
        for i in 0..SHORT_BITS / 8 {
            for bit in 0..8 {
                let mut other = fp;
                other[i] ^= 1 << bit;
                assert_ne!(short(&other), short(&fp), "byte {i} bit {bit}");
            }
        }
        // Bytes past the short form are the full form's alone.
        let mut tail = fp;
        tail[31] ^= 1;
        assert_eq!(short(&tail), short(&fp));
        assert_ne!(full(&tail), full(&fp));
    }
}
