//! The phone's key store: private keys, the provider's parameters, the
//! PKG certificate pin, the device's SIP credential and its device name,
//! the relay credentials of the last start ([`KeptTurn`]),
//! in one AES-256-GCM sealed file (mode 0600) in the
//! user's data directory, so a phone with valid keys keeps working while
//! the PKG is down. The file key comes from a random local key file (0600,
//! beside the store) or from a passphrase through Argon2id.
//!
//! Decision: the key file and the store file are checked when loaded; one
//! that group or others may read or write is refused with an error naming
//! it and its mode, never silently `chmod`ed: a key that was readable may
//! have been copied, so the user must see it (and should renew the keys).

use super::api::KeyEntry;
use super::client::keys_from_entries;
use super::seal::{replace_secret_file, KdfParams, PassphraseFile, SealKey};
use super::turn::TurnCredentials;
use super::PkgClientError;
use crate::ibe::encoding::b64_encode;
use crate::ibe::{Aor, Period, PrivateKeys, PublicParams};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `format` of the store file and of `pkg-admin extract` files.
pub const KEYS_FORMAT: &str = "ibephone-keys-v1";
/// Name of the sealed store file inside the store directory.
pub const STORE_FILE: &str = "keys.sealed";
/// Name of the local key file inside the store directory.
pub const KEY_FILE: &str = "store.key";
/// The lock file beside [`STORE_FILE`] that orders every change of it.
pub const LOCK_FILE: &str = "keys.lock";

/// The plaintext of a key file: one account's keys with its provider's
/// parameters. Also the content of a `pkg-admin extract` file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyBundle {
    /// The account's canonical AOR.
    pub aor: String,
    /// The provider's parameter document (JSON).
    pub params: String,
    /// Key entries, one per period.
    pub keys: Vec<KeyEntry>,
    /// Pinned PKG certificate fingerprint (hex), if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkg_cert_sha256: Option<String>,
    /// The device's SIP digest credential (`POST /v1/sip-credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_credential: Option<super::api::SipCredentialsResponse>,
    /// This device's name toward the PKG, chosen once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A threshold provider's per-server login secrets of this account,
    /// kept so that a fetch need not derive them from the password again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_secrets: Option<KeptLogin>,
    /// The relay credentials of the last start ([`KeptTurn`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_credentials: Option<KeptTurn>,
}

/// Relay credentials (`POST /v1/turn-credentials`) as kept in the sealed
/// store, so that a phone started while its PKG (or every threshold key
/// server) is down still has a relayed candidate.
///
/// Decision: keeping them is right. They are TURN REST credentials, an
/// HMAC of `<expiry>:<user>` that every relay checks by itself, so they
/// work without the PKG until their expiry, and they are far less
/// sensitive than what the store keeps already (the private keys, the
/// device's SIP credential): a leak gives relay use for at most the rest
/// of their lifetime (at most [`super::turn::MAX_TTL`]). They are used
/// only while unexpired ([`KeyStore::turn_credentials`]), with the expiry
/// checked when they arrived, never extended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptTurn {
    /// `<unix expiry>:<user>`.
    pub username: String,
    /// The TURN password.
    pub password: super::api::SecretString,
    /// When they stop working, Unix seconds (as checked on arrival).
    pub expires_at: u64,
    /// The relays, as URIs.
    pub uris: Vec<String>,
}

/// Per-server login secrets of one account at one threshold provider
/// (pkg-api.md "Threshold provider", logins), as kept in the sealed store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeptLogin {
    /// The provider's domain the secrets were derived for.
    pub domain: String,
    /// The account name they log in.
    pub user: String,
    /// Server index to login secret.
    pub secrets: super::threshold::LoginSecrets,
}

/// How the store file is unlocked.
#[derive(Debug, Clone)]
pub enum Unlock {
    /// A random key in `store.key` (created 0600 on first use).
    KeyFile,
    /// A passphrase (Argon2id with [`KdfParams::FILE`]).
    Passphrase(super::api::SecretString),
}

/// An opened key store.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    unlock: Unlock,
    bundle: KeyBundle,
}

