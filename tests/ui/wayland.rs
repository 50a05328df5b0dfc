//! The real desktop app on real Wayland compositors (behind
//! `IBEPHONE_TEST_WAYLAND=1`), with no X server and no DISPLAY, a private
//! D-Bus session bus and a stand-in StatusNotifierWatcher whose host
//! "shows" the tray icon. What the app asks of the compositor is read from
//! libwayland's `WAYLAND_DEBUG` trace on its stderr, what it decided from
//! its log.
//!
//! - sway 1.7 headless (wlroots' headless backend, pixman renderer): the
//!   window opens on Wayland (its log says so, sway lists it by app id),
//!   the compositor's close (`swaymsg kill`) with the tray shown leaves it
//!   running and asking to be minimised, and the tray icon's Activate
//!   makes it ask for activation (xdg-activation). sway refuses to run as
//!   root, so as root the test runs it as `nobody` (setpriv).
//! - weston 10 headless: no server-side decorations (winit draws its own,
//!   as on GNOME) and minimising for real; started in the background the
//!   window minimises and must still hear the tray while minimised.
//!
//! Why both: Debian's weston 10 headless has no input and no way to send
//! a window `xdg_toplevel.close` from outside, nor xdg-activation; sway
//! has both but ignores minimising and draws decorations itself.
#![cfg(all(feature = "gui", target_os = "linux"))]

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const APP_ID: &str = "org.ibephone.ibephone";
const WAIT: Duration = Duration::from_secs(60);

