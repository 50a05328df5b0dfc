//! Fixtures of the tunnel tests: providers with fixed master secrets
//! ([`TwoDomains`]), tunnels of users holding keys, and the inner SIP
//! messages of a typical call ([`Call`]; loopback hosts only), and what an
//! attacker builds by hand ([`first_message_by_hand`]).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ibephone::ibe::{bf, extract, Aor, Identity, MasterSecret, Period, PublicParams};
use ibephone::tunnel::cms::{self, ContentKind, Direction, KeyTransport, SeqValue, TunnelAttrs};
use ibephone::tunnel::{message::SipView, outer, Tunnel, TunnelConfig, ENTITY_PREFIX};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2026-11-22T12:00:00Z.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_348_800)
}

/// The master secret `[seed; 32]` of `domain` and its parameters.
fn provider(domain: &str, seed: u8) -> (MasterSecret, PublicParams) {
    let msk = MasterSecret::from_bytes(&[seed; 32]).unwrap();
    let params = PublicParams::new(domain, msk.p_pub(), &format!("https://pkg.{domain}")).unwrap();
    (msk, params)
}

/// A tunnel for `aor` holding keys for `periods`, trusting `trusted`.
fn tunnel_with(
    aor: &str,
    msk: &MasterSecret,
    periods: &[&str],
    trusted: &[&PublicParams],
    config: TunnelConfig,
) -> Tunnel {
    let aor = Aor::parse(aor).unwrap();
    let mut t = Tunnel::new(aor.clone(), config);
    for p in trusted {
        t.add_params((*p).clone());
    }
    for period in periods {
        let id = Identity::new(aor.clone(), Period::month(period).unwrap());
        t.add_keys(&extract(msk, &id)).unwrap();
    }
    t
}

/// Two providers, `a` (seed 1) and `b` (seed 2), whose users trust both.
pub struct TwoDomains {
    /// The first provider: master secret and parameters.
    pub a: (MasterSecret, PublicParams),
    /// The second provider.
    pub b: (MasterSecret, PublicParams),
}

impl TwoDomains {
    /// Providers of `a` and `b` with the master secrets of seeds 1 and 2.
    pub fn new(a: &str, b: &str) -> Self {
        TwoDomains {
            a: provider(a, 1),
            b: provider(b, 2),
        }
    }

    /// A tunnel for `aor` (of one of the two domains) with keys for
    /// `periods`, trusting both providers.
    pub fn tunnel(&self, aor: &str, periods: &[&str]) -> Tunnel {
        self.tunnel_with(aor, periods, TunnelConfig::default())
    }

    /// [`TwoDomains::tunnel`] with a configuration of its own.
    pub fn tunnel_with(&self, aor: &str, periods: &[&str], config: TunnelConfig) -> Tunnel {
        let host = Aor::parse(aor).unwrap().host().to_string();
        let (msk, _) = [&self.a, &self.b]
            .into_iter()
            .find(|(_, params)| params.domain() == host)
            .unwrap_or_else(|| panic!("{aor} is in neither domain"));
        tunnel_with(aor, msk, periods, &[&self.a.1, &self.b.1], config)
    }
}

/// (sender, receiver) of a message between alice and bob.
pub fn sides<'a>(
    from_alice: bool,
    alice: &'a mut Tunnel,
    bob: &'a mut Tunnel,
) -> (&'a mut Tunnel, &'a mut Tunnel) {
    if from_alice {
        (alice, bob)
    } else {
        (bob, alice)
    }
}

/// A SIP message with the given start line, headers and body; adds
/// Content-Length.
pub fn sip(start: &str, headers: &[String], body: &str) -> Vec<u8> {
    let mut m = format!("{start}\r\n");
    for h in headers {
        m.push_str(h);
        m.push_str("\r\n");
    }
    m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    m.into_bytes()
}

/// The Call-ID of [`Call::new`].
pub const CALL_ID: &str = "a84b4c76e66710Qm9v7wXyzA";
/// alice's SDP offer.
pub const SDP_A: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
/// bob's SDP answer.
pub const SDP_B: &str = "v=0\r\no=bob 2808844564 2808844564 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 3456 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// The inner messages of a typical call between alice (caller, tag `1928301774`)
/// and bob (callee, tag `a6c85cf`).
pub struct Call {
    /// The caller's AOR.
    pub caller: String,
    /// The callee's AOR.
    pub callee: String,
    /// The caller's From tag.
    pub caller_tag: String,
    /// The callee's To tag.
    pub callee_tag: String,
    /// The Call-ID.
    pub call_id: String,
}

