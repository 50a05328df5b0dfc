//! `pkg-admin dkg`: a threshold provider set up without a dealer, as an
//! offline ceremony with files (issue 16), since the operators of the `n`
//! servers may not reach each other directly. The mathematics is
//! [`ibephone::ibe::dkg`] (Pedersen's joint Feldman VSS); this module is
//! the ceremony: its files, the encryption of each share to its server,
//! and what each server stores at the end.
//!
//! 1. `dkg join --index I` (each operator): this server's TLS certificate
//!    and a fresh X25519 ceremony key (kept in `data_dir`, 0600, deleted by
//!    `finish`); writes the public *member file* (index, `pkg_url`, TLS
//!    pin, ceremony key). The member files are exchanged.
//! 2. `dkg start --domain D --threshold T/N --member F...` (each operator,
//!    all member files): a fresh polynomial; writes the *dealing file*:
//!    the commitments and, for every server, its share encrypted to its
//!    ceremony key. Every operator publishes its dealing file in the same
//!    round, before seeing the others' (that is what keeps a late dealer
//!    from biasing `P_pub`).
//! 3. `dkg finish --domain D --threshold T/N --member F... --dealing F...`
//!    (each operator, all files): decrypts its share from each dealing,
//!    checks it against the dealer's commitments (a dealer whose share
//!    fails, or does not decrypt, is named and nothing is stored), keeps
//!    `s_i` sealed like a master secret, and stores the parameters with
//!    `threshold` (`"dealer"` absent: false). Every server computes the same
//!    parameters, so the fingerprint printed is the same everywhere.
//!
//! Share encryption (hand-written from maintained primitives: x25519-dalek,
//! hkdf, aes-gcm): an ephemeral X25519 key per share; AES-256-GCM under
//! `HKDF-SHA256(ikm = X25519(e, K_i), salt = E || K_i, info = "ibephone dkg
//! share v1" || transcript)` with a zero nonce (the key is used once), and
//! as associated data the transcript: SHA-256 over the domain, `t`, `n`,
//! the member list, the dealer, the recipient and the commitments. A share
//! therefore opens only for its server, in this ceremony, under these
//! commitments.

use crate::admin::{open_uninitialized, parse_threshold, AdminError};
use crate::config::Config;
use crate::vault::{Vault, META_THRESHOLD_INDEX};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ibephone::ibe::dkg::{finish as dkg_finish, Dealing, Received};
use ibephone::ibe::encoding::g1_from_bytes_nonidentity;
use ibephone::ibe::threshold::{Threshold, ThresholdServer};
use ibephone::ibe::PublicParams;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// The `ceremony` value of every ceremony file.
pub const CEREMONY: &str = "ibephone-dkg-v1";
/// The ceremony key's file in `data_dir`.
pub const KEY_FILE: &str = "dkg-ceremony.json";

type Result<T> = std::result::Result<T, AdminError>;

/// A member file: what every server publishes at `join`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Always [`CEREMONY`].
    pub ceremony: String,
    /// The server's index `i` (1..=n).
    pub index: u32,
    /// Its base URL.
    pub pkg_url: String,
    /// SHA-256 of its TLS certificate, hex.
    pub tls_sha256: String,
    /// Its X25519 ceremony key, base64url.
    pub dkg_key: String,
}

/// One encrypted share of a dealing.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct SealedShare {
    /// The recipient's index.
    pub to: u32,
    /// The ephemeral X25519 key, base64url.
    pub epk: String,
    /// AES-256-GCM ciphertext and tag of the 32-byte share, base64url.
    pub ct: String,
}

/// A dealing file: what every server publishes at `start`.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct DealingFile {
    /// Always [`CEREMONY`].
    pub ceremony: String,
    /// The SIP domain.
    pub domain: String,
    /// Shares needed.
    pub t: u32,
    /// Servers.
    pub n: u32,
    /// SHA-256 of the member list (hex): every file of one ceremony names
    /// the same members.
    pub members: String,
    /// The dealer's index.
    pub dealer: u32,
    /// Its commitments `C_k`, compressed G1, base64url.
    pub commitments: Vec<String>,
    /// Its share for every server.
    pub shares: Vec<SealedShare>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    index: u32,
    secret: String,
}

