//! Known-answer vectors of the tunnel, written to
//! `tests/vectors/tunnel-v1.json` for other implementations:
//! `cargo run --example gen-tunnel-vectors > tests/vectors/tunnel-v1.json`.
//!
//! One domain (`biloxi.com`, master secret as in `ibe-v1.json`), alice
//! calls bob: a signed INVITE, a signed 180, a signed 200 (the callee signs
//! every response to the INVITE other than 100, see `tunnel` module doc),
//! ACK, BYE and its 200, in dialog order. Each entry lists every random value its sender
//! drew, by name, in the order drawn (`signature_k` is 64 bytes reduced
//! with `Scalar::from_bytes_wide`). `unix_time` is the clock of both
//! sides (it gives the key period and the signing time).
//! `tests/it/tunnel_vectors.rs` checks the file against this generator,
//! re-seals every message from the listed randomness and opens it.

use super::{RecordedRandom, Tunnel, TunnelConfig};
use crate::ibe::{extract, kat::master_secret, Aor, Identity, Period, PublicParams};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The vectors' clock: 2026-11-22T12:00:00Z.
pub const UNIX_TIME: u64 = 1_795_348_800;
/// The vectors' domain.
pub const DOMAIN: &str = "biloxi.com";

/// Shares one recorded source between a tunnel and the generator.
#[derive(Clone)]
struct Shared(Arc<Mutex<RecordedRandom>>);

impl super::RandomSource for Shared {
    fn fill(&mut self, what: &'static str, buf: &mut [u8]) -> Result<(), getrandom::Error> {
        match self.0.lock() {
            Ok(mut r) => r.fill(what, buf),
            Err(_) => Err(getrandom::Error::UNSUPPORTED),
        }
    }
}

impl Shared {
    fn take(&self) -> Vec<(&'static str, Vec<u8>)> {
        self.0.lock().map(|mut r| r.take()).unwrap_or_default()
    }
}

/// A SIP message with `headers` and `body`; Content-Length in compact
/// (`l:`) or full form last.
fn sip_with(start: &str, headers: &[&str], body: &str, length_header: &str) -> Vec<u8> {
    let mut m = format!("{start}\r\n");
    for h in headers {
        m.push_str(h);
        m.push_str("\r\n");
    }
    m.push_str(&format!("{length_header}: {}\r\n\r\n{body}", body.len()));
    m.into_bytes()
}

/// The messages of a call in dialog order: (name, sent by alice).
const CALL: [(&str, bool); 6] = [
    ("INVITE", true),
    ("180 Ringing", false),
    ("200 OK (INVITE)", false),
    ("ACK", true),
    ("BYE", true),
    ("200 OK (BYE)", false),
];

/// The messages of [`CALL`] from their (start line, headers, body), the
/// Content-Length header named `length_header`: (name, sent by alice,
/// bytes).
fn messages(
    length_header: &str,
    parts: [(&str, &[&str], &str); 6],
) -> Vec<(&'static str, bool, Vec<u8>)> {
    CALL.iter()
        .zip(parts)
        .map(|(&(name, from_alice), (start, headers, body))| {
            (
                name,
                from_alice,
                sip_with(start, headers, body, length_header),
            )
        })
        .collect()
}

