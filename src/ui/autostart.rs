//! Start at login: the XDG autostart entry
//! `$XDG_CONFIG_HOME/autostart/org.ibephone.ibephone.desktop` (default
//! `~/.config`), which starts `ibephone --background` (hidden to the tray,
//! or minimised where there is none). Settings' switch writes or removes
//! it; the file's presence is the setting, so it never disagrees with
//! what the desktop will do.

use super::settings::file_err;
use super::UiError;
use std::path::{Path, PathBuf};

/// The entry's file name (the application id, as the desktop entry).
pub const FILE_NAME: &str = "org.ibephone.ibephone.desktop";

/// The autostart directory: `$XDG_CONFIG_HOME/autostart` when that is an
/// absolute path (the XDG rule: a relative one is ignored), else
/// `$HOME/.config/autostart`; None when neither is known.
pub fn dir() -> Option<PathBuf> {
    dir_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`dir`] from the values of `XDG_CONFIG_HOME` and `HOME`.
pub fn dir_from(
    xdg_config_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let config = xdg_config_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            home.map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".config"))
        })?;
    Some(config.join("autostart"))
}

/// The entry's path, see [`dir`].
pub fn path() -> Option<PathBuf> {
    dir().map(|d| d.join(FILE_NAME))
}

/// The entry for the program at `exe`: a desktop entry that runs it with
/// `--background`. The path is quoted as the Desktop Entry spec's `Exec`
/// asks (`"`, `` ` ``, `$` and `\` escaped), so a path with spaces works.
pub fn entry(exe: &Path) -> String {
    let mut quoted = String::from("\"");
    for c in exe.to_string_lossy().chars() {
        match c {
            '"' | '`' | '$' | '\\' => {
                // Exec's own escape, then the desktop file's escape of `\`.
                quoted.push_str("\\\\");
                quoted.push(c);
            }
            // `%` starts a field code in Exec.
            '%' => quoted.push_str("%%"),
            _ => quoted.push(c),
        }
    }
    quoted.push('"');
    format!(
        "[Desktop Entry]\n\
         Type=Application\n\
         Name=ibephone\n\
         Comment=Secured calls: starts in the background so that calls reach you\n\
         Exec={quoted} --background\n\
         Icon=ibephone\n\
         Terminal=false\n\
         X-GNOME-Autostart-enabled=true\n"
    )
}

/// Whether the entry exists at `path`.
pub fn is_enabled(path: &Path) -> bool {
    path.is_file()
}

/// Writes (`on`) or removes the entry at `path`. Writing goes through a
/// temporary file in the same directory and a rename, so the desktop
/// never reads half an entry; removing an absent entry is fine.
pub fn set(path: &Path, on: bool, exe: &Path) -> Result<(), UiError> {
    if !on {
        return match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(file_err(path, e)),
        };
    }
    let dir = path
        .parent()
        .ok_or_else(|| UiError::Input(format!("{} has no directory", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, entry(exe)).map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        file_err(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_starts_the_program_in_the_background() {
        let e = entry(Path::new("/usr/bin/ibephone"));
        assert!(e.starts_with("[Desktop Entry]\n"));
        assert!(
            e.contains("\nExec=\"/usr/bin/ibephone\" --background\n"),
            "{e}"
        );
        assert!(e.contains("\nType=Application\n"));
    }

    #[test]
    fn odd_paths_are_quoted_not_run() {
        let e = entry(Path::new("/opt/my apps/$(rm -rf ~)/ib\"e%u"));
        let exec = e.lines().find(|l| l.starts_with("Exec=")).unwrap();
        assert_eq!(
            exec,
            r#"Exec="/opt/my apps/\\$(rm -rf ~)/ib\\"e%%u" --background"#
        );
    }

    #[test]
    fn switching_on_and_off_writes_and_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("autostart").join(FILE_NAME);
        assert!(!is_enabled(&p));
        set(&p, true, Path::new("/usr/bin/ibephone")).unwrap();
        assert!(is_enabled(&p));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            entry(Path::new("/usr/bin/ibephone"))
        );
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME], "no temporary file left behind");
        set(&p, false, Path::new("/usr/bin/ibephone")).unwrap();
        assert!(!is_enabled(&p));
        set(&p, false, Path::new("/usr/bin/ibephone")).unwrap();
    }

    #[test]
    fn a_relative_xdg_config_home_is_ignored() {
        let d = |x: Option<&str>, h: Option<&str>| dir_from(x.map(Into::into), h.map(Into::into));
        assert_eq!(
            d(Some("/tmp/cfg"), Some("/home/u")),
            Some(PathBuf::from("/tmp/cfg/autostart"))
        );
        assert_eq!(
            d(Some("relative/cfg"), Some("/home/u")),
            Some(PathBuf::from("/home/u/.config/autostart"))
        );
        assert_eq!(
            d(None, Some("/home/u")),
            Some(PathBuf::from("/home/u/.config/autostart"))
        );
        assert_eq!(d(Some("rel"), Some("also-rel")), None);
        assert_eq!(d(None, None), None);
    }
}
