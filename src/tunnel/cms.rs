//! The CMS profile of spec 5.3 and 5.4: `ContentInfo` of `AuthEnvelopedData`
//! (RFC 5083) with exactly one recipient (ktri with a subject key
//! identifier, or kekri), AES-256-GCM (RFC 5084) and our authenticated
//! attributes; and `SignedData` (RFC 5652) carrying a Cha-Cheon signature.
//!
//! Written on `der` derives rather than the `cms` crate: `cms`/`x509-cert`
//! identify algorithms and attributes with `const-oid`, which cannot hold
//! our UUID-arc OIDs (see `super::oids`). The structures below describe
//! exactly this profile, so a body with any optional field the profile
//! excludes (originatorInfo, unauthAttrs, certificates, KEK dates, a second
//! recipient or signer, a multi-valued attribute) fails to decode.

use super::oids::*;
use der::asn1::{Any, OctetString, SetOfVec};
use der::{
    Decode, DecodeValue, Encode, EncodeValue, Enumerated, FixedTag, Header, Length, Reader,
    Sequence, Tag, Tagged, ValueOrd, Writer,
};
use std::cmp::Ordering;

/// Why a body is not a valid object of this profile: what the sender got
/// wrong (or, when encoding, which value DER cannot hold).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CmsError {
    /// A DER value failed to decode or encode (`der::Error` is kept as
    /// it is; without the `std` feature it is not a `std::error::Error`,
    /// so it cannot be a `#[source]`).
    #[error("DER: {0}")]
    Der(der::Error),
    /// A structure does not decode as this profile describes it (an
    /// excluded optional field, a wrong tag, trailing bytes).
    #[error("{structure} outside the profile: {reason}")]
    OutsideProfile {
        /// The structure.
        structure: &'static str,
        /// The decoder's reason.
        reason: der::Error,
    },
    /// A content type other than the profile allows there.
    #[error("content type not allowed for {0}")]
    ContentType(&'static str),
    /// A structure with another version than the profile fixes.
    #[error("{structure} version must be {expected}")]
    Version {
        /// The structure.
        structure: &'static str,
        /// The profile's version.
        expected: u8,
    },
    /// An algorithm other than the profile's, or parameters where none
    /// belong.
    #[error("algorithm must be {0} (parameters as the profile says)")]
    Algorithm(&'static str),
    /// A field of fixed length has another length.
    #[error("{field} must be {expected} bytes, got {got}")]
    Length {
        /// The field.
        field: &'static str,
        /// Its fixed length.
        expected: usize,
        /// What came.
        got: usize,
    },
    /// A required field or attribute is missing.
    #[error("{0} missing")]
    Missing(&'static str),
    /// `aes-ICVlen` is not 16.
    #[error("aes-ICVlen must be 16")]
    IcvLength,
    /// The `contentType` attribute differs from the encrypted content type.
    #[error("contentType attribute differs from the encrypted content type")]
    ContentTypeMismatch,
    /// `ibesip-session-id` on a later message or missing on a first one.
    #[error("ibesip-session-id must be present exactly on the first message")]
    SessionIdPlacement,
    /// An attribute this profile does not define.
    #[error("unexpected {0} attribute")]
    UnexpectedAttribute(&'static str),
    /// The same attribute type twice.
    #[error("{0} attribute appears twice")]
    DuplicateAttribute(&'static str),
    /// `signingTime` is neither UTCTime nor GeneralizedTime.
    #[error("signingTime must be UTCTime or GeneralizedTime")]
    SigningTimeType,
}

impl From<der::Error> for CmsError {
    fn from(e: der::Error) -> Self {
        CmsError::Der(e)
    }
}

/// A SET OF with exactly one element (decoding rejects any other count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct One<T>(pub T);

impl<T> FixedTag for One<T> {
    const TAG: Tag = Tag::Set;
}

impl<'a, T: Decode<'a>> DecodeValue<'a> for One<T> {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        reader.read_nested(header.length, |r| T::decode(r).map(One))
    }
}

impl<T: Encode> EncodeValue for One<T> {
    fn value_len(&self) -> der::Result<Length> {
        self.0.encoded_len()
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        self.0.encode(writer)
    }
}

impl<T: Encode> ValueOrd for One<T> {
    fn value_cmp(&self, other: &Self) -> der::Result<Ordering> {
        Ok(self.0.to_der()?.cmp(&other.0.to_der()?))
    }
}

/// `ContentInfo`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct ContentInfo {
    content_type: Oid,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: Any,
}

pub use super::signed::{
    decode_signed, encode_signed, signed_attrs_der, SignedAttrs, SignedContent,
};

/// `AlgorithmIdentifier`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence, ValueOrd)]
pub(super) struct AlgorithmIdentifier {
    pub(super) algorithm: Oid,
    pub(super) parameters: Option<Any>,
}

pub(super) fn alg(oid: OidRef) -> AlgorithmIdentifier {
    AlgorithmIdentifier {
        algorithm: oid.to_oid(),
        parameters: None,
    }
}

/// `Attribute` with exactly one value.
#[derive(Clone, Debug, Eq, PartialEq, Sequence, ValueOrd)]
pub(super) struct Attribute {
    pub(super) attr_type: Oid,
    pub(super) attr_values: One<Any>,
}

/// `KeyTransRecipientInfo` with `rid` = `[0] subjectKeyIdentifier`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct KeyTransRecipientInfo {
    version: u8,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    rid_ski: OctetString,
    key_encryption_algorithm: AlgorithmIdentifier,
    encrypted_key: OctetString,
}