/// The inner messages of the vector call: (name, sent by alice, bytes).
pub fn dialog() -> Vec<(&'static str, bool, Vec<u8>)> {
    let sdp_a = "v=0\r\no=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=ibesip-dh:3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08\r\n";
    let sdp_b = "v=0\r\no=bob 2808844564 2808844564 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 3456 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\na=ibesip-dh:hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo\r\n";
    let via_a = "v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnashds8;rport";
    let via_a_resp = "v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnashds8;rport=5070";
    let from_a = "f: \"Alice\" <sip:alice@biloxi.com>;tag=9fxced76sl";
    let to_b = "t: \"Bob\" <sip:bob@biloxi.com>";
    let to_b_tag = "t: \"Bob\" <sip:bob@biloxi.com>;tag=8321234356";
    let call_id = "i: 3848276298220188511A7Q";
    messages(
        "l",
        [
            (
                "INVITE sip:bob@biloxi.com SIP/2.0",
                &[
                    via_a,
                    "Max-Forwards: 70",
                    to_b,
                    from_a,
                    call_id,
                    "CSeq: 1 INVITE",
                    "m: <sip:alice@127.0.0.1:5070>",
                    "User-Agent: ibephone/0.1",
                    "c: application/sdp",
                ],
                sdp_a,
            ),
            (
                "SIP/2.0 180 Ringing",
                &[
                    via_a_resp,
                    to_b_tag,
                    from_a,
                    call_id,
                    "CSeq: 1 INVITE",
                    "m: <sip:bob@127.0.0.1:5080>",
                ],
                "",
            ),
            (
                "SIP/2.0 200 OK",
                &[
                    via_a_resp,
                    to_b_tag,
                    from_a,
                    call_id,
                    "CSeq: 1 INVITE",
                    "m: <sip:bob@127.0.0.1:5080>",
                    "c: application/sdp",
                ],
                sdp_b,
            ),
            (
                "ACK sip:bob@127.0.0.1:5080 SIP/2.0",
                &[
                    "v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK74bf9;rport",
                    "Max-Forwards: 70",
                    to_b_tag,
                    from_a,
                    call_id,
                    "CSeq: 1 ACK",
                ],
                "",
            ),
            (
                "BYE sip:bob@127.0.0.1:5080 SIP/2.0",
                &[
                    "v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye77;rport",
                    "Max-Forwards: 70",
                    to_b_tag,
                    from_a,
                    call_id,
                    "CSeq: 2 BYE",
                ],
                "",
            ),
            (
                "SIP/2.0 200 OK",
                &[
                    "v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye77;rport=5070",
                    to_b_tag,
                    from_a,
                    call_id,
                    "CSeq: 2 BYE",
                ],
                "",
            ),
        ],
    )
}

/// The vectors' clock as a `SystemTime`.
pub fn vector_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(UNIX_TIME)
}

/// The parameters and a tunnel with keys of the current period for `user`.
pub fn vector_tunnel(
    user: &str,
    rng: Option<Box<dyn super::RandomSource>>,
) -> Result<(Tunnel, PublicParams), String> {
    let msk = master_secret(DOMAIN).map_err(|e| e.to_string())?;
    let params = PublicParams::new(DOMAIN, msk.p_pub(), "https://pkg.biloxi.com:8443")
        .map_err(|e| e.to_string())?;
    let aor = Aor::parse(&format!("sip:{user}@{DOMAIN}")).map_err(|e| e.to_string())?;
    let mut t = match rng {
        Some(r) => Tunnel::with_random(aor.clone(), TunnelConfig::default(), r),
        None => Tunnel::new(aor.clone(), TunnelConfig::default()),
    };
    t.add_params(params.clone());
    let id = Identity::new(aor, Period::month_at(UNIX_TIME));
    t.add_keys(&extract(&msk, &id)).map_err(|e| e.to_string())?;
    Ok((t, params))
}

/// The recorded random source of a vector user.
pub fn vector_random(user: &str) -> RecordedRandom {
    RecordedRandom::new(format!("IBESIP-V01 tunnel vector {user}").as_bytes())
}

