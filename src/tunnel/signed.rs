//! The `SignedData` of spec 5.4 (RFC 5652, version 3, one signer with a
//! subject key identifier, Cha-Cheon over the DER of the signed
//! attributes), on the same `der` structures as [`super::cms`].

use super::cms::{
    alg, attr_set, attribute, err, fixed, no_params, octets, outside, AlgorithmIdentifier,
    Attribute, CmsError, One,
};
use super::oids::*;
use der::asn1::{Any, OctetString, SetOfVec, UtcTime};
use der::{Decode, Encode, Sequence, Tag, Tagged};
use std::time::Duration;

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
    let sd = SignedData::from_der(bytes).map_err(outside("SignedData"))?;
    let si = &sd.signer_infos.0;
    if sd.version != 3 || si.version != 3 {
        return Err(CmsError::Version {
            structure: "SignedData and SignerInfo",
            expected: 3,
        });
    }
    no_params(&sd.digest_algorithms.0, ID_SHA256, "id-sha256")?;
    no_params(&si.digest_algorithm, ID_SHA256, "id-sha256")?;
    no_params(&si.signature_algorithm, IBESIP_CC, "ibesip-cc-bls12381")?;
    if sd.encap_content_info.econtent_type != ID_DATA {
        return Err(CmsError::ContentType("encapContentInfo"));
    }
    let entity = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or(CmsError::Missing("eContent"))?
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
                _ => return Err(CmsError::SigningTimeType),
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
            return Err(CmsError::UnexpectedAttribute("signed"));
        };
        if !fresh {
            return Err(CmsError::DuplicateAttribute("signed"));
        }
    }
    if ct.as_ref().map(|o| *o == ID_DATA) != Some(true) {
        return Err(CmsError::ContentType("signed contentType attribute"));
    }
    Ok(SignedContent {
        entity,
        sid: fixed("sid", si.sid_ski.as_bytes())?,
        attrs: SignedAttrs {
            message_digest: md.ok_or(CmsError::Missing("messageDigest"))?,
            signing_time: time.ok_or(CmsError::Missing("signingTime"))?,
            signer_identity: id.ok_or(CmsError::Missing("ibesip-signer-identity"))?,
            session_binding: binding,
        },
        signed_der,
        signature: si.signature.as_bytes().to_vec(),
    })
}