/// `KEKIdentifier` with `keyIdentifier` only.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct KekIdentifier {
    key_identifier: OctetString,
}

/// `KEKRecipientInfo`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct KekRecipientInfo {
    version: u8,
    kekid: KekIdentifier,
    key_encryption_algorithm: AlgorithmIdentifier,
    encrypted_key: OctetString,
}

/// `RecipientInfo` (the two choices of this profile).
#[derive(Clone, Debug, Eq, PartialEq, der::Choice)]
enum RecipientInfo {
    Ktri(KeyTransRecipientInfo),
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT", constructed = "true")]
    Kekri(KekRecipientInfo),
}

/// `EncryptedContentInfo`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EncryptedContentInfo {
    content_type: Oid,
    content_encryption_algorithm: AlgorithmIdentifier,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    encrypted_content: Option<OctetString>,
}

/// `AuthEnvelopedData` without the fields this profile excludes.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct AuthEnvelopedData {
    version: u8,
    recipient_infos: One<RecipientInfo>,
    auth_encrypted_content_info: EncryptedContentInfo,
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    auth_attrs: Option<SetOfVec<Attribute>>,
    mac: OctetString,
}

fn default_icv_len() -> u8 {
    12
}

/// `GCMParameters` (RFC 5084 section 3.2).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct GcmParameters {
    nonce: OctetString,
    #[asn1(default = "default_icv_len")]
    icv_len: u8,
}

/// `direction` of `ibesip-seq`.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Hash, Enumerated)]
#[repr(u8)]
pub enum Direction {
    /// Sent by the caller (the side that sent the session's first request).
    CallerToCallee = 0,
    /// Sent by the callee.
    CalleeToCaller = 1,
}

impl Direction {
    /// The other direction.
    pub fn reverse(self) -> Self {
        match self {
            Direction::CallerToCallee => Direction::CalleeToCaller,
            Direction::CalleeToCaller => Direction::CallerToCallee,
        }
    }
}

/// The value of `ibesip-seq`.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Sequence)]
pub struct SeqValue {
    /// Who sent the message.
    pub direction: Direction,
    /// Per-direction counter.
    pub seq: u64,
}

/// How the content-encryption key travels.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum KeyTransport {
    /// First message: BF ciphertext of `CEK_0` to the identity with this
    /// subject key identifier.
    Ibe {
        /// `SHA-256(ID)[..20]`.
        rid: [u8; 20],
        /// The 112-byte BF ciphertext.
        encrypted_key: Vec<u8>,
    },
    /// Later message: AES-KW of the CEK under the session KEK.
    Kek {
        /// The session id.
        kek_id: [u8; 16],
        /// 40 bytes of RFC 3394 output.
        wrapped: Vec<u8>,
    },
}

/// Whether the encrypted content is the entity or a `SignedData`.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum ContentKind {
    /// `id-data`: the `message/sip` entity.
    Data,
    /// `id-signedData`: a `SignedData` around the entity.
    SignedData,
}

impl ContentKind {
    fn oid(self) -> OidRef {
        match self {
            ContentKind::Data => ID_DATA,
            ContentKind::SignedData => ID_SIGNED_DATA,
        }
    }
}

/// The authenticated attributes of spec 5.3.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct TunnelAttrs {
    /// `contentType`.
    pub content: ContentKind,
    /// `ibesip-session-id` (first message only).
    pub session_id: Option<[u8; 16]>,
    /// `ibesip-seq`.
    pub seq: SeqValue,
    /// `ibesip-outer-binding`.
    pub outer_binding: [u8; 32],
}

