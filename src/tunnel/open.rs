//! `Tunnel::open`: outer message in, verified inner message out (spec 5.1-5.4).

use super::cms::{self, ContentKind, Direction, KeyTransport};
use super::keylog::KeyLogEntry;
use super::message::SipView;
use super::outer;
use super::seal::derive_kek;
use super::session::{Role, Session};
use super::{unix_secs, OpenError, Opened, PeerIdentity, Tunnel, ENTITY_PREFIX};
use crate::ibe::{bf, cc::Signature, Aor, Identity, Period};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::SystemTime;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Everything learned while checking, applied only if every check passed.
struct Accepted {
    session_id: [u8; 16],
    new_session: Option<Session>,
    peer_tag: String,
    direction: Direction,
    seq: u64,
    verified: Option<Identity>,
    period: Option<Period>,
}

impl Tunnel {
    /// Opens an outer message. Returns the inner message and what the user
    /// should be shown, or the reason for rejection; a rejection changes
    /// no state. Retransmitted bytes give the earlier result again, marked
    /// `retransmission`.
    pub fn open(&mut self, now: SystemTime, outer_bytes: &[u8]) -> Result<Opened, OpenError> {
        let outer = SipView::parse(outer_bytes).map_err(|e| OpenError::Outer(e.0))?;
        let ctype = outer
            .header("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !ctype.starts_with("application/pkcs7-mime") {
            return Err(OpenError::NotTunneled);
        }
        let body_hash: [u8; 32] = Sha256::digest(outer.body).into();
        if let Some(prev) = self.sessions.recent(&body_hash, now) {
            let mut again = prev.clone();
            again.retransmission = true;
            return Ok(again);
        }
        let env = cms::decode_envelope(outer.body).map_err(OpenError::Cms)?;
        let binding = outer::outer_binding(&outer).map_err(|e| OpenError::Outer(e.0))?;
        if !bool::from(binding.ct_eq(&env.attrs.outer_binding)) {
            return Err(OpenError::OuterBinding);
        }

        // Key transport: CEK, and the session (existing or to be created).
        let (cek, session_ref, first) = match &env.key {
            KeyTransport::Ibe { rid, encrypted_key } => {
                let periods = Self::accepted_periods(now);
                let key = periods
                    .iter()
                    .filter_map(|p| self.own_key_for_period(p))
                    .find(|k| k.identity.key_identifier() == *rid)
                    .ok_or(OpenError::NoKeyForPeriod)?;
                let session_id = env
                    .attrs
                    .session_id
                    .ok_or_else(|| OpenError::Cms("session id".into()))?;
                if self.sessions.seen_id(&session_id, now).is_some() {
                    return Err(OpenError::SessionIdReused);
                }
                let cek = bf::decrypt(&key.decryption, encrypted_key)
                    .map_err(|_| OpenError::KeyTransport)?;
                let period = key.identity.period().clone();
                let binding: [u8; 32] = Sha256::digest(encrypted_key).into();
                (cek, (session_id, Some((binding, period))), true)
            }
            KeyTransport::Kek { kek_id, wrapped } => {
                let s = self.sessions.get(kek_id).ok_or(OpenError::UnknownSession)?;
                let cek = aes_kw::KekAes256::new(&(*s.kek).into())
                    .unwrap_vec(wrapped)
                    .map_err(|_| OpenError::KeyUnwrap)?;
                let cek: [u8; 32] = cek
                    .as_slice()
                    .try_into()
                    .map_err(|_| OpenError::KeyUnwrap)?;
                (Zeroizing::new(cek), (*kek_id, None), false)
            }
        };
        let plaintext = Zeroizing::new(
            Aes256Gcm::new((&*cek).into())
                .decrypt(
                    Nonce::from_slice(&env.nonce),
                    Payload {
                        msg: &[env.ciphertext.as_slice(), &env.mac].concat(),
                        aad: &env.aad,
                    },
                )
                .map_err(|_| OpenError::Authentication)?,
        );
        let signed = match env.attrs.content {
            ContentKind::SignedData => {
                Some(cms::decode_signed(&plaintext).map_err(OpenError::Cms)?)
            }
            ContentKind::Data => None,
        };
        let entity: &[u8] = signed.as_ref().map_or(&plaintext[..], |s| &s.entity[..]);
        let inner_bytes = entity
            .strip_prefix(ENTITY_PREFIX)
            .ok_or_else(|| OpenError::Inner("entity is not Content-Type: message/sip".into()))?;
        let inner = SipView::parse(inner_bytes).map_err(|e| OpenError::Inner(e.0))?;
        outer::check_agreement(&outer, &inner).map_err(OpenError::Mismatch)?;
        let call_id = inner
            .call_id()
            .map_err(|e| OpenError::Inner(e.0))?
            .to_string();
        let from_tag = inner
            .from()
            .ok()
            .and_then(|f| f.tag())
            .unwrap_or_default()
            .to_string();
        let to_tag = inner
            .to()
            .ok()
            .and_then(|t| t.tag())
            .unwrap_or_default()
            .to_string();
        let seq = env.attrs.seq;

        let (session_id, new_info) = session_ref;
        let mut accepted = if first {
            // A first message opens a session: an initial request from the caller.
            if !inner.is_request()
                || !to_tag.is_empty()
                || seq.direction != Direction::CallerToCallee
            {
                return Err(OpenError::Cms(
                    "first message must be an initial request from the caller".into(),
                ));
            }
            let (session_binding, period) =
                new_info.ok_or_else(|| OpenError::Cms("binding".into()))?;
            Accepted {
                session_id,
                new_session: Some(Session {
                    session_id,
                    kek: derive_kek(&cek, &session_id),
                    role: Role::Callee,
                    call_id: call_id.clone(),
                    caller_tag: from_tag.clone(),
                    session_binding,
                    next_seq: 0,
                    windows: HashMap::new(),
                    verified_peer: HashMap::new(),
                    signed_tags: Vec::new(),
                    last_used: now,
                }),
                peer_tag: String::new(),
                direction: seq.direction,
                seq: seq.seq,
                verified: None,
                period: Some(period),
            }
        } else {
            let s = self
                .sessions
                .get(&session_id)
                .ok_or(OpenError::UnknownSession)?;
            if seq.direction == s.role.sending() {
                return Err(OpenError::Reflected);
            }
            if s.call_id != call_id || (s.caller_tag != from_tag && s.caller_tag != to_tag) {
                return Err(OpenError::WrongDialog);
            }
            let peer_tag = s.peer_tag(&from_tag, &to_tag);
            if !s.windows.get(&peer_tag).is_none_or(|w| w.check(seq.seq)) {
                return Err(OpenError::Replay {
                    direction: seq.direction as u8,
                    seq: seq.seq,
                });
            }
            Accepted {
                session_id,
                new_session: None,
                peer_tag,
                direction: seq.direction,
                seq: seq.seq,
                verified: None,
                period: None,
            }
        };

        if let Some(sc) = &signed {
            accepted.verified = self.check_signature(now, sc, &inner, first, &accepted)?;
        }

        // Every check passed: commit.
        let peer = {
            if let Some(new) = accepted.new_session.take() {
                let kek = new.kek.clone();
                self.log_key(|| KeyLogEntry::Kek { session_id, kek });
                self.sessions.remember_id(session_id, body_hash, now);
                self.sessions.insert(new);
            }
            let (direction, seq) = (accepted.direction, accepted.seq);
            self.log_key(|| KeyLogEntry::Cek {
                session_id,
                direction,
                seq,
                cek: cek.clone(),
            });
            let s = self
                .sessions
                .get_mut(&session_id)
                .ok_or(OpenError::UnknownSession)?;
            s.windows
                .entry(accepted.peer_tag.clone())
                .or_default()
                .accept(accepted.seq);
            s.last_used = now;
            if let Some(id) = accepted.verified.take() {
                s.verified_peer.insert(accepted.peer_tag.clone(), id);
            }
            match s.verified_peer.get(&accepted.peer_tag) {
                Some(id) => PeerIdentity::Verified(id.clone()),
                None => PeerIdentity::Unverified,
            }
        };
        let opened = Opened {
            inner: inner_bytes.to_vec(),
            session_id,
            direction: accepted.direction,
            seq: accepted.seq,
            first_message: first,
            peer,
            period: accepted.period,
            retransmission: false,
        };
        self.sessions.remember_body(body_hash, now, opened.clone());
        Ok(opened)
    }

