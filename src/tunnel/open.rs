//! `Tunnel::open`: outer message in, verified inner message out (spec 5.1-5.4).
//!
//! Two steps, as rustls consumes its states: `Tunnel::verify` reads the
//! tunnel and returns a `Verdict` (every check, no side effect), then
//! `Tunnel::commit` applies an accepted verdict and cannot fail. A
//! rejected message therefore changes nothing; the only state change an
//! `open` makes before verifying is time-driven housekeeping at `now`
//! (expiring idle sessions and old memories), which any call would make.

use super::cms::{self, ContentKind, Direction, KeyTransport};
use super::keylog::KeyLogEntry;
use super::message::{SipView, StartLine};
use super::outer;
use super::seal::derive_kek;
use super::session::{creates_dialog, dialog_tags, Full, Role, Session, Slot};
use super::{unix_secs, OpenError, Opened, PeerIdentity, Tunnel, ENTITY_PREFIX};
use crate::ibe::{bf, cc, cc::Signature, Aor, Identity};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::SystemTime;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The outcome of verification: what `open` returns and what it changes.
enum Verdict {
    /// A retransmission of a transaction accepted earlier: its result again.
    Retransmission(Opened),
    /// A new message that passed every check.
    Accepted(Box<Accepted>),
}

/// A verified message: its result and the state change it makes.
struct Accepted {
    opened: Opened,
    cek: Zeroizing<[u8; 32]>,
    body_hash: [u8; 32],
    branch: String,
    change: Change,
}

/// The state change of an accepted message.
enum Change {
    /// A first message: a new (pending) session, in the slot found for it,
    /// replacing the unproven sessions it supersedes.
    NewSession {
        session: Box<Session>,
        slot: Slot,
        superseded: Vec<[u8; 16]>,
    },
    /// A later message of a live session.
    Later {
        peer_tag: String,
        /// The branch's identity, when this message is the first on the
        /// branch to prove one.
        verified: Option<Identity>,
    },
}

