//! TLS in a capture (SIP over TLS, RFC 3261 26.2): record framing, and
//! TLS 1.3 decryption with the secrets of an NSS key log (the file an
//! agent writes with `--keylog`; Wireshark reads the same lines).
//!
//! Without keys the judge vouches for the framing only: a stream made of
//! whole TLS records (content types 20 to 23) shows nothing in clear but
//! the handshake. With keys, the application data of each connection whose
//! `client_random` the log holds is decrypted (TLS 1.3 with
//! `TLS_AES_128_GCM_SHA256` or `TLS_AES_256_GCM_SHA384`, what rustls
//! negotiates with the ring provider) and the SIP in it is judged like
//! SIP over TCP. No maintained crate decrypts TLS records from a key log
//! (rustls decrypts only its own sessions), so the record layer of RFC
//! 8446 5.2 and its key schedule (7.3) are written out here.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use hkdf::Hkdf;
use sha2::{Sha256, Sha384};
use std::collections::HashMap;
use zeroize::Zeroizing;

/// Content type of a handshake record.
const HANDSHAKE: u8 = 22;
/// Content type of an application data record.
const APPLICATION_DATA: u8 = 23;
/// The largest TLSCiphertext fragment (RFC 8446 5.2: 2^14 + 256).
const MAX_RECORD: usize = (1 << 14) + 256;

/// TLS secrets read from an NSS key log; other lines are ignored.
#[derive(Default)]
pub struct TlsKeys {
    secrets: HashMap<(String, [u8; 32]), Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for TlsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsKeys({} secrets, [redacted])", self.secrets.len())
    }
}

impl TlsKeys {
    /// Takes every `LABEL <client random: 64 hex> <secret: hex>` line of
    /// `text`; lines of other shapes (the tunnel's, comments) are skipped.
    pub fn parse(text: &str) -> TlsKeys {
        let mut keys = TlsKeys::default();
        for line in text.lines() {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            let [label, random, secret] = f.as_slice() else {
                continue;
            };
            if !label
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
            {
                continue;
            }
            let (Ok(random), Ok(secret)) = (hex::decode(random), hex::decode(secret)) else {
                continue;
            };
            let Ok(random) = <[u8; 32]>::try_from(random) else {
                continue;
            };
            keys.secrets
                .insert((label.to_string(), random), Zeroizing::new(secret));
        }
        keys
    }

    /// Number of secrets.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// True when no secret was found.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    fn get(&self, label: &str, random: &[u8; 32]) -> Option<&[u8]> {
        self.secrets
            .get(&(label.to_string(), *random))
            .map(|s| s.as_slice())
    }
}

/// One TLS record of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset of its header in the stream.
    pub offset: usize,
    /// Content type (20 to 23).
    pub content_type: u8,
    /// The 5-byte header (the AEAD's additional data).
    pub header: [u8; 5],
    /// The fragment.
    pub body: Vec<u8>,
}

/// Whether `bytes` start like a TLS record (a content type 20 to 23 and
/// protocol version 3.1 to 3.4).
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [20..=23, 3, 1..=4, ..])
}

/// Cuts `stream` into TLS records; returns them and how many bytes they
/// take (the rest is an incomplete record or not TLS).
pub fn split_records(stream: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(h) = stream.get(pos..pos + 5) {
        if !looks_like_tls(h) {
            break;
        }
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if len > MAX_RECORD {
            break;
        }
        let Some(body) = stream.get(pos + 5..pos + 5 + len) else {
            break;
        };
        let mut header = [0u8; 5];
        header.copy_from_slice(h);
        out.push(Record {
            offset: pos,
            content_type: h[0],
            header,
            body: body.to_vec(),
        });
        pos += 5 + len;
    }
    (out, pos)
}

/// The `random` of the ClientHello that opens `records`, if it does.
pub fn client_random(records: &[Record]) -> Option<[u8; 32]> {
    let r = records.first().filter(|r| r.content_type == HANDSHAKE)?;
    if r.body.first() != Some(&1) {
        return None;
    }
    r.body.get(6..38)?.try_into().ok()
}

/// The cipher suite of the ServerHello that opens `records`, if it does.
pub fn cipher_suite(records: &[Record]) -> Option<u16> {
    let r = records.first().filter(|r| r.content_type == HANDSHAKE)?;
    if r.body.first() != Some(&2) {
        return None;
    }
    let sid_len = usize::from(*r.body.get(38)?);
    let at = 39 + sid_len;
    let s = r.body.get(at..at + 2)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// A TLS 1.3 cipher suite this module decrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suite {
    Aes128Sha256,
    Aes256Sha384,
}

impl Suite {
    fn of(id: u16) -> Option<Suite> {
        match id {
            0x1301 => Some(Suite::Aes128Sha256),
            0x1302 => Some(Suite::Aes256Sha384),
            _ => None,
        }
    }
}

/// HKDF-Expand-Label(secret, label, "", len) of RFC 8446 7.1.
fn expand_label(
    suite: Suite,
    secret: &[u8],
    label: &str,
    len: usize,
) -> Option<Zeroizing<Vec<u8>>> {
    let full = format!("tls13 {label}");
    let mut info = Vec::with_capacity(4 + full.len());
    info.extend_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
    info.push(u8::try_from(full.len()).ok()?);
    info.extend_from_slice(full.as_bytes());
    info.push(0);
    let mut out = Zeroizing::new(vec![0u8; len]);
    match suite {
        Suite::Aes128Sha256 => Hkdf::<Sha256>::from_prk(secret)
            .ok()?
            .expand(&info, &mut out[..])
            .ok()?,
        Suite::Aes256Sha384 => Hkdf::<Sha384>::from_prk(secret)
            .ok()?
            .expand(&info, &mut out[..])
            .ok()?,
    }
    Some(out)
}