/// A decoded tunnel body, before any key is used.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// Key transport.
    pub key: KeyTransport,
    /// GCM nonce.
    pub nonce: [u8; 12],
    /// GCM ciphertext without the tag.
    pub ciphertext: Vec<u8>,
    /// GCM tag (`mac`).
    pub mac: [u8; 16],
    /// Parsed attributes.
    pub attrs: TunnelAttrs,
    /// DER of the attribute SET: the GCM additional data.
    pub aad: Vec<u8>,
}

pub(super) fn err(e: der::Error) -> CmsError {
    CmsError::Der(e)
}

pub(super) fn outside(structure: &'static str) -> impl Fn(der::Error) -> CmsError {
    move |reason| CmsError::OutsideProfile { structure, reason }
}

pub(super) fn octets(bytes: &[u8]) -> Result<OctetString, CmsError> {
    OctetString::new(bytes.to_vec()).map_err(err)
}

pub(super) fn attribute<T: EncodeValue + Tagged>(
    oid: OidRef,
    value: &T,
) -> Result<Attribute, CmsError> {
    Ok(Attribute {
        attr_type: oid.to_oid(),
        attr_values: One(Any::encode_from(value).map_err(err)?),
    })
}

pub(super) fn attr_set(attrs: Vec<Attribute>) -> Result<(SetOfVec<Attribute>, Vec<u8>), CmsError> {
    let set = SetOfVec::try_from(attrs).map_err(err)?;
    let der = set.to_der().map_err(err)?;
    Ok((set, der))
}

/// Builds the authenticated attribute SET; returns its DER (the AAD).
pub fn auth_attrs_der(a: &TunnelAttrs) -> Result<Vec<u8>, CmsError> {
    let mut attrs = vec![attribute(ID_CONTENT_TYPE, &a.content.oid().to_oid())?];
    if let Some(sid) = &a.session_id {
        attrs.push(attribute(IBESIP_SESSION_ID, &octets(sid)?)?);
    }
    attrs.push(attribute(IBESIP_SEQ, &a.seq)?);
    attrs.push(attribute(IBESIP_OUTER_BINDING, &octets(&a.outer_binding)?)?);
    Ok(attr_set(attrs)?.1)
}

/// Encodes a complete tunnel body (`ContentInfo` of `AuthEnvelopedData`);
/// `aad` is the output of [`auth_attrs_der`] for the same attributes.
pub fn encode_envelope(
    key: &KeyTransport,
    aad: &[u8],
    content: ContentKind,
    nonce: &[u8; 12],
    ciphertext: &[u8],
    mac: &[u8; 16],
) -> Result<Vec<u8>, CmsError> {
    let ri = match key {
        KeyTransport::Ibe { rid, encrypted_key } => RecipientInfo::Ktri(KeyTransRecipientInfo {
            version: 2,
            rid_ski: octets(rid)?,
            key_encryption_algorithm: alg(IBESIP_BF),
            encrypted_key: octets(encrypted_key)?,
        }),
        KeyTransport::Kek { kek_id, wrapped } => RecipientInfo::Kekri(KekRecipientInfo {
            version: 4,
            kekid: KekIdentifier {
                key_identifier: octets(kek_id)?,
            },
            key_encryption_algorithm: alg(ID_AES256_WRAP),
            encrypted_key: octets(wrapped)?,
        }),
    };
    let params = GcmParameters {
        nonce: octets(nonce)?,
        icv_len: 16,
    };
    let auth_attrs = SetOfVec::<Attribute>::from_der(aad).map_err(err)?;
    let aed = AuthEnvelopedData {
        version: 0,
        recipient_infos: One(ri),
        auth_encrypted_content_info: EncryptedContentInfo {
            content_type: content.oid().to_oid(),
            content_encryption_algorithm: AlgorithmIdentifier {
                algorithm: ID_AES256_GCM.to_oid(),
                parameters: Some(Any::encode_from(&params).map_err(err)?),
            },
            encrypted_content: Some(octets(ciphertext)?),
        },
        auth_attrs: Some(auth_attrs),
        mac: octets(mac)?,
    };
    ContentInfo {
        content_type: ID_CT_AUTH_ENVELOPED_DATA.to_oid(),
        content: Any::encode_from(&aed).map_err(err)?,
    }
    .to_der()
    .map_err(err)
}

