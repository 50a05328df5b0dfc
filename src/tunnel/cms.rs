//! The CMS profile of spec 5.3 and 5.4: `ContentInfo` of `AuthEnvelopedData`
//! (RFC 5083) with exactly one recipient (ktri with a subject key
//! identifier, or kekri), AES-256-GCM (RFC 5084) and our authenticated
//! attributes; and `SignedData` (RFC 5652) carrying a Cha-Cheon signature.
//!
//! Written on `der` derives rather than the `cms` crate: `cms`/`x509-cert`
//! identify algorithms and attributes with `const-oid`, which cannot hold
//! our UUID-arc OIDs (see [`super::oids`]). The structures below describe
//! exactly this profile, so a body with any optional field the profile
//! excludes (originatorInfo, unauthAttrs, certificates, KEK dates, a second
//! recipient or signer, a multi-valued attribute) fails to decode.

use super::oids::*;
use der::asn1::{Any, OctetString, SetOfVec, UtcTime};
use der::{
    Decode, DecodeValue, Encode, EncodeValue, Enumerated, FixedTag, Header, Length, Reader,
    Sequence, Tag, Tagged, ValueOrd, Writer,
};
use std::cmp::Ordering;
use std::time::Duration;

/// Why a body is not a valid object of this profile.
pub type CmsError = String;

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

/// `AlgorithmIdentifier`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence, ValueOrd)]
struct AlgorithmIdentifier {
    algorithm: Oid,
    parameters: Option<Any>,
}

fn alg(oid: OidRef) -> AlgorithmIdentifier {
    AlgorithmIdentifier {
        algorithm: oid.to_oid(),
        parameters: None,
    }
}

/// `Attribute` with exactly one value.
#[derive(Clone, Debug, Eq, PartialEq, Sequence, ValueOrd)]
struct Attribute {
    attr_type: Oid,
    attr_values: One<Any>,
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

fn err(e: der::Error) -> CmsError {
    e.to_string()
}

fn octets(bytes: &[u8]) -> Result<OctetString, CmsError> {
    OctetString::new(bytes.to_vec()).map_err(err)
}

fn attribute<T: EncodeValue + Tagged>(oid: OidRef, value: &T) -> Result<Attribute, CmsError> {
    Ok(Attribute {
        attr_type: oid.to_oid(),
        attr_values: One(Any::encode_from(value).map_err(err)?),
    })
}

fn attr_set(attrs: Vec<Attribute>) -> Result<(SetOfVec<Attribute>, Vec<u8>), CmsError> {
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

fn fixed<const N: usize>(what: &str, bytes: &[u8]) -> Result<[u8; N], CmsError> {
    bytes
        .try_into()
        .map_err(|_| format!("{what} must be {N} bytes, got {}", bytes.len()))
}

fn no_params(a: &AlgorithmIdentifier, oid: OidRef, what: &str) -> Result<(), CmsError> {
    if a.algorithm != oid || a.parameters.is_some() {
        return Err(format!("algorithm must be {what} with parameters absent"));
    }
    Ok(())
}

/// Decodes and checks a tunnel body against the profile; uses no key.
pub fn decode_envelope(body: &[u8]) -> Result<Envelope, CmsError> {
    let ci = ContentInfo::from_der(body).map_err(|e| format!("not a CMS ContentInfo: {e}"))?;
    if ci.content_type != ID_CT_AUTH_ENVELOPED_DATA {
        return Err("content type is not id-ct-authEnvelopedData".into());
    }
    let aed: AuthEnvelopedData = ci
        .content
        .decode_as()
        .map_err(|e| format!("AuthEnvelopedData outside the profile: {e}"))?;
    if aed.version != 0 {
        return Err("AuthEnvelopedData version must be 0".into());
    }
    let key = match aed.recipient_infos.0 {
        RecipientInfo::Ktri(k) => {
            if k.version != 2 {
                return Err("ktri version must be 2".into());
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
                return Err("kekri version must be 4".into());
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
        return Err("content encryption must be id-aes256-GCM".into());
    }
    let params: GcmParameters = eci
        .content_encryption_algorithm
        .parameters
        .as_ref()
        .ok_or("GCMParameters missing")?
        .decode_as()
        .map_err(|e| format!("malformed GCMParameters: {e}"))?;
    if params.icv_len != 16 {
        return Err("aes-ICVlen must be 16".into());
    }
    let nonce = fixed("aes-nonce", params.nonce.as_bytes())?;
    let ciphertext = eci
        .encrypted_content
        .as_ref()
        .ok_or("encryptedContent missing")?
        .as_bytes()
        .to_vec();
    let mac = fixed("mac", aed.mac.as_bytes())?;
    let set = aed.auth_attrs.ok_or("authAttrs missing")?;
    let aad = set.to_der().map_err(err)?;
    let attrs = parse_auth_attrs(&set)?;
    if eci.content_type != attrs.content.oid() {
        return Err("contentType attribute differs from the encrypted content type".into());
    }
    match (&key, &attrs.session_id) {
        (KeyTransport::Ibe { .. }, Some(_)) | (KeyTransport::Kek { .. }, None) => {}
        _ => return Err("ibesip-session-id must be present exactly on the first message".into()),
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
                return Err("content type must be id-data or id-signedData".into());
            };
            content.replace(kind).is_none()
        } else if a.attr_type == IBESIP_SESSION_ID {
            let os: OctetString = v.decode_as().map_err(err)?;
            sid.replace(fixed::<16>("ibesip-session-id", os.as_bytes())?)
                .is_none()
        } else if a.attr_type == IBESIP_SEQ {
            let s: SeqValue = v
                .decode_as()
                .map_err(|e| format!("malformed ibesip-seq: {e}"))?;
            seq.replace(s).is_none()
        } else if a.attr_type == IBESIP_OUTER_BINDING {
            let os: OctetString = v.decode_as().map_err(err)?;
            ob.replace(fixed::<32>("ibesip-outer-binding", os.as_bytes())?)
                .is_none()
        } else {
            return Err("unexpected authenticated attribute".into());
        };
        if !fresh {
            return Err("authenticated attribute appears twice".into());
        }
    }
    Ok(TunnelAttrs {
        content: content.ok_or("contentType attribute missing")?,
        session_id: sid,
        seq: seq.ok_or("ibesip-seq attribute missing")?,
        outer_binding: ob.ok_or("ibesip-outer-binding attribute missing")?,
    })
}

/// `EncapsulatedContentInfo`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EncapsulatedContentInfo {
    econtent_type: Oid,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    econtent: Option<OctetString>,
}

/// `SignerInfo` with `sid` = `[0] subjectKeyIdentifier` and signed
/// attributes, no unsigned ones.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SignerInfo {
    version: u8,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    sid_ski: OctetString,
    digest_algorithm: AlgorithmIdentifier,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", constructed = "true")]
    signed_attrs: SetOfVec<Attribute>,
    signature_algorithm: AlgorithmIdentifier,
    signature: OctetString,
}