fn invalid(s: impl Into<String>) -> AdminError {
    AdminError::Invalid(s.into())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AdminError::File(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
}

fn write_new(path: &Path, text: &str, private: bool) -> Result<()> {
    use std::io::Write;
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    // Elsewhere the file inherits the data directory's ACL, which is the
    // operator's own (the same rule as the master key file).
    #[cfg(not(unix))]
    let _ = private;
    let mut f = open
        .open(path)
        .map_err(|e| AdminError::File(format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| AdminError::File(format!("{}: {e}", path.display())))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64<const N: usize>(what: &str, s: &str) -> Result<[u8; N]> {
    URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|v| <[u8; N]>::try_from(v).ok())
        .ok_or_else(|| invalid(format!("{what} is not {N} base64url bytes")))
}

/// `dkg join`: this server's certificate and ceremony key; writes its
/// member file to `out`.
pub fn join(config: &Config, index: u32, out: &Path) -> Result<()> {
    let url = config
        .pkg_url
        .clone()
        .ok_or_else(|| invalid("the configuration has no pkg_url"))?;
    if index == 0 || index > ibephone::ibe::threshold::MAX_SERVERS {
        return Err(invalid(format!("--index {index}: 1 to 64")));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| AdminError::File(format!("{}: {e}", config.data_dir.display())))?;
    let key_path = config.data_dir.join(KEY_FILE);
    if key_path.exists() {
        return Err(AdminError::AlreadyExists(format!(
            "{} exists: this server joined a ceremony already (finish it, or remove the file to start over)",
            key_path.display()
        )));
    }
    let names = crate::tls::cert_names(Some(&url));
    crate::tls::ensure_cert(&config.cert_path(), &config.key_path(), &names)?;
    let tls = crate::tls::load(&config.cert_path(), &config.key_path())?;
    let mut secret_bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut secret_bytes[..])
        .map_err(|e| AdminError::Other(anyhow::anyhow!("random generator: {e}")))?;
    let secret = StaticSecret::from(*secret_bytes);
    let member = Member {
        ceremony: CEREMONY.into(),
        index,
        pkg_url: url,
        tls_sha256: hex::encode(tls.fingerprint),
        dkg_key: b64(PublicKey::from(&secret).as_bytes()),
    };
    let key = Zeroizing::new(
        serde_json::to_string(&KeyFile {
            index,
            secret: b64(&secret_bytes[..]),
        })
        .map_err(|e| AdminError::Other(e.into()))?,
    );
    let text = serde_json::to_string_pretty(&member).map_err(|e| AdminError::Other(e.into()))?;
    write_new(out, &text, false)?;
    write_new(&key_path, &key, true)?;
    println!(
        "server {index} joined; send {} to the other operators",
        out.display()
    );
    Ok(())
}

/// The member files, checked: one per index 1..=n, distinct URLs and keys.
fn load_members(paths: &[PathBuf], n: u32) -> Result<Vec<Member>> {
    let mut members: Vec<Member> = paths.iter().map(|p| read_json(p)).collect::<Result<_>>()?;
    members.sort_by_key(|m| m.index);
    if members.len() != n as usize || members.iter().zip(1..).any(|(m, i)| m.index != i) {
        return Err(invalid(format!(
            "{n} member files needed, one for each server 1..={n}"
        )));
    }
    for (k, m) in members.iter().enumerate() {
        if m.ceremony != CEREMONY {
            return Err(invalid(format!(
                "member {}: not a {CEREMONY} file",
                m.index
            )));
        }
        if !m.pkg_url.starts_with("https://") {
            return Err(invalid(format!(
                "member {}: pkg_url is not https://",
                m.index
            )));
        }
        let pin = hex::decode(&m.tls_sha256).ok().filter(|p| p.len() == 32);
        if pin.is_none() {
            return Err(invalid(format!(
                "member {}: tls_sha256 is not 32 hex bytes",
                m.index
            )));
        }
        unb64::<32>("dkg_key", &m.dkg_key)?;
        if members[..k]
            .iter()
            .any(|o| o.pkg_url == m.pkg_url || o.dkg_key == m.dkg_key)
        {
            return Err(invalid(format!(
                "member {}: its pkg_url or ceremony key is another member's",
                m.index
            )));
        }
    }
    Ok(members)
}

fn members_hash(members: &[Member]) -> [u8; 32] {
    let mut h = Sha256::new();
    for m in members {
        for part in [
            m.index.to_string().as_str(),
            &m.pkg_url,
            &m.tls_sha256,
            &m.dkg_key,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
    }
    h.finalize().into()
}

/// The associated data binding a share to its ceremony, recipient and
/// commitments.
fn transcript(
    domain: &str,
    t: u32,
    n: u32,
    members: &[u8; 32],
    dealer: u32,
    to: u32,
    commitments: &[[u8; 48]],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"ibephone dkg transcript v1");
    h.update((domain.len() as u64).to_be_bytes());
    h.update(domain.as_bytes());
    for v in [t, n, dealer, to] {
        h.update(v.to_be_bytes());
    }
    h.update(members);
    for c in commitments {
        h.update(c);
    }
    h.finalize().into()
}

fn share_cipher(
    shared: &[u8; 32],
    epk: &[u8; 32],
    to_key: &[u8; 32],
    aad: &[u8; 32],
) -> Result<Aes256Gcm> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(epk);
    salt[32..].copy_from_slice(to_key);
    let mut info = b"ibephone dkg share v1".to_vec();
    info.extend_from_slice(aad);
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(&info, &mut key[..])
        .map_err(|e| AdminError::Other(anyhow::anyhow!("HKDF: {e}")))?;
    Aes256Gcm::new_from_slice(&key[..])
        .map_err(|e| AdminError::Other(anyhow::anyhow!("AES-GCM key: {e}")))
}

