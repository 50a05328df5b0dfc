//! `Tunnel::seal`: inner message in, outer message out (spec 5.1-5.4).

use super::cms::{self, ContentKind, Direction, KeyTransport, SeqValue, SignedAttrs, TunnelAttrs};
use super::keylog::KeyLogEntry;
use super::message::{SipView, StartLine};
use super::outer;
use super::session::{creates_dialog, dialog_tags, Full, Role, Session, Slot};
use super::{unix_secs, SealError, Tunnel, ENTITY_PREFIX, KEK_INFO};
use crate::ibe::{Aor, Identity};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use bls12_381::Scalar;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::SystemTime;
use zeroize::{Zeroize, Zeroizing};

/// `KEK = HKDF-SHA256(ikm = CEK_0, salt = session_id, info)`.
pub(super) fn derive_kek(cek0: &[u8; 32], session_id: &[u8; 16]) -> Zeroizing<[u8; 32]> {
    let mut kek = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF's output limit.
    let _ = Hkdf::<Sha256>::new(Some(session_id), cek0).expand(KEK_INFO, &mut kek[..]);
    kek
}

/// What a seal will change once it has succeeded.
enum Commit {
    NewSession(Box<Session>, Slot),
    Later {
        session_id: [u8; 16],
        /// Whether it is our 2xx to the first request (as callee).
        confirms: bool,
        /// Our own dialog tag in a session where we are the callee.
        own_tag: Option<String>,
    },
}

impl Tunnel {
    fn draw<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<Zeroizing<[u8; N]>, SealError> {
        let mut buf = Zeroizing::new([0u8; N]);
        self.rng
            .fill(what, &mut buf[..])
            .map_err(|source| SealError::Random { what, source })?;
        Ok(buf)
    }