impl Call {
    /// A call from `caller` to `callee` (AORs) with the fixed tags and
    /// [`CALL_ID`].
    pub fn new(caller: &str, callee: &str) -> Self {
        Call {
            caller: caller.into(),
            callee: callee.into(),
            caller_tag: "1928301774".into(),
            callee_tag: "a6c85cf".into(),
            call_id: CALL_ID.into(),
        }
    }

    fn caller_headers(&self, branch: &str, cseq: &str, to_tag: bool) -> Vec<String> {
        let to = if to_tag {
            format!("To: Bob <{}>;tag={}", self.callee, self.callee_tag)
        } else {
            format!("To: Bob <{}>", self.callee)
        };
        vec![
            format!("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch};rport"),
            "Max-Forwards: 70".into(),
            to,
            format!("From: Alice <{}>;tag={}", self.caller, self.caller_tag),
            format!("Call-ID: {}", self.call_id),
            format!("CSeq: {cseq}"),
            "Contact: <sip:alice@127.0.0.1:5070>".into(),
            "User-Agent: ibephone-test".into(),
        ]
    }

    /// The INVITE with [`SDP_A`].
    pub fn invite(&self) -> Vec<u8> {
        let mut h = self.caller_headers("776asdhds", "314159 INVITE", false);
        h.push("Subject: lunch?".into());
        h.push("Content-Type: application/sdp".into());
        sip(&format!("INVITE {} SIP/2.0", self.callee), &h, SDP_A)
    }

    fn response(&self, status: &str, cseq: &str, branch: &str, body: &str, tag: &str) -> Vec<u8> {
        let mut h = vec![
            format!("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch};rport=5070"),
            format!("To: Bob <{}>;tag={tag}", self.callee),
            format!("From: Alice <{}>;tag={}", self.caller, self.caller_tag),
            format!("Call-ID: {}", self.call_id),
            format!("CSeq: {cseq}"),
            "Contact: <sip:bob@127.0.0.1:5080>".into(),
            "Server: ibephone-test".into(),
        ];
        if !body.is_empty() {
            h.push("Content-Type: application/sdp".into());
        }
        sip(&format!("SIP/2.0 {status}"), &h, body)
    }

    /// The callee's 180.
    pub fn ringing(&self) -> Vec<u8> {
        self.response(
            "180 Ringing",
            "314159 INVITE",
            "776asdhds",
            "",
            &self.callee_tag,
        )
    }

    /// A 180 from the device with To tag `tag` (a forked call).
    pub fn ringing_from(&self, tag: &str) -> Vec<u8> {
        self.response("180 Ringing", "314159 INVITE", "776asdhds", "", tag)
    }

    /// The 200 to the INVITE with [`SDP_B`].
    pub fn ok_invite(&self) -> Vec<u8> {
        self.response(
            "200 OK",
            "314159 INVITE",
            "776asdhds",
            SDP_B,
            &self.callee_tag,
        )
    }

    /// A 200 to the INVITE from the device with To tag `tag`.
    pub fn ok_invite_from(&self, tag: &str) -> Vec<u8> {
        self.response("200 OK", "314159 INVITE", "776asdhds", SDP_B, tag)
    }

    /// The ACK of the 200.
    pub fn ack(&self) -> Vec<u8> {
        sip(
            "ACK sip:bob@127.0.0.1:5080 SIP/2.0",
            &self.caller_headers("a1b2c3", "314159 ACK", true),
            "",
        )
    }

    /// The caller's re-INVITE (new SDP version).
    pub fn reinvite(&self) -> Vec<u8> {
        let mut h = self.caller_headers("re1nv1te", "314160 INVITE", true);
        h.push("Content-Type: application/sdp".into());
        sip(
            "INVITE sip:bob@127.0.0.1:5080 SIP/2.0",
            &h,
            &SDP_A.replace("2890844526 IN", "2890844527 IN"),
        )
    }

    /// The 200 to the re-INVITE.
    pub fn ok_reinvite(&self) -> Vec<u8> {
        self.response(
            "200 OK",
            "314160 INVITE",
            "re1nv1te",
            SDP_B,
            &self.callee_tag,
        )
    }

    /// The caller's BYE.
    pub fn bye(&self) -> Vec<u8> {
        sip(
            "BYE sip:bob@127.0.0.1:5080 SIP/2.0",
            &self.caller_headers("byebye1", "314161 BYE", true),
            "",
        )
    }

    /// The 200 to the BYE.
    pub fn ok_bye(&self) -> Vec<u8> {
        self.response("200 OK", "314161 BYE", "byebye1", "", &self.callee_tag)
    }

