//! The phone's account on this computer: the sealed account file (PKG
//! pin, parameters, password), the key periods a phone asks for, fetching
//! and storing keys, and wiping it all on log out. Called by the
//! [`super::backend`] worker, never on the UI thread.

use super::errors::pkg_error;
use super::settings::{file_err, AppDirs, Settings};
use crate::agent::keys::now_unix;
use crate::ibe::{Period, PrivateKeys, PublicParams};
use crate::pkg_client::api::{SecretString, SipCredentialsResponse};
use crate::pkg_client::seal::{replace_secret_file, SealKey};
use crate::pkg_client::sealed_file::private_key_file;
use crate::pkg_client::{store, KeyStore, PkgClient, PkgClientError, Unlock};

/// Why [`renew_keys`] failed.
#[derive(Debug)]
pub(super) struct RenewError {
    /// A sentence for people.
    pub message: String,
    /// The PKG showed another certificate than the pinned one (maybe a
    /// CA renewal the user may accept, see `Request::RecheckCertificate`).
    pub pin_mismatch: bool,
    /// The provider asks for the one-time code(s) of the account's second
    /// factor: the phone starts on the keys it has and the renewer asks
    /// the user (`Update::RenewalCodeNeeded`).
    pub otp_required: bool,
}

impl From<String> for RenewError {
    fn from(message: String) -> Self {
        RenewError {
            message,
            pin_mismatch: false,
            otp_required: false,
        }
    }
}

/// Logs in with the stored password and fetches the keys of this and the
/// next period, storing them; returns every stored key and, for a
/// threshold provider, which key servers they came from (for people).
pub(super) async fn renew_keys(
    dirs: &AppDirs,
    settings: &Settings,
    params: &PublicParams,
    pin: Option<[u8; 32]>,
    password: &SecretString,
) -> Result<(Vec<PrivateKeys>, Option<String>), RenewError> {
    let url = settings.pkg_url.trim().to_string();
    let pkg = |e: PkgClientError| RenewError {
        pin_mismatch: matches!(e, PkgClientError::PinMismatch { .. }),
        otp_required: e.is_otp_required(),
        message: pkg_error(&e, &url),
    };
    if params.threshold().is_some() {
        return renew_threshold(dirs, settings, params, password)
            .await
            .map_err(pkg);
    }
    let client = PkgClient::new(&url, pin).map_err(pkg)?;
    let session = client
        .login(settings.user.trim(), password)
        .await
        .map_err(pkg)?;
    let current = Period::month_at(now_unix());
    let mut periods = vec![current.clone()];
    if let Ok(n) = current.next_month() {
        periods.push(n);
    }
    let keys = client
        .fetch_keys(&session, params, &periods)
        .await
        .map_err(pkg)?;
    let _ = client.logout(&session).await;
    let dirs = dirs.clone();
    let params = params.clone();
    tokio::task::spawn_blocking(move || {
        let mut s = KeyStore::open(&dirs.keys(), Unlock::KeyFile)
            .map_err(|e| pkg_error(&e, "this computer"))?;
        s.put_keys(&params, &keys)
            .map_err(|e| pkg_error(&e, "this computer"))?;
        s.keys().map_err(|e| pkg_error(&e, "this computer"))
    })
    .await
    .map_err(|e| format!("saving failed ({e})"))?
    .map(|keys| (keys, None))
    .map_err(RenewError::from)
}

/// [`renew_keys`] at a threshold provider, with the confirmed (stored)
/// parameters, so that any `t` of its servers serve the keys: the login
/// secrets kept at set-up first ([`crate::agent::keys::threshold_keys`],
/// as the command-line phone fetches), new ones kept when derived.
async fn renew_threshold(
    dirs: &AppDirs,
    settings: &Settings,
    params: &PublicParams,
    password: &SecretString,
) -> Result<(Vec<PrivateKeys>, Option<String>), PkgClientError> {
    renew_threshold_with(dirs, settings, params, password, None)
        .await
        .map(|(keys, note, _)| (keys, note))
}

