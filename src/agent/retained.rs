//! The retained secrets of key continuity (spec 6) at rest: one file,
//! sealed (AES-256-GCM) under a key derived from a 32-byte key file (the
//! key store's `store.key` for the desktop app; for a headless agent a
//! `<key file>.retained.key` beside its key file, refused when group or
//! others may access it), written 0600 through a temporary file and a
//! rename ([`crate::pkg_client::sealed_file`], shared with the desktop
//! app's messages). A file that does not open is moved aside
//! (`<stem>.damaged-N.sealed`, `<name>.damaged-N`), never written over, and
//! the store starts empty:
//! the caller gets [`RetainedError::Damaged`] to show, and nothing else
//! (keys, messages, settings) is touched.
//!
//! Plaintext: one line per peer, `hex(peer AOR) SP hex(rs) LF`.

use super::config::KeySource;
use super::media::{peer_aor, RetainedStore};
use crate::media::commit::RetainedSecret;
use crate::pkg_client::seal::SealKey;
use crate::pkg_client::sealed_file::{private_key_file, SealedFile, SealedFileError};
use crate::pkg_client::store;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

const AAD: &[u8] = b"ibephone-retained-v1";
const KEY_LABEL: &[u8] = b"ibephone retained secrets v1";

/// What can go wrong with the retained-secrets file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RetainedError {
    /// The key file cannot be read, created or used (e.g. group or others
    /// may access it).
    #[error("the key of the confirmed-keys file: {0}")]
    Key(#[source] SealedFileError),
    /// The file did not open; it was moved to `kept` and continuity starts
    /// afresh (earlier confirmations are lost, nothing else).
    #[error("the confirmed call keys could not be read ({why}); the file was kept as {kept} and every peer's SAS must be compared again")]
    Damaged {
        /// Why it could not be opened.
        why: String,
        /// Where it is now.
        kept: String,
    },
    /// The file did not open and could not be moved aside: it is left as
    /// is and nothing is written over it.
    #[error("the confirmed call keys could not be read ({why}) and {path} could not be moved aside ({move_error}); new confirmations are not kept until you move or delete it")]
    Stuck {
        /// The file.
        path: String,
        /// Why it could not be opened.
        why: String,
        /// Why it could not be moved.
        move_error: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Where a phone keeps its retained secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedFiles {
    /// The sealed file.
    pub path: PathBuf,
    /// The 32-byte key file its sealing key is derived from.
    pub key_file: PathBuf,
}

/// The name of the retained-secrets file in a key store directory.
pub const STORE_FILE: &str = "retained.sealed";

impl RetainedFiles {
    /// Beside an agent's keys: in its key store directory (sealed under
    /// the store's key file), or next to its key file (`<file>.retained`,
    /// sealed under `<file>.retained.key`).
    pub fn beside(keys: &KeySource) -> Self {
        match keys {
            KeySource::Pkg(p) => Self::in_store(&p.store),
            KeySource::File(f) => {
                let with = |ext: &str| {
                    let mut s = f.as_os_str().to_owned();
                    s.push(ext);
                    PathBuf::from(s)
                };
                RetainedFiles {
                    path: with(".retained"),
                    key_file: with(".retained.key"),
                }
            }
        }
    }

    /// In the key store directory `dir` (the desktop app's `keys/`, wiped
    /// on log out).
    pub fn in_store(dir: &Path) -> Self {
        RetainedFiles {
            path: dir.join(STORE_FILE),
            key_file: dir.join(store::KEY_FILE),
        }
    }
}

/// Retained secrets by peer AOR, sealed in one file.
pub struct SealedRetained {
    file: SealedFile,
    key: SealKey,
    secrets: BTreeMap<String, RetainedSecret>,
}

impl std::fmt::Debug for SealedRetained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRetained")
            .field("path", &self.file.path())
            .field("peers", &self.secrets.len())
            .finish()
    }
}

impl From<SealedFileError> for RetainedError {
    fn from(e: SealedFileError) -> Self {
        match e {
            SealedFileError::Damaged { why, kept } => RetainedError::Damaged { why, kept },
            SealedFileError::Stuck {
                path,
                why,
                move_error,
            } => RetainedError::Stuck {
                path,
                why,
                move_error,
            },
            SealedFileError::File { path, source } => RetainedError::File { path, source },
            other => RetainedError::Key(other),
        }
    }
}

fn parse(plain: &[u8]) -> Result<BTreeMap<String, RetainedSecret>, String> {
    let text = std::str::from_utf8(plain).map_err(|_| "not text".to_string())?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (peer, rs) = line
            .split_once(' ')
            .ok_or_else(|| "a line is not <peer> <secret>".to_string())?;
        let peer = hex::decode(peer)
            .ok()
            .and_then(|p| String::from_utf8(p).ok())
            .filter(|p| peer_aor(p).as_deref() == Some(p.as_str()))
            .ok_or_else(|| "a peer is not a canonical address".to_string())?;
        let rs = Zeroizing::new(hex::decode(rs).map_err(|_| "a secret is not hex".to_string())?);
        let rs: [u8; 32] = rs
            .as_slice()
            .try_into()
            .map_err(|_| "a secret is not 32 bytes".to_string())?;
        out.insert(peer, RetainedSecret::from_bytes(rs));
    }
    Ok(out)
}