/// `SignedData` without certificates and CRLs.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SignedData {
    version: u8,
    digest_algorithms: One<AlgorithmIdentifier>,
    encap_content_info: EncapsulatedContentInfo,
    signer_infos: One<SignerInfo>,
}

/// The signed attributes of spec 5.4.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct SignedAttrs {
    /// SHA-256 of the `message/sip` entity.
    pub message_digest: [u8; 32],
    /// `signingTime`, Unix seconds.
    pub signing_time: u64,
    /// `ibesip-signer-identity`: `ID_signer`.
    pub signer_identity: String,
    /// `ibesip-session-binding` (responses).
    pub session_binding: Option<[u8; 32]>,
}

/// The DER of the signed attribute SET: the message that is signed.
pub fn signed_attrs_der(a: &SignedAttrs) -> Result<Vec<u8>, CmsError> {
    // RFC 5652 11.3: UTCTime for 1950-2049 (GeneralizedTime after).
    let time = match UtcTime::from_unix_duration(Duration::from_secs(a.signing_time)) {
        Ok(t) => Any::encode_from(&t).map_err(err)?,
        Err(_) => Any::encode_from(
            &der::asn1::GeneralizedTime::from_unix_duration(Duration::from_secs(a.signing_time))
                .map_err(err)?,
        )
        .map_err(err)?,
    };
    let mut attrs = vec![
        attribute(ID_CONTENT_TYPE, &ID_DATA.to_oid())?,
        attribute(ID_MESSAGE_DIGEST, &octets(&a.message_digest)?)?,
        Attribute {
            attr_type: ID_SIGNING_TIME.to_oid(),
            attr_values: One(time),
        },
        attribute(
            IBESIP_SIGNER_IDENTITY,
            &der::asn1::Utf8StringRef::new(&a.signer_identity).map_err(err)?,
        )?,
    ];
    if let Some(b) = &a.session_binding {
        attrs.push(attribute(IBESIP_SESSION_BINDING, &octets(b)?)?);
    }
    Ok(attr_set(attrs)?.1)
}

