//! Which window system the window runs on (X11 or Wayland), and what that
//! allows when the window is closed or must come back: pure rules
//! ([`close_action`], [`show_commands`]) that
//! [`Background`](super::background::Background) follows, plus the two
//! ways of telling the system: before the window opens from the
//! environment ([`WindowSystem::expected`], winit's own rule) and after it
//! opened from its display handle ([`WindowSystem::of_display`]).
//!
//! Why the window system matters: on Wayland a client can neither hide its
//! window (winit's `set_visible(false)` does nothing there), nor
//! un-minimise it (xdg-shell has no request for that), nor take the focus
//! (`focus_window` does nothing). What is left is
//! xdg-activation (winit's `request_user_attention` asks the compositor to
//! activate the window with a token of its own). So on Wayland closing
//! minimises, even with a tray, and "Show" or a call asks for activation;
//! the compositor decides: KDE and sway may raise and focus the window or
//! only mark it urgent, GNOME shows "ibephone is ready" (focus-stealing
//! prevention), a compositor without xdg-activation (weston 10) does
//! nothing, and the window stays where the user can find it (task bar,
//! overview, Alt+Tab).

use super::background::TrayState;
use egui::{UserAttentionType, ViewportCommand};

/// The window system the window runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSystem {
    /// X11 (also XWayland): windows can be hidden, un-minimised, focused.
    X11,
    /// Wayland: no hiding, no un-minimising, no focus; activation only.
    Wayland,
    /// Windows, macOS (or a system not told): hiding works as on X11.
    Other,
}

impl WindowSystem {
    /// The system winit 0.30 picks on Linux from these environment values
    /// (`WAYLAND_DISPLAY`, `WAYLAND_SOCKET`, `DISPLAY`; `None` or empty is
    /// unset): Wayland when either Wayland variable is set, else X11 when
    /// `DISPLAY` is, else `None` (winit then fails to open the window).
    /// Known before the window opens, for the choices made there.
    pub fn expected(
        wayland_display: Option<&str>,
        wayland_socket: Option<&str>,
        display: Option<&str>,
    ) -> Option<WindowSystem> {
        let set = |v: Option<&str>| v.is_some_and(|v| !v.is_empty());
        if !cfg!(target_os = "linux") {
            Some(WindowSystem::Other)
        } else if set(wayland_display) || set(wayland_socket) {
            Some(WindowSystem::Wayland)
        } else if set(display) {
            Some(WindowSystem::X11)
        } else {
            None
        }
    }

    /// [`WindowSystem::expected`] of this process's environment.
    pub fn expected_from_env() -> Option<WindowSystem> {
        let var = |k: &str| std::env::var(k).ok();
        WindowSystem::expected(
            var("WAYLAND_DISPLAY").as_deref(),
            var("WAYLAND_SOCKET").as_deref(),
            var("DISPLAY").as_deref(),
        )
    }

    /// The system of an open window, from its display handle (what winit
    /// actually connected to).
    pub fn of_display(handle: &winit::raw_window_handle::RawDisplayHandle) -> WindowSystem {
        use winit::raw_window_handle::RawDisplayHandle as H;
        match handle {
            H::Wayland(_) => WindowSystem::Wayland,
            H::Xlib(_) | H::Xcb(_) => WindowSystem::X11,
            _ => WindowSystem::Other,
        }
    }

    /// Whether the window can be made invisible (and back).
    pub fn can_hide(self) -> bool {
        self != WindowSystem::Wayland
    }

    /// The name in the log and the diagnostics.
    pub fn name(self) -> &'static str {
        match self {
            WindowSystem::X11 => "x11",
            WindowSystem::Wayland => "wayland",
            WindowSystem::Other => "native",
        }
    }

    /// Whether the window should wait for the display's refresh (vsync).
    /// Not on Wayland: there, with vsync, drawing a frame while the window
    /// is minimised or on another workspace blocks in `eglSwapBuffers`
    /// until the compositor shows it again (the compositor sends no frame
    /// callbacks to an invisible window), and a blocked window could not
    /// ring, raise itself for a call, or follow the tray. The window
    /// repaints only on input or news, so without vsync it draws no more
    /// frames than before.
    pub fn vsync(system: Option<WindowSystem>) -> bool {
        system != Some(WindowSystem::Wayland)
    }
}

/// What closing the window does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    /// The window closes and the app ends.
    Quit,
    /// The window hides; the tray icon brings it back.
    Hide,
    /// The window is minimised and the phone keeps running.
    Minimise,
}

/// What closing does: quit while quitting (Quit was chosen) or with no
/// phone set up; hide into a tray a host shows where the window system can
/// hide; else minimise (Wayland with or without a tray, any system without
/// one), so that the phone stays registered and never becomes invisible.
pub fn close_action(
    system: WindowSystem,
    tray: &TrayState,
    phone_running: bool,
    quitting: bool,
) -> CloseAction {
    if quitting || !phone_running {
        CloseAction::Quit
    } else if *tray == TrayState::Shown && system.can_hide() {
        CloseAction::Hide
    } else {
        CloseAction::Minimise
    }
}