impl SealedRetained {
    /// Opens the store at `path`, sealed under a key derived from the
    /// 32-byte `key_file` (created, 0600, when missing). A missing store
    /// file is an empty store. A file that does not open is set aside and
    /// the store starts empty: the error to show comes with the store.
    pub fn open(
        path: &Path,
        key_file: &Path,
    ) -> Result<(Self, Option<RetainedError>), RetainedError> {
        let key = private_key_file(key_file, true)?.derive(KEY_LABEL);
        let mut file = SealedFile::new(path);
        let loaded = file.load(Ok(&key), AAD, parse);
        let mut store = SealedRetained {
            file,
            key,
            secrets: BTreeMap::new(),
        };
        match loaded {
            Ok(secrets) => {
                store.secrets = secrets.unwrap_or_default();
                Ok((store, None))
            }
            Err(e @ (SealedFileError::Damaged { .. } | SealedFileError::Stuck { .. })) => {
                Ok((store, Some(e.into())))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn save(&self) -> Result<(), RetainedError> {
        let mut plain = Zeroizing::new(String::new());
        for (peer, rs) in &self.secrets {
            plain.push_str(&hex::encode(peer));
            plain.push(' ');
            plain.push_str(&Zeroizing::new(hex::encode(rs.as_bytes())));
            plain.push('\n');
        }
        Ok(self.file.save(&self.key, AAD, plain.as_bytes())?)
    }
}

impl RetainedStore for SealedRetained {
    fn get(&self, peer: &str) -> Option<RetainedSecret> {
        self.secrets.get(peer).cloned()
    }

    fn put(&mut self, peer: &str, rs: RetainedSecret) -> Result<(), String> {
        let old = self.secrets.insert(peer.to_string(), rs);
        self.save().map_err(|e| {
            // Not kept on disk: the old value stays in force.
            match old {
                Some(o) => self.secrets.insert(peer.to_string(), o),
                None => self.secrets.remove(peer),
            };
            e.to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(b: u8) -> RetainedSecret {
        RetainedSecret::from_bytes([b; 32])
    }

    #[test]
    fn survives_a_restart_sealed_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = (dir.path().join("retained.sealed"), dir.path().join("k"));
        let (mut s, e) = SealedRetained::open(&path, &key).unwrap();
        assert!(e.is_none());
        s.put("sip:bob@example.invalid", rs(3)).unwrap();
        s.put("sip:carol@example.invalid", rs(4)).unwrap();
        s.put("sip:bob@example.invalid", rs(5)).unwrap();
        let raw = std::fs::read_to_string(&path).unwrap();
        assert!(!raw.contains("bob") && !raw.contains(&hex::encode([5u8; 32])));
        assert!(!raw.contains(&hex::encode("sip:bob@example.invalid")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&key), 0o600);
        }
        drop(s);
        let (s, e) = SealedRetained::open(&path, &key).unwrap();
        assert!(e.is_none());
        assert_eq!(s.get("sip:bob@example.invalid"), Some(rs(5)));
        assert_eq!(s.get("sip:carol@example.invalid"), Some(rs(4)));
        assert_eq!(s.get("sip:dave@example.invalid"), None);
    }

    #[test]
    fn a_damaged_file_is_set_aside_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = (dir.path().join("retained.sealed"), dir.path().join("k"));
        let other = dir.path().join("messages.sealed");
        std::fs::write(&other, "untouched").unwrap();
        let (mut s, _) = SealedRetained::open(&path, &key).unwrap();
        s.put("sip:bob@example.invalid", rs(3)).unwrap();
        // One flipped character of the sealed text.
        let mut raw = std::fs::read(&path).unwrap();
        raw[10] = if raw[10] == b'A' { b'B' } else { b'A' };
        std::fs::write(&path, &raw).unwrap();
        let (mut s, e) = SealedRetained::open(&path, &key).unwrap();
        let Some(RetainedError::Damaged { kept, .. }) = e else {
            panic!("expected Damaged, got {e:?}");
        };
        assert_eq!(
            std::fs::read(&kept).unwrap(),
            raw,
            "the damaged file is kept"
        );
        assert_eq!(s.get("sip:bob@example.invalid"), None);
        // The store works again, and nothing else was touched.
        s.put("sip:bob@example.invalid", rs(6)).unwrap();
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "untouched");
        let (s, e) = SealedRetained::open(&path, &key).unwrap();
        assert!(e.is_none());
        assert_eq!(s.get("sip:bob@example.invalid"), Some(rs(6)));
        // Another key file cannot open it.
        let (_, e) = SealedRetained::open(&path, &dir.path().join("k2")).unwrap();
        assert!(matches!(e, Some(RetainedError::Damaged { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = (dir.path().join("retained.sealed"), dir.path().join("k"));
        let (mut s, _) = SealedRetained::open(&path, &key).unwrap();
        s.put("sip:bob@example.invalid", rs(3)).unwrap();
        drop(s);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SealedRetained::open(&path, &key).unwrap_err();
        assert!(
            matches!(
                e,
                RetainedError::Key(SealedFileError::NotPrivate { mode: 0o644, .. })
            ),
            "{e:?}"
        );
        // Nothing was moved aside or rewritten.
        assert!(path.exists());
        assert!(!dir.path().join("retained.damaged-1.sealed").exists());
    }
}