impl KeyStore {
    /// The default directory: the platform's data directory for ibephone.
    pub fn default_dir() -> Option<PathBuf> {
        directories::ProjectDirs::from("org", "ibephone", "ibephone")
            .map(|d| d.data_dir().join("keys"))
    }

    /// Opens (or creates, empty) the store in `dir`.
    pub fn open(dir: &Path, unlock: Unlock) -> Result<Self, PkgClientError> {
        std::fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
        let bundle = read_bundle(dir, &unlock)?;
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            unlock,
            bundle,
        })
    }

    /// The provider's parameters, if stored.
    pub fn params(&self) -> Result<Option<PublicParams>, PkgClientError> {
        if self.bundle.params.is_empty() {
            return Ok(None);
        }
        Ok(Some(PublicParams::from_json(&self.bundle.params)?))
    }

    /// The recorded PKG certificate pin.
    pub fn pkg_pin(&self) -> Option<[u8; 32]> {
        self.bundle
            .pkg_cert_sha256
            .as_deref()
            .and_then(super::tls::parse_fingerprint)
    }

    /// Records the PKG certificate pin (trust on first use) and saves.
    pub fn set_pkg_pin(&mut self, fp: [u8; 32]) -> Result<(), PkgClientError> {
        self.update(|b| {
            b.pkg_cert_sha256 = Some(super::tls::fingerprint_hex(&fp));
            Ok(())
        })
    }

    /// The stored SIP credential, if any.
    pub fn sip_credential(&self) -> Option<&super::api::SipCredentialsResponse> {
        self.bundle.sip_credential.as_ref()
    }

    /// Stores the device's SIP credential (replacing the previous one) and
    /// saves.
    pub fn set_sip_credential(
        &mut self,
        c: super::api::SipCredentialsResponse,
    ) -> Result<(), PkgClientError> {
        self.update(|b| {
            b.sip_credential = Some(c);
            Ok(())
        })
    }

    /// The stored relay credentials if still usable at `now`: checked
    /// again as on arrival, expiring when they were to expire then (never
    /// later); `None` when none are stored or they have expired.
    pub fn turn_credentials(&self, now: SystemTime) -> Option<TurnCredentials> {
        let kept = self.bundle.turn_credentials.as_ref()?;
        let expires_at = UNIX_EPOCH + Duration::from_secs(kept.expires_at);
        let left = expires_at
            .duration_since(now)
            .ok()
            .filter(|d| !d.is_zero())?;
        let answer = super::api::TurnCredentialsResponse {
            username: kept.username.clone(),
            password: kept.password.clone(),
            ttl: left.as_secs().max(1),
            uris: kept.uris.clone(),
        };
        let mut c = TurnCredentials::from_response(answer, now).ok()?;
        c.expires_at = c.expires_at.min(expires_at);
        Some(c)
    }

    /// Stores relay credentials (replacing any stored before) and saves.
    pub fn set_turn_credentials(&mut self, c: &TurnCredentials) -> Result<(), PkgClientError> {
        let kept = KeptTurn {
            username: c.username.clone(),
            password: c.password.clone(),
            expires_at: c
                .expires_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            uris: c.uris.iter().map(ToString::to_string).collect(),
        };
        self.update(|b| {
            b.turn_credentials = Some(kept);
            Ok(())
        })
    }

    /// The kept login secrets of `user` at the threshold provider of
    /// `domain`, if any (secrets of another account or domain are not
    /// returned).
    pub fn login_secrets(
        &self,
        domain: &str,
        user: &str,
    ) -> Option<&super::threshold::LoginSecrets> {
        self.bundle
            .login_secrets
            .as_ref()
            .filter(|k| k.domain == domain && k.user == user)
            .map(|k| &k.secrets)
    }

    /// Keeps `secrets` as the login secrets of `user` at the threshold
    /// provider of `domain` (replacing any kept before) and saves.
    pub fn set_login_secrets(
        &mut self,
        domain: &str,
        user: &str,
        secrets: super::threshold::LoginSecrets,
    ) -> Result<(), PkgClientError> {
        let kept = KeptLogin {
            domain: domain.to_string(),
            user: user.to_string(),
            secrets,
        };
        self.update(|b| {
            b.login_secrets = Some(kept);
            Ok(())
        })
    }

    /// This device's name: the stored one, else `configured`, else a new
    /// random `device-` name; saved so that the PKG sees one device across
    /// restarts (a credential for the same device replaces the previous).
    pub fn device_name(&mut self, configured: Option<&str>) -> Result<String, PkgClientError> {
        if let Some(c) = configured {
            if self.bundle.device.as_deref() != Some(c) {
                self.update(|b| {
                    b.device = Some(c.to_string());
                    Ok(())
                })?;
            }
            return Ok(c.to_string());
        }
        if let Some(d) = &self.bundle.device {
            return Ok(d.clone());
        }
        // Another holder of the store may have chosen one since we read
        // it: the name on disk wins over a new one.
        self.update(|b| match &b.device {
            Some(d) => Ok(d.clone()),
            None => {
                let raw: [u8; 6] = super::seal::random_bytes()?;
                let d = format!("device-{}", hex::encode(raw));
                b.device = Some(d.clone());
                Ok(d)
            }
        })
    }

    /// Stores checked keys (replacing keys of the same periods) with their
    /// parameters and saves. Keys of another AOR replace the whole store.
    pub fn put_keys(
        &mut self,
        params: &PublicParams,
        keys: &[PrivateKeys],
    ) -> Result<(), PkgClientError> {
        for k in keys {
            crate::ibe::check_key(params, k)?;
        }
        self.update(|b| {
            for k in keys {
                let aor = k.identity().aor().as_str();
                if b.aor != aor {
                    b.aor = aor.to_string();
                    b.keys.clear();
                    b.sip_credential = None;
                    b.login_secrets = None;
                    b.turn_credentials = None;
                }
                let period = k.identity().period().as_str();
                b.keys.retain(|e| e.period != period);
                b.keys.push(KeyEntry {
                    period: period.to_string(),
                    d_enc: super::api::SecretString::new(b64_encode(&k.d_enc_bytes()[..])),
                    d_sig: super::api::SecretString::new(b64_encode(&k.d_sig_bytes()[..])),
                });
            }
            b.keys.sort_by(|x, y| x.period.cmp(&y.period));
            b.params = params.to_json();
            Ok(())
        })
    }

    /// The stored keys, each checked against the stored parameters.
    pub fn keys(&self) -> Result<Vec<PrivateKeys>, PkgClientError> {
        let Some(params) = self.params()? else {
            return Ok(Vec::new());
        };
        let aor = Aor::parse(&self.bundle.aor)?;
        keys_from_entries(&aor, &params, &self.bundle.keys, &[])
    }

    /// The stored keys of `period`, if any.
    pub fn keys_for(&self, period: &Period) -> Result<Option<PrivateKeys>, PkgClientError> {
        Ok(self
            .keys()?
            .into_iter()
            .find(|k| k.identity().period() == period))
    }

    /// Imports a file made by `pkg-admin extract` (checks every key).
    pub fn import_extract_file(
        &mut self,
        file: &Path,
        passphrase: &super::api::SecretString,
    ) -> Result<usize, PkgClientError> {
        let bundle = read_extract_file(file, passphrase)?;
        let params = PublicParams::from_json(&bundle.params)?;
        let aor = Aor::parse(&bundle.aor)?;
        let keys = keys_from_entries(&aor, &params, &bundle.keys, &[])?;
        self.put_keys(&params, &keys)?;
        Ok(keys.len())
    }

    /// Applies `change` to the store as it is on disk now and saves it,
    /// under the store's lock ([`StoreLock`]); this handle then holds the
    /// result. So two handles of one store (the app's key renewal and its
    /// relay renewal, or two processes) never undo each other's changes:
    /// each writes what the other saved plus its own change, never its
    /// older copy. On an error nothing is saved and this handle keeps
    /// what it held.
    fn update<R>(
        &mut self,
        change: impl FnOnce(&mut KeyBundle) -> Result<R, PkgClientError>,
    ) -> Result<R, PkgClientError> {
        let _lock = StoreLock::acquire(&self.dir)?;
        let mut bundle = read_bundle(&self.dir, &self.unlock)?;
        let answer = change(&mut bundle)?;
        save_bundle(&self.dir, &self.unlock, &bundle)?;
        self.bundle = bundle;
        Ok(answer)
    }
}