#[test]
fn wayland_close_with_tray_minimises_and_show_asks_for_activation() {
    if std::env::var("IBEPHONE_TEST_WAYLAND").as_deref() != Ok("1") {
        eprintln!("skipped: set IBEPHONE_TEST_WAYLAND=1 (needs sway, dbus-daemon)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sway = Sway::start(&dir.path().join("runtime"));
    let bus = Bus::start(dir.path());
    let (_watcher, items) = bus.watcher();

    let logs = dir.path().join("logs");
    let mut app = spawn_app(dir.path(), &sway.runtime, &sway.socket, &bus.address, &[]);

    // On Wayland: the log says so, and sway shows the window.
    until(&mut app, "the log names the window system", |_| {
        read_logs(&logs).contains("window opened on wayland")
    });
    assert!(!read_logs(&logs).contains("window opened on x11"));
    until(&mut app, "sway lists the window", |_| {
        sway.window().is_some_and(|w| w["visible"] == true)
    });
    // The tray shows the icon, and the window knows.
    items.recv_timeout(WAIT).expect("the tray icon registered");
    until(&mut app, "the window hears of the tray", |_| {
        read_logs(&logs).contains("the tray shows the icon")
    });

    // The compositor closes the window: the app stays, minimised.
    let before = app.trace_len();
    sway.msg(&[&format!("[app_id=\"{APP_ID}\"] kill")]);
    until(&mut app, "a minimise request after the close", |a| {
        a.trace_since(before)
            .iter()
            .any(|l| request(l, "xdg_toplevel", "set_minimized"))
    });
    let trace = app.trace_since(before);
    assert!(
        trace
            .iter()
            .any(|l| l.contains("xdg_toplevel") && l.contains(".close(")),
        "the close event reached the app"
    );
    until(&mut app, "the log says what closing did", |_| {
        read_logs(&logs).contains("the phone keeps running")
    });
    let log = read_logs(&logs);
    let line = log
        .lines()
        .find(|l| l.contains("the phone keeps running"))
        .unwrap_or_default();
    assert!(
        line.contains("Minimised") && line.contains("Shown") && line.contains("wayland"),
        "minimised with the tray shown, on Wayland: {line}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(app.running(), "closing kept the phone running");
    assert!(sway.window().is_some(), "the window still exists");

    // The tray icon is clicked: the app asks for activation.
    let item = items.try_recv().ok();
    let conn = bus.connect();
    let name = item.unwrap_or_else(|| sni_item(&conn));
    let before = app.trace_len();
    activate(&conn, &name);
    until(&mut app, "an activation request after Show", |a| {
        a.trace_since(before)
            .iter()
            .any(|l| request(l, "xdg_activation_v1", "activate"))
    });
    let trace = app.trace_since(before);
    assert!(
        !trace
            .iter()
            .any(|l| request(l, "xdg_toplevel", "unset_minimized")),
        "no request Wayland does not have"
    );
    assert!(app.running());
}

/// On weston (no server-side decorations, as GNOME: winit draws the
/// title bar and close button itself) started in the background with a
/// tray: the window opens on Wayland with its own decorations and is
/// minimised at once (it cannot hide); weston then shows it no more and
/// sends it no frame callbacks, and a click on the tray icon must still
/// reach the window (drawing with vsync would block it in
/// `eglSwapBuffers` until the window is shown again).
#[test]
fn wayland_on_weston_starts_minimised_and_still_hears_the_tray() {
    if std::env::var("IBEPHONE_TEST_WAYLAND").as_deref() != Ok("1") {
        eprintln!("skipped: set IBEPHONE_TEST_WAYLAND=1 (needs weston, dbus-daemon)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let weston = Weston::start(&dir.path().join("runtime"));
    let bus = Bus::start(dir.path());
    let (_watcher, items) = bus.watcher();
    let logs = dir.path().join("logs");
    let mut app = spawn_app(
        dir.path(),
        &weston.runtime,
        &weston.socket,
        &bus.address,
        &["--background"],
    );
    until(&mut app, "the log names the window system", |_| {
        read_logs(&logs).contains("window opened on wayland")
    });
    let name = items.recv_timeout(WAIT).expect("the tray icon registered");
    until(&mut app, "minimised once the tray shows", |a| {
        a.trace_since(0)
            .iter()
            .any(|l| request(l, "xdg_toplevel", "set_minimized"))
    });
    assert!(
        app.trace_since(0)
            .iter()
            .any(|l| request(l, "wl_subcompositor", "get_subsurface")),
        "winit draws the decorations (subsurfaces)"
    );
    // Draws a few frames while minimised (the notice, the failed start).
    std::thread::sleep(Duration::from_secs(2));
    let conn = bus.connect();
    for _ in 0..3 {
        activate(&conn, &name);
        std::thread::sleep(Duration::from_millis(300));
    }
    until(
        &mut app,
        "the window hears the tray while minimised",
        |_| {
            read_logs(&logs)
                .matches("the tray asks for the window")
                .count()
                >= 3
        },
    );
    assert!(app.running());
}

/// Creates `runtime` as an XDG runtime directory (mode 0700, as
/// compositors demand).
fn private_runtime_dir(runtime: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(runtime).unwrap();
    std::fs::set_permissions(runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// weston 10 on its headless backend (pixman renderer, desktop shell) in
/// its own runtime directory, until dropped.
struct Weston {
    child: Child,
    runtime: std::path::PathBuf,
    socket: String,
}

impl Weston {
    fn start(runtime: &Path) -> Weston {
        private_runtime_dir(runtime);
        let socket = "ibephone-test".to_string();
        let child = Command::new("weston")
            .args([
                "--backend=headless-backend.so",
                "--use-pixman",
                "--no-config",
                "--idle-time=0",
            ])
            .arg(format!("--socket={socket}"))
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("DISPLAY")
            .env("XDG_RUNTIME_DIR", runtime)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("weston (IBEPHONE_TEST_WAYLAND=1 needs it): {e}"));
        let mut weston = Weston {
            child,
            runtime: runtime.to_path_buf(),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !runtime.join(&weston.socket).exists() {
            assert!(
                matches!(weston.child.try_wait(), Ok(None)),
                "weston ended at start"
            );
            assert!(Instant::now() < deadline, "weston did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        weston
    }
}

impl Drop for Weston {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real app on the Wayland display `socket` in `runtime`, with libwayland's
/// trace on stderr, the session bus at `bus`, its data and log (`logs/`)
/// under `dir`, and no X server. Its phone is set up (key store and
/// account present: closing keeps it running); the files are not real, so
/// it never registers, which the window's life does not depend on.
fn spawn_app(dir: &Path, runtime: &Path, socket: &str, bus: &str, args: &[&str]) -> App {
    let data = dir.join("data");
    let dirs = ibephone::ui::AppDirs::at(&data);
    std::fs::create_dir_all(dirs.keys()).unwrap();
    std::fs::write(
        dirs.keys().join(ibephone::pkg_client::store::STORE_FILE),
        b"x",
    )
    .unwrap();
    std::fs::write(dirs.account(), b"x").unwrap();
    App::spawn(
        Command::new(env!("CARGO_BIN_EXE_ibephone"))
            .args(args)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_SOCKET")
            .env("WAYLAND_DISPLAY", socket)
            .env("XDG_RUNTIME_DIR", runtime)
            .env("WAYLAND_DEBUG", "1")
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .env("DBUS_SESSION_BUS_ADDRESS", bus)
            .env("IBEPHONE_DATA_DIR", &data)
            .env("IBEPHONE_LOG_DIR", dir.join("logs"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("NO_AT_BRIDGE", "1"),
    )
}

/// Whether a trace line is the request `object.request(` (libwayland
/// writes `-> xdg_toplevel@25.set_minimized()`).
fn request(line: &str, object: &str, request: &str) -> bool {
    line.contains("-> ") && line.contains(object) && line.contains(&format!(".{request}("))
}

/// The name the stand-in watcher saw registered (asked again from the bus
/// when the first registration was already taken off the channel).
fn sni_item(conn: &zbus::blocking::Connection) -> String {
    let names = zbus::blocking::fdo::DBusProxy::new(conn)
        .unwrap()
        .list_names()
        .unwrap();
    names
        .into_iter()
        .map(|n| n.to_string())
        .find(|n| n.starts_with("org.kde.StatusNotifierItem"))
        .expect("the tray's item name on the bus")
}

/// Clicks the tray icon of the item `name` (what a tray host does on a
/// left click: `Activate(0, 0)`).
fn activate(conn: &zbus::blocking::Connection, name: &str) {
    conn.call_method(
        Some(name),
        "/StatusNotifierItem",
        Some("org.kde.StatusNotifierItem"),
        "Activate",
        &(0i32, 0i32),
    )
    .unwrap();
}

/// Waits until `ok`, failing with `what` (and the app's last words) after
/// [`WAIT`] or when the app ends.
fn until(app: &mut App, what: &str, ok: impl Fn(&App) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok(app) {
        assert!(
            app.running(),
            "the app ended waiting for {what}: {}",
            app.tail()
        );
        assert!(Instant::now() < deadline, "{what}: {}", app.tail());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Everything the app's log files hold.
fn read_logs(dir: &Path) -> String {
    let mut all = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    all
}

/// The app, its stderr (libwayland's trace among it) collected by a
/// thread; killed when dropped.
struct App {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl App {
    fn spawn(cmd: &mut Command) -> App {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the ibephone binary (cargo build --workspace --bins)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        App { child, lines }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn trace_len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn trace_since(&self, from: usize) -> Vec<String> {
        self.lines.lock().unwrap()[from..].to_vec()
    }

    /// The last lines that are not protocol trace.
    fn tail(&self) -> String {
        let lines = self.lines.lock().unwrap();
        let words: Vec<&String> = lines
            .iter()
            .filter(|l| !l.trim_start().starts_with('['))
            .collect();
        words[words.len().saturating_sub(20)..]
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// sway on wlroots' headless backend in its own runtime directory, until
/// dropped.
struct Sway {
    child: Child,
    runtime: std::path::PathBuf,
    socket: String,
    ipc: std::path::PathBuf,
}

impl Sway {
    fn start(runtime: &Path) -> Sway {
        private_runtime_dir(runtime);
        let config = runtime.join("sway.cfg");
        std::fs::write(
            &config,
            "output HEADLESS-1 resolution 1024x768\nxwayland disable\n",
        )
        .unwrap();
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false);
        let mut cmd = if root {
            // sway will not run as root: as nobody, in a directory it owns.
            std::os::unix::fs::chown(runtime, Some(65534), Some(65534)).unwrap();
            std::os::unix::fs::chown(&config, Some(65534), Some(65534)).unwrap();
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "sway"]);
            c
        } else {
            Command::new("sway")
        };
        let child = cmd
            .arg("-c")
            .arg(&config)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", runtime)
            .env("XDG_RUNTIME_DIR", runtime)
            .env("WLR_BACKENDS", "headless")
            .env("WLR_LIBINPUT_NO_DEVICES", "1")
            .env("WLR_RENDERER", "pixman")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("sway (IBEPHONE_TEST_WAYLAND=1 needs it): {e}"));
        let mut sway = Sway {
            child,
            runtime: runtime.to_path_buf(),
            socket: String::new(),
            ipc: Default::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let names: Vec<String> = std::fs::read_dir(runtime)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let socket = names
                .iter()
                .find(|n| n.starts_with("wayland-") && !n.ends_with(".lock"));
            let ipc = names.iter().find(|n| n.starts_with("sway-ipc."));
            if let (Some(s), Some(i)) = (socket, ipc) {
                sway.socket = s.clone();
                sway.ipc = runtime.join(i);
                break;
            }
            assert!(
                matches!(sway.child.try_wait(), Ok(None)),
                "sway ended at start"
            );
            assert!(Instant::now() < deadline, "sway did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        sway
    }

    /// `swaymsg ARGS` (its output).
    fn msg(&self, args: &[&str]) -> String {
        let out = Command::new("swaymsg")
            .arg("-s")
            .arg(&self.ipc)
            .args(args)
            .output()
            .expect("swaymsg");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Our window in sway's tree, if it has one.
    fn window(&self) -> Option<serde_json::Value> {
        let tree: serde_json::Value =
            serde_json::from_str(&self.msg(&["-t", "get_tree", "-r"])).ok()?;
        find_app(&tree)
    }
}

fn find_app(node: &serde_json::Value) -> Option<serde_json::Value> {
    if node["app_id"] == APP_ID {
        return Some(node.clone());
    }
    ["nodes", "floating_nodes"]
        .iter()
        .filter_map(|k| node[*k].as_array())
        .flatten()
        .find_map(find_app)
}

impl Drop for Sway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private session bus (`dbus-daemon --session`) until dropped.
struct Bus {
    child: Child,
    address: String,
}

impl Bus {
    fn start(dir: &Path) -> Bus {
        let socket = dir.join("bus");
        let address = format!("unix:path={}", socket.display());
        let child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address={address}"))
            .spawn()
            .unwrap_or_else(|e| panic!("dbus-daemon (IBEPHONE_TEST_WAYLAND=1 needs it): {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Bus { child, address }
    }
}

impl Bus {
    /// A new connection to this bus.
    fn connect(&self) -> zbus::blocking::Connection {
        zbus::blocking::connection::Builder::address(self.address.as_str())
            .unwrap()
            .build()
            .unwrap()
    }

    /// The stand-in [`Watcher`] on this bus (served while the connection
    /// lives) and the item names it sees registered.
    fn watcher(
        &self,
    ) -> (
        zbus::blocking::Connection,
        std::sync::mpsc::Receiver<String>,
    ) {
        let (items_tx, items) = std::sync::mpsc::channel();
        let conn = zbus::blocking::connection::Builder::address(self.address.as_str())
            .unwrap()
            .name("org.kde.StatusNotifierWatcher")
            .unwrap()
            .serve_at("/StatusNotifierWatcher", Watcher { items: items_tx })
            .unwrap()
            .build()
            .unwrap();
        (conn, items)
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A StatusNotifierWatcher that says a host is registered and passes on
/// each item's bus name.
struct Watcher {
    items: std::sync::mpsc::Sender<String>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    fn register_status_notifier_item(
        &self,
        service: &str,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) {
        let name = if service.starts_with('/') {
            hdr.sender().map(|s| s.to_string()).unwrap_or_default()
        } else {
            service.to_string()
        };
        let _ = self.items.send(name);
    }
    fn register_status_notifier_host(&self, _service: &str) {}
    #[zbus(property)]
    fn is_status_notifier_host_registered(&self) -> bool {
        true
    }
    #[zbus(property)]
    fn protocol_version(&self) -> i32 {
        0
    }
    #[zbus(property)]
    fn registered_status_notifier_items(&self) -> Vec<String> {
        Vec::new()
    }
}
