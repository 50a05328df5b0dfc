//! Object identifiers of the profile (spec section 7) and the standard ones
//! it uses, as DER content octets.
//!
//! Why raw bytes: our arc `2.25.107739270829777976896317625459894493603`
//! is a UUID OID (ITU-T X.667) whose third arc needs 128 bits, and the
//! RustCrypto `const-oid` type behind `der`/`cms` limits every arc to 32
//! bits, so it cannot even decode our OIDs. [`Oid`] keeps the encoded form;
//! comparing encodings is exact for OIDs.

use der::{DecodeValue, EncodeValue, FixedTag, Header, Length, Reader, Tag, ValueOrd, Writer};
use std::cmp::Ordering;

/// An OBJECT IDENTIFIER kept as its DER content octets (validated: non-empty,
/// minimal base-128 sub-identifiers).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Oid(Vec<u8>);

impl Oid {
    /// The OID of a dotted string; `None` if it is not a valid OID.
    #[cfg(test)]
    pub(crate) fn from_dotted(dotted: &str) -> Option<Oid> {
        let arcs: Vec<u128> = dotted
            .split('.')
            .map(|a| a.parse().ok())
            .collect::<Option<_>>()?;
        let (&first, &second) = (arcs.first()?, arcs.get(1)?);
        if first > 2 || (first < 2 && second > 39) {
            return None;
        }
        let mut out = Vec::new();
        for arc in std::iter::once(first * 40 + second).chain(arcs[2..].iter().copied()) {
            let mut groups = vec![(arc & 0x7f) as u8];
            let mut rest = arc >> 7;
            while rest > 0 {
                groups.push(0x80 | (rest & 0x7f) as u8);
                rest >>= 7;
            }
            out.extend(groups.iter().rev());
        }
        Some(Oid(out))
    }

    const fn from_static(bytes: &'static [u8]) -> OidRef {
        OidRef(bytes)
    }

    fn valid(bytes: &[u8]) -> bool {
        // Non-empty, ends a sub-identifier, no sub-identifier starts with 0x80.
        let mut at_start = true;
        for &b in bytes {
            if at_start && b == 0x80 {
                return false;
            }
            at_start = b & 0x80 == 0;
        }
        !bytes.is_empty() && at_start
    }
}

/// A constant OID (content octets), comparable with [`Oid`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OidRef(&'static [u8]);

impl OidRef {
    /// An owned copy.
    pub(crate) fn to_oid(self) -> Oid {
        Oid(self.0.to_vec())
    }
}

impl PartialEq<OidRef> for Oid {
    fn eq(&self, other: &OidRef) -> bool {
        self.0 == other.0
    }
}

impl FixedTag for Oid {
    const TAG: Tag = Tag::ObjectIdentifier;
}

impl<'a> DecodeValue<'a> for Oid {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let bytes = reader.read_vec(header.length)?;
        if !Oid::valid(&bytes) {
            return Err(Tag::ObjectIdentifier.value_error());
        }
        Ok(Oid(bytes))
    }
}

impl EncodeValue for Oid {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.0.len())
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(&self.0)
    }
}

impl ValueOrd for Oid {
    fn value_cmp(&self, other: &Self) -> der::Result<Ordering> {
        Ok(self.0.cmp(&other.0))
    }
}

/// Content octets of `2.25.107739270829777976896317625459894493603` (the
/// arc; `2.25` is the first octet 0x69, the UUID the next 19).
const ARC_PREFIX: [u8; 20] = [
    0x69, 0x81, 0xa2, 0x8d, 0xea, 0x8a, 0xed, 0xf2, 0x82, 0xac, 0x9d, 0xaa, 0xe0, 0xf7, 0xdd, 0xd5,
    0xad, 0x86, 0xc3, 0x23,
];

/// Content octets of `ARC.group.item` (both below 128: one octet each).
const fn under_arc(group: u8, item: u8) -> [u8; 22] {
    let mut out = [0u8; 22];
    let mut i = 0;
    while i < ARC_PREFIX.len() {
        out[i] = ARC_PREFIX[i];
        i += 1;
    }
    out[20] = group;
    out[21] = item;
    out
}