/// Reads and opens the store file of `dir`; an empty bundle when there is
/// none yet.
fn read_bundle(dir: &Path, unlock: &Unlock) -> Result<KeyBundle, PkgClientError> {
    let path = dir.join(STORE_FILE);
    check_private(&path)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let plain = match unlock {
                Unlock::KeyFile => {
                    let key = file_key(dir)?;
                    key.open(KEYS_FORMAT.as_bytes(), &text)?
                }
                Unlock::Passphrase(p) => {
                    let f: PassphraseFile = serde_json::from_str(&text)
                        .map_err(|e| PkgClientError::Store(format!("{}: {e}", path.display())))?;
                    f.open(KEYS_FORMAT, p.expose().as_bytes())?
                }
            };
            serde_json::from_slice(&plain)
                .map_err(|e| PkgClientError::Store(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyBundle::default()),
        Err(e) => Err(store_err(&path, e)),
    }
}

/// The store's lock: an exclusive advisory lock on `keys.lock` beside the
/// store file (`flock` on unix, `LockFileEx` on Windows), held from
/// reading the file to replacing it. Each acquisition opens the file
/// anew, so it also orders two handles within one process. Released on
/// drop (closing the file).
struct StoreLock {
    /// Held open for the lock; never read.
    _file: std::fs::File,
}

