//! Kamailio (Debian's package, unmodified) with
//! `config/kamailio/kamailio.cfg`, run in the foreground by a test: the
//! configuration's defines, the `kamailio -c` check, and the running
//! process, stopped (SIGTERM to its main process, which stops its
//! children) when dropped. Used on loopback (`tests/it/interop_kamailio.rs`)
//! and in the NAT lab's `prov` namespace (`tests/it/natlab.rs`).

use crate::support::tools::{tool_path, wait_or_kill};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `config/kamailio/kamailio.cfg` of this repository.
pub fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kamailio/kamailio.cfg")
}

/// The `-A NAME="value"` arguments of the configuration: the SIP domain,
/// the db_text directory and, for SIP over TLS, the certificate and key
/// (PEM files).
pub fn defines(domain: &str, db: &Path, tls: Option<(&Path, &Path)>) -> Vec<String> {
    let mut d = vec![
        "-A".to_string(),
        format!("SIP_DOMAIN=\"{domain}\""),
        "-A".to_string(),
        format!("DBURL=\"text://{}\"", db.display()),
    ];
    if let Some((cert, key)) = tls {
        d.push("-A".into());
        d.push(format!("TLS_CERT=\"{}\"", cert.display()));
        d.push("-A".into());
        d.push(format!("TLS_KEY=\"{}\"", key.display()));
    }
    d
}

/// `kamailio -c` with `defines`: the configuration must be accepted.
pub fn check(defines: &[String]) {
    let out = Command::new(tool_path("kamailio"))
        .arg("-f")
        .arg(config())
        .arg("-c")
        .args(defines)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kamailio -c refused the configuration:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running Kamailio; stopped when dropped.
pub struct Kamailio {
    child: Child,
    log: PathBuf,
}

impl Kamailio {
    /// Starts `cmd` (the `kamailio` program, possibly behind `ip netns
    /// exec`) in the foreground with the configuration, `listen` (`-l`
    /// arguments such as `tls:203.0.113.10:5061`) and `defines`; its
    /// runtime files go to `dir/run`, its log to `dir/kamailio.log`. The
    /// configuration is checked first.
    pub fn start(mut cmd: Command, dir: &Path, listen: &[String], defines: &[String]) -> Kamailio {
        check(defines);
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        let log = dir.join("kamailio.log");
        let file = std::fs::File::create(&log).unwrap();
        cmd.current_dir(dir)
            .arg("-f")
            .arg(config())
            .args(["-DD", "-E", "-n", "2", "-Y"])
            .arg(&run);
        for l in listen {
            cmd.args(["-l", l]);
        }
        let child = cmd
            .args(defines)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Kamailio { child, log }
    }

    /// What Kamailio logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        terminate(self.child.id());
        wait_or_kill(&mut self.child, Duration::from_secs(5));
    }
}

/// SIGTERM to our own child, by its pid, through the `kill` command.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