/// One direction's traffic keys (RFC 8446 7.3) and record counter.
struct Keys {
    suite: Suite,
    key: Zeroizing<Vec<u8>>,
    iv: Zeroizing<Vec<u8>>,
    seq: u64,
}

impl Keys {
    fn new(suite: Suite, secret: &[u8]) -> Option<Keys> {
        let key_len = match suite {
            Suite::Aes128Sha256 => 16,
            Suite::Aes256Sha384 => 32,
        };
        Some(Keys {
            suite,
            key: expand_label(suite, secret, "key", key_len)?,
            iv: expand_label(suite, secret, "iv", 12)?,
            seq: 0,
        })
    }

    /// Opens one record: the inner content type and content, padding cut.
    fn open(&self, r: &Record) -> Option<(u8, Vec<u8>)> {
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&self.iv);
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        let payload = Payload {
            msg: &r.body,
            aad: &r.header,
        };
        let mut plain = match self.suite {
            Suite::Aes128Sha256 => Aes128Gcm::new_from_slice(&self.key)
                .ok()?
                .decrypt(aes_gcm::Nonce::from_slice(&nonce), payload)
                .ok()?,
            Suite::Aes256Sha384 => Aes256Gcm::new_from_slice(&self.key)
                .ok()?
                .decrypt(aes_gcm::Nonce::from_slice(&nonce), payload)
                .ok()?,
        };
        let end = plain.iter().rposition(|b| *b != 0)?;
        let ty = plain[end];
        plain.truncate(end);
        Some((ty, plain))
    }
}

/// The application data of one direction, record by record: (offset of
/// the record in the stream, bytes).
pub type AppData = Vec<(usize, Vec<u8>)>;

/// Decrypts one direction of a TLS 1.3 connection: `records` of the
/// client (`from_client`) or the server, with the suite of the
/// ServerHello and the secrets the key log holds for `random`. Protected
/// records are tried with the handshake keys first, then the application
/// keys (RFC 8446 7.3); the error says what is missing or failed.
pub fn decrypt_direction(
    records: &[Record],
    suite: u16,
    random: &[u8; 32],
    from_client: bool,
    keys: &TlsKeys,
) -> Result<AppData, String> {
    let suite = Suite::of(suite)
        .ok_or_else(|| format!("cipher suite {suite:#06x} is not one this judge decrypts"))?;
    let (hs, app) = if from_client {
        ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0")
    } else {
        ("SERVER_HANDSHAKE_TRAFFIC_SECRET", "SERVER_TRAFFIC_SECRET_0")
    };
    let secret = |label: &str| {
        keys.get(label, random)
            .ok_or_else(|| format!("the key log has no {label} for this connection"))
    };
    let mut stages = vec![
        Keys::new(suite, secret(hs)?).ok_or("bad handshake secret")?,
        Keys::new(suite, secret(app)?).ok_or("bad traffic secret")?,
    ]
    .into_iter();
    let mut current = stages.next();
    let mut out = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.content_type == APPLICATION_DATA)
    {
        let opened = loop {
            let Some(k) = current.as_mut() else {
                return Err(format!(
                    "the record at offset {} does not open with the logged keys",
                    r.offset
                ));
            };
            if let Some(x) = k.open(r) {
                k.seq += 1;
                break x;
            }
            current = stages.next();
        };
        if opened.0 == APPLICATION_DATA {
            out.push((r.offset, opened.1));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 8448 3 (simple 1-RTT handshake): the server's handshake traffic
    /// secret gives these key and iv.
    #[test]
    fn key_schedule_matches_rfc_8448() {
        let secret =
            hex::decode("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
                .unwrap();
        let k = Keys::new(Suite::Aes128Sha256, &secret).unwrap();
        assert_eq!(hex::encode(&*k.key), "3fce516009c21727d0f2e4e86ee403bc");
        assert_eq!(hex::encode(&*k.iv), "5d313eb2671276ee13000b30");
    }

    #[test]
    fn records_are_framed_and_junk_is_left() {
        let mut s = vec![22, 3, 1, 0, 2, 1, 0];
        s.extend_from_slice(&[23, 3, 3, 0, 1, 9]);
        s.extend_from_slice(b"INVITE");
        let (recs, used) = split_records(&s);
        assert_eq!(recs.len(), 2);
        assert_eq!(used, 13);
        assert_eq!(recs[1].content_type, 23);
        assert!(!looks_like_tls(b"INVITE sip:"));
    }

    #[test]
    fn nss_lines_are_read_and_others_skipped() {
        let r = "ab".repeat(32);
        let text = format!(
            "# c\nIBESIP_KEK {} {}\nCLIENT_TRAFFIC_SECRET_0 {r} {}\nX {r} zz\n",
            "00".repeat(16),
            "11".repeat(32),
            "22".repeat(48)
        );
        let keys = TlsKeys::parse(&text);
        assert_eq!(keys.len(), 1);
        assert!(keys.get("CLIENT_TRAFFIC_SECRET_0", &[0xab; 32]).is_some());
    }

    proptest! {
        #[test]
        fn framing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (recs, used) = split_records(&bytes);
            prop_assert!(used <= bytes.len());
            let _ = client_random(&recs);
            let _ = cipher_suite(&recs);
        }
    }
}
