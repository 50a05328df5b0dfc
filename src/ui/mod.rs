//! The desktop softphone (eframe/egui): one more subscriber of the agent's
//! [`AgentEvent`](crate::agent::AgentEvent) stream and sender of its
//! [`AgentCommand`](crate::agent::AgentCommand)s, never a second
//! implementation of call logic.
//!
//! - [`app`]: [`PhoneApp`], the one state struct; it draws each frame and
//!   folds the backend's updates into its state.
//! - [`backend`]: everything slow (PKG login and key fetch, key store,
//!   the agent itself) on a tokio runtime off the UI thread; results come
//!   back through a channel and wake the window with `request_repaint`.
//! - [`wizard`], `main_window`, `call_view`, `contacts_view`,
//!   `settings_view`: the screens, each drawing from [`PhoneApp`].
//! - [`contacts`], [`history`], `settings`, `dial`, `errors`: the
//!   plain data and rules behind the screens (no egui), testable alone.
//! - `account`: the sealed account file, key fetching and storing, log-out wipe.
//! - `messages`: the conversations kept across restarts, sealed.
//! - `status`: the status bar in plain words (details in tooltips).
//! - `avatar`: a contact's colored circle with initials.
//! - `state`: the window's state types (screens, calls, banners, clock).
//! - [`ringer`]: the ring tone of an incoming call.
//! - [`fingerprint_view`]: a fingerprint's short form with the full one
//!   a click away.
//! - `diagnostics`: the "Copy diagnostics" report (a pure function of
//!   what the window shows; no secrets).
//! - [`audio_devices`]: the sound devices Settings offers, listed off the
//!   UI thread.
//! - [`background`]: what closing, the tray, Quit and an incoming call do
//!   to the window (a state machine; hides only into a shown tray, else
//!   minimises); `tray`: the tray icon, a thin driver reporting to it.
//! - [`window_system`]: X11 or Wayland, and what each allows closing and
//!   showing the window to do (Wayland cannot hide a window: it minimises).
//! - [`autostart`]: the "Start at login" XDG autostart entry.
//! - [`certificate_view`]: a renewed PKG certificate shown for consent.
//!
//! Files live in one data directory ([`AppDirs`]): `settings.json`,
//! `contacts.json`, `history.json` (not secret), `keys/` (the sealed
//! [`KeyStore`](crate::pkg_client::KeyStore) with the PKG pin) and
//! `account.sealed` (the account password, sealed under the key store's
//! key file, needed to register and to renew keys without asking) and
//! `messages.sealed` (the secure messages, sealed the same way, see
//! `messages`): nothing readable about a conversation is written to disk,
//! and logging out deletes both with the keys.

pub(crate) mod account;
pub mod app;
pub mod audio_devices;
pub mod autostart;
pub(crate) mod avatar;
pub mod backend;
pub mod background;
pub(crate) mod call_view;
pub mod certificate_view;
pub mod contacts;
pub(crate) mod contacts_view;
pub(crate) mod diagnostics;
pub(crate) mod dial;
pub(crate) mod errors;
pub mod fingerprint_view;
pub mod history;
pub(crate) mod main_window;
pub(crate) mod messages;
pub(crate) mod renewal_code;
pub mod ringer;
pub(crate) mod settings;
pub(crate) mod settings_view;
pub mod state;
pub(crate) mod status;
pub(crate) mod tray;
pub mod window_system;
pub mod wizard;

pub use app::PhoneApp;
pub use settings::{AppDirs, Settings};

use thiserror::Error;

/// What can go wrong in the app's own files and start-up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UiError {
    /// A file of the data directory could not be read or written.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// The user's input is not acceptable (the text says what to change).
    #[error("{0}")]
    Input(String),
    /// No data directory could be found for this user.
    #[error("no data directory for this user; set IBEPHONE_DATA_DIR")]
    NoDataDir,
    /// The window could not be opened.
    #[error("cannot open the window: {0}")]
    Window(String),
}