/// The device's SIP credential (stored) and relay credentials from a
/// threshold provider's home key server (the one of `pin`, else of the
/// settings' URL), asked with a key renewal in the same session: for a
/// phone whose store has no device credential (set up before the home
/// server issued them). Fails with a sentence for people when none was
/// had; the phone then does not register (never with the password).
pub(super) async fn threshold_device_credential(
    dirs: &AppDirs,
    settings: &Settings,
    params: &PublicParams,
    pin: Option<[u8; 32]>,
    password: &SecretString,
) -> Result<
    (
        SipCredentialsResponse,
        Option<crate::pkg_client::TurnCredentials>,
    ),
    String,
> {
    let url = settings.pkg_url.trim().to_string();
    let home = params
        .threshold()
        .and_then(|t| crate::pkg_client::threshold::home_server(t, pin, &url))
        .ok_or_else(|| format!("{url} is not one of your provider's key servers"))?;
    let request = crate::pkg_client::threshold::DeviceRequest {
        home,
        device: new_device_name()?,
        turn: settings.ice,
    };
    let (_, _, answer) = renew_threshold_with(dirs, settings, params, password, Some(&request))
        .await
        .map_err(|e| pkg_error(&e, &url))?;
    let answer = answer.ok_or("no answer from the home key server")?;
    let sip = answer.sip.map_err(|e| e.to_string())?;
    let (d, c, t) = (dirs.clone(), sip.clone(), answer.turn.clone());
    tokio::task::spawn_blocking(move || {
        let mut s = KeyStore::open(&d.keys(), Unlock::KeyFile)?;
        s.device_name(Some(&c.device))?;
        s.set_sip_credential(c)?;
        match &t {
            Some(t) => s.set_turn_credentials(t),
            None => Ok(()),
        }
    })
    .await
    .map_err(|e| format!("saving failed ({e})"))?
    .map_err(|e| pkg_error(&e, "this computer"))?;
    Ok((sip, answer.turn))
}

/// [`renew_threshold`], also asking the home server for `device`'s
/// credentials in the same session.
async fn renew_threshold_with(
    dirs: &AppDirs,
    settings: &Settings,
    params: &PublicParams,
    password: &SecretString,
    device: Option<&crate::pkg_client::threshold::DeviceRequest>,
) -> Result<
    (
        Vec<PrivateKeys>,
        Option<String>,
        Option<crate::pkg_client::threshold::DeviceAnswer>,
    ),
    PkgClientError,
> {
    let user = settings.user.trim().to_string();
    let aor = crate::ibe::Aor::parse(&format!("sip:{user}@{}", params.domain()))?;
    let (d, dom, u) = (dirs.clone(), params.domain().to_string(), user.clone());
    let kept = tokio::task::spawn_blocking(move || {
        KeyStore::open(&d.keys(), Unlock::KeyFile).map(|s| s.login_secrets(&dom, &u).cloned())
    })
    .await
    .map_err(|e| PkgClientError::Store(e.to_string()))??;
    let current = Period::month_at(now_unix());
    let mut periods = vec![current.clone()];
    if let Ok(n) = current.next_month() {
        periods.push(n);
    }
    let got = crate::agent::keys::threshold_keys(
        params,
        &user,
        &aor,
        (password, kept.as_ref()),
        &crate::agent::keys::OtpCodes::new(),
        &periods,
        // A background renewal replaces no credential the running phone
        // registers with: none asked then.
        device,
    )
    .await?;
    let note = key_servers_sentence(params, &got);
    let (dirs, params) = (dirs.clone(), params.clone());
    let answer = got.device;
    let (keys, secrets) = (got.keys, got.derived.then_some(got.secrets));
    tokio::task::spawn_blocking(move || {
        let mut s = KeyStore::open(&dirs.keys(), Unlock::KeyFile)?;
        s.put_keys(&params, &keys)?;
        if let Some(secrets) = secrets {
            s.set_login_secrets(params.domain(), &user, secrets)?;
        }
        save_key_servers(&dirs, Some(&note)).map_err(PkgClientError::Store)?;
        Ok((s.keys()?, Some(note), answer))
    })
    .await
    .map_err(|e| PkgClientError::Store(e.to_string()))?
}