/// Builds the tunnel known-answer document.
pub fn generate() -> Result<Value, String> {
    let alice_rng = Shared(Arc::new(Mutex::new(vector_random("alice"))));
    let bob_rng = Shared(Arc::new(Mutex::new(vector_random("bob"))));
    let (mut alice, _) = vector_tunnel("alice", Some(Box::new(alice_rng.clone())))?;
    let (mut bob, _) = vector_tunnel("bob", Some(Box::new(bob_rng.clone())))?;
    let now = vector_time();
    let mut messages = Vec::new();
    for (name, from_alice, inner) in dialog() {
        let (sender, receiver, rng) = if from_alice {
            (&mut alice, &mut bob, &alice_rng)
        } else {
            (&mut bob, &mut alice, &bob_rng)
        };
        let outer = sender
            .seal(now, &inner)
            .map_err(|e| format!("{name}: {e}"))?;
        receiver
            .open(now, &outer)
            .map_err(|e| format!("{name}: {e}"))?;
        let random: serde_json::Map<String, Value> = rng
            .take()
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(hex::encode(v))))
            .collect();
        messages.push(json!({
            "name": name,
            "direction": if from_alice { 0 } else { 1 },
            "inner_hex": hex::encode(&inner),
            "outer_hex": hex::encode(&outer),
            "random": random,
        }));
    }
    let msk = master_secret(DOMAIN).map_err(|e| e.to_string())?;
    Ok(json!({
        "suite": "IBESIP-V01",
        "domain": DOMAIN,
        "master_secret": hex::encode(&msk.to_bytes()[..]),
        "period": Period::month_at(UNIX_TIME).as_str(),
        "unix_time": UNIX_TIME,
        "messages": messages,
    }))
}

/// A typical call as an ordinary SIP phone sends it (after RFC 3665
/// section 3.1, full header names, the usual Allow/Supported/User-Agent
/// headers, an SDP offer with PCMU, PCMA, telephone-event and SDES keys),
/// between alice and bob of [`DOMAIN`], on loopback. Used by the size
/// report and the benches: (name, sent by alice, bytes).
pub fn typical_call() -> Vec<(&'static str, bool, Vec<u8>)> {
    let sdp = |user: &str, port: u16| {
        format!(
            "v=0\r\no={user} 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/SAVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n\
             a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n\
             a=ibesip-dh:3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08\r\n"
        )
    };
    let (sdp_a, sdp_b) = (sdp("alice", 49170), sdp("bob", 3456));
    let via = "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnashds8;rport";
    let via_r =
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnashds8;rport=5070;received=127.0.0.1";
    let from = "From: \"Alice\" <sip:alice@biloxi.com>;tag=9fxced76sl";
    let to = "To: \"Bob\" <sip:bob@biloxi.com>";
    let to_t = "To: \"Bob\" <sip:bob@biloxi.com>;tag=8321234356";
    let cid = "Call-ID: 3848276298220188511A7Q";
    let ua = "User-Agent: ibephone/0.1";
    let allow = "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, INFO, UPDATE";
    let supported = "Supported: replaces, timer";
    messages(
        "Content-Length",
        [
        (
                "INVITE sip:bob@biloxi.com SIP/2.0",
                &[via, "Max-Forwards: 70", to, from, cid, "CSeq: 314159 INVITE", "Contact: <sip:alice@127.0.0.1:5070;transport=udp>", ua, allow, supported, "Content-Type: application/sdp"],
                &sdp_a,
        ),
        (
                "SIP/2.0 180 Ringing",
                &[via_r, to_t, from, cid, "CSeq: 314159 INVITE", "Contact: <sip:bob@127.0.0.1:5080;transport=udp>", "Server: ibephone/0.1", allow],
                "",
        ),
        (
                "SIP/2.0 200 OK",
                &[via_r, to_t, from, cid, "CSeq: 314159 INVITE", "Contact: <sip:bob@127.0.0.1:5080;transport=udp>", "Server: ibephone/0.1", allow, supported, "Content-Type: application/sdp"],
                &sdp_b,
        ),
        (
                "ACK sip:bob@127.0.0.1:5080;transport=udp SIP/2.0",
                &["Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK74bf9;rport", "Max-Forwards: 70", to_t, from, cid, "CSeq: 314159 ACK", ua],
                "",
        ),
        (
                "BYE sip:bob@127.0.0.1:5080;transport=udp SIP/2.0",
                &["Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye77;rport", "Max-Forwards: 70", to_t, from, cid, "CSeq: 314160 BYE", ua, allow],
                "",
        ),
        (
                "SIP/2.0 200 OK",
                &["Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye77;rport=5070;received=127.0.0.1", to_t, from, cid, "CSeq: 314160 BYE", "Server: ibephone/0.1"],
                "",
        ),
        ],
    )
}
