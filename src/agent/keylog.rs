//! `ibephone agent --keylog FILE`: the tunnel's key log written to a file,
//! for debugging captures with `ibephone pcap decrypt`. Off unless asked
//! for. The file is created with mode 0600 (an existing file readable by
//! others is refused) and appended to, one line per key in the format of
//! [`crate::tunnel::keylog`]; while it is on the agent warns about it.
//!
//! The same file takes the secrets of the agent's TLS connections to its
//! SIP proxy ([`TlsKeyLog`]), in the NSS key log format that Wireshark
//! reads (`tshark -o tls.keylog_file:FILE`): one
//! `LABEL <client random: 64 hex> <secret: hex>` line per secret, labels
//! such as `CLIENT_TRAFFIC_SECRET_0`. Wireshark skips the tunnel's lines
//! and the tunnel's parser skips these, so one file opens both layers.

use crate::tunnel::keylog::{KeyLogEntry, KeyLogSink, HEADER};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why the key log file cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyLogFileError {
    /// It cannot be created or opened.
    #[error("cannot open key log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It exists and others may read it.
    #[error("key log {0} is readable by others; it holds call keys (chmod 600 or remove it)")]
    Permissions(PathBuf),
}

/// The key log sink of an agent: appends each entry to a 0600 file.
pub struct FileKeyLog {
    path: PathBuf,
    file: File,
    failed: bool,
}

impl FileKeyLog {
    /// Opens (creating with mode 0600) `path` for appending; a new file
    /// starts with a comment line saying what it is.
    pub fn open(path: &Path) -> Result<Self, KeyLogFileError> {
        use std::fs::OpenOptions;
        let open_err = |source| KeyLogFileError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        // Windows: no mode bits; a file the user names inherits the ACL of
        // its directory (private under the per-user profile). The key log
        // is for debugging on a developer's machine.
        let mut file = options.open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(KeyLogFileError::Permissions(path.to_path_buf()));
            }
        }
        if meta.len() == 0 {
            file.write_all(HEADER.as_bytes()).map_err(open_err)?;
        }
        Ok(FileKeyLog {
            path: path.to_path_buf(),
            file,
            failed: false,
        })
    }
}

impl KeyLogSink for FileKeyLog {
    fn record(&mut self, entry: &KeyLogEntry) {
        let line = entry.line();
        if let Err(e) = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
        {
            if !self.failed {
                tracing::error!(path = %self.path.display(), %e, "cannot write the key log");
                self.failed = true;
            }
        }
    }
}

/// The TLS half of the key log: rustls hands it each secret of the
/// agent's TLS sessions, which it appends to the key log file as an NSS
/// key log line (see the module doc).
pub struct TlsKeyLog {
    inner: std::sync::Mutex<FileKeyLog>,
}

impl TlsKeyLog {
    /// Opens `path` as [`FileKeyLog::open`] does (0600, appended to).
    pub fn open(path: &Path) -> Result<Self, KeyLogFileError> {
        Ok(TlsKeyLog {
            inner: std::sync::Mutex::new(FileKeyLog::open(path)?),
        })
    }
}

impl std::fmt::Debug for TlsKeyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsKeyLog([redacted])")
    }
}

/// One NSS key log line (`LABEL client_random secret`, hex, newline).
pub fn nss_line(label: &str, client_random: &[u8], secret: &[u8]) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(format!(
        "{label} {} {}\n",
        hex::encode(client_random),
        hex::encode(secret)
    ))
}

impl rustls::KeyLog for TlsKeyLog {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let line = nss_line(label, client_random, secret);
        let Ok(mut log) = self.inner.lock() else {
            return;
        };
        if let Err(e) = log
            .file
            .write_all(line.as_bytes())
            .and_then(|()| log.file.flush())
        {
            if !log.failed {
                tracing::error!(path = %log.path.display(), %e, "cannot write the key log");
                log.failed = true;
            }
        }
    }

    fn will_log(&self, _label: &str) -> bool {
        true
    }
}
