//! Running the provider's binaries: `pkg-server` until its start-up line,
//! `pkg-admin` to completion.
//!
//! Self-contained (std only): `pkg-server/tests` include this file with
//! `#[path]` as well, so the two packages share one copy.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// What `pkg-server` says on its first stdout line
/// (`PKG-SERVER listening=... fingerprint=... sip=...`).
pub struct Startup {
    /// `https://host:port` of the PKG.
    pub url: String,
    /// SHA-256 of its TLS certificate, hex.
    pub fingerprint: String,
    /// The embedded SIP registrar/proxy's address, or `off`.
    pub sip: String,
    /// Its SIP over TLS address, when on.
    pub sip_tls: Option<String>,
    /// The embedded STUN/TURN relay's UDP (and TCP) address, or `off`.
    pub turn: String,
    /// The relay's TLS address, when it has one.
    pub turns: Option<String>,
}

/// Starts `server --config CONFIG ARGS...` (log level warn, stderr
/// inherited) and reads its start-up line.
pub fn start_server(server: &Path, config: &Path, args: &[&str]) -> (Child, Startup) {
    start_server_as(Command::new(server), config, args)
}

/// [`start_server`] through a prepared `command` naming the server (for
/// example one that runs it inside a network namespace).
pub fn start_server_as(mut command: Command, config: &Path, args: &[&str]) -> (Child, Startup) {
    let mut child = command
        .arg("--config")
        .arg(config)
        .args(args)
        .env("PKG_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("PKG-SERVER "), "server said {line:?}");
    let optional = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(str::to_string)
    };
    let field = |k: &str| optional(k).unwrap_or_else(|| panic!("no {k} in {line:?}"));
    let startup = Startup {
        url: format!("https://{}", field("listening=")),
        fingerprint: field("fingerprint="),
        sip: field("sip="),
        sip_tls: line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("sip_tls="))
            .filter(|a| *a != "off")
            .map(str::to_string),
        turn: field("turn="),
        turns: optional("turns="),
    };
    (child, startup)
}

/// Runs `admin --config CONFIG ARGS...` with `stdin` written to it.
pub fn run_admin(admin: &Path, config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(admin)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // pkg-admin may exit (a usage error, say) before it reads stdin:
    // the pipe is then closed, which is not the test's failure.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    child.wait_with_output().unwrap()
}