impl StoreLock {
    fn acquire(dir: &Path) -> Result<Self, PkgClientError> {
        let path = dir.join(LOCK_FILE);
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let file = o.open(&path).map_err(|e| store_err(&path, e))?;
        file.lock().map_err(|e| store_err(&path, e))?;
        Ok(StoreLock { _file: file })
    }
}

/// Seals `bundle` as `unlock` says and replaces the store file of `dir`.
fn save_bundle(dir: &Path, unlock: &Unlock, bundle: &KeyBundle) -> Result<(), PkgClientError> {
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(bundle).map_err(|e| PkgClientError::Store(e.to_string()))?,
    );
    let text = match unlock {
        Unlock::KeyFile => file_key(dir)?.seal(KEYS_FORMAT.as_bytes(), &plain)?,
        Unlock::Passphrase(p) => {
            let f =
                PassphraseFile::seal(KEYS_FORMAT, p.expose().as_bytes(), KdfParams::FILE, &plain)?;
            serde_json::to_string(&f).map_err(|e| PkgClientError::Store(e.to_string()))?
        }
    };
    let path = dir.join(STORE_FILE);
    replace_secret_file(&path, text.as_bytes()).map_err(|e| store_err(&path, e))
}

/// Reads and decrypts a `pkg-admin extract` file.
pub fn read_extract_file(
    file: &Path,
    passphrase: &super::api::SecretString,
) -> Result<KeyBundle, PkgClientError> {
    let text = std::fs::read_to_string(file).map_err(|e| store_err(file, e))?;
    let f: PassphraseFile = serde_json::from_str(&text)
        .map_err(|e| PkgClientError::Store(format!("{}: not a key file: {e}", file.display())))?;
    let plain = f.open(KEYS_FORMAT, passphrase.expose().as_bytes())?;
    serde_json::from_slice(&plain)
        .map_err(|e| PkgClientError::Store(format!("{}: {e}", file.display())))
}

/// Writes a `pkg-admin extract` file (mode 0600, must not exist yet).
pub fn write_extract_file(
    file: &Path,
    bundle: &KeyBundle,
    passphrase: &super::api::SecretString,
    kdf: KdfParams,
) -> Result<(), PkgClientError> {
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(bundle).map_err(|e| PkgClientError::Store(e.to_string()))?,
    );
    let f = PassphraseFile::seal(KEYS_FORMAT, passphrase.expose().as_bytes(), kdf, &plain)?;
    let text =
        serde_json::to_string_pretty(&f).map_err(|e| PkgClientError::Store(e.to_string()))?;
    super::seal::write_secret_file(file, text.as_bytes()).map_err(|e| store_err(file, e))
}

