//! One secret file sealed at rest under a key derived from a 32-byte key
//! file: the shared code of the desktop app's `messages.sealed` and the
//! retained secrets of key continuity (`retained.sealed`).
//!
//! - The key file must be private: one that group or others may access is
//!   refused ([`SealedFileError::NotPrivate`], the same rule and sentence
//!   as the key store's [`super::store::check_private`]), never used.
//! - The sealed file is written 0600 through a temporary file and a rename
//!   ([`super::seal::replace_secret_file`]).
//! - A file that does not open (wrong key, altered, content the caller
//!   cannot parse) is moved aside to the first free
//!   `<stem>.damaged-N.sealed` (or `<name>.damaged-N` for a name without
//!   `.sealed`), never written over; if it cannot be moved, nothing is
//!   written over it for the life of the [`SealedFile`].

use super::seal::{replace_secret_file, SealError, SealKey};
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

/// What can go wrong with a sealed file or its key file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SealedFileError {
    /// The key file may be read or written by group or others: refused.
    #[error("{path}: holds secrets but group or others may access it (mode {mode:03o}); refused: make it private (chmod 600) and renew the keys it protects")]
    NotPrivate {
        /// The key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not exist (and was not to be created).
    #[error("the key file {0} does not exist")]
    NoKey(String),
    /// The key file cannot be read, created or used.
    #[error(transparent)]
    Key(#[from] SealError),
    /// The file did not open; it was moved to `kept`.
    #[error("{why}; the file was kept as {kept}")]
    Damaged {
        /// Why it could not be opened.
        why: String,
        /// Where it is now.
        kept: String,
    },
    /// The file did not open and could not be moved aside: it is left as
    /// is and nothing is written over it.
    #[error("{why} and {path} could not be moved aside ({move_error})")]
    Stuck {
        /// The file.
        path: String,
        /// Why it could not be opened.
        why: String,
        /// Why it could not be moved.
        move_error: String,
    },
    /// Reading, writing or deleting failed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn file_err(path: &Path, source: std::io::Error) -> SealedFileError {
    SealedFileError::File {
        path: path.display().to_string(),
        source,
    }
}

/// The permission bits of `path` when group or others may access it;
/// `None` for a private or missing file (and off Unix).
pub fn shared_mode(path: &Path) -> std::io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                return Ok((mode & 0o077 != 0).then_some(mode));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(None)
}

/// The key sealed files derive their keys from: the 32-byte `path`,
/// refused when group or others may access it; created (0600) when
/// missing and `create` is set, else [`SealedFileError::NoKey`].
pub fn private_key_file(path: &Path, create: bool) -> Result<SealKey, SealedFileError> {
    if let Some(mode) = shared_mode(path).map_err(|e| file_err(path, e))? {
        return Err(SealedFileError::NotPrivate {
            path: path.display().to_string(),
            mode,
        });
    }
    if !create && !path.exists() {
        return Err(SealedFileError::NoKey(path.display().to_string()));
    }
    Ok(SealKey::load_or_create_file(path)?)
}

/// One sealed file (see the module doc).
#[derive(Debug)]
pub struct SealedFile {
    path: PathBuf,
    /// A damaged file that could not be moved aside: never written over.
    stuck: bool,
}

