//! The tray icon: a thin driver. On Linux a StatusNotifierItem over the
//! session D-Bus (`ksni`, on its own thread) with the app icon, a click
//! that shows the window and a menu of "Show ibephone" and "Quit". It
//! decides nothing: it reports [`TrayEvent`]s on a channel and wakes the
//! window, whose [`Background`](super::background::Background) state
//! machine decides. Elsewhere there is no tray: it reports
//! [`TrayEvent::Unavailable`] at once.

use super::background::TrayEvent;
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// Wakes the window so that it reads the channel.
pub(crate) type Wake = Arc<dyn Fn() + Send + Sync>;

/// The running tray icon; dropping it removes the icon.
pub struct Tray {
    #[cfg(target_os = "linux")]
    handle: Arc<std::sync::Mutex<Option<ksni::blocking::Handle<linux::PhoneTray>>>>,
}

impl std::fmt::Debug for Tray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tray")
    }
}

/// Starts the tray icon off the UI thread. Exactly one of
/// [`TrayEvent::Shown`] or [`TrayEvent::Unavailable`] follows on
/// `events` (then more as the tray host comes and goes), each followed by
/// `wake()`.
pub(crate) fn start(events: Sender<TrayEvent>, wake: Wake) -> Tray {
    #[cfg(target_os = "linux")]
    {
        let handle = Arc::new(std::sync::Mutex::new(None));
        let slot = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("tray".into())
            .spawn(move || linux::run(events, wake, slot));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "the tray thread cannot start");
        }
        Tray { handle }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = events.send(TrayEvent::Unavailable(
            "no tray icon on this platform yet".into(),
        ));
        wake();
        Tray {}
    }
}