/// `dkg start`: this server's dealing, its shares encrypted to every
/// member; written to `out`.
pub fn start(
    config: &Config,
    domain: &str,
    spec: &str,
    members: &[PathBuf],
    out: &Path,
) -> Result<()> {
    let (t, n) = parse_threshold(spec)?;
    let key: KeyFile = read_json(&config.data_dir.join(KEY_FILE))?;
    let members = load_members(members, n)?;
    let me = own_member(&members, &key)?;
    let hash = members_hash(&members);
    let dealing = Dealing::new(me.index, t, n).map_err(|e| invalid(e.to_string()))?;
    let commitments: Vec<[u8; 48]> = dealing
        .commitments()
        .iter()
        .map(|c| c.to_compressed())
        .collect();
    let mut shares = Vec::new();
    for m in &members {
        let to_key = unb64::<32>("dkg_key", &m.dkg_key)?;
        let mut eph = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut eph[..])
            .map_err(|e| AdminError::Other(anyhow::anyhow!("random generator: {e}")))?;
        let eph = StaticSecret::from(*eph);
        let epk = PublicKey::from(&eph).to_bytes();
        let shared = Zeroizing::new(eph.diffie_hellman(&PublicKey::from(to_key)).to_bytes());
        let aad = transcript(domain, t, n, &hash, me.index, m.index, &commitments);
        let share = dealing
            .share_for(m.index)
            .ok_or_else(|| invalid(format!("no share for member {}", m.index)))?;
        let ct = share_cipher(&shared, &epk, &to_key, &aad)?
            .encrypt(
                Nonce::from_slice(&[0u8; 12]),
                Payload {
                    msg: share,
                    aad: &aad,
                },
            )
            .map_err(|_| AdminError::Other(anyhow::anyhow!("AES-GCM encryption failed")))?;
        shares.push(SealedShare {
            to: m.index,
            epk: b64(&epk),
            ct: b64(&ct),
        });
    }
    let file = DealingFile {
        ceremony: CEREMONY.into(),
        domain: domain.into(),
        t,
        n,
        members: hex::encode(hash),
        dealer: me.index,
        commitments: commitments.iter().map(|c| b64(c)).collect(),
        shares,
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| AdminError::Other(e.into()))?;
    write_new(out, &text, false)?;
    println!(
        "server {} dealt {t}-of-{n} for {domain}; send {} to the other operators",
        me.index,
        out.display()
    );
    Ok(())
}

fn own_member<'a>(members: &'a [Member], key: &KeyFile) -> Result<&'a Member> {
    let secret = StaticSecret::from(unb64::<32>("ceremony key", &key.secret)?);
    let public = b64(PublicKey::from(&secret).as_bytes());
    members
        .iter()
        .find(|m| m.index == key.index && m.dkg_key == public)
        .ok_or_else(|| {
            invalid(format!(
                "no member file is this server's (index {} with its ceremony key)",
                key.index
            ))
        })
}