/// Encodes `SignedData` (version 3) around `entity`; `signed_der` is the
/// output of [`signed_attrs_der`] that `signature` signs.
pub fn encode_signed(
    entity: &[u8],
    signed_der: &[u8],
    sid: &[u8; 20],
    signature: &[u8],
) -> Result<Vec<u8>, CmsError> {
    SignedData {
        version: 3,
        digest_algorithms: One(alg(ID_SHA256)),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA.to_oid(),
            econtent: Some(octets(entity)?),
        },
        signer_infos: One(SignerInfo {
            version: 3,
            sid_ski: octets(sid)?,
            digest_algorithm: alg(ID_SHA256),
            signed_attrs: SetOfVec::<Attribute>::from_der(signed_der).map_err(err)?,
            signature_algorithm: alg(IBESIP_CC),
            signature: octets(signature)?,
        }),
    }
    .to_der()
    .map_err(err)
}

/// A decoded `SignedData`, signature not yet checked.
#[derive(Clone, Debug)]
pub struct SignedContent {
    /// The `message/sip` entity.
    pub entity: Vec<u8>,
    /// `sid`: `SHA-256(ID_signer)[..20]`.
    pub sid: [u8; 20],
    /// The signed attributes.
    pub attrs: SignedAttrs,
    /// DER of the signed attribute SET (the signed message).
    pub signed_der: Vec<u8>,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

/// Decodes and checks a `SignedData` against the profile.
pub fn decode_signed(bytes: &[u8]) -> Result<SignedContent, CmsError> {
    let sd =
        SignedData::from_der(bytes).map_err(|e| format!("SignedData outside the profile: {e}"))?;
    let si = &sd.signer_infos.0;
    if sd.version != 3 || si.version != 3 {
        return Err("SignedData and SignerInfo versions must be 3".into());
    }
    no_params(&sd.digest_algorithms.0, ID_SHA256, "id-sha256")?;
    no_params(&si.digest_algorithm, ID_SHA256, "id-sha256")?;
    no_params(&si.signature_algorithm, IBESIP_CC, "ibesip-cc-bls12381")?;
    if sd.encap_content_info.econtent_type != ID_DATA {
        return Err("encapsulated content must be id-data".into());
    }
    let entity = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or("eContent missing")?
        .as_bytes()
        .to_vec();
    let signed_der = si.signed_attrs.to_der().map_err(err)?;
    let (mut ct, mut md, mut time, mut id, mut binding) = (None, None, None, None, None);
    for a in si.signed_attrs.iter() {
        let v = &a.attr_values.0;
        let fresh = if a.attr_type == ID_CONTENT_TYPE {
            ct.replace(v.decode_as::<Oid>().map_err(err)?).is_none()
        } else if a.attr_type == ID_MESSAGE_DIGEST {
            let os: OctetString = v.decode_as().map_err(err)?;
            md.replace(fixed::<32>("messageDigest", os.as_bytes())?)
                .is_none()
        } else if a.attr_type == ID_SIGNING_TIME {
            let secs = match v.tag() {
                Tag::UtcTime => v.decode_as::<UtcTime>().map_err(err)?.to_unix_duration(),
                Tag::GeneralizedTime => v
                    .decode_as::<der::asn1::GeneralizedTime>()
                    .map_err(err)?
                    .to_unix_duration(),
                _ => return Err("signingTime must be UTCTime or GeneralizedTime".into()),
            };
            time.replace(secs.as_secs()).is_none()
        } else if a.attr_type == IBESIP_SIGNER_IDENTITY {
            let s: der::asn1::Utf8StringRef<'_> = v.decode_as().map_err(err)?;
            id.replace(s.as_str().to_string()).is_none()
        } else if a.attr_type == IBESIP_SESSION_BINDING {
            let os: OctetString = v.decode_as().map_err(err)?;
            binding
                .replace(fixed::<32>("ibesip-session-binding", os.as_bytes())?)
                .is_none()
        } else {
            return Err("unexpected signed attribute".into());
        };
        if !fresh {
            return Err("signed attribute appears twice".into());
        }
    }
    if ct.as_ref().map(|o| *o == ID_DATA) != Some(true) {
        return Err("signed contentType must be id-data".into());
    }
    Ok(SignedContent {
        entity,
        sid: fixed("sid", si.sid_ski.as_bytes())?,
        attrs: SignedAttrs {
            message_digest: md.ok_or("messageDigest missing")?,
            signing_time: time.ok_or("signingTime missing")?,
            signer_identity: id.ok_or("ibesip-signer-identity missing")?,
            session_binding: binding,
        },
        signed_der,
        signature: si.signature.as_bytes().to_vec(),
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
        assert!(decode_envelope(&body).unwrap_err().contains("session-id"));
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
