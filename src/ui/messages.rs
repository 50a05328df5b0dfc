//! Secure messages kept across restarts: every conversation (per peer
//! AOR, the last [`MAX_PER_PEER`] lines) in `messages.sealed`, sealed
//! (AES-256-GCM) under a key derived from the key store's key file, as the
//! stored account password is; written 0600 through a temporary file and
//! a rename. Without that key file (not set up, or logged out) nothing is
//! written; a key file that group or others may access is refused, never
//! used ([`MessageError::KeyFile`]). A file that cannot be opened is moved
//! aside, never overwritten, and the caller gets a sentence for the user.
//! Logging out deletes it. The file handling is
//! [`crate::pkg_client::sealed_file`], shared with the retained secrets.

use super::app::{Author, ChatLine};
use super::settings::{file_err, AppDirs};
use super::UiError;
use crate::pkg_client::seal::SealKey;
use crate::pkg_client::sealed_file::{private_key_file, SealedFile, SealedFileError};
use crate::pkg_client::store;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

/// Lines kept per conversation; older ones are dropped.
pub(crate) const MAX_PER_PEER: usize = 500;

/// The status given, on reading, to a line that was still in flight when
/// ibephone closed: its outcome is unknown.
pub(crate) const DELIVERY_UNKNOWN: u16 = 0;

/// Conversations by peer AOR.
pub(crate) type Conversations = BTreeMap<String, Vec<ChatLine>>;

const AAD: &[u8] = b"ibephone-messages-v1";
const KEY_LABEL: &[u8] = b"ibephone messages v1";

/// What can go wrong with the messages file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MessageError {
    /// No key file: the phone is not set up (or was logged out).
    #[error("the phone is not set up, so messages are not kept")]
    NoKey,
    /// The file could not be opened; it was moved to `kept`.
    #[error("your saved messages could not be read ({why}); the file was kept as {kept}")]
    Damaged {
        /// Why it could not be opened.
        why: String,
        /// Where it is now.
        kept: String,
    },
    /// The file could not be opened nor moved aside; it is left as is and
    /// nothing is written over it.
    #[error("your saved messages could not be read ({why}) and the file {path} could not be moved aside ({move_error}); new messages are not saved until you move or delete it")]
    Stuck {
        /// The file.
        path: String,
        /// Why it could not be opened.
        why: String,
        /// Why it could not be moved.
        move_error: String,
    },
    /// The key file cannot be used (e.g. group or others may read it: it is
    /// refused, as the agent refuses it).
    #[error("your saved messages cannot be used: {0}")]
    KeyFile(#[source] SealedFileError),
    /// Reading, writing or deleting failed.
    #[error(transparent)]
    File(#[from] UiError),
}

impl From<SealedFileError> for MessageError {
    fn from(e: SealedFileError) -> Self {
        match e {
            SealedFileError::NoKey(_) => MessageError::NoKey,
            SealedFileError::Damaged { why, kept } => MessageError::Damaged { why, kept },
            SealedFileError::Stuck {
                path,
                why,
                move_error,
            } => MessageError::Stuck {
                path,
                why,
                move_error,
            },
            SealedFileError::File { path, source } => {
                MessageError::File(file_err(Path::new(&path), source))
            }
            other => MessageError::KeyFile(other),
        }
    }
}

/// The messages file of one data directory.
pub struct MessageStore {
    file: SealedFile,
    key_file: PathBuf,
    key: Option<SealKey>,
}

impl MessageStore {
    /// The store of `dirs` (`messages.sealed`); nothing is read yet.
    pub fn new(dirs: &AppDirs) -> Self {
        MessageStore {
            file: SealedFile::new(dirs.messages()),
            key_file: dirs.keys().join(store::KEY_FILE),
            key: None,
        }
    }

    /// The key, read once from the key file (never created here; refused
    /// when group or others may access it).
    fn key(&mut self) -> Result<&SealKey, MessageError> {
        if self.key.is_none() {
            self.key = Some(private_key_file(&self.key_file, false)?.derive(KEY_LABEL));
        }
        self.key.as_ref().ok_or(MessageError::NoKey)
    }

    /// Reads the conversations; a missing file is none. A file that cannot
    /// be opened is moved aside ([`MessageError::Damaged`]) so that the
    /// next save starts a fresh one.
    pub fn load(&mut self) -> Result<Conversations, MessageError> {
        // The key file is checked even without a messages file, so that a
        // key file others may read is reported when the window opens.
        match self.key() {
            Ok(_) | Err(MessageError::NoKey) => {}
            Err(e) => return Err(e),
        }
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| "the key that sealed it is gone".to_string());
        let parsed = self.file.load(key, AAD, |plain| {
            serde_json::from_slice::<Conversations>(plain)
                .map_err(|e| format!("its content is damaged: {e}"))
        })?;
        let mut c = parsed.unwrap_or_default();
        for line in c.values_mut().flatten() {
            if line.author == Author::Me && line.status.is_none() {
                line.status = Some(DELIVERY_UNKNOWN);
            }
        }
        c.values_mut().for_each(trim);
        Ok(c)
    }

    /// Writes the conversations (the last [`MAX_PER_PEER`] lines of each,
    /// empty ones left out), sealed, replacing the file atomically.
    pub fn save(&mut self, conversations: &Conversations) -> Result<(), MessageError> {
        let kept: BTreeMap<&String, &[ChatLine]> = conversations
            .iter()
            .filter(|(_, lines)| !lines.is_empty())
            .map(|(peer, lines)| (peer, &lines[lines.len().saturating_sub(MAX_PER_PEER)..]))
            .collect();
        let path = self.file.path().to_path_buf();
        let plain = Zeroizing::new(serde_json::to_vec(&kept).map_err(|e| file_err(&path, e))?);
        self.key()?;
        let key = self.key.as_ref().ok_or(MessageError::NoKey)?;
        Ok(self.file.save(key, AAD, &plain)?)
    }

    /// Deletes the file and forgets the key (log out).
    pub fn wipe(&mut self) -> Result<(), MessageError> {
        self.key = None;
        Ok(self.file.wipe()?)
    }
}