pub(super) fn fixed<const N: usize>(
    field: &'static str,
    bytes: &[u8],
) -> Result<[u8; N], CmsError> {
    bytes.try_into().map_err(|_| CmsError::Length {
        field,
        expected: N,
        got: bytes.len(),
    })
}

pub(super) fn no_params(
    a: &AlgorithmIdentifier,
    oid: OidRef,
    what: &'static str,
) -> Result<(), CmsError> {
    if a.algorithm != oid || a.parameters.is_some() {
        return Err(CmsError::Algorithm(what));
    }
    Ok(())
}

/// Decodes and checks a tunnel body against the profile; uses no key.
pub fn decode_envelope(body: &[u8]) -> Result<Envelope, CmsError> {
    let ci = ContentInfo::from_der(body).map_err(outside("ContentInfo"))?;
    if ci.content_type != ID_CT_AUTH_ENVELOPED_DATA {
        return Err(CmsError::ContentType("ContentInfo"));
    }
    let aed: AuthEnvelopedData = ci
        .content
        .decode_as()
        .map_err(outside("AuthEnvelopedData"))?;
    if aed.version != 0 {
        return Err(CmsError::Version {
            structure: "AuthEnvelopedData",
            expected: 0,
        });
    }
    let key = match aed.recipient_infos.0 {
        RecipientInfo::Ktri(k) => {
            if k.version != 2 {
                return Err(CmsError::Version {
                    structure: "KeyTransRecipientInfo",
                    expected: 2,
                });
            }
            no_params(&k.key_encryption_algorithm, IBESIP_BF, "ibesip-bf-bls12381")?;
            KeyTransport::Ibe {
                rid: fixed("subjectKeyIdentifier", k.rid_ski.as_bytes())?,
                encrypted_key: fixed::<112>("BF encryptedKey", k.encrypted_key.as_bytes())?
                    .to_vec(),
            }
        }
        RecipientInfo::Kekri(k) => {
            if k.version != 4 {
                return Err(CmsError::Version {
                    structure: "KEKRecipientInfo",
                    expected: 4,
                });
            }
            no_params(
                &k.key_encryption_algorithm,
                ID_AES256_WRAP,
                "id-aes256-wrap",
            )?;
            KeyTransport::Kek {
                kek_id: fixed("keyIdentifier", k.kekid.key_identifier.as_bytes())?,
                wrapped: fixed::<40>("AES-KW encryptedKey", k.encrypted_key.as_bytes())?.to_vec(),
            }
        }
    };
    let eci = &aed.auth_encrypted_content_info;
    if eci.content_encryption_algorithm.algorithm != ID_AES256_GCM {
        return Err(CmsError::Algorithm("id-aes256-GCM"));
    }
    let params: GcmParameters = eci
        .content_encryption_algorithm
        .parameters
        .as_ref()
        .ok_or(CmsError::Missing("GCMParameters"))?
        .decode_as()
        .map_err(outside("GCMParameters"))?;
    if params.icv_len != 16 {
        return Err(CmsError::IcvLength);
    }
    let nonce = fixed("aes-nonce", params.nonce.as_bytes())?;
    let ciphertext = eci
        .encrypted_content
        .as_ref()
        .ok_or(CmsError::Missing("encryptedContent"))?
        .as_bytes()
        .to_vec();
    let mac = fixed("mac", aed.mac.as_bytes())?;
    let set = aed.auth_attrs.ok_or(CmsError::Missing("authAttrs"))?;
    let aad = set.to_der().map_err(err)?;
    let attrs = parse_auth_attrs(&set)?;
    if eci.content_type != attrs.content.oid() {
        return Err(CmsError::ContentTypeMismatch);
    }
    match (&key, &attrs.session_id) {
        (KeyTransport::Ibe { .. }, Some(_)) | (KeyTransport::Kek { .. }, None) => {}
        _ => return Err(CmsError::SessionIdPlacement),
    }
    Ok(Envelope {
        key,
        nonce,
        ciphertext,
        mac,
        attrs,
        aad,
    })
}

