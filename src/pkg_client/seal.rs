//! Encryption at rest: AES-256-GCM under a 256-bit key that comes from a
//! random key file (0600) or from a passphrase through Argon2id. Used by the
//! client's key store, by `pkg-admin extract` files and by the server for
//! its master secret, so there is one implementation of each.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use core::fmt;
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::io::Write;
use std::path::Path;
use zeroize::Zeroizing;

use crate::ibe::encoding::{b64_decode, b64_encode};

/// What went wrong while sealing or opening.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The ciphertext does not open under this key (wrong key or
    /// passphrase, or tampered data).
    #[error("cannot decrypt: wrong key or passphrase, or the data was altered")]
    Open,
    /// The sealed text is not well formed.
    #[error("malformed sealed data: {0}")]
    Malformed(String),
    /// The Argon2id parameters are not acceptable.
    #[error("invalid key derivation parameters: {0}")]
    Kdf(String),
    /// The operating system's random generator failed.
    #[error("random number generator failed")]
    Rng,
    /// A key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Argon2id parameters (memory in KiB, passes, lanes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_kib: u32,
    /// Number of passes.
    pub t: u32,
    /// Parallelism.
    pub p: u32,
}

impl KdfParams {
    /// Parameters for passphrase-protected files: 64 MiB, 3 passes, one
    /// lane (about 0.2 s on one core; a file is opened rarely).
    pub const FILE: KdfParams = KdfParams {
        m_kib: 65_536,
        t: 3,
        p: 1,
    };

    /// The `argon2` crate's Argon2id instance for these parameters.
    pub fn argon2(&self) -> Result<argon2::Argon2<'static>, SealError> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| SealError::Kdf(e.to_string()))?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }
}

/// An AES-256-GCM key; wiped on drop, never printed.
#[derive(Clone)]
pub struct SealKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey([redacted])")
    }
}

/// `N` bytes from the operating system's generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], SealError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| SealError::Rng)?;
    Ok(b)
}

impl SealKey {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SealKey(Zeroizing::new(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, SealError> {
        Ok(SealKey::from_bytes(random_bytes()?))
    }

    /// Argon2id(passphrase, salt) with `params`.
    pub fn from_passphrase(
        passphrase: &[u8],
        salt: &[u8],
        params: KdfParams,
    ) -> Result<Self, SealError> {
        let mut out = Zeroizing::new([0u8; 32]);
        params
            .argon2()?
            .hash_password_into(passphrase, salt, &mut out[..])
            .map_err(|e| SealError::Kdf(e.to_string()))?;
        Ok(SealKey(out))
    }

    /// An independent key for another purpose: HKDF-SHA256 with `label`.
    pub fn derive(&self, label: &[u8]) -> SealKey {
        let hk = Hkdf::<Sha256>::new(None, &self.0[..]);
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(label, &mut out[..]);
        SealKey(out)
    }

    /// Reads a 32-byte key file, or creates it (mode 0600, `create_new`)
    /// when it does not exist.
    pub fn load_or_create_file(path: &Path) -> Result<Self, SealError> {
        let err = |source| SealError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "a key file holds exactly 32 bytes",
                    ))
                })?;
                Ok(SealKey::from_bytes(arr))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SealKey::generate()?;
                write_secret_file(path, &key.0[..]).map_err(err)?;
                Ok(key)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Encrypts `plaintext` bound to `aad`: base64url(nonce(12) || ct || tag).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<String, SealError> {
        let nonce: [u8; 12] = random_bytes()?;
        let cipher = Aes256Gcm::new_from_slice(&self.0[..]).map_err(|_| SealError::Open)?;
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SealError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(b64_encode(&out))
    }

    /// Opens what [`SealKey::seal`] made with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let raw = b64_decode("sealed data", sealed.trim())
            .map_err(|e| SealError::Malformed(e.to_string()))?;
        if raw.len() < 12 + 16 {
            return Err(SealError::Malformed("too short".into()));
        }
        let cipher = Aes256Gcm::new_from_slice(&self.0[..]).map_err(|_| SealError::Open)?;
        let pt = cipher
            .decrypt(
                Nonce::from_slice(&raw[..12]),
                Payload {
                    msg: &raw[12..],
                    aad,
                },
            )
            .map_err(|_| SealError::Open)?;
        Ok(Zeroizing::new(pt))
    }
}

/// Writes a new file with mode 0600 (fails if it exists).
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = secret_file_options().open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Replaces `path` atomically with a 0600 file holding `bytes` (written
/// beside it, then renamed).
pub fn replace_secret_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    write_secret_file(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Create-new, write-only, mode 0600 on unix. Windows has no mode bits:
/// the file inherits the ACL of its directory, the per-user profile's data
/// directory (the user, SYSTEM and Administrators only).
fn secret_file_options() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// A passphrase-protected document: Argon2id parameters and salt, then the
/// sealed bytes. `format` names what the plaintext is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PassphraseFile {
    /// What the plaintext is (e.g. `ibephone-keys-v1`).
    pub format: String,
    /// Argon2id parameters.
    pub kdf: KdfParams,
    /// Argon2id salt, base64url.
    pub salt: String,
    /// `SealKey::seal` output with `format` as associated data.
    pub sealed: String,
}

impl PassphraseFile {
    /// Seals `plaintext` under `passphrase`.
    pub fn seal(
        format: &str,
        passphrase: &[u8],
        kdf: KdfParams,
        plaintext: &[u8],
    ) -> Result<Self, SealError> {
        let salt: [u8; 16] = random_bytes()?;
        let key = SealKey::from_passphrase(passphrase, &salt, kdf)?;
        Ok(PassphraseFile {
            format: format.to_string(),
            kdf,
            salt: b64_encode(&salt),
            sealed: key.seal(format.as_bytes(), plaintext)?,
        })
    }

    /// Opens the document; `format` must match.
    pub fn open(&self, format: &str, passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if self.format != format {
            return Err(SealError::Malformed(format!(
                "expected a {format} file, got {:?}",
                self.format
            )));
        }
        // Refuse absurd costs from a hostile file (at most 1 GiB, 10 passes).
        if self.kdf.m_kib > 1 << 20 || self.kdf.t > 10 || self.kdf.p > 16 {
            return Err(SealError::Kdf("parameters too expensive".into()));
        }
        let salt =
            b64_decode("salt", &self.salt).map_err(|e| SealError::Malformed(e.to_string()))?;
        let key = SealKey::from_passphrase(passphrase, &salt, self.kdf)?;
        key.open(format.as_bytes(), &self.sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn seal_round_trip_and_binding() {
        let k = SealKey::generate().unwrap();
        let s = k.seal(b"a", b"hello").unwrap();
        assert_eq!(&k.open(b"a", &s).unwrap()[..], b"hello");
        assert!(matches!(k.open(b"b", &s), Err(SealError::Open)));
        assert!(SealKey::generate().unwrap().open(b"a", &s).is_err());
        assert!(k.open(b"a", "AAAA").is_err());
        assert!(format!("{k:?}").contains("redacted"));
    }

    #[test]
    fn passphrase_file() {
        let f = PassphraseFile::seal("x-v1", b"pw", FAST, b"data").unwrap();
        assert_eq!(&f.open("x-v1", b"pw").unwrap()[..], b"data");
        assert!(f.open("x-v1", b"other").is_err());
        assert!(f.open("y-v1", b"pw").is_err());
    }

    #[test]
    fn key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let a = SealKey::load_or_create_file(&p).unwrap();
        let b = SealKey::load_or_create_file(&p).unwrap();
        assert_eq!(a.0, b.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
