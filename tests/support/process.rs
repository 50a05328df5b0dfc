//! `ibephone agent` processes: JSON commands on stdin, JSON events on
//! stdout, the log on stderr kept for the assertions; and the files an
//! agent with a key file (`[keys]`) starts from.

use super::agents::{recent_periods, TestDomain};
use super::tools::wait_or_kill;
use ibephone::agent::config::write_key_file;
use serde_json::Value;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `ibephone pcap verify` on `bytes`, written to a temporary file first:
/// its exit code and stdout.
pub fn pcap_verify_cli(bytes: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.pcap");
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ibephone"))
        .args(["pcap", "verify"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// Writes a secret file (mode 0600).
pub fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Writes the configuration of `user` of `domain` with a key file in
/// `dir`: `USER.keys.json` (the keys of the previous and the current
/// period), `USER.password` and `USER.toml` (listening on a free loopback
/// port, outbound proxy `proxy`, the default security section). Returns
/// the path of `USER.toml`.
pub fn key_file_config(
    dir: &Path,
    domain: &TestDomain,
    user: &str,
    password: &str,
    proxy: SocketAddr,
) -> PathBuf {
    let keys = domain.keys(user, &recent_periods());
    write_key_file(
        &dir.join(format!("{user}.keys.json")),
        &domain.params,
        &[],
        &keys,
    )
    .unwrap();
    write_secret(
        &dir.join(format!("{user}.password")),
        &format!("{password}\n"),
    );
    let toml = format!(
        "[account]\naor = \"sip:{user}@{}\"\npassword_file = \"{user}.password\"\n\n\
         [sip]\nlisten = \"127.0.0.1:0\"\nproxy = \"{proxy}\"\n\n\
         [keys]\nfile = \"{user}.keys.json\"\n",
        domain.domain()
    );
    let path = dir.join(format!("{user}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

/// Rewrites the `[sip] listen` address of a configuration written by
/// [`key_file_config`] to `ip` (port chosen by the system). The agent binds
/// its media sockets to the same address, so a capture filtered on `ip`
/// holds this agent's traffic and none of the tests running beside it on
/// 127.0.0.1 (the whole 127.0.0.0/8 is loopback on Linux).
pub fn listen_on(config: &Path, ip: std::net::Ipv4Addr) {
    let toml = std::fs::read_to_string(config).unwrap();
    let moved = toml.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{ip}:0\""));
    assert_ne!(
        toml,
        moved,
        "no 127.0.0.1:0 listen line in {}",
        config.display()
    );
    std::fs::write(config, moved).unwrap();
}

/// An `ibephone agent` process: JSON commands in, JSON events out.
pub struct Agent {
    /// The name in failure messages.
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Value>,
    /// What the agent logged so far.
    pub stderr: Arc<Mutex<String>>,
    /// The thread copying the agent's stderr into `stderr`; it ends at
    /// the pipe's end, after the process's last line.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    /// The events passed over by [`Agent::expect`] and
    /// [`Agent::try_expect`].
    pub seen: Vec<Value>,
    /// An `error` event passed over fails the test at once.
    pub errors_fail: bool,
}

impl Agent {
    /// `ibephone agent --config CONFIG`.
    pub fn start(name: &str, config: &Path) -> Agent {
        Self::start_with(name, config, &[] as &[&OsStr])
    }

    /// `ibephone agent --config CONFIG ARGS...`.
    pub fn start_with(name: &str, config: &Path, args: &[impl AsRef<OsStr>]) -> Agent {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ibephone"));
        cmd.args(["agent", "--config"]).arg(config).args(args);
        Self::spawn(name, cmd)
    }

    /// Runs `cmd` (an `ibephone agent` command line, possibly behind a
    /// wrapper such as `ip netns exec NS`) with its stdio piped.
    pub fn spawn(name: &str, mut cmd: Command) -> Agent {
        // The agents' diagnostic logs go to one scratch directory, not to
        // the state directory of whoever runs the tests.
        if std::env::var_os("IBEPHONE_LOG_DIR").is_none()
            && !cmd.get_envs().any(|(k, _)| k == "IBEPHONE_LOG_DIR")
        {
            cmd.env(
                "IBEPHONE_LOG_DIR",
                std::env::temp_dir().join("ibephone-test-logs"),
            );
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, events) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        Agent {
            name: name.into(),
            stdin: child.stdin.take(),
            child,
            events,
            stderr,
            stderr_reader: Some(stderr_reader),
            seen: Vec::new(),
            errors_fail: false,
        }
    }

    /// The agent's process id (`ip netns exec` runs it in place: the
    /// agent itself, not a wrapper).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one JSON command line.
    pub fn send(&mut self, cmd: Value) {
        let s = self.stdin.as_mut().unwrap();
        writeln!(s, "{cmd}").unwrap();
        s.flush().unwrap();
    }

    /// The next event named `event` within `wait` (other events are kept in `seen`).
    pub fn expect(&mut self, event: &str, wait: Duration) -> Value {
        self.try_expect(event, wait).unwrap_or_else(|| {
            panic!(
                "{}: no {event} within {wait:?}; saw {:?}\nstderr: {}",
                self.name,
                self.seen,
                self.stderr.lock().unwrap()
            )
        })
    }

    /// The next event named `event` within `wait`, if any (other events
    /// are kept in `seen`).
    pub fn try_expect(&mut self, event: &str, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["event"] == event {
                        return Some(v);
                    }
                    if self.errors_fail && v["event"] == "error" {
                        panic!(
                            "{} waiting for {event}: {v}\nstderr: {}",
                            self.name,
                            self.stderr.lock().unwrap()
                        );
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Sends `register` and waits for `registered` (20 s).
    pub fn register(&mut self) {
        self.send(serde_json::json!({"cmd": "register"}));
        self.expect("registered", Duration::from_secs(20));
    }

    /// Ends stdin: the agent unregisters and exits.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Ends stdin (the agent unregisters and exits) and waits.
    pub fn quit(&mut self) {
        self.close_stdin();
        wait_or_kill(&mut self.child, Duration::from_secs(5));
        self.await_stderr_end();
    }

    /// After the process ended: everything it wrote is in `stderr` once
    /// the copying thread reached the pipe's end, which under load lags
    /// the exit. Bounded, should a child of the agent hold the pipe open.
    fn await_stderr_end(&self) {
        let until = Instant::now() + Duration::from_secs(5);
        while self
            .stderr_reader
            .as_ref()
            .is_some_and(|r| !r.is_finished())
            && Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit (e.g. a start that must fail); its
    /// exit code.
    pub fn wait_exit(&mut self, wait: Duration) -> Option<i32> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.await_stderr_end();
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
