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
pub type Wake = Arc<dyn Fn() + Send + Sync>;

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
pub fn start(events: Sender<TrayEvent>, wake: Wake) -> Tray {
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
    pub struct PhoneTray {
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

    pub fn run(
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

    /// With no session bus at all the tray says so (the window then
    /// minimises instead of hiding): never silence, never a panic.
    #[test]
    fn no_session_bus_reports_unavailable() {
        let (tx, rx) = std::sync::mpsc::channel();
        // A bus address where nothing listens.
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("unix:path={}", dir.path().join("no-bus").display());
        let _tray = with_bus(&addr, || start(tx, Arc::new(|| {})));
        let got = rx.recv_timeout(std::time::Duration::from_secs(20));
        assert!(matches!(got, Ok(TrayEvent::Unavailable(_))), "{got:?}");
    }

    fn with_bus<T>(addr: &str, f: impl FnOnce() -> T) -> T {
        // The variable is read when the tray thread connects; this test
        // binary's other tests do not use the session bus.
        std::env::set_var("DBUS_SESSION_BUS_ADDRESS", addr);
        f()
    }
}