fn parse_auth_attrs(set: &SetOfVec<Attribute>) -> Result<TunnelAttrs, CmsError> {
    let (mut content, mut sid, mut seq, mut ob) = (None, None, None, None);
    // SetOfVec decoding already rejected unsorted or duplicate encodings;
    // the same type twice with different values is caught here.
    for a in set.iter() {
        let v = &a.attr_values.0;
        let fresh = if a.attr_type == ID_CONTENT_TYPE {
            let oid: Oid = v.decode_as().map_err(err)?;
            let kind = if oid == ID_DATA {
                ContentKind::Data
            } else if oid == ID_SIGNED_DATA {
                ContentKind::SignedData
            } else {
                return Err(CmsError::ContentType("authEncryptedContentInfo"));
            };
            content.replace(kind).is_none()
        } else if a.attr_type == IBESIP_SESSION_ID {
            let os: OctetString = v.decode_as().map_err(err)?;
            sid.replace(fixed::<16>("ibesip-session-id", os.as_bytes())?)
                .is_none()
        } else if a.attr_type == IBESIP_SEQ {
            let s: SeqValue = v.decode_as().map_err(outside("ibesip-seq"))?;
            seq.replace(s).is_none()
        } else if a.attr_type == IBESIP_OUTER_BINDING {
            let os: OctetString = v.decode_as().map_err(err)?;
            ob.replace(fixed::<32>("ibesip-outer-binding", os.as_bytes())?)
                .is_none()
        } else {
            return Err(CmsError::UnexpectedAttribute("authenticated"));
        };
        if !fresh {
            return Err(CmsError::DuplicateAttribute("authenticated"));
        }
    }
    Ok(TunnelAttrs {
        content: content.ok_or(CmsError::Missing("contentType attribute"))?,
        session_id: sid,
        seq: seq.ok_or(CmsError::Missing("ibesip-seq attribute"))?,
        outer_binding: ob.ok_or(CmsError::Missing("ibesip-outer-binding attribute"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_attrs(first: bool) -> TunnelAttrs {
        TunnelAttrs {
            content: ContentKind::Data,
            session_id: first.then_some([7u8; 16]),
            seq: SeqValue {
                direction: Direction::CalleeToCaller,
                seq: 300,
            },
            outer_binding: [9u8; 32],
        }
    }

    #[test]
    fn envelope_round_trip_both_key_transports() {
        for (first, key) in [
            (
                true,
                KeyTransport::Ibe {
                    rid: [1u8; 20],
                    encrypted_key: vec![2u8; 112],
                },
            ),
            (
                false,
                KeyTransport::Kek {
                    kek_id: [3u8; 16],
                    wrapped: vec![4u8; 40],
                },
            ),
        ] {
            let attrs = sample_attrs(first);
            let aad = auth_attrs_der(&attrs).unwrap();
            let body = encode_envelope(
                &key,
                &aad,
                ContentKind::Data,
                &[5u8; 12],
                b"ciphertext",
                &[6u8; 16],
            )
            .unwrap();
            let env = decode_envelope(&body).unwrap();
            assert_eq!(env.key, key);
            assert_eq!(env.attrs, attrs);
            assert_eq!(env.aad, aad);
            assert_eq!(env.ciphertext, b"ciphertext");
            assert_eq!(env.nonce, [5u8; 12]);
            assert_eq!(env.mac, [6u8; 16]);
            // Trailing bytes are rejected.
            let mut longer = body.clone();
            longer.push(0);
            assert!(decode_envelope(&longer).is_err());
        }
    }

    #[test]
    fn session_id_must_match_key_transport() {
        let attrs = sample_attrs(false);
        let aad = auth_attrs_der(&attrs).unwrap();
        let key = KeyTransport::Ibe {
            rid: [1u8; 20],
            encrypted_key: vec![2u8; 112],
        };
        let body =
            encode_envelope(&key, &aad, ContentKind::Data, &[5u8; 12], b"x", &[6u8; 16]).unwrap();
        assert_eq!(
            decode_envelope(&body).unwrap_err(),
            CmsError::SessionIdPlacement
        );
    }

    #[test]
    fn signed_round_trip() {
        let a = SignedAttrs {
            message_digest: [1u8; 32],
            signing_time: 1_795_305_600,
            signer_identity: "sip:alice@atlanta.com#2026-11".into(),
            session_binding: Some([2u8; 32]),
        };
        let der = signed_attrs_der(&a).unwrap();
        let sd = encode_signed(b"entity", &der, &[3u8; 20], &[4u8; 192]).unwrap();
        let back = decode_signed(&sd).unwrap();
        assert_eq!(back.attrs, a);
        assert_eq!(back.signed_der, der);
        assert_eq!(back.entity, b"entity");
        assert_eq!(back.sid, [3u8; 20]);
        assert_eq!(back.signature, vec![4u8; 192]);
    }

    #[test]
    fn decoders_never_panic_on_garbage() {
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = decode_envelope(&bytes);
            let _ = decode_signed(&bytes);
        }
    }
}
