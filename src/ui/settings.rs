//! The app's data directory and its settings file (`settings.json`, not
//! secret: provider address, user name, SIP addresses, policy, privacy,
//! audio preferences).

use super::UiError;
use crate::agent::filter::SecurityPolicy;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the app keeps its files; one directory, overridable for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDirs {
    /// The data directory itself.
    pub root: PathBuf,
}

impl AppDirs {
    /// The app's files under `root`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        AppDirs { root: root.into() }
    }

    /// `IBEPHONE_DATA_DIR` when set, else the platform's data directory
    /// for ibephone (the key store's parent).
    pub fn from_env() -> Option<Self> {
        if let Some(dir) = std::env::var_os("IBEPHONE_DATA_DIR").filter(|d| !d.is_empty()) {
            return Some(AppDirs::at(dir));
        }
        directories::ProjectDirs::from("org", "ibephone", "ibephone")
            .map(|d| AppDirs::at(d.data_dir()))
    }

    /// The key store directory.
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// The settings file.
    pub fn settings(&self) -> PathBuf {
        self.root.join("settings.json")
    }

    /// The contacts file.
    pub fn contacts(&self) -> PathBuf {
        self.root.join("contacts.json")
    }

    /// The call history file.
    pub fn history(&self) -> PathBuf {
        self.root.join("history.json")
    }

    /// The sealed secure messages.
    pub fn messages(&self) -> PathBuf {
        self.root.join("messages.sealed")
    }

    /// The sealed account password.
    pub fn account(&self) -> PathBuf {
        self.root.join("account.sealed")
    }

    /// Which key servers of a threshold provider the keys came from, in
    /// plain words (not secret), for Settings across restarts.
    pub fn key_servers(&self) -> PathBuf {
        self.root.join("key-servers.txt")
    }
}

/// The user's settings. Defaults suit a phone on this machine's loopback;
/// the wizard asks for the provider and the SIP proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The PKG, `https://host:port`.
    pub pkg_url: String,
    /// The account's user name at the provider.
    pub user: String,
    /// The domain of the user's address (`atlanta.com` of
    /// `alice@atlanta.com`), as given in the wizard.
    pub pkg_domain: Option<String>,
    /// The registrar/outbound proxy, `host:port` (an IP address).
    pub sip_proxy: String,
    /// Our SIP address, `ip:port` (port 0: any free port).
    pub sip_listen: String,
    /// What to do with calls and messages that arrive unprotected.
    pub policy: SecurityPolicy,
    /// Anonymous outer From on the wire.
    pub privacy: bool,
    /// Ring volume, 0.0-1.0.
    pub ring_volume: f32,
    /// Microphone by name (None: the system default).
    pub input_device: Option<String>,
    /// Speaker by name (None: the system default).
    pub output_device: Option<String>,
    /// Echo cancellation, noise suppression and gain control on calls
    /// (on by default; a file written before it existed reads as on).
    pub voice_processing: bool,
    /// ICE (RFC 8445) on every call, with the provider's STUN server and
    /// relay: audio across NATs. On unless turned off.
    pub ice: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pkg_url: String::new(),
            user: String::new(),
            pkg_domain: None,
            sip_proxy: "127.0.0.1:5060".into(),
            sip_listen: "127.0.0.1:0".into(),
            policy: SecurityPolicy::Require,
            privacy: true,
            ring_volume: 0.8,
            input_device: None,
            output_device: None,
            voice_processing: true,
            ice: true,
        }
    }
}

impl Settings {
    /// Reads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Self, UiError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| file_err(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(file_err(path, e)),
        }
    }

    /// Writes `path` (creating its directory), replacing it atomically.
    pub fn save(&self, path: &Path) -> Result<(), UiError> {
        save_json(path, self)
    }
}

/// Writes `value` as pretty JSON to `path` through a temporary file.
pub(crate) fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<(), UiError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| file_err(path, e))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))
}

pub(crate) fn file_err(path: &Path, e: impl std::fmt::Display) -> UiError {
    UiError::File {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = AppDirs::at(dir.path().join("data"));
        assert_eq!(
            Settings::load(&dirs.settings()).unwrap(),
            Settings::default()
        );
        let s = Settings {
            pkg_url: "https://127.0.0.1:8443".into(),
            user: "alice".into(),
            policy: SecurityPolicy::AllowPlain,
            privacy: false,
            ..Settings::default()
        };
        s.save(&dirs.settings()).unwrap();
        assert_eq!(Settings::load(&dirs.settings()).unwrap(), s);
        // A file from before the voice-processing switch reads as on.
        std::fs::write(dirs.settings(), r#"{"user": "carol"}"#).unwrap();
        let old = Settings::load(&dirs.settings()).unwrap();
        assert!(old.voice_processing);
        assert_eq!(old.user, "carol");
        std::fs::write(dirs.settings(), "{ not json").unwrap();
        assert!(Settings::load(&dirs.settings()).is_err());
    }
}