/// The application id: the desktop entry's name
/// (`assets/linux/org.ibephone.ibephone.desktop`), the Wayland app id and
/// the X11 window class, so that docks match the window to its entry.
pub const APP_ID: &str = "org.ibephone.ibephone";

/// The window's icon: `assets/icons/ibephone-256.png` (rendered from
/// `assets/icons/ibephone.svg`), built into the binary.
pub fn window_icon() -> Result<egui::IconData, String> {
    eframe::icon_data::from_png_bytes(include_bytes!("../../assets/icons/ibephone-256.png"))
        .map_err(|e| e.to_string())
}

/// The window's size when it opens (points).
pub const DEFAULT_SIZE: [f32; 2] = [760.0, 560.0];

/// The smallest size the window can be made (points).
pub const MIN_SIZE: [f32; 2] = [520.0, 420.0];

/// Opens the window and runs until the user quits (closing the window
/// keeps the phone in the tray, see [`background`]). The data directory is
/// `IBEPHONE_DATA_DIR` when set, else the platform's data directory. With
/// `start_hidden` (`--background`) the window goes to the tray at once.
pub fn run_desktop(keylog: Option<std::path::PathBuf>, start_hidden: bool) -> Result<(), UiError> {
    let dirs = AppDirs::from_env().ok_or(UiError::NoDataDir)?;
    let mut viewport = egui::ViewportBuilder::default()
        .with_title("ibephone")
        .with_app_id(APP_ID)
        .with_inner_size(DEFAULT_SIZE)
        .with_min_inner_size(MIN_SIZE);
    match window_icon() {
        Ok(icon) => viewport = viewport.with_icon(icon),
        Err(e) => tracing::warn!(error = %e, "the window icon cannot be decoded"),
    }
    // Known for sure only once the window is open (below); the choices
    // made before it follow winit's own rule.
    let expected = window_system::WindowSystem::expected_from_env();
    let options = eframe::NativeOptions {
        viewport,
        vsync: window_system::WindowSystem::vsync(expected),
        ..Default::default()
    };
    eframe::run_native(
        "ibephone",
        options,
        Box::new(move |cc| {
            // Light or dark as the desktop is, and along when it switches.
            cc.egui_ctx.set_theme(egui::ThemePreference::System);
            let mut app = PhoneApp::with_keylog(dirs, cc.egui_ctx.clone(), keylog)?;
            app.background = background::Background::new(start_hidden);
            let system = window_system_of(cc);
            tracing::info!(
                window_system = system.name(),
                "window opened on {}",
                system.name()
            );
            app.background.set_window_system(system);
            let (tx, rx) = std::sync::mpsc::channel();
            let ctx = cc.egui_ctx.clone();
            let tray = tray::start(tx, std::sync::Arc::new(move || ctx.request_repaint()));
            app.attach_tray(rx, tray);
            Ok(Box::new(app) as Box<dyn eframe::App>)
        }),
    )
    .map_err(|e| UiError::Window(e.to_string()))
}

/// The window system the open window got, from its display handle
/// ([`window_system::WindowSystem::Other`] when there is none to read).
fn window_system_of(cc: &eframe::CreationContext<'_>) -> window_system::WindowSystem {
    use winit::raw_window_handle::HasDisplayHandle;
    match cc.display_handle() {
        Ok(h) => window_system::WindowSystem::of_display(&h.as_raw()),
        Err(e) => {
            tracing::warn!(error = %e, "the window's display handle cannot be read");
            window_system::WindowSystem::Other
        }
    }
}

impl eframe::App for PhoneApp {
    fn update(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.show(ctx);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_window_icon_is_built_in() {
        let icon = super::window_icon();
        assert!(
            matches!(&icon, Ok(i) if i.width == 256 && i.height == 256 && i.rgba.len() == 256 * 256 * 4),
            "{:?}",
            icon.map(|i| (i.width, i.height))
        );
    }
}
