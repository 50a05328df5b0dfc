//! Passwords: Argon2id PHC hashes for PKG logins, and the two SIP digest
//! HA1 values (`MD5(user:realm:password)`, `SHA-256(user:realm:password)`,
//! RFC 3261 / RFC 8760) for a registrar on the same user database.

use crate::config::Argon2Config;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use md5::Md5;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;
use zeroize::Zeroizing;

/// SIP digest algorithms whose HA1 is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// `MD5` (RFC 3261).
    Md5,
    /// `SHA-256` (RFC 8760).
    Sha256,
}

impl DigestAlgorithm {
    /// The `algorithm` parameter value.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }
}

/// What is stored for a password: the PHC string and both HA1s (hex).
pub struct PasswordRecord {
    /// Argon2id PHC string (`$argon2id$v=19$m=...`).
    pub phc: String,
    /// `MD5(user:realm:password)`, lower-case hex.
    pub ha1_md5: Zeroizing<String>,
    /// `SHA-256(user:realm:password)`, lower-case hex.
    pub ha1_sha256: Zeroizing<String>,
}

impl std::fmt::Debug for PasswordRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordRecord([redacted])")
    }
}

/// Password hashing errors.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Bad Argon2 parameters or hashing failure.
    #[error("password hashing: {0}")]
    Hash(String),
    /// The password is not acceptable.
    #[error("{0}")]
    Weak(&'static str),
}

/// The Argon2id hasher for `cfg`.
pub fn argon2(cfg: &Argon2Config) -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(cfg.m_kib, cfg.t, cfg.p, None)
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` for `user` in `realm` (the SIP domain).
pub fn hash_password(
    user: &str,
    realm: &str,
    password: &str,
    cfg: &Argon2Config,
) -> Result<PasswordRecord, PasswordError> {
    if password.len() < 8 {
        return Err(PasswordError::Weak(
            "password must have at least 8 characters",
        ));
    }
    if password.len() > 1024 {
        return Err(PasswordError::Weak("password longer than 1024 bytes"));
    }
    let phc = phc_hash(password, cfg)?;
    Ok(record_with_phc(user, realm, password, phc))
}

/// A record from an existing PHC hash of `password` (the HA1 values are
/// computed for `user` and `realm`).
pub fn record_with_phc(user: &str, realm: &str, password: &str, phc: String) -> PasswordRecord {
    let (ha1_md5, ha1_sha256) = digest_ha1s(user, realm, password);
    PasswordRecord {
        phc,
        ha1_md5,
        ha1_sha256,
    }
}

/// The two digest HA1s (MD5, SHA-256; lower-case hex) of `password` for
/// `user` in `realm`.
pub fn digest_ha1s(
    user: &str,
    realm: &str,
    password: &str,
) -> (Zeroizing<String>, Zeroizing<String>) {
    let input = Zeroizing::new(format!("{user}:{realm}:{password}"));
    (
        Zeroizing::new(hex::encode(Md5::digest(input.as_bytes()))),
        Zeroizing::new(hex::encode(Sha256::digest(input.as_bytes()))),
    )
}

/// A PHC Argon2id hash of `password` with a fresh salt.
pub fn phc_hash(password: &str, cfg: &Argon2Config) -> Result<String, PasswordError> {
    let salt_bytes: [u8; 16] = ibephone::pkg_client::seal::random_bytes()
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(argon2(cfg)?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| PasswordError::Hash(e.to_string()))?
        .to_string())
}

/// Argon2 working memory kept between verifications: a login reuses a
/// buffer instead of allocating (and the kernel faulting in and clearing)
/// the configured memory every time; at most as many buffers as
/// verifications ever ran at once (the server bounds them by its Argon2
/// permits). Every buffer is wiped after each use, so no password-derived
/// state stays in it between logins.
#[derive(Default)]
pub struct ArgonMemory(std::sync::Mutex<Vec<Vec<Block>>>);

impl ArgonMemory {
    /// Verifies `password` against a PHC string (its own algorithm,
    /// version and parameters are used), in a kept buffer; false for a
    /// malformed hash. The computed hash is compared in constant time.
    pub fn verify_password(&self, phc: &str, password: &str) -> bool {
        let mut blocks = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let ok = verify_in(&mut blocks, phc, password);
        blocks.iter_mut().for_each(Zeroize::zeroize);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(blocks);
        ok
    }
}

/// [`ArgonMemory::verify_password`] in `blocks` (grown as needed).
fn verify_in(blocks: &mut Vec<Block>, phc: &str, password: &str) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(h.algorithm) else {
        return false;
    };
    let Ok(version) = h.version.map_or(Ok(Version::default()), Version::try_from) else {
        return false;
    };
    let Ok(params) = Params::try_from(&h) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    if blocks.len() < params.block_count() {
        blocks.resize(params.block_count(), Block::default());
    }
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    let argon = Argon2::new(algorithm, version, params);
    argon
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out[..], &mut blocks[..])
        .is_ok()
        && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verify_and_ha1() {
        let cfg = Argon2Config {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let r = hash_password("alice", "atlanta.invalid", "correct horse", &cfg).unwrap();
        assert!(r.phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let memory = ArgonMemory::default();
        assert!(memory.verify_password(&r.phc, "correct horse"));
        assert!(!memory.verify_password(&r.phc, "wrong horse!"));
        assert!(!memory.verify_password("garbage", "x"));
        // RFC 2617 section 3.5 example: Mufasa:testrealm@host.com:Circle Of Life
        let m = hash_password("Mufasa", "testrealm@host.com", "Circle Of Life", &cfg).unwrap();
        assert_eq!(m.ha1_md5.as_str(), "939e7578ed9e3c518a452acee763bce9");
        assert_eq!(m.ha1_sha256.len(), 64);
        assert!(hash_password("a", "b", "short", &cfg).is_err());
        assert!(!format!("{m:?}").contains("939e"));
    }

    #[test]
    fn kept_memory_verifies_as_the_crate_does_and_is_wiped() {
        use argon2::password_hash::PasswordVerifier;
        let memory = ArgonMemory::default();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        // A small hash, then a bigger one (the buffer grows), then other
        // algorithms and an output length other than 32: each with its own
        // parameters, as the crate's own verifier does.
        let hashes: Vec<String> = [
            (Algorithm::Argon2id, 64, 1, 32),
            (Algorithm::Argon2id, 256, 2, 32),
            (Algorithm::Argon2i, 128, 1, 32),
            (Algorithm::Argon2d, 64, 3, 40),
        ]
        .into_iter()
        .map(|(alg, m, t, len)| {
            let params = Params::new(m, t, 1, Some(len)).unwrap();
            Argon2::new(alg, Version::V0x13, params)
                .hash_password(b"correct horse", &salt)
                .unwrap()
                .to_string()
        })
        .collect();
        for phc in &hashes {
            for pw in ["correct horse", "correct horsf", ""] {
                let theirs = Argon2::default()
                    .verify_password(pw.as_bytes(), &PasswordHash::new(phc).unwrap())
                    .is_ok();
                assert_eq!(memory.verify_password(phc, pw), theirs, "{phc} {pw:?}");
                assert_eq!(theirs, pw == "correct horse");
            }
        }
        // One buffer kept (no two verifications at once), as big as the
        // biggest hash, and wiped.
        let kept = memory.0.lock().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].len(), 256);
        assert!(kept[0].iter().all(|b| b.as_ref().iter().all(|w| *w == 0)));
    }
}