fn file_key(dir: &Path) -> Result<SealKey, PkgClientError> {
    let path = dir.join(KEY_FILE);
    check_private(&path)?;
    Ok(SealKey::load_or_create_file(&path)?.derive(b"ibephone key store v1"))
}

/// Refuses a secret file that group or others may read or write (see the
/// module's decision). A missing file is fine: it is created 0600.
pub fn check_private(path: &Path) -> Result<(), PkgClientError> {
    match super::sealed_file::shared_mode(path) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(PkgClientError::Store(
            super::sealed_file::SealedFileError::NotPrivate {
                path: path.display().to_string(),
                mode,
            }
            .to_string(),
        )),
        Err(e) => Err(store_err(path, e)),
    }
}

fn store_err(path: &Path, e: std::io::Error) -> PkgClientError {
    PkgClientError::Store(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ibe::{extract, setup, Identity};

    #[test]
    fn relay_credentials_are_kept_sealed_and_used_only_until_their_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let hour = Duration::from_secs(3600);
        let fresh = TurnCredentials::from_response(
            crate::pkg_client::api::TurnCredentialsResponse {
                username: "1800003600:bob".into(),
                password: "dHVybi1zZWNyZXQ=".into(),
                ttl: 3600,
                uris: vec![
                    "turn:127.0.0.1:3478?transport=udp".into(),
                    "turns:[::1]:5349?transport=tcp".into(),
                ],
            },
            t0,
        )
        .unwrap();
        {
            let mut s = KeyStore::open(dir.path(), Unlock::KeyFile).unwrap();
            assert!(s.turn_credentials(t0).is_none());
            s.set_turn_credentials(&fresh).unwrap();
        }
        let raw = std::fs::read_to_string(dir.path().join(STORE_FILE)).unwrap();
        assert!(!raw.contains("dHVybi1zZWNyZXQ=") && !raw.contains("1800003600:bob"));
        let s = KeyStore::open(dir.path(), Unlock::KeyFile).unwrap();
        // After a restart, while unexpired: the same credentials, expiring
        // when they were to expire.
        let later = t0 + Duration::from_secs(1000);
        let kept = s.turn_credentials(later).unwrap();
        assert_eq!(
            (&kept.username, &kept.password, &kept.uris),
            (&fresh.username, &fresh.password, &fresh.uris)
        );
        assert_eq!(kept.expires_at, t0 + hour);
        // At and after the expiry: none.
        assert!(s.turn_credentials(t0 + hour).is_none());
        assert!(s.turn_credentials(t0 + 2 * hour).is_none());
        // Kept ones are never extended past the expiry checked on arrival,
        // even when the user name promises more (capped at MAX_TTL then).
        let long = TurnCredentials::from_response(
            crate::pkg_client::api::TurnCredentialsResponse {
                username: format!("{}:bob", 1_800_000_000 + 30 * 24 * 3600),
                password: "cA==".into(),
                ttl: 30 * 24 * 3600,
                uris: vec!["turn:127.0.0.1".into()],
            },
            t0,
        )
        .unwrap();
        let mut s = s;
        s.set_turn_credentials(&long).unwrap();
        let cap = t0 + crate::pkg_client::turn::MAX_TTL;
        assert_eq!(s.turn_credentials(t0 + hour).unwrap().expires_at, cap);
        assert!(s.turn_credentials(cap).is_none());
    }

    #[test]
    fn store_survives_reopen_and_rejects_wrong_unlock() {
        let dir = tempfile::tempdir().unwrap();
        let (msk, params) = setup("biloxi.invalid", "https://pkg.biloxi.invalid").unwrap();
        let aor = Aor::parse("sip:bob@biloxi.invalid").unwrap();
        let p = Period::month("2026-11").unwrap();
        let k = extract(&msk, &Identity::new(aor, p.clone()));
        {
            let mut s = KeyStore::open(dir.path(), Unlock::KeyFile).unwrap();
            s.put_keys(&params, std::slice::from_ref(&k)).unwrap();
            s.set_pkg_pin([7u8; 32]).unwrap();
        }
        let s = KeyStore::open(dir.path(), Unlock::KeyFile).unwrap();
        assert_eq!(
            s.keys_for(&p).unwrap().unwrap().d_enc_bytes(),
            k.d_enc_bytes()
        );
        assert_eq!(s.pkg_pin(), Some([7u8; 32]));
        assert_eq!(s.params().unwrap().unwrap(), params);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(dir.path().join(STORE_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600);
        }
        let raw = std::fs::read_to_string(dir.path().join(STORE_FILE)).unwrap();
        assert!(!raw.contains(&b64_encode(&k.d_enc_bytes()[..])));
        // The SIP credential and the device name are kept, sealed.
        {
            let mut s = KeyStore::open(dir.path(), Unlock::KeyFile).unwrap();
            let device = s.device_name(None).unwrap();
            assert!(
                device.starts_with("device-") && device.len() == 19,
                "{device}"
            );
            assert_eq!(s.device_name(None).unwrap(), device);
            s.set_sip_credential(crate::pkg_client::api::SipCredentialsResponse {
                username: "bob".into(),
                password: "c2lwLWRldmljZS1zZWNyZXQ".into(),
                device,
            })
            .unwrap();
        }
        let mut s = KeyStore::open(dir.path(), Unlock::KeyFile).unwrap();
        let c = s.sip_credential().unwrap();
        assert_eq!(c.password.expose(), "c2lwLWRldmljZS1zZWNyZXQ");
        assert_eq!(s.device_name(Some("desk")).unwrap(), "desk");
        let raw = std::fs::read_to_string(dir.path().join(STORE_FILE)).unwrap();
        assert!(!raw.contains("c2lwLWRldmljZS1zZWNyZXQ"));
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        assert!(KeyStore::open(dir.path(), Unlock::KeyFile).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn key_files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (msk, params) = setup("biloxi.invalid", "https://pkg.biloxi.invalid").unwrap();
        let aor = Aor::parse("sip:bob@biloxi.invalid").unwrap();
        let p = Period::month("2026-11").unwrap();
        let k = extract(&msk, &Identity::new(aor, p.clone()));
        KeyStore::open(dir.path(), Unlock::KeyFile)
            .unwrap()
            .put_keys(&params, std::slice::from_ref(&k))
            .unwrap();
        for (name, mode) in [(KEY_FILE, 0o644), (KEY_FILE, 0o660), (STORE_FILE, 0o604)] {
            let path = dir.path().join(name);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = KeyStore::open(dir.path(), Unlock::KeyFile).unwrap_err();
            assert!(
                matches!(&err, PkgClientError::Store(m) if m.contains(name) && m.contains(&format!("{mode:03o}"))),
                "{name} {mode:o}: {err}"
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(KeyStore::open(dir.path(), Unlock::KeyFile).is_ok());
        }
        // Left as found: refused, not repaired behind the user's back.
        let path = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(KeyStore::open(dir.path(), Unlock::KeyFile).is_err());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn extract_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (msk, params) = setup("biloxi.invalid", "https://pkg.biloxi.invalid").unwrap();
        let aor = Aor::parse("sip:bob@biloxi.invalid").unwrap();
        let k = extract(
            &msk,
            &Identity::new(aor.clone(), Period::month("2026-11").unwrap()),
        );
        let bundle = KeyBundle {
            aor: aor.as_str().into(),
            params: params.to_json(),
            keys: vec![KeyEntry {
                period: "2026-11".into(),
                d_enc: b64_encode(&k.d_enc_bytes()[..]).as_str().into(),
                d_sig: b64_encode(&k.d_sig_bytes()[..]).as_str().into(),
            }],
            ..KeyBundle::default()
        };
        let f = dir.path().join("bob.keys");
        let pw = super::super::api::SecretString::from("correct horse");
        let fast = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        write_extract_file(&f, &bundle, &pw, fast).unwrap();
        assert!(
            write_extract_file(&f, &bundle, &pw, fast).is_err(),
            "never overwrites"
        );
        let mut s = KeyStore::open(&dir.path().join("store"), Unlock::KeyFile).unwrap();
        assert!(s.import_extract_file(&f, &"wrong".into()).is_err());
        assert_eq!(s.import_extract_file(&f, &pw).unwrap(), 1);
        assert_eq!(s.keys().unwrap().len(), 1);
    }

    fn sip_credential(n: u32) -> crate::pkg_client::api::SipCredentialsResponse {
        crate::pkg_client::api::SipCredentialsResponse {
            username: format!("bob-{n}"),
            password: crate::pkg_client::api::SecretString::new(format!("c2lwLXNlY3JldC0{n}")),
            device: "device-0a0b0c0d0e0f".into(),
        }
    }

    fn relay_credentials(now: SystemTime) -> TurnCredentials {
        TurnCredentials::from_response(
            crate::pkg_client::api::TurnCredentialsResponse {
                username: "1800003600:bob".into(),
                password: "dHVybi1zZWNyZXQ=".into(),
                ttl: 3600,
                uris: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            },
            now,
        )
        .unwrap()
    }

    /// The race noticed in the ninth session: the app's key renewal holds
    /// a handle opened before its network fetch and saves after it, while
    /// the relay renewal saves through another handle. The later save
    /// wrote its older copy and erased the other's change.
    #[test]
    fn two_handles_of_one_store_never_undo_each_others_changes() {
        let dir = tempfile::tempdir().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut renewal = KeyStore::open(dir.path(), Unlock::KeyFile).unwrap();
        let mut relay = KeyStore::open(dir.path(), Unlock::KeyFile).unwrap();
        relay.set_turn_credentials(&relay_credentials(now)).unwrap();
        // `renewal` read the store before the relay's save.
        renewal.set_sip_credential(sip_credential(1)).unwrap();
        renewal.set_pkg_pin([9u8; 32]).unwrap();
        let device = relay.device_name(None).unwrap();

        let reopened = KeyStore::open(dir.path(), Unlock::KeyFile).unwrap();
        assert!(reopened.turn_credentials(now).is_some(), "relay lost");
        assert_eq!(reopened.sip_credential().unwrap().username, "bob-1");
        assert_eq!(reopened.pkg_pin(), Some([9u8; 32]));
        // Each handle now holds what it saved: the other's changes too.
        assert!(renewal.turn_credentials(now).is_some());
        assert_eq!(relay.pkg_pin(), Some([9u8; 32]));
        // A handle that read the store before a device name was chosen
        // takes the stored one instead of choosing another.
        let mut late = renewal;
        assert_eq!(late.device_name(None).unwrap(), device);
    }

    /// Handles in several threads (and so, through the file lock, in
    /// several processes) change the store at once: no save fails (they
    /// shared one temporary file name) and none is lost.
    #[test]
    fn concurrent_changes_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        KeyStore::open(dir.path(), Unlock::KeyFile).unwrap();
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    for i in 0..10u32 {
                        let mut s = KeyStore::open(&dir, Unlock::KeyFile).unwrap();
                        match t {
                            0 => s.set_sip_credential(sip_credential(i)).unwrap(),
                            1 => s.set_turn_credentials(&relay_credentials(now)).unwrap(),
                            2 => s.set_pkg_pin([u8::try_from(i).unwrap(); 32]).unwrap(),
                            _ => s.device_name(Some(&format!("desk-{i}"))).map(drop).unwrap(),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut s = KeyStore::open(dir.path(), Unlock::KeyFile).unwrap();
        assert_eq!(s.sip_credential().unwrap().username, "bob-9");
        assert!(s.turn_credentials(now).is_some());
        assert_eq!(s.pkg_pin(), Some([9u8; 32]));
        assert_eq!(s.device_name(None).unwrap(), "desk-9");
    }
}
