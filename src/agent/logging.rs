//! The phone's diagnostic log: a `tracing` subscriber writing to a
//! size-bounded, rotating file in the platform's state directory, so that
//! the sentences that say "details are in the log" point somewhere.
//!
//! - Where: `IBEPHONE_LOG_DIR` when set, else the platform's state
//!   directory (`$XDG_STATE_HOME/ibephone/logs`, i.e.
//!   `~/.local/state/ibephone/logs` on Linux), else its cache directory
//!   (`logs` under `~/Library/Caches/org.ibephone.ibephone` on macOS,
//!   `%LOCALAPPDATA%\ibephone\ibephone\cache\logs` on Windows; both have
//!   no state directory in the `directories` crate).
//! - How much: one file per role (`ibephone.log` for the window,
//!   `agent.log` for a headless agent) of at most [`MAX_FILE_BYTES`]; when
//!   full it becomes `NAME.1` (the older ones shift to `.2` ..) and at most
//!   [`MAX_FILES`] files are kept, so the log never takes more than
//!   `MAX_FILES * MAX_FILE_BYTES` per role.
//! - Who may read it: the directory is created 0700 and every file 0600
//!   on unix. On Windows the files live in the per-user profile
//!   (`%LOCALAPPDATA%`), whose ACL (the user, SYSTEM and Administrators)
//!   they inherit; nothing is set by hand there.
//! - What: our own events at the chosen level (default `info`),
//!   dependencies' only from `warn` up (their debug output is theirs to
//!   audit, not ours). No event of this crate carries a key, a password, a
//!   token, an SDP or a message text: they log addresses, status codes,
//!   periods and error sentences (`tests/it/logging.rs` runs a
//!   registration, a call and a message with everything on at `trace`
//!   and searches the files for the passwords and the key bytes).
//!
//! The writing itself runs on `tracing-appender`'s worker thread
//! ([`tracing_appender::non_blocking()`]), so a slow disk never holds up the
//! window, the SIP driver or a call; the rotation is [`RotatingFile`]
//! rather than `tracing_appender::rolling`, whose files get the process
//! umask's mode (usually 0644) with no way to ask for 0600.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The file [`init`] writes, once it has started.
static CURRENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The log file of this process, if [`init`] started one.
pub fn current_file() -> Option<PathBuf> {
    CURRENT.get().cloned()
}

/// Size at which a log file is rotated.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Log files kept per role (the current one included).
pub const MAX_FILES: usize = 5;
/// The level used when none is asked for.
pub const DEFAULT_LEVEL: &str = "info";

/// Why the log could not be started.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogError {
    /// The level is not one of `off`, `error`, `warn`, `info`, `debug`,
    /// `trace`.
    #[error("unknown log level {0:?} (use off, error, warn, info, debug or trace)")]
    Level(String),
    /// No directory for the log: no home directory and no `IBEPHONE_LOG_DIR`.
    #[error("no directory for the log file; set IBEPHONE_LOG_DIR or use --no-log-file")]
    NoDir,
    /// The directory or the file could not be created.
    #[error("log file in {path}: {source}")]
    File {
        /// The directory or file.
        path: String,
        /// What the system said.
        source: io::Error,
    },
    /// Another subscriber is installed already (a test harness, say).
    #[error("a log subscriber is installed already")]
    AlreadySet,
}

/// What to log and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// `off`, `error`, `warn`, `info`, `debug` or `trace`, for this
    /// crate's events.
    pub level: String,
    /// Write the file (false: no log at all, nothing is written anywhere).
    pub file: bool,
    /// The directory (None: [`default_dir`]).
    pub dir: Option<PathBuf>,
    /// The file name, by role: `ibephone.log`, `agent.log`.
    pub name: String,
}

impl LogOptions {
    /// The defaults for a role's file `name`: level `info`, file on, in
    /// [`default_dir`].
    pub fn new(name: &str) -> Self {
        LogOptions {
            level: DEFAULT_LEVEL.into(),
            file: true,
            dir: None,
            name: name.into(),
        }
    }
}

/// Keeps the log writer's worker thread alive; dropping it flushes what is
/// queued (hold it until the program ends).
#[must_use = "the log stops (and loses its queue) when this is dropped"]
pub struct LogGuard {
    _worker: Option<tracing_appender::non_blocking::WorkerGuard>,
    /// The file written, if any.
    pub path: Option<PathBuf>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard")
            .field("path", &self.path)
            .finish()
    }
}

/// The log directory: `IBEPHONE_LOG_DIR` when set, else the platform's
/// state directory, else its cache directory, each with `logs` appended.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("IBEPHONE_LOG_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let dirs = directories::ProjectDirs::from("org", "ibephone", "ibephone")?;
    let base = dirs
        .state_dir()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dirs.cache_dir().to_path_buf());
    Some(base.join("logs"))
}

/// Checks a level name; `Ok(level)` lower-cased.
pub fn parse_level(level: &str) -> Result<String, LogError> {
    let l = level.trim().to_ascii_lowercase();
    match l.as_str() {
        "off" | "error" | "warn" | "info" | "debug" | "trace" => Ok(l),
        _ => Err(LogError::Level(level.into())),
    }
}

/// The filter: this crate (and the provider's, when it shares the
/// process in tests) at `level`, dependencies at `warn` at most.
fn filter(level: &str) -> tracing_subscriber::EnvFilter {
    let deps = match level {
        "off" => "off",
        "error" => "error",
        _ => "warn",
    };
    tracing_subscriber::EnvFilter::new(format!("{deps},ibephone={level},pkg_server={level}"))
}

