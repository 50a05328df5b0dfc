//! TURN REST credentials (draft-uberti-behave-turn-rest, coturn's
//! `use-auth-secret`): user name `<unix expiry>:<user>`, password
//! `base64(HMAC-SHA1(shared secret, user name))`. Pure functions of the
//! secret and a wall-clock time passed in; the server side and the
//! embedded relay's check use the same code, so they cannot disagree.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::io::Write;
use std::path::Path;
use zeroize::Zeroizing;

/// Why a REST user name was refused by the relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// Not `<digits>:<account name>`.
    #[error("user name is not <unix expiry>:<user>")]
    Malformed,
    /// The expiry has passed.
    #[error("credentials expired")]
    Expired,
    /// The account is unknown or disabled.
    #[error("account not allowed")]
    NotAllowed,
}

/// The shared secret (zeroized on drop, never printed).
#[derive(Clone)]
pub struct SharedSecret(Zeroizing<String>);

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret([redacted])")
    }
}

impl SharedSecret {
    /// Wraps a secret (its UTF-8 bytes are the HMAC key, as in coturn).
    pub fn new(s: String) -> Self {
        SharedSecret(Zeroizing::new(s))
    }

    /// The secret text, for handing to coturn (`static-auth-secret`).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads the secret from `path` (first line, trimmed); when the file
    /// does not exist, creates it (mode 0600, `create_new`) with 32 random
    /// bytes in base64url. An empty file or one readable by others is an
    /// error.
    pub fn load_or_create(path: &Path) -> anyhow::Result<SharedSecret> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(path)?.permissions().mode();
                    if mode & 0o077 != 0 {
                        anyhow::bail!(
                            "TURN secret {} is readable by others (mode {:o}); chmod 600 it",
                            path.display(),
                            mode & 0o777
                        );
                    }
                }
                let text = Zeroizing::new(text);
                let line = text.lines().next().unwrap_or("").trim();
                if line.is_empty() {
                    anyhow::bail!("TURN secret {} is empty", path.display());
                }
                Ok(SharedSecret::new(line.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let raw: Zeroizing<[u8; 32]> = Zeroizing::new(
                    ibephone::pkg_client::seal::random_bytes()
                        .map_err(|e| anyhow::anyhow!("no randomness for the TURN secret: {e}"))?,
                );
                let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw[..]);
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                let mut f = opts
                    .open(path)
                    .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
                f.write_all(text.as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_all()?;
                Ok(SharedSecret::new(text))
            }
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    /// The REST password of `username`: base64 (standard, padded) of
    /// HMAC-SHA1(secret, username).
    pub fn password(&self, username: &str) -> Zeroizing<String> {
        // HMAC takes keys of any length; new_from_slice cannot fail here.
        let mut mac = match Hmac::<Sha1>::new_from_slice(self.0.as_bytes()) {
            Ok(m) => m,
            Err(_) => return Zeroizing::new(String::new()),
        };
        mac.update(username.as_bytes());
        let tag: Zeroizing<[u8; 20]> = Zeroizing::new(mac.finalize().into_bytes().into());
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&tag[..]))
    }
}

/// The user name of credentials for `user` that expire at `expiry` (Unix
/// seconds).
pub fn username(expiry: u64, user: &str) -> String {
    format!("{expiry}:{user}")
}

/// Splits and checks a REST user name at wall-clock time `now` (Unix
/// seconds): the expiry must be in the future and the account name one
/// that `pkg-server` issues. Returns the account name.
pub fn check_username(username: &str, now: u64) -> Result<&str, CredentialError> {
    let (expiry, user) = username.split_once(':').ok_or(CredentialError::Malformed)?;
    if expiry.is_empty() || expiry.len() > 20 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CredentialError::Malformed);
    }
    let expiry: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
    if !crate::http::valid_user_name(user) {
        return Err(CredentialError::Malformed);
    }
    if expiry <= now {
        return Err(CredentialError::Expired);
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_coturn_and_the_turn_crate() {
        // coturn's REST form, checked against the webrtc-rs `turn` crate's
        // own implementation of the same formula.
        let s = SharedSecret::new("north".into());
        let (u, p) =
            turn::auth::generate_long_term_credentials("north", std::time::Duration::from_secs(60))
                .unwrap();
        assert_eq!(s.password(&u).as_str(), p);
        // A known answer (python: base64(hmac.new(b"north", b"1800000000:alice", sha1)))
        assert_eq!(
            s.password("1800000000:alice").as_str(),
            "sIm7pn/teO7y3AyXGeXl/xAQR6Q="
        );
        assert!(!format!("{s:?}").contains("north"));
    }

    #[test]
    fn usernames_are_checked() {
        assert_eq!(
            check_username("1800000000:alice", 1_700_000_000),
            Ok("alice")
        );
        assert_eq!(
            check_username("1800000000:alice", 1_800_000_000),
            Err(CredentialError::Expired)
        );
        for bad in [
            "alice",
            ":alice",
            "1800000000:",
            "-1:alice",
            "+1800000000:alice",
            "1800000000:al ice",
            "1800000000:a:b",
            "99999999999999999999999:alice",
        ] {
            assert_eq!(
                check_username(bad, 0),
                Err(CredentialError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn secret_file_is_created_private_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turn-secret");
        let a = SharedSecret::load_or_create(&path).unwrap();
        let b = SharedSecret::load_or_create(&path).unwrap();
        assert_eq!(a.expose(), b.expose());
        assert!(a.expose().len() >= 43);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(SharedSecret::load_or_create(&path).is_err());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&path, "\n").unwrap();
        assert!(SharedSecret::load_or_create(&path).is_err());
    }
}