/// "Your keys were put together from key servers 1 and 2 of 3 (2
/// needed). Server 3 was not used: ...", for people.
pub(super) fn key_servers_sentence(
    params: &PublicParams,
    got: &crate::pkg_client::threshold::ThresholdKeys,
) -> String {
    let used = params
        .threshold()
        .map(|t| got.describe(t))
        .unwrap_or_default();
    let mut s = format!("Your keys were put together from key {used}.");
    for (index, why) in &got.skipped {
        s.push_str(&not_used(*index, why));
    }
    s
}

/// " Server 3 was not used: why."
pub(super) fn not_used(index: u32, why: &str) -> String {
    format!(" Server {index} was not used: {why}.")
}

/// Keeps `note` (which key servers the keys came from) for Settings
/// across restarts; `None` removes it (one PKG). Not secret.
pub(super) fn save_key_servers(dirs: &AppDirs, note: Option<&str>) -> Result<(), String> {
    let path = dirs.key_servers();
    match note {
        Some(n) => std::fs::write(&path, n).map_err(|e| file_err(&path, e).to_string()),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(file_err(&path, e).to_string())
            }
            _ => Ok(()),
        },
    }
}

/// The note [`save_key_servers`] kept, if any.
pub(super) fn load_key_servers(dirs: &AppDirs) -> Option<String> {
    std::fs::read_to_string(dirs.key_servers())
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A new device name for this computer's phone (`desktop-` and 6 random
/// bytes in hex), sent with `POST /v1/sip-credentials`.
pub(super) fn new_device_name() -> Result<String, String> {
    crate::pkg_client::seal::random_bytes::<6>()
        .map(|b| format!("desktop-{}", hex::encode(b)))
        .map_err(|e| format!("No randomness for a device name ({e})."))
}

/// The periods a new phone asks for: previous (calls sealed just before
/// the month changed), current and next (renewal ahead).
pub(crate) fn key_periods(now_unix: u64) -> Vec<Period> {
    let current = Period::month_at(now_unix);
    let mut v = Vec::with_capacity(3);
    if let Ok(p) = current.previous_month() {
        v.push(p);
    }
    v.push(current.clone());
    if let Ok(n) = current.next_month() {
        v.push(n);
    }
    v
}

pub(super) fn periods_of(keys: &[PrivateKeys]) -> Vec<String> {
    let mut v: Vec<String> = keys
        .iter()
        .map(|k| k.identity().period().as_str().to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

const ACCOUNT_AAD: &[u8] = b"ibephone-account-v1";

fn account_key(dirs: &AppDirs) -> Result<SealKey, String> {
    std::fs::create_dir_all(dirs.keys())
        .map_err(|e| format!("Cannot create {} ({e}).", dirs.keys().display()))?;
    // Refused when group or others may access it, as the agent refuses it.
    private_key_file(&dirs.keys().join(store::KEY_FILE), true)
        .map(|k| k.derive(b"ibephone account v1"))
        .map_err(|e| format!("Cannot open the key file ({e})."))
}

/// Stores a new setup: keys, pin, the device's SIP credential (when the
/// provider issued one) in the sealed key store, the sealed password and
/// the settings.
pub(super) fn save_account(
    dirs: &AppDirs,
    settings: &Settings,
    pin: [u8; 32],
    params: &PublicParams,
    keys: &[PrivateKeys],
    password: &SecretString,
    sip: Option<&SipCredentialsResponse>,
) -> Result<(), String> {
    let here = |e: PkgClientError| pkg_error(&e, "this computer");
    // A new setup replaces whatever account was stored before.
    let _ = std::fs::remove_file(dirs.keys().join(store::STORE_FILE));
    let mut s = KeyStore::open(&dirs.keys(), Unlock::KeyFile).map_err(here)?;
    s.put_keys(params, keys).map_err(here)?;
    s.set_pkg_pin(pin).map_err(here)?;
    if let Some(c) = sip {
        s.device_name(Some(&c.device)).map_err(here)?;
        s.set_sip_credential(c.clone()).map_err(here)?;
    }
    let sealed = account_key(dirs)?
        .seal(ACCOUNT_AAD, password.expose().as_bytes())
        .map_err(|e| format!("Cannot protect your password ({e})."))?;
    replace_secret_file(&dirs.account(), sealed.as_bytes())
        .map_err(|e| file_err(&dirs.account(), e).to_string())?;
    settings.save(&dirs.settings()).map_err(|e| e.to_string())
}

/// Keeps relay credentials that arrived with a set-up or a start sealed
/// in the key store (after [`save_account`]), so that the phone started
/// again uses them while unexpired without a login; `None` keeps nothing.
pub(super) fn keep_turn(
    dirs: &AppDirs,
    turn: Option<&crate::pkg_client::TurnCredentials>,
) -> Result<(), String> {
    let Some(c) = turn else {
        return Ok(());
    };
    KeyStore::open(&dirs.keys(), Unlock::KeyFile)
        .and_then(|mut s| s.set_turn_credentials(c))
        .map_err(|e| pkg_error(&e, "this computer"))
}

/// The relay credentials kept in the key store if unexpired now
/// ([`KeyStore::turn_credentials`]); `None` when none are or the store
/// cannot be read (the relay task then asks for fresh ones).
pub(super) fn stored_turn(dirs: &AppDirs) -> Option<crate::pkg_client::TurnCredentials> {
    KeyStore::open(&dirs.keys(), Unlock::KeyFile)
        .ok()?
        .turn_credentials(std::time::SystemTime::now())
}

/// A stored account: parameters, keys, PKG pin, the account password and
/// the device's SIP credential (if the provider issued one).
pub(super) type Account = (
    PublicParams,
    Vec<PrivateKeys>,
    Option<[u8; 32]>,
    SecretString,
    Option<SipCredentialsResponse>,
);

pub(super) fn load_account(dirs: &AppDirs) -> Result<Account, String> {
    let here = |e: PkgClientError| {
        format!(
            "{} Log out and set up the phone again if it persists.",
            pkg_error(&e, "this computer")
        )
    };
    let s = KeyStore::open(&dirs.keys(), Unlock::KeyFile).map_err(here)?;
    let params = s
        .params()
        .map_err(here)?
        .ok_or("No keys are stored. Set up the phone first.")?;
    let keys = s.keys().map_err(here)?;
    let text = std::fs::read_to_string(dirs.account())
        .map_err(|_| "The stored password is missing. Log out and set up the phone again.")?;
    let plain = account_key(dirs)?
        .open(ACCOUNT_AAD, &text)
        .map_err(|_| "The stored password cannot be read. Log out and set up the phone again.")?;
    let password = SecretString::new(
        String::from_utf8(plain.to_vec())
            .map_err(|_| "The stored password is damaged. Log out and set up again.")?,
    );
    Ok((
        params,
        keys,
        s.pkg_pin(),
        password,
        s.sip_credential().cloned(),
    ))
}

/// Whether `dirs` holds a set-up phone (keys and the sealed password).
pub(crate) fn is_set_up(dirs: &AppDirs) -> bool {
    dirs.keys().join(store::STORE_FILE).exists() && dirs.account().exists()
}

/// Removes the key store, its key file, the sealed password and the
/// sealed messages.
pub(super) fn wipe(dirs: &AppDirs) -> std::io::Result<()> {
    for f in [dirs.account(), dirs.messages(), dirs.key_servers()] {
        super::messages::remove_if_present(&f)?;
    }
    match std::fs::remove_dir_all(dirs.keys()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_asked_for() {
        // 2026-12-01: November, December and January.
        let v = key_periods(1_796_083_200);
        let s: Vec<&str> = v.iter().map(|p| p.as_str()).collect();
        assert_eq!(s, ["2026-11", "2026-12", "2027-01"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_account_key_refuses_a_key_file_others_may_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dirs = AppDirs::at(dir.path());
        account_key(&dirs).unwrap();
        let key_file = dirs.keys().join(store::KEY_FILE);
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o604)).unwrap();
        let e = account_key(&dirs).unwrap_err();
        assert!(e.contains("group or others may access it"), "{e}");
        assert!(e.contains("chmod 600"), "{e}");
    }
}