impl Drop for Tray {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Ok(mut slot) = self.handle.lock() {
            if let Some(h) = slot.take() {
                // Removes the icon; not waited for (the app is ending).
                drop(h.shutdown());
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{TrayEvent, Wake};
    use std::sync::mpsc::Sender;
    use std::sync::{Arc, Mutex};

    /// The item ksni serves: reports clicks and the host's comings and goings.
    pub(super) struct PhoneTray {
        events: Sender<TrayEvent>,
        wake: Wake,
        icons: Vec<ksni::Icon>,
    }

    impl PhoneTray {
        fn send(&self, e: TrayEvent) {
            // The window is gone when the channel is: nothing to tell.
            if self.events.send(e).is_ok() {
                (self.wake)();
            }
        }
    }

    pub(super) fn run(
        events: Sender<TrayEvent>,
        wake: Wake,
        slot: Arc<Mutex<Option<ksni::blocking::Handle<PhoneTray>>>>,
    ) {
        use ksni::blocking::TrayMethods;
        let tray = PhoneTray {
            events: events.clone(),
            wake: wake.clone(),
            icons: icons(),
        };
        let report = match tray.spawn() {
            Ok(handle) => {
                if let Ok(mut s) = slot.lock() {
                    *s = Some(handle);
                }
                TrayEvent::Shown
            }
            Err(e) => {
                tracing::info!(error = %e, "no tray icon: closing the window minimises it");
                TrayEvent::Unavailable(e.to_string())
            }
        };
        if events.send(report).is_ok() {
            wake();
        }
    }

    /// The app icon in the sizes trays draw, as ARGB32 (network order).
    fn icons() -> Vec<ksni::Icon> {
        [
            &include_bytes!("../../assets/icons/ibephone-32.png")[..],
            &include_bytes!("../../assets/icons/ibephone-64.png")[..],
        ]
        .into_iter()
        .filter_map(|png| eframe::icon_data::from_png_bytes(png).ok())
        .map(|icon| ksni::Icon {
            width: icon.width as i32,
            height: icon.height as i32,
            data: rgba_to_argb(&icon.rgba),
        })
        .collect()
    }

    /// RGBA bytes to the ARGB32 the StatusNotifierItem spec asks for.
    pub(super) fn rgba_to_argb(rgba: &[u8]) -> Vec<u8> {
        rgba.chunks_exact(4)
            .flat_map(|p| [p[3], p[0], p[1], p[2]])
            .collect()
    }

    impl ksni::Tray for PhoneTray {
        fn id(&self) -> String {
            crate::ui::APP_ID.into()
        }

        fn title(&self) -> String {
            "ibephone".into()
        }

        fn icon_name(&self) -> String {
            // Installed by the .deb; the pixmaps serve when it is not.
            "ibephone".into()
        }

        fn icon_pixmap(&self) -> Vec<ksni::Icon> {
            self.icons.clone()
        }

        fn tool_tip(&self) -> ksni::ToolTip {
            ksni::ToolTip {
                title: "ibephone".into(),
                description: "Secured calls: the phone is running".into(),
                ..Default::default()
            }
        }

        fn activate(&mut self, _x: i32, _y: i32) {
            self.send(TrayEvent::ShowWindow);
        }

        fn menu(&self) -> Vec<ksni::MenuItem<Self>> {
            use ksni::menu::StandardItem;
            vec![
                StandardItem {
                    label: "Show ibephone".into(),
                    activate: Box::new(|t: &mut Self| t.send(TrayEvent::ShowWindow)),
                    ..Default::default()
                }
                .into(),
                ksni::MenuItem::Separator,
                StandardItem {
                    label: "Quit".into(),
                    icon_name: "application-exit".into(),
                    activate: Box::new(|t: &mut Self| t.send(TrayEvent::Quit)),
                    ..Default::default()
                }
                .into(),
            ]
        }

        fn watcher_online(&self) {
            self.send(TrayEvent::Shown);
        }

        fn watcher_offline(&self, reason: ksni::OfflineReason) -> bool {
            self.send(TrayEvent::Unavailable(format!(
                "the tray host went away ({reason:?})"
            )));
            // Keep serving: the host may come back (a shell restart).
            true
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn icons_are_argb_in_network_order() {
        assert_eq!(
            linux::rgba_to_argb(&[1, 2, 3, 4, 5, 6, 7, 8]),
            [4, 1, 2, 3, 8, 5, 6, 7]
        );
    }

    /// The tray against real session buses (`dbus-daemon`, behind
    /// `IBEPHONE_TEST_DBUS=1`), one after the other in this one test (the
    /// bus address is the process's environment): no bus at all, a bus
    /// without a StatusNotifierWatcher (a desktop without tray), and a bus
    /// with a stand-in watcher and host, where the icon shows and its
    /// Activate and menu reach the window as events; with
    /// `IBEPHONE_TEST_SNI=1` also a real watcher and GTK tray host (Debian's
    /// `status-notifier-watcher`, `gtk-sni-tray-standalone`) under Xvfb.
    #[test]
    fn tray_on_real_session_buses() {
        if std::env::var("IBEPHONE_TEST_DBUS").as_deref() != Ok("1") {
            eprintln!("skipped: set IBEPHONE_TEST_DBUS=1 (needs dbus-daemon)");
            return;
        }
        let wait = std::time::Duration::from_secs(20);
        // 1. An address where nothing listens.
        let dir = tempfile::tempdir().unwrap();
        let none = format!("unix:path={}", dir.path().join("no-bus").display());
        std::env::set_var("DBUS_SESSION_BUS_ADDRESS", &none);
        let (tx, rx) = std::sync::mpsc::channel();
        let _t = start(tx, Arc::new(|| {}));
        let got = rx.recv_timeout(wait);
        assert!(matches!(got, Ok(TrayEvent::Unavailable(_))), "{got:?}");

        // 2. A bus with no watcher.
        let bus = Bus::start(dir.path());
        std::env::set_var("DBUS_SESSION_BUS_ADDRESS", &bus.address);
        let (tx, rx) = std::sync::mpsc::channel();
        let _t = start(tx, Arc::new(|| {}));
        let got = rx.recv_timeout(wait);
        assert!(
            matches!(&got, Ok(TrayEvent::Unavailable(why)) if why.contains("StatusNotifierWatcher")),
            "{got:?}"
        );

        // 3. A watcher with a host: shown; Activate asks for the window.
        let (items_tx, items) = std::sync::mpsc::channel();
        let conn = zbus::blocking::connection::Builder::address(bus.address.as_str())
            .unwrap()
            .name("org.kde.StatusNotifierWatcher")
            .unwrap()
            .serve_at("/StatusNotifierWatcher", Watcher { items: items_tx })
            .unwrap()
            .build()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let w = woken.clone();
        let tray = start(
            tx,
            Arc::new(move || {
                w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }),
        );
        assert_eq!(rx.recv_timeout(wait), Ok(TrayEvent::Shown));
        let item = items.recv_timeout(wait).unwrap();
        conn.call_method(
            Some(item.as_str()),
            "/StatusNotifierItem",
            Some("org.kde.StatusNotifierItem"),
            "Activate",
            &(0i32, 0i32),
        )
        .unwrap();
        assert_eq!(rx.recv_timeout(wait), Ok(TrayEvent::ShowWindow));
        // The driver wakes the window right AFTER the event is queued: wait
        // for that wake (Shown's and ShowWindow's) instead of racing it.
        let deadline = std::time::Instant::now() + wait;
        while woken.load(std::sync::atomic::Ordering::SeqCst) < 2
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst) >= 2);
        drop(tray);
        drop(conn);

        // 4. With `IBEPHONE_TEST_SNI=1`: a real tray on a virtual display,
        // Debian's `status-notifier-watcher` (the watcher) and
        // `gtk-sni-tray-standalone` (a GTK StatusNotifierItem host) under
        // Xvfb. The icon shows, the watcher lists it, and its Activate
        // reaches the window.
        if std::env::var("IBEPHONE_TEST_SNI").as_deref() != Ok("1") {
            eprintln!("real tray host skipped: set IBEPHONE_TEST_SNI=1 (needs Xvfb, status-notifier-watcher, gtk-sni-tray-standalone)");
            return;
        }
        let sni_dir = dir.path().join("sni");
        std::fs::create_dir_all(&sni_dir).unwrap();
        let bus = Bus::start(&sni_dir);
        std::env::set_var("DBUS_SESSION_BUS_ADDRESS", &bus.address);
        let display = Xvfb::start();
        let watcher = Killed::spawn(
            std::process::Command::new("status-notifier-watcher")
                .env("DBUS_SESSION_BUS_ADDRESS", &bus.address),
        );
        let conn = zbus::blocking::connection::Builder::address(bus.address.as_str())
            .unwrap()
            .build()
            .unwrap();
        let watcher_props = |prop: &str| -> zbus::zvariant::OwnedValue {
            zbus::blocking::fdo::PropertiesProxy::builder(&conn)
                .destination("org.kde.StatusNotifierWatcher")
                .unwrap()
                .path("/StatusNotifierWatcher")
                .unwrap()
                .build()
                .unwrap()
                .get(
                    zbus::names::InterfaceName::try_from("org.kde.StatusNotifierWatcher").unwrap(),
                    prop,
                )
                .unwrap()
        };
        let until = |what: &str, f: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + wait;
            while !f() {
                assert!(std::time::Instant::now() < deadline, "{what}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        };
        until("the watcher's name", &|| {
            zbus::blocking::fdo::DBusProxy::new(&conn)
                .unwrap()
                .name_has_owner("org.kde.StatusNotifierWatcher".try_into().unwrap())
                .unwrap_or(false)
        });
        let host = Killed::spawn(
            std::process::Command::new("gtk-sni-tray-standalone")
                .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
                .env("DISPLAY", &display.display)
                .env("NO_AT_BRIDGE", "1"),
        );
        until("a host registered", &|| {
            bool::try_from(watcher_props("IsStatusNotifierHostRegistered")).unwrap_or(false)
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let tray = start(tx, Arc::new(|| {}));
        assert_eq!(rx.recv_timeout(wait), Ok(TrayEvent::Shown));
        let items = || -> Vec<String> {
            Vec::<String>::try_from(watcher_props("RegisteredStatusNotifierItems"))
                .unwrap_or_default()
        };
        until("the icon listed by the watcher", &|| !items().is_empty());
        let item = items().remove(0);
        // "<bus name>/<path>" or a bus name alone.
        let (name, path) = match item.find('/') {
            Some(i) => (item[..i].to_string(), item[i..].to_string()),
            None => (item.clone(), "/StatusNotifierItem".to_string()),
        };
        conn.call_method(
            Some(name.as_str()),
            path.as_str(),
            Some("org.kde.StatusNotifierItem"),
            "Activate",
            &(0i32, 0i32),
        )
        .unwrap();
        assert_eq!(rx.recv_timeout(wait), Ok(TrayEvent::ShowWindow));
        drop(tray);
        drop((host, watcher, display));
    }

    /// A child process killed when dropped.
    struct Killed(std::process::Child);

    impl Killed {
        fn spawn(cmd: &mut std::process::Command) -> Killed {
            let name = format!("{:?}", cmd.get_program());
            Killed(
                cmd.stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("{name} (IBEPHONE_TEST_SNI=1 needs it): {e}")),
            )
        }
    }

    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// An X server on a free display (`Xvfb -displayfd`) until dropped.
    struct Xvfb {
        _child: Killed,
        display: String,
    }

    impl Xvfb {
        fn start() -> Xvfb {
            use std::io::BufRead;
            let mut child = std::process::Command::new("Xvfb")
                .args([
                    "-displayfd",
                    "1",
                    "-screen",
                    "0",
                    "800x600x24",
                    "-nolisten",
                    "tcp",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("Xvfb (IBEPHONE_TEST_SNI=1 needs it): {e}"));
            let mut line = String::new();
            if let Some(out) = child.stdout.take() {
                let _ = std::io::BufReader::new(out).read_line(&mut line);
            }
            let child = Killed(child);
            let n = line.trim();
            assert!(!n.is_empty(), "Xvfb named no display");
            Xvfb {
                display: format!(":{n}"),
                _child: child,
            }
        }
    }

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
            // ksni registers its well-known name (or a path with the
            // sender's unique name).
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

    /// A private session bus (`dbus-daemon --session`) until dropped.
    struct Bus {
        child: std::process::Child,
        address: String,
    }

    impl Bus {
        fn start(dir: &std::path::Path) -> Bus {
            let socket = dir.join("bus");
            let address = format!("unix:path={}", socket.display());
            let child = std::process::Command::new("dbus-daemon")
                .args(["--session", "--nofork", "--nopidfile"])
                .arg(format!("--address={address}"))
                .spawn()
                .unwrap_or_else(|e| panic!("dbus-daemon (IBEPHONE_TEST_DBUS=1 needs it): {e}"));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !socket.exists() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "dbus-daemon did not start"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Bus { child, address }
        }
    }

    impl Drop for Bus {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