impl SealedFile {
    /// The sealed file at `path`; nothing is read yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SealedFile {
            path: path.into(),
            stuck: false,
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads, opens with `key` (bound to `aad`) and parses the file; a
    /// missing file is `Ok(None)`. `key` is `Err(why)` when the key that
    /// sealed it is gone. A file that does not open or parse is set aside
    /// ([`SealedFileError::Damaged`]) so the next save starts afresh.
    pub fn load<T>(
        &mut self,
        key: Result<&SealKey, String>,
        aad: &[u8],
        parse: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, SealedFileError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(file_err(&self.path, e)),
        };
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|_| "it is not text".to_string())
            .and_then(|text| {
                key.and_then(|k| {
                    k.open(aad, text.trim())
                        .map_err(|e| format!("it does not open with its key: {e}"))
                })
            })
            .and_then(|plain| parse(&plain));
        match parsed {
            Ok(v) => Ok(Some(v)),
            Err(why) => Err(self.set_aside(why)),
        }
    }

    /// The first free name a damaged file is moved to.
    fn damaged_name(&self, n: usize) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "sealed".into());
        match name.strip_suffix(".sealed") {
            Some(stem) => self
                .path
                .with_file_name(format!("{stem}.damaged-{n}.sealed")),
            None => self.path.with_file_name(format!("{name}.damaged-{n}")),
        }
    }

    fn set_aside(&mut self, why: String) -> SealedFileError {
        let moved = (1..1000)
            .map(|n| self.damaged_name(n))
            .find(|p| !p.exists())
            .ok_or_else(|| "too many damaged files kept already".to_string())
            .and_then(|kept| {
                std::fs::rename(&self.path, &kept)
                    .map(|()| kept)
                    .map_err(|e| e.to_string())
            });
        match moved {
            Ok(kept) => SealedFileError::Damaged {
                why,
                kept: kept.display().to_string(),
            },
            Err(move_error) => {
                self.stuck = true;
                SealedFileError::Stuck {
                    path: self.path.display().to_string(),
                    why,
                    move_error,
                }
            }
        }
    }

    /// Seals `plain` under `key` bound to `aad` and replaces the file
    /// atomically (0600); refused while a damaged file is stuck in place.
    pub fn save(&self, key: &SealKey, aad: &[u8], plain: &[u8]) -> Result<(), SealedFileError> {
        if self.stuck {
            return Err(SealedFileError::Stuck {
                path: self.path.display().to_string(),
                why: "it was unreadable at start".into(),
                move_error: "it could not be moved aside".into(),
            });
        }
        let sealed = key.seal(aad, plain)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        }
        replace_secret_file(&self.path, sealed.as_bytes()).map_err(|e| file_err(&self.path, e))
    }

    /// Deletes the file (a missing one is fine) and forgets a stuck state.
    pub fn wipe(&mut self) -> Result<(), SealedFileError> {
        self.stuck = false;
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(file_err(&self.path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_key_file_is_refused_and_left_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        private_key_file(&path, true).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for mode in [0o640, 0o604, 0o660, 0o606] {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
                let e = private_key_file(&path, false).unwrap_err();
                assert!(
                    matches!(e, SealedFileError::NotPrivate { mode: m, .. } if m == mode),
                    "{e:?}"
                );
                assert!(e.to_string().contains("group or others may access it"));
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        private_key_file(&path, false).unwrap();
        let missing = dir.path().join("none.key");
        assert!(matches!(
            private_key_file(&missing, false),
            Err(SealedFileError::NoKey(_))
        ));
        assert!(!missing.exists());
    }

    #[test]
    fn round_trip_and_damaged_names() {
        let dir = tempfile::tempdir().unwrap();
        let key = private_key_file(&dir.path().join("k"), true).unwrap();
        let mut f = SealedFile::new(dir.path().join("x.sealed"));
        assert!(f
            .load(Ok(&key), b"a", |p| Ok(p.to_vec()))
            .unwrap()
            .is_none());
        f.save(&key, b"a", b"hello").unwrap();
        assert_eq!(
            f.load(Ok(&key), b"a", |p| Ok(p.to_vec())).unwrap(),
            Some(b"hello".to_vec())
        );
        // Another associated data does not open it: set aside.
        let e = f.load(Ok(&key), b"b", |p| Ok(p.to_vec())).unwrap_err();
        assert!(
            matches!(e, SealedFileError::Damaged { ref kept, .. } if kept.ends_with("x.damaged-1.sealed"))
        );
        let mut g = SealedFile::new(dir.path().join("y.retained"));
        g.save(&key, b"a", b"v").unwrap();
        let e = g
            .load(Ok(&key), b"a", |_| Err::<(), _>("bad".into()))
            .unwrap_err();
        assert!(
            matches!(e, SealedFileError::Damaged { ref kept, .. } if kept.ends_with("y.retained.damaged-1"))
        );
    }
}