/// Installs the process-wide subscriber as `opts` say. With
/// `opts.file == false` or level `off` nothing is installed and nothing
/// is written. Call once, early in `main`.
pub fn init(opts: &LogOptions) -> Result<LogGuard, LogError> {
    let level = parse_level(&opts.level)?;
    if !opts.file || level == "off" {
        return Ok(LogGuard {
            _worker: None,
            path: None,
        });
    }
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => default_dir().ok_or(LogError::NoDir)?,
    };
    let file = RotatingFile::open(&dir, &opts.name, MAX_FILE_BYTES, MAX_FILES)?;
    let path = file.path();
    let (writer, worker) = tracing_appender::non_blocking(file);
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter(&level))
        .with_ansi(false)
        .with_writer(writer)
        .finish();
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LogError::AlreadySet)?;
    let _ = CURRENT.set(path.clone());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        os = std::env::consts::OS,
        arch = std::env::consts::ARCH,
        "log started"
    );
    Ok(LogGuard {
        _worker: Some(worker),
        path: Some(path),
    })
}

/// An append-only log file that rotates by size: `NAME` is written until
/// it holds `max_bytes`, then renamed `NAME.1` (`NAME.1` to `NAME.2`, ...,
/// the oldest beyond `max_files` deleted) and a fresh `NAME` begun. Files
/// are created 0600 (unix) in a directory created 0700.
#[derive(Debug)]
pub struct RotatingFile {
    dir: PathBuf,
    name: String,
    max_bytes: u64,
    max_files: usize,
    file: File,
    written: u64,
}

impl RotatingFile {
    /// Opens (appending) `dir/name`, creating the directory and the file.
    pub fn open(
        dir: &Path,
        name: &str,
        max_bytes: u64,
        max_files: usize,
    ) -> Result<Self, LogError> {
        create_private_dir(dir)?;
        let path = dir.join(name);
        let file = open_private(&path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingFile {
            dir: dir.to_path_buf(),
            name: name.into(),
            max_bytes: max_bytes.max(1),
            max_files: max_files.max(1),
            file,
            written,
        })
    }

    /// The current file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    fn numbered(&self, n: usize) -> PathBuf {
        self.dir.join(format!("{}.{n}", self.name))
    }

    fn rotate(&mut self) -> io::Result<()> {
        // NAME.(max-1) is the oldest kept; shift the rest up by one.
        let _ = std::fs::remove_file(self.numbered(self.max_files - 1));
        for n in (1..self.max_files - 1).rev() {
            let _ = std::fs::rename(self.numbered(n), self.numbered(n + 1));
        }
        if self.max_files > 1 {
            std::fs::rename(self.path(), self.numbered(1))?;
        } else {
            std::fs::remove_file(self.path())?;
        }
        self.file = open_private(&self.path()).map_err(|e| match e {
            LogError::File { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        // One event is one write (the fmt layer formats a whole line
        // first), so a line is never split across two files.
        self.file.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn file_err(path: &Path, source: io::Error) -> LogError {
    LogError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Creates `dir` (and its parents); the last component 0700 on unix.
fn create_private_dir(dir: &Path) -> Result<(), LogError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| file_err(dir, e))?;
    }
    // Windows: the directory is under the per-user profile and inherits
    // its ACL (the user, SYSTEM, Administrators); nothing to set.
    Ok(())
}

/// Opens `path` for appending, created 0600 on unix; an existing file
/// that others could read is narrowed to 0600 first.
fn open_private(path: &Path) -> Result<File, LogError> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| file_err(path, e))?;
            }
        }
    }
    // Windows: inherits the per-user profile directory's ACL.
    options.open(path).map_err(|e| file_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_checked() {
        assert_eq!(parse_level(" DEBUG ").ok().as_deref(), Some("debug"));
        assert!(matches!(parse_level("loud"), Err(LogError::Level(_))));
    }

    #[test]
    fn rotates_by_size_and_keeps_a_bounded_number_of_files(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let logs = dir.path().join("logs");
        let mut f = RotatingFile::open(&logs, "t.log", 100, 3)?;
        for i in 0..40 {
            f.write_all(format!("line {i:04} of the log\n").as_bytes())?;
        }
        f.flush()?;
        let mut names: Vec<String> = std::fs::read_dir(&logs)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["t.log", "t.log.1", "t.log.2"]);
        for n in &names {
            let len = std::fs::metadata(logs.join(n))?.len();
            assert!(len <= 100, "{n}: {len} bytes");
        }
        // The newest lines are in t.log, whole; the oldest are gone.
        let current = std::fs::read_to_string(logs.join("t.log"))?;
        assert!(current.ends_with("line 0039 of the log\n"), "{current}");
        let all: String = names
            .iter()
            .map(|n| std::fs::read_to_string(logs.join(n)).unwrap_or_default())
            .collect();
        assert!(!all.contains("line 0000"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for n in &names {
                let mode = std::fs::metadata(logs.join(n))?.permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{n}");
            }
            let mode = std::fs::metadata(&logs)?.permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn an_existing_readable_file_is_narrowed_to_0600() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.log");
        std::fs::write(&path, "old\n")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        let mut f = RotatingFile::open(dir.path(), "a.log", 1000, 2)?;
        f.write_all(b"new\n")?;
        assert_eq!(std::fs::read_to_string(&path)?, "old\nnew\n");
        let mode = std::fs::metadata(&path)?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        Ok(())
    }
}