/// The viewport commands that bring the window back, focused; with
/// `attention` (a call) also asking for the user's attention. On Wayland
/// the only one that does anything is the activation request (see the
/// module doc), sent for "Show" too: un-minimise and focus would only be
/// ignored (winit logs a warning for each un-minimise).
pub fn show_commands(system: WindowSystem, attention: bool) -> Vec<ViewportCommand> {
    let urgency = if attention {
        UserAttentionType::Critical
    } else {
        UserAttentionType::Informational
    };
    if system == WindowSystem::Wayland {
        return vec![ViewportCommand::RequestUserAttention(urgency)];
    }
    let mut cmds = vec![
        ViewportCommand::Visible(true),
        ViewportCommand::Minimized(false),
        ViewportCommand::Focus,
    ];
    if attention {
        cmds.push(ViewportCommand::RequestUserAttention(urgency));
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use ViewportCommand as C;
    use WindowSystem::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn expected_follows_winits_rule() {
        assert_eq!(
            WindowSystem::expected(Some("wayland-0"), None, Some(":0")),
            Some(Wayland),
            "Wayland first, as winit"
        );
        assert_eq!(WindowSystem::expected(None, Some("5"), None), Some(Wayland));
        assert_eq!(
            WindowSystem::expected(Some(""), None, Some(":0")),
            Some(X11)
        );
        assert_eq!(
            WindowSystem::expected(None, Some(""), Some(":1")),
            Some(X11)
        );
        assert_eq!(WindowSystem::expected(None, None, Some("")), None);
        assert_eq!(WindowSystem::expected(None, None, None), None);
    }

    #[test]
    fn vsync_only_off_on_wayland() {
        assert!(!WindowSystem::vsync(Some(Wayland)));
        for s in [Some(X11), Some(Other), None] {
            assert!(WindowSystem::vsync(s), "{s:?}");
        }
    }

    #[test]
    fn the_display_handle_names_the_system() {
        use std::ptr::NonNull;
        use winit::raw_window_handle as rwh;
        let mut dummy = 0u8;
        let ptr = NonNull::from(&mut dummy).cast();
        let wayland = rwh::RawDisplayHandle::Wayland(rwh::WaylandDisplayHandle::new(ptr));
        assert_eq!(WindowSystem::of_display(&wayland), Wayland);
        let xlib = rwh::RawDisplayHandle::Xlib(rwh::XlibDisplayHandle::new(None, 0));
        assert_eq!(WindowSystem::of_display(&xlib), X11);
        let xcb = rwh::RawDisplayHandle::Xcb(rwh::XcbDisplayHandle::new(None, 0));
        assert_eq!(WindowSystem::of_display(&xcb), X11);
        let win = rwh::RawDisplayHandle::Windows(rwh::WindowsDisplayHandle::new());
        assert_eq!(WindowSystem::of_display(&win), Other);
    }

    /// Every window system against every tray state, running or not,
    /// quitting or not: the one table of what closing does.
    #[test]
    fn close_action_table() {
        let shown = TrayState::Shown;
        let starting = TrayState::Starting;
        let none = TrayState::Unavailable("no StatusNotifierWatcher".into());
        for system in [X11, Wayland, Other] {
            for tray in [&shown, &starting, &none] {
                // Quit chosen, or nothing set up: closing ends the app.
                assert_eq!(close_action(system, tray, true, true), CloseAction::Quit);
                assert_eq!(close_action(system, tray, false, false), CloseAction::Quit);
                let want = match (system, tray == &shown) {
                    (Wayland, _) => CloseAction::Minimise,
                    (_, true) => CloseAction::Hide,
                    (_, false) => CloseAction::Minimise,
                };
                assert_eq!(
                    close_action(system, tray, true, false),
                    want,
                    "{system:?} {tray:?}"
                );
            }
        }
        // Never hidden on Wayland, whatever the tray says.
        assert!(!Wayland.can_hide());
    }

    #[test]
    fn showing_on_wayland_asks_for_activation_only() {
        assert_eq!(
            show_commands(Wayland, false),
            [C::RequestUserAttention(UserAttentionType::Informational)]
        );
        assert_eq!(
            show_commands(Wayland, true),
            [C::RequestUserAttention(UserAttentionType::Critical)]
        );
        for s in [X11, Other] {
            assert_eq!(
                show_commands(s, false),
                [C::Visible(true), C::Minimized(false), C::Focus]
            );
            assert_eq!(
                show_commands(s, true),
                [
                    C::Visible(true),
                    C::Minimized(false),
                    C::Focus,
                    C::RequestUserAttention(UserAttentionType::Critical)
                ]
            );
        }
    }
}