/// Drops the oldest lines beyond [`MAX_PER_PEER`].
pub(crate) fn trim(lines: &mut Vec<ChatLine>) {
    let extra = lines.len().saturating_sub(MAX_PER_PEER);
    lines.drain(..extra);
}

/// Deletes `path`; a missing file is fine.
pub(crate) fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::history::Security;

    fn line(author: Author, text: &str, status: Option<u16>) -> ChatLine {
        ChatLine {
            author,
            text: text.into(),
            security: Security::Verified("sip:alice@atlanta.invalid#2026-12".into()),
            status,
        }
    }

    /// A data directory with a key file, as after setup.
    fn set_up_dir() -> (tempfile::TempDir, AppDirs) {
        let dir = tempfile::tempdir().unwrap();
        let dirs = AppDirs::at(dir.path().join("data"));
        std::fs::create_dir_all(dirs.keys()).unwrap();
        SealKey::load_or_create_file(&dirs.keys().join(store::KEY_FILE)).unwrap();
        (dir, dirs)
    }

    fn sample() -> Conversations {
        let mut c = Conversations::new();
        c.insert(
            "sip:alice@atlanta.invalid".into(),
            vec![
                line(Author::Them, "hello, sealed at rest", None),
                line(Author::Me, "delivered one", Some(200)),
                line(Author::Me, "still in flight", None),
            ],
        );
        c.insert("sip:empty@atlanta.invalid".into(), vec![]);
        c
    }

    #[test]
    fn round_trip_sealed_private_and_bounded() {
        let (_d, dirs) = set_up_dir();
        let mut s = MessageStore::new(&dirs);
        assert!(s.load().unwrap().is_empty(), "no file: no messages");
        let mut c = sample();
        c.insert(
            "sip:bob@atlanta.invalid".into(),
            (0..MAX_PER_PEER + 20)
                .map(|i| line(Author::Them, &format!("n{i}"), None))
                .collect(),
        );
        s.save(&c).unwrap();
        let raw = std::fs::read_to_string(dirs.messages()).unwrap();
        assert!(
            !raw.contains("sealed at rest") && !raw.contains("alice"),
            "sealed"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dirs.messages())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!dirs.root.join("messages.sealed.tmp").exists());

        // A fresh store (a restart) reads them back.
        let back = MessageStore::new(&dirs).load().unwrap();
        assert!(!back.contains_key("sip:empty@atlanta.invalid"));
        let alice = &back["sip:alice@atlanta.invalid"];
        assert_eq!(alice[..2], c["sip:alice@atlanta.invalid"][..2]);
        assert_eq!(alice[2].status, Some(DELIVERY_UNKNOWN), "outcome unknown");
        let bob = &back["sip:bob@atlanta.invalid"];
        assert_eq!(bob.len(), MAX_PER_PEER);
        assert_eq!(bob[0].text, "n20", "the oldest lines are dropped");
        assert_eq!(
            bob[MAX_PER_PEER - 1].text,
            format!("n{}", MAX_PER_PEER + 19)
        );

        let mut v: Vec<ChatLine> = (0..MAX_PER_PEER + 3)
            .map(|i| line(Author::Me, &i.to_string(), Some(200)))
            .collect();
        trim(&mut v);
        assert_eq!((v.len(), v[0].text.as_str()), (MAX_PER_PEER, "3"));
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_not_overwritten() {
        let (_d, dirs) = set_up_dir();
        for damage in [
            "not even base64 !!",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            std::fs::write(dirs.messages(), damage).unwrap();
            let mut s = MessageStore::new(&dirs);
            let e = s.load().unwrap_err();
            let MessageError::Damaged { kept, .. } = &e else {
                panic!("{e:?}");
            };
            assert_eq!(
                std::fs::read_to_string(kept).unwrap(),
                damage,
                "kept as it was"
            );
            assert!(!dirs.messages().exists());
            assert!(e.to_string().contains("could not be read"), "{e}");
            // The next save starts a fresh file; the damaged one stays.
            s.save(&sample()).unwrap();
            assert_eq!(std::fs::read_to_string(kept).unwrap(), damage);
            assert_eq!(MessageStore::new(&dirs).load().unwrap().len(), 1);
        }
        assert!(dirs.root.join("messages.damaged-2.sealed").exists());

        // Sealed under another key (the key file was replaced): also set aside.
        let mut s = MessageStore::new(&dirs);
        s.save(&sample()).unwrap();
        std::fs::remove_file(dirs.keys().join(store::KEY_FILE)).unwrap();
        SealKey::load_or_create_file(&dirs.keys().join(store::KEY_FILE)).unwrap();
        let e = MessageStore::new(&dirs).load().unwrap_err();
        assert!(matches!(e, MessageError::Damaged { .. }), "{e:?}");
    }

    #[test]
    fn a_damaged_file_that_cannot_be_moved_is_never_written_over() {
        let (_d, dirs) = set_up_dir();
        for n in 1..1000 {
            std::fs::write(dirs.root.join(format!("messages.damaged-{n}.sealed")), "x").unwrap();
        }
        std::fs::write(dirs.messages(), "damaged").unwrap();
        let mut s = MessageStore::new(&dirs);
        let e = s.load().unwrap_err();
        assert!(matches!(e, MessageError::Stuck { .. }), "{e:?}");
        assert!(e.to_string().contains("move or delete it"), "{e}");
        assert!(matches!(s.save(&sample()), Err(MessageError::Stuck { .. })));
        assert_eq!(std::fs::read_to_string(dirs.messages()).unwrap(), "damaged");
    }

    #[test]
    fn nothing_is_written_without_a_key_and_wipe_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = AppDirs::at(dir.path());
        let mut s = MessageStore::new(&dirs);
        assert!(matches!(s.save(&sample()), Err(MessageError::NoKey)));
        assert!(!dirs.messages().exists());

        let (_d, dirs) = set_up_dir();
        let mut s = MessageStore::new(&dirs);
        s.save(&sample()).unwrap();
        s.wipe().unwrap();
        assert!(!dirs.messages().exists());
        s.wipe().unwrap();
        // Logged out (keys gone): the store forgot its key and writes nothing.
        std::fs::remove_dir_all(dirs.keys()).unwrap();
        assert!(matches!(s.save(&sample()), Err(MessageError::NoKey)));
        assert!(!dirs.messages().exists());
    }
}