    /// Checks a SignedData (spec 5.4). `Ok(Some(id))`: verified signer;
    /// `Ok(None)`: signer's domain unknown, shown unverified.
    fn check_signature(
        &mut self,
        now: SystemTime,
        sc: &cms::SignedContent,
        inner: &SipView<'_>,
        first: bool,
        accepted: &Accepted,
    ) -> Result<Option<Identity>, OpenError> {
        let signer = Identity::parse(&sc.attrs.signer_identity)
            .map_err(|e| OpenError::Signature(format!("signer identity: {e}")))?;
        if signer.key_identifier() != sc.sid {
            return Err(OpenError::Signature(
                "sid does not match the signer identity".into(),
            ));
        }
        let (expected_uri, expected) = if inner.is_request() {
            (
                inner.from().map_err(|e| OpenError::Inner(e.0))?.uri,
                "inner From",
            )
        } else {
            (
                inner.to().map_err(|e| OpenError::Inner(e.0))?.uri,
                "inner To",
            )
        };
        if Aor::parse(expected_uri).ok().as_ref() != Some(signer.aor()) {
            return Err(OpenError::SignerMismatch {
                signer: signer.aor().to_string(),
                expected: expected.to_string(),
            });
        }
        if !Self::accepted_periods(now).contains(signer.period()) {
            return Err(OpenError::SignerPeriod(signer.period().to_string()));
        }
        let digest: [u8; 32] = Sha256::digest(&sc.entity).into();
        if !bool::from(digest.ct_eq(&sc.attrs.message_digest)) {
            return Err(OpenError::Signature(
                "messageDigest does not match the content".into(),
            ));
        }
        if first {
            let skew = unix_secs(now) as i64 - sc.attrs.signing_time as i64;
            if skew.unsigned_abs() > self.config.max_clock_skew.as_secs() {
                return Err(OpenError::Stale(skew));
            }
        }
        if !inner.is_request() {
            let s = self
                .sessions
                .get(&accepted.session_id)
                .ok_or(OpenError::UnknownSession)?;
            let ok = sc
                .attrs
                .session_binding
                .is_some_and(|b| bool::from(b.ct_eq(&s.session_binding)));
            if !ok {
                return Err(OpenError::SessionBinding);
            }
        }
        let Some(params) = self.params.get(signer.aor().host()).cloned() else {
            return Ok(None);
        };
        let sig = Signature::from_bytes(&sc.signature)
            .map_err(|e| OpenError::Signature(e.to_string()))?;
        self.signers
            .verify(&params, &signer, &sc.signed_der, &sig)
            .map_err(|_| OpenError::Signature("does not verify".into()))?;
        Ok(Some(signer))
    }
}

