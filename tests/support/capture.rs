//! tshark capturing loopback traffic while a test runs, when
//! `IBEPHONE_TEST_TSHARK=1` (scripts/test.sh sets it after installing
//! tshark; tshark missing then is a failure). Without the flag the tests
//! check what they can without a live capture.

use super::tools::tool_path;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The ports' capture filter: `port A or port B ...`.
pub fn ports_filter(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("port {p}"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A running tshark writing to a file.
pub struct Tshark {
    child: Child,
    path: PathBuf,
}

impl Tshark {
    /// tshark on `lo` with capture filter `filter` (and `args` before
    /// `-w`, e.g. `-F pcap`) into `path`, or `None` without
    /// `IBEPHONE_TEST_TSHARK=1`. Returns once it captures.
    pub fn start(path: &Path, filter: &str, args: &[&str]) -> Option<Tshark> {
        if std::env::var("IBEPHONE_TEST_TSHARK").as_deref() != Ok("1") {
            eprintln!("IBEPHONE_TEST_TSHARK is not 1: no live capture in this test");
            return None;
        }
        let child = Command::new(tool_path("tshark"))
            .args(["-q", "-i", "lo", "-f", filter])
            .args(args)
            .arg("-w")
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("IBEPHONE_TEST_TSHARK=1 but tshark does not start");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        // The file appears when dumpcap opens it, a moment before it captures.
        std::thread::sleep(Duration::from_millis(700));
        Some(Tshark {
            child,
            path: path.to_path_buf(),
        })
    }

    /// Lets the last packets in, stops tshark (SIGINT: it flushes the
    /// file) and returns the capture.
    pub fn stop(mut self) -> Vec<u8> {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: kill(2) on the pid of a child we spawned and still own.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let _ = self.child.wait();
        std::fs::read(&self.path).unwrap()
    }
}

impl Drop for Tshark {
    fn drop(&mut self) {
        // A test that failed before `stop`: no capture left running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