/// `ibesip-bf-bls12381`: Boneh-Franklin key transport (ARC.1.1).
pub(crate) const IBESIP_BF: OidRef = Oid::from_static(&under_arc(1, 1));
/// `ibesip-cc-bls12381`: Cha-Cheon signature (ARC.1.2).
pub(crate) const IBESIP_CC: OidRef = Oid::from_static(&under_arc(1, 2));
/// `ibesip-session-id` (ARC.2.1).
pub(crate) const IBESIP_SESSION_ID: OidRef = Oid::from_static(&under_arc(2, 1));
/// `ibesip-seq` (ARC.2.2).
pub(crate) const IBESIP_SEQ: OidRef = Oid::from_static(&under_arc(2, 2));
/// `ibesip-outer-binding` (ARC.2.3).
pub(crate) const IBESIP_OUTER_BINDING: OidRef = Oid::from_static(&under_arc(2, 3));
/// `ibesip-signer-identity` (ARC.2.4).
pub(crate) const IBESIP_SIGNER_IDENTITY: OidRef = Oid::from_static(&under_arc(2, 4));
/// `ibesip-session-binding` (ARC.2.5).
pub(crate) const IBESIP_SESSION_BINDING: OidRef = Oid::from_static(&under_arc(2, 5));
/// `id-ct-authEnvelopedData` 1.2.840.113549.1.9.16.1.23 (RFC 5083).
pub(crate) const ID_CT_AUTH_ENVELOPED_DATA: OidRef = Oid::from_static(&[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
]);
/// `id-data` 1.2.840.113549.1.7.1.
pub(crate) const ID_DATA: OidRef =
    Oid::from_static(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01]);
/// `id-signedData` 1.2.840.113549.1.7.2.
pub(crate) const ID_SIGNED_DATA: OidRef =
    Oid::from_static(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02]);
/// `id-contentType` 1.2.840.113549.1.9.3.
pub(crate) const ID_CONTENT_TYPE: OidRef =
    Oid::from_static(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03]);
/// `id-messageDigest` 1.2.840.113549.1.9.4.
pub(crate) const ID_MESSAGE_DIGEST: OidRef =
    Oid::from_static(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04]);
/// `id-signingTime` 1.2.840.113549.1.9.5.
pub(crate) const ID_SIGNING_TIME: OidRef =
    Oid::from_static(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x05]);
/// `id-sha256` 2.16.840.1.101.3.4.2.1.
pub(crate) const ID_SHA256: OidRef =
    Oid::from_static(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]);
/// `id-aes256-wrap` 2.16.840.1.101.3.4.1.45 (RFC 3565).
pub(crate) const ID_AES256_WRAP: OidRef =
    Oid::from_static(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2d]);
/// `id-aes256-GCM` 2.16.840.1.101.3.4.1.46 (RFC 5084).
pub(crate) const ID_AES256_GCM: OidRef =
    Oid::from_static(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2e]);

#[cfg(test)]
mod tests {
    use super::*;

    const ARC: &str = "2.25.107739270829777976896317625459894493603";

    #[test]
    fn constants_match_their_dotted_form() {
        let cases = [
            (IBESIP_BF, format!("{ARC}.1.1")),
            (IBESIP_CC, format!("{ARC}.1.2")),
            (IBESIP_SESSION_ID, format!("{ARC}.2.1")),
            (IBESIP_SEQ, format!("{ARC}.2.2")),
            (IBESIP_OUTER_BINDING, format!("{ARC}.2.3")),
            (IBESIP_SIGNER_IDENTITY, format!("{ARC}.2.4")),
            (IBESIP_SESSION_BINDING, format!("{ARC}.2.5")),
            (
                ID_CT_AUTH_ENVELOPED_DATA,
                "1.2.840.113549.1.9.16.1.23".into(),
            ),
            (ID_DATA, "1.2.840.113549.1.7.1".into()),
            (ID_SIGNED_DATA, "1.2.840.113549.1.7.2".into()),
            (ID_CONTENT_TYPE, "1.2.840.113549.1.9.3".into()),
            (ID_MESSAGE_DIGEST, "1.2.840.113549.1.9.4".into()),
            (ID_SIGNING_TIME, "1.2.840.113549.1.9.5".into()),
            (ID_SHA256, "2.16.840.1.101.3.4.2.1".into()),
            (ID_AES256_WRAP, "2.16.840.1.101.3.4.1.45".into()),
            (ID_AES256_GCM, "2.16.840.1.101.3.4.1.46".into()),
        ];
        for (constant, dotted) in cases {
            assert_eq!(Oid::from_dotted(&dotted).unwrap(), constant, "{dotted}");
        }
        assert!(Oid::from_dotted("3.1").is_none());
        assert!(Oid::valid(&[0x2a]));
        assert!(!Oid::valid(&[0x80, 0x01]));
        assert!(!Oid::valid(&[0x86]));
        assert!(!Oid::valid(&[]));
    }
}