#[cfg(test)]
mod tests {
    use super::super::cms::{self, ContentKind, KeyTransport, SeqValue, TunnelAttrs};
    use super::super::{message::SipView, outer, Tunnel, TunnelConfig, ENTITY_PREFIX};
    use super::*;
    use crate::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
    use std::time::{Duration, UNIX_EPOCH};

    fn party(aor: &str, msk: &MasterSecret, params: &[&PublicParams]) -> Tunnel {
        let aor = Aor::parse(aor).unwrap();
        let mut t = Tunnel::new(aor.clone(), TunnelConfig::default());
        for p in params {
            t.add_params((*p).clone());
        }
        t.add_keys(&extract(
            msk,
            &Identity::new(aor, Period::month("2026-11").unwrap()),
        ))
        .unwrap();
        t
    }

    fn sip(start: &str, headers: &str, body: &str, length: usize) -> Vec<u8> {
        format!("{start}\r\n{headers}Content-Length: {length}\r\n\r\n{body}").into_bytes()
    }

    /// A later message sealed by hand with the session KEK, so that its inner
    /// message can be malformed in ways `seal` refuses to produce.
    fn seal_raw(
        sender: &Tunnel,
        session_id: [u8; 16],
        seq: u64,
        inner: &[u8],
        outer_head: &str,
    ) -> Vec<u8> {
        let s = sender.sessions.get(&session_id).unwrap();
        let mut entity = ENTITY_PREFIX.to_vec();
        entity.extend_from_slice(inner);
        let outer_probe = format!("{outer_head}l: 0\r\n\r\n");
        let binding =
            outer::outer_binding(&SipView::parse(outer_probe.as_bytes()).unwrap()).unwrap();
        let attrs = TunnelAttrs {
            content: ContentKind::Data,
            session_id: None,
            seq: SeqValue {
                direction: s.role.sending(),
                seq,
            },
            outer_binding: binding,
        };
        let aad = cms::auth_attrs_der(&attrs).unwrap();
        let cek = [9u8; 32];
        let wrapped = aes_kw::KekAes256::new(&(*s.kek).into())
            .wrap_vec(&cek)
            .unwrap();
        let sealed = Aes256Gcm::new((&cek).into())
            .encrypt(
                Nonce::from_slice(&[1u8; 12]),
                Payload {
                    msg: &entity,
                    aad: &aad,
                },
            )
            .unwrap();
        let (ct, tag) = sealed.split_at(sealed.len() - 16);
        let body = cms::encode_envelope(
            &KeyTransport::Kek {
                kek_id: session_id,
                wrapped,
            },
            &aad,
            ContentKind::Data,
            &[1u8; 12],
            ct,
            tag.try_into().unwrap(),
        )
        .unwrap();
        let mut out = format!("{outer_head}l: {}\r\n\r\n", body.len()).into_bytes();
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn inner_content_length_that_lies_is_rejected() {
        let msk_a = MasterSecret::from_bytes(&[1u8; 32]).unwrap();
        let msk_b = MasterSecret::from_bytes(&[2u8; 32]).unwrap();
        let pa =
            PublicParams::new("atlanta.com", msk_a.p_pub(), "https://pkg.atlanta.com").unwrap();
        let pb = PublicParams::new("biloxi.com", msk_b.p_pub(), "https://pkg.biloxi.com").unwrap();
        let mut alice = party("sip:alice@atlanta.com", &msk_a, &[&pa, &pb]);
        let mut bob = party("sip:bob@biloxi.com", &msk_b, &[&pa, &pb]);
        let now = UNIX_EPOCH + Duration::from_secs(1_795_348_800);
        let call_id = "bGllc2xpZXNsaWVzbGllc2xp";
        let common = format!(
            "v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nf: <sip:alice@atlanta.com>;tag=a\r\nt: <sip:bob@biloxi.com>\r\ni: {call_id}\r\n"
        );
        let invite = sip(
            "INVITE sip:bob@biloxi.com SIP/2.0",
            &format!("{common}CSeq: 1 INVITE\r\n"),
            "",
            0,
        );
        let o = alice.seal(now, &invite).unwrap();
        let session_id = bob.open(now, &o).unwrap().session_id;
        let in_dialog = common.replace("t: <sip:bob@biloxi.com>", "t: <sip:bob@biloxi.com>;tag=b");
        let head = format!(
            "BYE sip:bob@127.0.0.1 SIP/2.0\r\n{in_dialog}CSeq: 2 BYE\r\nc: {}\r\n",
            outer::OUTER_CONTENT_TYPE
        );
        // Body of 4 bytes declared as 2, and declared as 10.
        for declared in [2usize, 10] {
            let lying = sip(
                "BYE sip:bob@127.0.0.1 SIP/2.0",
                &format!("{in_dialog}CSeq: 2 BYE\r\n"),
                "abcd",
                declared,
            );
            let outer = seal_raw(&alice, session_id, 1, &lying, &head);
            let r = bob.open(now, &outer);
            assert!(
                matches!(&r, Err(OpenError::Inner(e)) if e.contains("Content-Length")),
                "{r:?}"
            );
        }
        // The same construction with an honest length opens, at the same seq.
        let honest = sip(
            "BYE sip:bob@127.0.0.1 SIP/2.0",
            &format!("{in_dialog}CSeq: 2 BYE\r\n"),
            "abcd",
            4,
        );
        let outer = seal_raw(&alice, session_id, 1, &honest, &head);
        assert_eq!(bob.open(now, &outer).unwrap().inner, honest);
    }
}