/// The branch parameter of the top Via: names the transaction.
fn top_via_branch(view: &SipView<'_>) -> String {
    let Some(via) = view.header("via") else {
        return String::new();
    };
    let top = via.split(',').next().unwrap_or_default();
    top.split(';')
        .skip(1)
        .find_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            k.trim()
                .eq_ignore_ascii_case("branch")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn host_is_address(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok()
}

impl Tunnel {
    /// Opens an outer message. Returns the inner message and what the user
    /// should be shown, or the reason for rejection; a rejection changes
    /// no state. A retransmission of an accepted message in the same
    /// transaction (same body, same top Via branch, every outer check
    /// passed again) gives the earlier result again, marked
    /// `retransmission`.
    pub fn open(&mut self, now: SystemTime, outer_bytes: &[u8]) -> Result<Opened, OpenError> {
        self.housekeeping(now);
        match self.verify(now, outer_bytes)? {
            Verdict::Retransmission(opened) => Ok(opened),
            Verdict::Accepted(accepted) => Ok(self.commit(now, *accepted)),
        }
    }

    /// Every check of spec 5.1-5.4; no state change (the signer cache is a
    /// memo of public values, not state).
    fn verify(&self, now: SystemTime, outer_bytes: &[u8]) -> Result<Verdict, OpenError> {
        let outer = SipView::parse(outer_bytes).map_err(OpenError::Outer)?;
        let ctype = outer
            .header("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !ctype.starts_with("application/pkcs7-mime") {
            return Err(OpenError::NotTunneled);
        }
        let env = cms::decode_envelope(outer.body).map_err(OpenError::Cms)?;
        let binding = outer::outer_binding(&outer).map_err(OpenError::Outer)?;
        if !bool::from(binding.ct_eq(&env.attrs.outer_binding)) {
            return Err(OpenError::OuterBinding);
        }
        let body_hash: [u8; 32] = Sha256::digest(outer.body).into();
        let branch = top_via_branch(&outer);
        if let Some(prev) = self.sessions.recent(&body_hash, &branch, now) {
            // The same transaction again: the outer binding matched above;
            // the outer must still agree with the inner it carries.
            let inner = SipView::parse(&prev.inner).map_err(OpenError::Inner)?;
            outer::check_agreement(&outer, &inner).map_err(OpenError::Mismatch)?;
            let mut again = prev.clone();
            again.retransmission = true;
            // What it superseded was reported with the first copy.
            again.superseded.clear();
            return Ok(Verdict::Retransmission(again));
        }

        // Key transport: the CEK, and (first message) the key period and
        // session binding.
        let seq = env.attrs.seq;
        let (cek, session_id, first) = match &env.key {
            KeyTransport::Ibe { rid, encrypted_key } => {
                let periods = Self::accepted_periods(now);
                let key = periods
                    .iter()
                    .filter_map(|p| self.own_key_for_period(p))
                    .find(|k| k.identity.key_identifier() == *rid)
                    .ok_or(OpenError::NoKeyForPeriod)?;
                let session_id = env.attrs.session_id.ok_or(OpenError::NotInitialRequest)?;
                if self.sessions.seen_id(&session_id, now).is_some() {
                    return Err(OpenError::SessionIdReused);
                }
                if self.sessions.remembered_ids() >= self.config.max_session_ids {
                    return Err(OpenError::SessionIdMemoryFull);
                }
                let cek = bf::decrypt(&key.decryption, encrypted_key)
                    .map_err(|_| OpenError::KeyTransport)?;
                let binding: [u8; 32] = Sha256::digest(encrypted_key).into();
                (
                    cek,
                    session_id,
                    Some((binding, key.identity.period().clone())),
                )
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
                (Zeroizing::new(cek), *kek_id, None)
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
            .ok_or(OpenError::EntityType)?;
        let inner = SipView::parse(inner_bytes).map_err(OpenError::Inner)?;
        outer::check_agreement(&outer, &inner).map_err(OpenError::Mismatch)?;
        let call_id = inner.call_id().map_err(OpenError::Inner)?;
        let from_tag = inner
            .from()
            .map_err(OpenError::Inner)?
            .tag()
            .unwrap_or_default();
        let to_tag = inner
            .to()
            .map_err(OpenError::Inner)?
            .tag()
            .unwrap_or_default();
        let is_request = inner.is_request();

        let first_message = first.is_some();
        let (peer, period, change) = if let Some((session_binding, period)) = first {
            // A first message opens a session: an initial request from the
            // caller, meant for us, on a Call-ID no live session uses.
            if !is_request || !to_tag.is_empty() || seq.direction != Direction::CallerToCallee {
                return Err(OpenError::NotInitialRequest);
            }
            self.check_recipient(&inner)?;
            let in_use = self.sessions.call_id_in_use(call_id);
            // An unsigned newcomer on a Call-ID in use proves nothing and is
            // refused before its signature would even be looked at.
            if in_use && signed.is_none() {
                return Err(OpenError::DialogCollision);
            }
            let verified = match &signed {
                Some(sc) => self.check_signature(now, sc, &inner, true, None)?,
                None => None,
            };
            // A message that proves nothing cannot block one that does: a
            // verified first message supersedes the sessions on its
            // Call-ID when none of them proved anything or holds a dialog
            // (unsigned, unanswered by a 2xx). Anything else on the Call-ID
            // stands, and the newcomer is refused.
            let superseded = if in_use {
                match (&verified, self.sessions.unproven_on_call_id(call_id)) {
                    (Some(_), Some(ids)) => ids,
                    _ => return Err(OpenError::DialogCollision),
                }
            } else {
                Vec::new()
            };
            let opened_by = verified
                .as_ref()
                .map(|id| id.aor().as_str().to_string())
                .unwrap_or_default();
            let slot = self
                .sessions
                .slot_superseding(&opened_by, &superseded)
                .map_err(|e| match e {
                    Full::Sessions => OpenError::TableFull,
                    Full::SessionIds => OpenError::SessionIdMemoryFull,
                })?;
            let (cseq, method) = inner.cseq().map_err(OpenError::Inner)?;
            let mut window = super::replay::ReplayWindow::default();
            window.accept(seq.seq);
            let mut verified_peer = HashMap::new();
            if let Some(id) = &verified {
                verified_peer.insert(from_tag.to_string(), id.clone());
            }
            let session = Session {
                session_id,
                kek: derive_kek(&cek, &session_id),
                role: Role::Callee,
                call_id: call_id.to_string(),
                caller_tag: from_tag.to_string(),
                initial_cseq: (cseq, method.to_string()),
                dialog: creates_dialog(method),
                session_binding,
                next_seq: 0,
                windows: HashMap::from([(from_tag.to_string(), window)]),
                verified_peer,
                own_tags: Vec::new(),
                established: false,
                confirmed: false,
                opened_by,
                last_used: now,
            };
            let peer = match verified {
                Some(id) => PeerIdentity::Verified(id),
                None => PeerIdentity::Unverified,
            };
            let change = Change::NewSession {
                session: Box::new(session),
                slot,
                superseded,
            };
            (peer, Some(period), change)
        } else {
            let s = self
                .sessions
                .get(&session_id)
                .ok_or(OpenError::UnknownSession)?;
            if seq.direction == s.role.sending() {
                return Err(OpenError::Reflected);
            }
            // The dialog, with exact roles: the caller's tag where the
            // caller's tag belongs, and a callee tag of this session.
            let (caller_tag, callee_tag) = dialog_tags(is_request, seq.direction, from_tag, to_tag);
            if s.call_id != call_id || s.caller_tag != caller_tag {
                return Err(OpenError::WrongDialog);
            }
            let peer_tag = match s.role {
                Role::Callee => {
                    if !s.own_tags.iter().any(|t| t == callee_tag) {
                        return Err(OpenError::WrongDialog);
                    }
                    caller_tag
                }
                Role::Caller => {
                    // A new branch only by a response to our first request
                    // (a fork, spec 5.3).
                    let known = s.windows.contains_key(callee_tag);
                    let answers_first = !is_request
                        && inner
                            .cseq()
                            .is_ok_and(|(n, m)| n == s.initial_cseq.0 && m == s.initial_cseq.1);
                    if !known && !answers_first {
                        return Err(OpenError::WrongDialog);
                    }
                    callee_tag
                }
            };
            if !s.windows.get(peer_tag).is_none_or(|w| w.check(seq.seq)) {
                return Err(OpenError::Replay {
                    direction: seq.direction as u8,
                    seq: seq.seq,
                });
            }
            let known = s.verified_peer.get(peer_tag);
            let signer = match &signed {
                Some(sc) => {
                    self.check_signature(now, sc, &inner, false, Some(&s.session_binding))?
                }
                None => None,
            };
            // A branch's identity is the first one proved on it, and stays.
            let (peer, verified) = match (known, signer) {
                (Some(k), Some(new)) if k.aor() != new.aor() => {
                    return Err(OpenError::SignerChanged {
                        signer: new.aor().to_string(),
                        verified: k.aor().to_string(),
                    })
                }
                (Some(k), _) => (PeerIdentity::Verified(k.clone()), None),
                (None, Some(new)) => (PeerIdentity::Verified(new.clone()), Some(new)),
                (None, None) => (PeerIdentity::Unverified, None),
            };
            let change = Change::Later {
                peer_tag: peer_tag.to_string(),
                verified,
            };
            (peer, None, change)
        };
        let superseded = match &change {
            Change::NewSession { superseded, .. } => superseded.clone(),
            Change::Later { .. } => Vec::new(),
        };
        let opened = Opened {
            superseded,
            inner: inner_bytes.to_vec(),
            session_id,
            direction: seq.direction,
            seq: seq.seq,
            first_message,
            peer,
            period,
            retransmission: false,
        };
        Ok(Verdict::Accepted(Box::new(Accepted {
            opened,
            cek,
            body_hash,
            branch,
            change,
        })))
    }

    /// Applies an accepted message. Cannot fail: every lookup was done by
    /// `Tunnel::verify` on the same state.
    fn commit(&mut self, now: SystemTime, accepted: Accepted) -> Opened {
        let Accepted {
            opened,
            cek,
            body_hash,
            branch,
            change,
        } = accepted;
        let session_id = opened.session_id;
        match change {
            Change::NewSession {
                session,
                slot,
                superseded,
            } => {
                let kek = session.kek.clone();
                self.log_key(|| KeyLogEntry::Kek { session_id, kek });
                for id in &superseded {
                    // Their ids stay remembered: a replay is still refused.
                    self.sessions.remove(id);
                }
                self.sessions.remember_id(session_id, body_hash, now);
                self.sessions.insert(slot, *session);
            }
            Change::Later { peer_tag, verified } => {
                if let Some(s) = self.sessions.get_mut(&session_id) {
                    if let Some(id) = verified {
                        s.verified_peer.entry(peer_tag.clone()).or_insert(id);
                    }
                    s.windows.entry(peer_tag).or_default().accept(opened.seq);
                    s.last_used = now;
                }
            }
        }
        let (direction, seq) = (opened.direction, opened.seq);
        self.log_key(|| KeyLogEntry::Cek {
            session_id,
            direction,
            seq,
            cek: cek.clone(),
        });
        self.sessions
            .remember_body(body_hash, branch, now, opened.clone());
        opened
    }

    /// Spec 5.4 recipient binding: a first request is meant for us when
    /// its inner To AOR is ours and its inner Request-URI, when it has a
    /// user part, names us: our AOR, one of our contact tokens (any host),
    /// or (a contact a registrar retargeted to) our AOR's user at a host
    /// that is an IP address.
    fn check_recipient(&self, inner: &SipView<'_>) -> Result<(), OpenError> {
        let to = inner.to().map_err(OpenError::Inner)?;
        if Aor::parse(to.uri).ok().as_ref() != Some(&self.own_aor) {
            return Err(OpenError::NotForUs("To"));
        }
        let StartLine::Request { uri, .. } = &inner.start else {
            return Err(OpenError::NotInitialRequest);
        };
        // No user part (or not a SIP URI): nothing more to compare.
        let Ok(target) = Aor::parse(uri) else {
            return Ok(());
        };
        let ours = target == self.own_aor
            || self.contact_users.iter().any(|u| u == target.user())
            || (host_is_address(target.host()) && target.user() == self.own_aor.user());
        if ours {
            Ok(())
        } else {
            Err(OpenError::NotForUs("Request-URI"))
        }
    }

    /// Checks a SignedData (spec 5.4). `Ok(Some(id))`: verified signer;
    /// `Ok(None)`: signer's domain unknown, shown unverified.
    /// `session_binding`: the session's, which a response must carry.
    fn check_signature(
        &self,
        now: SystemTime,
        sc: &cms::SignedContent,
        inner: &SipView<'_>,
        first: bool,
        session_binding: Option<&[u8; 32]>,
    ) -> Result<Option<Identity>, OpenError> {
        let signer = Identity::parse(&sc.attrs.signer_identity)
            .map_err(|_| OpenError::Signature(super::SignatureError::SignerIdentity))?;
        if signer.key_identifier() != sc.sid {
            return Err(OpenError::Signature(super::SignatureError::SidMismatch));
        }
        let (expected_uri, expected) = if inner.is_request() {
            (inner.from().map_err(OpenError::Inner)?.uri, "inner From")
        } else {
            (inner.to().map_err(OpenError::Inner)?.uri, "inner To")
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
            return Err(OpenError::Signature(super::SignatureError::MessageDigest));
        }
        if first {
            let skew = unix_secs(now) as i64 - sc.attrs.signing_time as i64;
            if skew.unsigned_abs() > self.config.max_clock_skew.as_secs() {
                return Err(OpenError::Stale(skew));
            }
        }
        if !inner.is_request() {
            let ok = match (sc.attrs.session_binding, session_binding) {
                (Some(got), Some(want)) => bool::from(got.ct_eq(want)),
                _ => false,
            };
            if !ok {
                return Err(OpenError::SessionBinding);
            }
        }
        let Some(params) = self.params.get(signer.aor().host()) else {
            return Ok(None);
        };
        let sig = Signature::from_bytes(&sc.signature)
            .map_err(|_| OpenError::Signature(super::SignatureError::Encoding))?;
        let verified = match self.signers.try_borrow_mut() {
            Ok(mut cache) => cache.verify(params, &signer, &sc.signed_der, &sig),
            // Never reentered; without the memo the check is the same.
            Err(_) => cc::verify(params, &signer, &sc.signed_der, &sig),
        };
        verified.map_err(|_| OpenError::Signature(super::SignatureError::DoesNotVerify))?;
        Ok(Some(signer))
    }
}

#[cfg(test)]
mod tests {
    use super::super::cms::{self, ContentKind, KeyTransport, SeqValue, TunnelAttrs};
    use super::super::{message::SipView, outer, Tunnel, TunnelConfig, ENTITY_PREFIX};
    use super::*;
    use crate::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
        let mut entity = ENTITY_PREFIX.to_vec();
        entity.extend_from_slice(inner);
        seal_raw_content(
            sender,
            session_id,
            seq,
            ContentKind::Data,
            &entity,
            outer_head,
        )
    }

    /// [`seal_raw`] of any content (an entity, or a SignedData).
    fn seal_raw_content(
        sender: &Tunnel,
        session_id: [u8; 16],
        seq: u64,
        kind: ContentKind,
        entity: &[u8],
        outer_head: &str,
    ) -> Vec<u8> {
        let s = sender.sessions.get(&session_id).unwrap();
        let outer_probe = format!("{outer_head}l: 0\r\n\r\n");
        let binding =
            outer::outer_binding(&SipView::parse(outer_probe.as_bytes()).unwrap()).unwrap();
        let attrs = TunnelAttrs {
            content: kind,
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
                    msg: entity,
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
            kind,
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
        // Bob answers with his tag, which puts the BYE below in the dialog.
        let ringing = sip(
            "SIP/2.0 180 Ringing",
            &format!("{in_dialog}CSeq: 1 INVITE\r\n"),
            "",
            0,
        );
        let o = bob.seal(now, &ringing).unwrap();
        alice.open(now, &o).unwrap();
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
                matches!(
                    &r,
                    Err(OpenError::Inner(
                        super::super::message::MessageError::ContentLengthMismatch { .. }
                    ))
                ),
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

    /// alice and bob with alice's INVITE (Call-ID, From tag `a`) opened
    /// and bob's signed 180 (To tag `b`) opened: the session id and the
    /// headers of the dialog without start line and CSeq.
    fn ringing_call(alice: &mut Tunnel, bob: &mut Tunnel, now: SystemTime) -> ([u8; 16], String) {
        let call_id = "cm9sZXNyb2xlc3JvbGVzcm9s";
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
        let ringing = sip(
            "SIP/2.0 180 Ringing",
            &format!(
                "{}CSeq: 1 INVITE\r\n",
                common.replace("t: <sip:bob@biloxi.com>", "t: <sip:bob@biloxi.com>;tag=b")
            ),
            "",
            0,
        );
        let o = bob.seal(now, &ringing).unwrap();
        assert!(matches!(
            alice.open(now, &o).unwrap().peer,
            PeerIdentity::Verified(_)
        ));
        (session_id, common)
    }

    fn two_domains() -> (Tunnel, Tunnel) {
        let msk_a = MasterSecret::from_bytes(&[1u8; 32]).unwrap();
        let msk_b = MasterSecret::from_bytes(&[2u8; 32]).unwrap();
        let pa =
            PublicParams::new("atlanta.com", msk_a.p_pub(), "https://pkg.atlanta.com").unwrap();
        let pb = PublicParams::new("biloxi.com", msk_b.p_pub(), "https://pkg.biloxi.com").unwrap();
        (
            party("sip:alice@atlanta.com", &msk_a, &[&pa, &pb]),
            party("sip:bob@biloxi.com", &msk_b, &[&pa, &pb]),
        )
    }

    #[test]
    fn tags_in_each_others_roles_are_not_the_dialog() {
        let (mut alice, mut bob) = two_domains();
        let now = UNIX_EPOCH + Duration::from_secs(1_795_348_800);
        let (session_id, common) = ringing_call(&mut alice, &mut bob, now);
        // A KEK holder's BYE whose From carries bob's tag and To alice's.
        let swapped = common
            .replace(";tag=a", ";tag=b")
            .replace("t: <sip:bob@biloxi.com>", "t: <sip:bob@biloxi.com>;tag=a");
        let honest = common.replace("t: <sip:bob@biloxi.com>", "t: <sip:bob@biloxi.com>;tag=b");
        let bye = |headers: &str| {
            let inner = sip(
                "BYE sip:bob@127.0.0.1 SIP/2.0",
                &format!("{headers}CSeq: 2 BYE\r\n"),
                "",
                0,
            );
            let head = format!(
                "BYE sip:127.0.0.1 SIP/2.0\r\n{headers}CSeq: 2 BYE\r\nc: {}\r\n",
                outer::OUTER_CONTENT_TYPE
            );
            seal_raw(&alice, session_id, 1, &inner, &head)
        };
        assert_eq!(bob.open(now, &bye(&swapped)), Err(OpenError::WrongDialog));
        // The same message with the tags in their roles opens, same seq.
        assert!(bob.open(now, &bye(&honest)).is_ok());
    }

    #[test]
    fn each_fork_branch_proves_its_own_identity() {
        let (mut alice, mut bob) = two_domains();
        let now = UNIX_EPOCH + Duration::from_secs(1_795_348_800);
        let (session_id, common) = ringing_call(&mut alice, &mut bob, now);
        // Another device answers on its own branch without a signature:
        // the first branch's verified identity does not carry over.
        let fork = common.replace("t: <sip:bob@biloxi.com>", "t: <sip:bob@biloxi.com>;tag=f2");
        let ringing = sip(
            "SIP/2.0 180 Ringing",
            &format!("{fork}CSeq: 1 INVITE\r\n"),
            "",
            0,
        );
        let head = format!(
            "SIP/2.0 180 Ringing\r\n{fork}CSeq: 1 INVITE\r\nc: {}\r\n",
            outer::OUTER_CONTENT_TYPE
        );
        let opened = alice
            .open(now, &seal_raw(&bob, session_id, 7, &ringing, &head))
            .unwrap();
        assert_eq!(opened.peer, PeerIdentity::Unverified);
        assert_eq!(opened.session_id, session_id);
        // A branch opens only by a response to the first request.
        let fork3 = common.replace("t: <sip:bob@biloxi.com>", "t: <sip:bob@biloxi.com>;tag=f3");
        let info = sip("SIP/2.0 200 OK", &format!("{fork3}CSeq: 2 INFO\r\n"), "", 0);
        let head = format!(
            "SIP/2.0 200 OK\r\n{fork3}CSeq: 2 INFO\r\nc: {}\r\n",
            outer::OUTER_CONTENT_TYPE
        );
        assert_eq!(
            alice.open(now, &seal_raw(&bob, session_id, 8, &info, &head)),
            Err(OpenError::WrongDialog)
        );
    }

    #[test]
    fn an_unsigned_200_after_a_signed_180_keeps_the_identity() {
        // An implementation that signs only its first response (the 180):
        // its unsigned 200 is accepted, and the branch stays verified.
        let (mut alice, mut bob) = two_domains();
        let now = UNIX_EPOCH + Duration::from_secs(1_795_348_800);
        let (session_id, common) = ringing_call(&mut alice, &mut bob, now);
        let tagged = common.replace("t: <sip:bob@biloxi.com>", "t: <sip:bob@biloxi.com>;tag=b");
        let ok = sip(
            "SIP/2.0 200 OK",
            &format!("{tagged}CSeq: 1 INVITE\r\n"),
            "",
            0,
        );
        let head = format!(
            "SIP/2.0 200 OK\r\n{tagged}CSeq: 1 INVITE\r\nc: {}\r\n",
            outer::OUTER_CONTENT_TYPE
        );
        let opened = alice
            .open(now, &seal_raw(&bob, session_id, 1, &ok, &head))
            .unwrap();
        assert_eq!(opened.inner, ok);
        assert!(
            matches!(&opened.peer, PeerIdentity::Verified(id) if id.aor().as_str() == "sip:bob@biloxi.com")
        );
    }

    #[test]
    fn a_branch_keeps_the_identity_it_proved() {
        let (mut alice, mut bob) = two_domains();
        let now = UNIX_EPOCH + Duration::from_secs(1_795_348_800);
        let (session_id, common) = ringing_call(&mut alice, &mut bob, now);
        // Carol (keys of her own, and the session KEK) signs a 200 on bob's
        // branch: a valid signature of someone else than the branch proved.
        let msk_b = MasterSecret::from_bytes(&[2u8; 32]).unwrap();
        let pb = PublicParams::new("biloxi.com", msk_b.p_pub(), "https://pkg.biloxi.com").unwrap();
        let mut carol = party("sip:carol@biloxi.com", &msk_b, &[&pb]);
        let as_carol = common.replace("t: <sip:bob@biloxi.com>", "t: <sip:carol@biloxi.com>;tag=b");
        let ok = sip(
            "SIP/2.0 200 OK",
            &format!("{as_carol}CSeq: 1 INVITE\r\n"),
            "",
            0,
        );
        let mut entity = ENTITY_PREFIX.to_vec();
        entity.extend_from_slice(&ok);
        let binding = bob.sessions.get(&session_id).unwrap().session_binding;
        let (kind, content) = carol.sign_if_possible(now, &entity, Some(binding)).unwrap();
        assert_eq!(kind, ContentKind::SignedData);
        let head = format!(
            "SIP/2.0 200 OK\r\n{as_carol}CSeq: 1 INVITE\r\nc: {}\r\n",
            outer::OUTER_CONTENT_TYPE
        );
        let forged = seal_raw_content(&bob, session_id, 1, kind, &content, &head);
        assert_eq!(
            alice.open(now, &forged),
            Err(OpenError::SignerChanged {
                signer: "sip:carol@biloxi.com".into(),
                verified: "sip:bob@biloxi.com".into(),
            })
        );
        // Nothing changed: bob's own 200 at the same seq opens, bob verified.
        let ok = sip(
            "SIP/2.0 200 OK",
            &format!(
                "{}CSeq: 1 INVITE\r\n",
                common.replace("t: <sip:bob@biloxi.com>", "t: <sip:bob@biloxi.com>;tag=b")
            ),
            "",
            0,
        );
        let o = bob.seal(now, &ok).unwrap();
        let opened = alice.open(now, &o).unwrap();
        assert_eq!((opened.seq, opened.session_id), (1, session_id));
        assert!(
            matches!(&opened.peer, PeerIdentity::Verified(id) if id.aor().as_str() == "sip:bob@biloxi.com")
        );
    }
}