    /// Seals `inner` (a complete SIP message) for the peer. An initial
    /// request starts a new session keyed to the callee's identity at
    /// `now`; anything else must belong to an existing session. On error
    /// nothing changes.
    pub fn seal(&mut self, now: SystemTime, inner: &[u8]) -> Result<Vec<u8>, SealError> {
        self.housekeeping(now);
        let view = SipView::parse(inner).map_err(SealError::Inner)?;
        let inner_err = SealError::Inner;
        let first_line = std::str::from_utf8(inner)
            .ok()
            .and_then(|s| s.split("\r\n").next())
            .ok_or(SealError::Inner(super::message::MessageError::StartLine))?;
        let call_id = view.call_id().map_err(inner_err)?;
        outer::check_call_id(call_id).map_err(inner_err)?;
        let from = view.from().map_err(inner_err)?;
        let to = view.to().map_err(inner_err)?;
        let from_tag = from
            .tag()
            .ok_or(SealError::Unsealable("From tag missing"))?;
        let to_tag = to.tag();
        let head = outer::outer_head(&view, first_line, self.config.privacy).map_err(inner_err)?;
        let outer_binding = outer::outer_binding(&view).map_err(inner_err)?;
        let mut entity = ENTITY_PREFIX.to_vec();
        entity.extend_from_slice(inner);

        let initial = view.is_request() && to_tag.is_none();
        let (key, content, session_id_attr, seq, cek, commit) = if initial {
            let StartLine::Request { uri, .. } = &view.start else {
                return Err(SealError::Unsealable("initial message is not a request"));
            };
            // Our own earlier session of this dialog (a retried initial
            // request) is replaced; any other session on this Call-ID is
            // another dialog's, which a first message never joins.
            let replaces = self.sessions.find_dialog(call_id, from_tag, Role::Caller);
            if replaces.is_none() && self.sessions.call_id_in_use(call_id) {
                return Err(SealError::CallIdInUse);
            }
            let slot = self.sessions.slot_for_own(replaces).map_err(|e| match e {
                Full::Sessions | Full::SessionIds => SealError::TableFull,
            })?;
            let (cseq, method) = view.cseq().map_err(inner_err)?;
            let callee_aor = Aor::parse(uri)
                .or_else(|_| Aor::parse(to.uri))
                .map_err(SealError::Identity)?;
            let callee = Identity::new(callee_aor, Self::current_period(now));
            let params = self
                .params
                .get(callee.aor().host())
                .cloned()
                .ok_or_else(|| SealError::UnknownDomain(callee.aor().host().to_string()))?;
            let session_id = *self.draw::<16>("session_id")?;
            let cek = self.draw::<32>("cek")?;
            let sigma = self.draw::<32>("bf_sigma")?;
            let ct = self
                .recipients
                .encrypt_with_sigma(&params, &callee, &cek, &sigma)
                .map_err(SealError::Ibe)?;
            let encrypted_key = ct.to_bytes().to_vec();
            let session_binding: [u8; 32] = Sha256::digest(&encrypted_key).into();
            let content = self.sign_if_possible(now, &entity, None)?;
            let session = Session {
                session_id,
                kek: super::seal::derive_kek(&cek, &session_id),
                role: Role::Caller,
                call_id: call_id.to_string(),
                caller_tag: from_tag.to_string(),
                initial_cseq: (cseq, method.to_string()),
                dialog: creates_dialog(method),
                session_binding,
                next_seq: 1,
                windows: HashMap::new(),
                verified_peer: HashMap::new(),
                own_tags: vec![from_tag.to_string()],
                established: true,
                confirmed: true,
                opened_by: String::new(),
                last_used: now,
            };
            let key = KeyTransport::Ibe {
                rid: callee.key_identifier(),
                encrypted_key,
            };
            (
                key,
                content,
                Some(session_id),
                0,
                cek,
                Commit::NewSession(Box::new(session), slot),
            )
        } else {
            // The session of this dialog with exact roles: as caller we
            // send in the direction caller-to-callee, as callee back.
            let to_tag_str = to_tag.unwrap_or_default();
            let is_request = view.is_request();
            let as_role = |role: Role| {
                let (caller_tag, callee_tag) =
                    dialog_tags(is_request, role.sending(), from_tag, to_tag_str);
                self.sessions
                    .find_dialog(call_id, caller_tag, role)
                    .map(|id| (id, callee_tag))
            };
            let (id, callee_tag) = match (as_role(Role::Caller), as_role(Role::Callee)) {
                (Some(found), None) | (None, Some(found)) => found,
                (None, None) => return Err(SealError::NoSession),
                // Cannot happen (a Call-ID never has sessions of both
                // roles); fail closed rather than guess.
                (Some(_), Some(_)) => return Err(SealError::AmbiguousSession),
            };
            let callee_tag = callee_tag.to_string();
            let (role, seq, binding, initial_cseq, kek) = {
                let s = self.sessions.get(&id).ok_or(SealError::NoSession)?;
                (
                    s.role,
                    s.next_seq,
                    s.session_binding,
                    s.initial_cseq.clone(),
                    s.kek.clone(),
                )
            };
            // Spec 5.4, read for lossy transports: every response of ours
            // other than 100 to the session's first request is signed, not
            // only the first one, because a provisional response is never
            // retransmitted and the caller must be able to verify us from
            // whichever of them arrives (see the module doc).
            let answers_first = view
                .cseq()
                .is_ok_and(|(n, m)| n == initial_cseq.0 && m == initial_cseq.1);
            let signs = matches!(view.start, StartLine::Response { code } if code != 100)
                && role == Role::Callee
                && answers_first;
            // A 2xx of ours to the first request establishes the dialog:
            // from then on no signed newcomer may supersede the session.
            let confirms = matches!(view.start, StartLine::Response { code } if (200..300).contains(&code))
                && role == Role::Callee
                && answers_first;
            let content = if signs {
                self.sign_if_possible(now, &entity, Some(binding))?
            } else {
                (ContentKind::Data, entity.clone())
            };
            let cek = self.draw::<32>("cek")?;
            let wrapped = aes_kw::KekAes256::new(&(*kek).into())
                .wrap_vec(&cek[..])
                .map_err(|_| SealError::KeyWrap)?;
            let key = KeyTransport::Kek {
                kek_id: id,
                wrapped,
            };
            (
                key,
                content,
                None,
                seq,
                cek,
                Commit::Later {
                    session_id: id,
                    confirms,
                    own_tag: (role == Role::Callee && !callee_tag.is_empty()).then_some(callee_tag),
                },
            )
        };
        let direction = match &commit {
            Commit::NewSession(..) => Direction::CallerToCallee,
            Commit::Later { session_id, .. } => self
                .sessions
                .get(session_id)
                .map_or(Direction::CallerToCallee, |s| s.role.sending()),
        };
        let attrs = TunnelAttrs {
            content: content.0,
            session_id: session_id_attr,
            seq: SeqValue { direction, seq },
            outer_binding,
        };
        let aad = cms::auth_attrs_der(&attrs).map_err(SealError::Encoding)?;
        let nonce = self.draw::<12>("gcm_nonce")?;
        let sealed = Aes256Gcm::new((&*cek).into())
            .encrypt(
                Nonce::from_slice(&nonce[..]),
                Payload {
                    msg: &content.1,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::ContentEncryption)?;
        let (ct, tag) = sealed.split_at(sealed.len() - 16);
        let mut mac = [0u8; 16];
        mac.copy_from_slice(tag);
        let body = cms::encode_envelope(&key, &aad, content.0, &nonce, ct, &mac)
            .map_err(SealError::Encoding)?;

        // Everything succeeded: commit.
        if self.key_log.is_some() {
            let (session_id, kek) = match &commit {
                Commit::NewSession(s, _) => (s.session_id, Some(s.kek.clone())),
                Commit::Later { session_id, .. } => (*session_id, None),
            };
            if let Some(kek) = kek {
                self.log_key(|| KeyLogEntry::Kek { session_id, kek });
            }
            self.log_key(|| KeyLogEntry::Cek {
                session_id,
                direction,
                seq,
                cek: cek.clone(),
            });
        }
        match commit {
            Commit::NewSession(session, slot) => self.sessions.insert(slot, *session),
            Commit::Later {
                session_id,
                confirms,
                own_tag,
            } => {
                if let Some(s) = self.sessions.get_mut(&session_id) {
                    s.next_seq += 1;
                    s.last_used = now;
                    s.established = true;
                    s.confirmed |= confirms;
                    if let Some(t) = own_tag {
                        if !s.own_tags.contains(&t) {
                            s.own_tags.push(t);
                        }
                    }
                }
            }
        }
        let mut out = head.into_bytes();
        out.extend_from_slice(format!("l: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The content for `entity`: a SignedData when we hold a key of the
    /// current (else previous) period, the bare entity otherwise.
    pub(super) fn sign_if_possible(
        &mut self,
        now: SystemTime,
        entity: &[u8],
        session_binding: Option<[u8; 32]>,
    ) -> Result<(ContentKind, Vec<u8>), SealError> {
        let periods = Self::accepted_periods(now);
        let Some(idx) = periods
            .iter()
            .find_map(|p| self.keys.iter().position(|k| k.identity.period() == p))
        else {
            return Ok((ContentKind::Data, entity.to_vec()));
        };
        let attrs = SignedAttrs {
            message_digest: Sha256::digest(entity).into(),
            signing_time: unix_secs(now),
            signer_identity: self.keys[idx].identity.as_str().to_string(),
            session_binding,
        };
        let signed_der = cms::signed_attrs_der(&attrs).map_err(SealError::Encoding)?;
        let wide = self.draw::<64>("signature_k")?;
        let mut k = Scalar::from_bytes_wide(&wide);
        let key = &self.keys[idx];
        let sig = key.signing.sign_with_k(&signed_der, &k);
        k.zeroize();
        let sig = sig.map_err(SealError::Ibe)?;
        let sd = cms::encode_signed(
            entity,
            &signed_der,
            &key.identity.key_identifier(),
            &sig.to_bytes(),
        )
        .map_err(SealError::Encoding)?;
        Ok((ContentKind::SignedData, sd))
    }
}