    /// A BYE sent by the callee.
    pub fn callee_bye(&self) -> Vec<u8> {
        let h = vec![
            "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKcalleebye".into(),
            "Max-Forwards: 70".into(),
            format!("From: Bob <{}>;tag={}", self.callee, self.callee_tag),
            format!("To: Alice <{}>;tag={}", self.caller, self.caller_tag),
            format!("Call-ID: {}", self.call_id),
            "CSeq: 7 BYE".into(),
        ];
        sip("BYE sip:alice@127.0.0.1:5070 SIP/2.0", &h, "")
    }

    /// An out-of-dialog MESSAGE `text` with its own `call_id`.
    pub fn message(&self, call_id: &str, text: &str) -> Vec<u8> {
        let h = vec![
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKmsg1".into(),
            "Max-Forwards: 70".into(),
            format!("To: <{}>", self.callee),
            format!("From: Alice <{}>;tag=m55", self.caller),
            format!("Call-ID: {call_id}"),
            "CSeq: 1 MESSAGE".into(),
            "Content-Type: text/plain".into(),
        ];
        sip(&format!("MESSAGE {} SIP/2.0", self.callee), &h, text)
    }
}

/// The identity of `aor` at the fixtures' period (2026-11).
pub fn identity(aor: &str) -> Identity {
    Identity::new(Aor::parse(aor).unwrap(), Period::month("2026-11").unwrap())
}

/// `msk`'s private keys for `aor` at the fixtures' period.
pub fn keys_of(msk: &MasterSecret, aor: &str) -> ibephone::ibe::PrivateKeys {
    extract(msk, &identity(aor))
}

/// The start line and headers of an outer message without its
/// Content-Length (the head `seal` writes, `l:` last), with the start line
/// replaced by `start`.
pub fn outer_head(outer: &[u8], start: &str) -> String {
    let end = outer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let text = std::str::from_utf8(&outer[..end]).unwrap();
    let mut head = format!("{start}\r\n");
    for line in text.split("\r\n").skip(1) {
        if !line.starts_with("l:") {
            head.push_str(line);
            head.push_str("\r\n");
        }
    }
    head
}

/// What anyone holding only the public parameters can build: a first
/// message (BF key transport to `recipient`, session id `session_id`)
/// whose encrypted content is `content` of kind `kind` (a `message/sip`
/// entity, or a SignedData taken from elsewhere), under the outer head
/// `head` (start line and headers, no Content-Length).
pub fn first_message_by_hand(
    params: &PublicParams,
    recipient: &Identity,
    kind: ContentKind,
    content: &[u8],
    head: &str,
    session_id: [u8; 16],
) -> Vec<u8> {
    let cek = [0x42u8; 32];
    let ct = bf::encrypt(params, recipient, &cek).unwrap();
    let probe = format!("{head}l: 0\r\n\r\n");
    let binding = outer::outer_binding(&SipView::parse(probe.as_bytes()).unwrap()).unwrap();
    let attrs = TunnelAttrs {
        content: kind,
        session_id: Some(session_id),
        seq: SeqValue {
            direction: Direction::CallerToCallee,
            seq: 0,
        },
        outer_binding: binding,
    };
    let aad = cms::auth_attrs_der(&attrs).unwrap();
    let nonce = [7u8; 12];
    let sealed = Aes256Gcm::new((&cek).into())
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: content,
                aad: &aad,
            },
        )
        .unwrap();
    let (ciphertext, tag) = sealed.split_at(sealed.len() - 16);
    let body = cms::encode_envelope(
        &KeyTransport::Ibe {
            rid: recipient.key_identifier(),
            encrypted_key: ct.to_bytes().to_vec(),
        },
        &aad,
        kind,
        &nonce,
        ciphertext,
        tag.try_into().unwrap(),
    )
    .unwrap();
    let mut out = format!("{head}l: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(&body);
    out
}

/// An unsigned `message/sip` entity around `inner`.
pub fn entity(inner: &[u8]) -> Vec<u8> {
    [ENTITY_PREFIX, inner].concat()
}

/// What the recipient of a first message (holding `keys`) finds inside:
/// the content kind and bytes (the entity, or the sender's SignedData).
pub fn open_first_by_hand(
    keys: &ibephone::ibe::PrivateKeys,
    outer: &[u8],
) -> (ContentKind, Vec<u8>) {
    let start = outer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let env = cms::decode_envelope(&outer[start..]).unwrap();
    let KeyTransport::Ibe { encrypted_key, .. } = &env.key else {
        panic!("not a first message");
    };
    let cek = bf::decrypt(&bf::DecryptionKey::new(keys), encrypted_key).unwrap();
    let plain = Aes256Gcm::new((&*cek).into())
        .decrypt(
            Nonce::from_slice(&env.nonce),
            Payload {
                msg: &[env.ciphertext.as_slice(), &env.mac].concat(),
                aad: &env.aad,
            },
        )
        .unwrap();
    (env.attrs.content, plain)
}