/// Opens this server's share of one dealing.
fn open_share(
    secret: &StaticSecret,
    own_key: &[u8; 32],
    file: &DealingFile,
    own: u32,
    aad: &[u8; 32],
) -> Option<Zeroizing<[u8; 32]>> {
    let sealed = file.shares.iter().find(|s| s.to == own)?;
    let epk = unb64::<32>("epk", &sealed.epk).ok()?;
    let ct = URL_SAFE_NO_PAD.decode(&sealed.ct).ok()?;
    let shared = Zeroizing::new(secret.diffie_hellman(&PublicKey::from(epk)).to_bytes());
    let plain = Zeroizing::new(
        share_cipher(&shared, &epk, own_key, aad)
            .ok()?
            .decrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: &ct, aad })
            .ok()?,
    );
    <[u8; 32]>::try_from(plain.as_slice())
        .ok()
        .map(Zeroizing::new)
}

/// `dkg finish`: checks every dealing's share for this server, stores the
/// share of the master secret and the parameters.
pub async fn finish(
    config: &Config,
    domain: &str,
    spec: &str,
    members: &[PathBuf],
    dealings: &[PathBuf],
) -> Result<()> {
    let (t, n) = parse_threshold(spec)?;
    let key_path = config.data_dir.join(KEY_FILE);
    let key: KeyFile = read_json(&key_path)?;
    let members = load_members(members, n)?;
    let me = own_member(&members, &key)?.clone();
    let hash = members_hash(&members);
    let secret = StaticSecret::from(unb64::<32>("ceremony key", &key.secret)?);
    let own_key = PublicKey::from(&secret).to_bytes();
    let mut received = Vec::new();
    for path in dealings {
        let file: DealingFile = read_json(path)?;
        if file.ceremony != CEREMONY
            || file.domain != domain
            || file.t != t
            || file.n != n
            || file.members != hex::encode(hash)
        {
            return Err(invalid(format!(
                "{}: dealing of dealer {} belongs to another ceremony (domain, threshold or members differ)",
                path.display(),
                file.dealer
            )));
        }
        let commitments: Vec<[u8; 48]> = file
            .commitments
            .iter()
            .map(|c| unb64::<48>("commitment", c))
            .collect::<Result<_>>()?;
        let points = commitments
            .iter()
            .map(|c| g1_from_bytes_nonidentity("commitment", c))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("dealer {}: {e}", file.dealer)))?;
        let aad = transcript(domain, t, n, &hash, file.dealer, me.index, &commitments);
        let share = open_share(&secret, &own_key, &file, me.index, &aad).ok_or_else(|| {
            invalid(format!(
                "dealer {}: its share for server {} does not decrypt (a wrong or damaged dealing); run the ceremony again without trusting it",
                file.dealer, me.index
            ))
        })?;
        received.push(Received {
            dealer: file.dealer,
            commitments: points,
            share,
        });
    }
    let generated = dkg_finish(me.index, t, n, &received).map_err(|e| invalid(e.to_string()))?;

    let store = open_uninitialized(config).await?;
    let servers = members
        .iter()
        .zip(&generated.public_shares)
        .map(|(m, (_, p_pub_i))| {
            let mut pin = [0u8; 32];
            hex::decode_to_slice(&m.tls_sha256, &mut pin)
                .map_err(|_| invalid(format!("member {}: tls_sha256", m.index)))?;
            Ok(ThresholdServer {
                index: m.index,
                pkg_url: m.pkg_url.clone(),
                p_pub_i: *p_pub_i,
                tls_sha256: pin,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let params = PublicParams::new(domain, generated.p_pub, &members[0].pkg_url)
        .and_then(|p| {
            p.with_threshold(Threshold {
                t,
                dealer: false,
                servers,
            })
        })
        .map_err(|e| invalid(e.to_string()))?;
    let vault = Vault::create(config, &store).await?;
    vault
        .store_master(&store, params.domain(), generated.share.secret())
        .await?;
    store
        .meta_set(META_THRESHOLD_INDEX, &me.index.to_string(), true)
        .await?;
    store.meta_set("params", &params.to_json(), true).await?;
    std::fs::remove_file(&key_path)
        .map_err(|e| AdminError::File(format!("{}: {e}", key_path.display())))?;
    println!(
        "server {} holds its share of the {t}-of-{n} threshold PKG for {domain} (no dealer: no process held s)",
        me.index
    );
    println!(
        "parameter fingerprint: {}",
        crate::admin::with_short(&params.fingerprint())
    );
    Ok(())
}
