//! Running in the background: what closing the window, the tray icon, Quit
//! and an incoming call do to the window. A pure state machine (no drawing,
//! no D-Bus): it takes what happened and queues the viewport commands the
//! window then sends ([`Background::take_commands`]); the tray
//! (`super::tray`) is a thin driver that only reports [`TrayEvent`]s.
//!
//! The rule that keeps the phone from becoming invisible: the window hides
//! only while a tray host shows our icon ([`TrayState::Shown`]). With no
//! tray (no session bus, no StatusNotifierWatcher, no host, not Linux, or
//! the tray still starting) closing *minimises* instead, and says once how
//! to quit; when the tray goes away while the window is hidden, the window
//! comes back minimised. Closing before the phone is set up (the wizard)
//! quits: there is nothing to keep running. On Wayland, where no window
//! can hide or un-minimise itself, closing minimises even with a tray, and
//! "Show" or a call asks the compositor to activate the window
//! ([`super::window_system`] has these rules).

use super::window_system::{close_action, show_commands, CloseAction, WindowSystem};
use egui::ViewportCommand;

/// Where the tray icon is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrayState {
    /// The tray driver has not answered yet (treated as no tray).
    Starting,
    /// A tray host shows our icon: the window may hide.
    Shown,
    /// No tray; the reason, for the diagnostics and the log.
    Unavailable(String),
}

/// What the tray driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrayEvent {
    /// A tray host shows the icon (at start, or back after going away).
    Shown,
    /// There is no tray (or no longer): the reason.
    Unavailable(String),
    /// The user clicked the icon or "Show ibephone".
    ShowWindow,
    /// The user chose "Quit".
    Quit,
}

/// Where the window is, as far as our commands put it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// On screen.
    Shown,
    /// Hidden; the tray icon brings it back.
    Hidden,
    /// Minimised (no tray to hide into).
    Minimised,
}

/// The sentence shown once when the window first hides into the tray.
pub const HIDDEN_NOTICE: &str =
    "ibephone keeps running in the tray so that calls reach you; Quit in the tray menu ends it.";

/// The sentence shown once when closing minimises for want of a tray.
pub const NO_TRAY_NOTICE: &str = "This desktop shows no tray icons: closing minimises ibephone so \
     that calls still reach you. Quit (Settings, or Ctrl+Q) ends it.";

/// The sentence shown once when closing minimises on Wayland although a
/// tray shows the icon (the window cannot hide there).
pub const WAYLAND_TRAY_NOTICE: &str = "ibephone keeps running so that calls reach you: its window \
     is minimised (this desktop cannot hide it) and the tray icon brings it back. Quit in the \
     tray menu ends it.";

/// The background state machine of the window.
#[derive(Debug)]
pub struct Background {
    system: WindowSystem,
    tray: TrayState,
    window: WindowState,
    /// Started with `--background`: hide (or minimise) once the tray answers.
    start_hidden: bool,
    quitting: bool,
    commands: Vec<ViewportCommand>,
    notice: Option<String>,
    told_hidden: bool,
    told_no_tray: bool,
    told_wayland: bool,
}

impl Background {
    /// A window on screen with its tray starting. With `start_hidden`
    /// (`ibephone --background`, the login autostart) the window hides as
    /// soon as the tray shows, or minimises if there is none. The window
    /// system is taken as one that can hide (X11) until
    /// [`Background::set_window_system`] says otherwise.
    pub fn new(start_hidden: bool) -> Self {
        Background {
            system: WindowSystem::Other,
            tray: TrayState::Starting,
            window: WindowState::Shown,
            start_hidden,
            quitting: false,
            commands: Vec::new(),
            notice: None,
            told_hidden: start_hidden,
            told_no_tray: false,
            told_wayland: false,
        }
    }

    /// The window system the window got (known once it is open).
    pub fn set_window_system(&mut self, system: WindowSystem) {
        self.system = system;
    }

    /// The window system as last set.
    pub fn window_system(&self) -> WindowSystem {
        self.system
    }

    /// The tray as last reported.
    pub fn tray(&self) -> &TrayState {
        &self.tray
    }

    /// Where our commands put the window.
    pub fn window(&self) -> WindowState {
        self.window
    }

    /// Whether Quit was chosen (the next close request is let through).
    pub fn quitting(&self) -> bool {
        self.quitting
    }

    /// Folds in one report of the tray driver.
    pub fn tray_event(&mut self, e: TrayEvent) {
        match e {
            TrayEvent::Shown => {
                self.tray = TrayState::Shown;
                if std::mem::take(&mut self.start_hidden) {
                    if self.system.can_hide() {
                        self.hide();
                    } else {
                        self.commands.push(ViewportCommand::Minimized(true));
                        self.window = WindowState::Minimised;
                    }
                }
            }
            TrayEvent::Unavailable(why) => {
                self.tray = TrayState::Unavailable(why);
                if std::mem::take(&mut self.start_hidden) {
                    self.minimise();
                } else if self.window == WindowState::Hidden {
                    // Never leave an invisible phone behind.
                    self.commands.push(ViewportCommand::Visible(true));
                    self.minimise();
                }
            }
            TrayEvent::ShowWindow => self.show(false),
            TrayEvent::Quit => self.quit(),
        }
    }

    /// The user closed the window. Returns whether the window may close
    /// (the app then ends). `phone_running`: set up, so there is a phone
    /// to keep registered; otherwise closing quits.
    pub fn close_requested(&mut self, phone_running: bool) -> bool {
        match close_action(self.system, &self.tray, phone_running, self.quitting) {
            CloseAction::Quit => {
                self.quitting = true;
                return true;
            }
            CloseAction::Hide => {
                self.commands.push(ViewportCommand::CancelClose);
                self.hide();
                if !std::mem::replace(&mut self.told_hidden, true) {
                    self.notice = Some(HIDDEN_NOTICE.into());
                }
            }
            CloseAction::Minimise => {
                self.commands.push(ViewportCommand::CancelClose);
                self.minimise();
            }
        }
        false
    }

    /// A call for us arrived: bring the window up, focused, asking for
    /// attention, from wherever it is (hidden, minimised or behind).
    pub fn incoming_call(&mut self) {
        self.show(true);
    }

    /// Quit (tray menu, Settings, Ctrl+Q): close the window for good.
    pub fn quit(&mut self) {
        self.quitting = true;
        self.commands.push(ViewportCommand::Close);
    }

    /// The viewport commands to send now, in order.
    pub fn take_commands(&mut self) -> Vec<ViewportCommand> {
        std::mem::take(&mut self.commands)
    }

    /// A sentence for the user, once (what closing did).
    pub fn take_notice(&mut self) -> Option<String> {
        self.notice.take()
    }

    fn hide(&mut self) {
        self.commands.push(ViewportCommand::Visible(false));
        self.window = WindowState::Hidden;
    }

    fn minimise(&mut self) {
        self.commands.push(ViewportCommand::Minimized(true));
        self.window = WindowState::Minimised;
        if self.tray == TrayState::Shown {
            // Only on Wayland: a shown tray hides everywhere else.
            if !std::mem::replace(&mut self.told_wayland, true) {
                self.notice = Some(WAYLAND_TRAY_NOTICE.into());
            }
        } else if !std::mem::replace(&mut self.told_no_tray, true) {
            self.notice = Some(NO_TRAY_NOTICE.into());
        }
    }

    fn show(&mut self, attention: bool) {
        // A raise before the tray answered must not be undone by it.
        self.start_hidden = false;
        self.commands.extend(show_commands(self.system, attention));
        self.window = WindowState::Shown;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egui::UserAttentionType;
    use ViewportCommand as C;

    fn wayland(start_hidden: bool) -> Background {
        let mut b = Background::new(start_hidden);
        b.set_window_system(WindowSystem::Wayland);
        b
    }

    /// On Wayland the window cannot hide: with a tray closing minimises
    /// (and says the tray brings it back), "Show" and a call ask for
    /// activation, and no command ever hides the window.
    #[test]
    fn on_wayland_closing_minimises_even_with_a_tray() {
        let mut b = wayland(false);
        b.tray_event(TrayEvent::Shown);
        assert!(!b.close_requested(true));
        assert_eq!(b.take_commands(), [C::CancelClose, C::Minimized(true)]);
        assert_eq!(b.window(), WindowState::Minimised);
        assert_eq!(b.take_notice().as_deref(), Some(WAYLAND_TRAY_NOTICE));
        b.tray_event(TrayEvent::ShowWindow);
        assert_eq!(
            b.take_commands(),
            [C::RequestUserAttention(UserAttentionType::Informational)]
        );
        assert_eq!(b.window(), WindowState::Shown);
        assert!(!b.close_requested(true));
        b.take_commands();
        assert_eq!(b.take_notice(), None, "said once");
        b.incoming_call();
        assert_eq!(
            b.take_commands(),
            [C::RequestUserAttention(UserAttentionType::Critical)]
        );
        // The tray going away leaves a minimised window as it is.
        b.close_requested(true);
        b.take_commands();
        b.tray_event(TrayEvent::Unavailable("the tray host went away".into()));
        assert!(b.take_commands().is_empty());
        // Quit still quits.
        b.tray_event(TrayEvent::Quit);
        assert_eq!(b.take_commands(), [C::Close]);
        assert!(b.close_requested(true));
    }

    #[test]
    fn on_wayland_without_a_tray_closing_minimises_as_elsewhere() {
        let mut b = wayland(false);
        b.tray_event(TrayEvent::Unavailable("no StatusNotifierWatcher".into()));
        assert!(!b.close_requested(true));
        assert_eq!(b.take_commands(), [C::CancelClose, C::Minimized(true)]);
        assert_eq!(b.take_notice().as_deref(), Some(NO_TRAY_NOTICE));
        let mut w = wayland(false);
        assert!(w.close_requested(false), "the wizard quits");
    }

    #[test]
    fn on_wayland_started_in_the_background_minimises_when_the_tray_answers() {
        let mut b = wayland(true);
        b.tray_event(TrayEvent::Shown);
        assert_eq!(b.take_commands(), [C::Minimized(true)]);
        assert_eq!(b.window(), WindowState::Minimised);
        assert_eq!(b.take_notice(), None, "the user asked for it");
    }

    #[test]
    fn closing_hides_into_a_shown_tray_and_says_so_once() {
        let mut b = Background::new(false);
        b.tray_event(TrayEvent::Shown);
        assert!(b.take_commands().is_empty());
        assert!(!b.close_requested(true));
        assert_eq!(b.take_commands(), [C::CancelClose, C::Visible(false)]);
        assert_eq!(b.window(), WindowState::Hidden);
        assert_eq!(b.take_notice().as_deref(), Some(HIDDEN_NOTICE));
        b.tray_event(TrayEvent::ShowWindow);
        assert_eq!(
            b.take_commands(),
            [C::Visible(true), C::Minimized(false), C::Focus]
        );
        assert!(!b.close_requested(true));
        assert_eq!(b.take_notice(), None, "said once");
    }

    #[test]
    fn without_a_tray_closing_minimises_never_hides() {
        for tray in [
            None,
            Some(TrayEvent::Unavailable("no StatusNotifierWatcher".into())),
        ] {
            let mut b = Background::new(false);
            if let Some(e) = tray {
                b.tray_event(e);
            }
            assert!(!b.close_requested(true));
            let cmds = b.take_commands();
            assert_eq!(cmds, [C::CancelClose, C::Minimized(true)]);
            assert!(!cmds.contains(&C::Visible(false)));
            assert_eq!(b.window(), WindowState::Minimised);
            assert_eq!(b.take_notice().as_deref(), Some(NO_TRAY_NOTICE));
        }
    }

    #[test]
    fn a_tray_that_goes_away_brings_the_hidden_window_back_minimised() {
        let mut b = Background::new(false);
        b.tray_event(TrayEvent::Shown);
        b.close_requested(true);
        b.take_commands();
        b.tray_event(TrayEvent::Unavailable("the tray host went away".into()));
        assert_eq!(b.take_commands(), [C::Visible(true), C::Minimized(true)]);
        assert_eq!(b.window(), WindowState::Minimised);
        // The next close minimises.
        b.close_requested(true);
        assert_eq!(b.take_commands(), [C::CancelClose, C::Minimized(true)]);
    }

    #[test]
    fn quit_closes_for_good_and_the_wizard_closes_at_once() {
        let mut b = Background::new(false);
        b.tray_event(TrayEvent::Shown);
        b.tray_event(TrayEvent::Quit);
        assert_eq!(b.take_commands(), [C::Close]);
        assert!(
            b.close_requested(true),
            "the close Quit asked for goes through"
        );
        assert!(b.take_commands().is_empty(), "no CancelClose");

        let mut w = Background::new(false);
        w.tray_event(TrayEvent::Shown);
        assert!(w.close_requested(false));
        assert!(w.take_commands().is_empty());
    }

    #[test]
    fn started_in_the_background_hides_or_minimises_when_the_tray_answers() {
        let mut b = Background::new(true);
        assert!(b.take_commands().is_empty(), "waits for the tray");
        b.tray_event(TrayEvent::Shown);
        assert_eq!(b.take_commands(), [C::Visible(false)]);
        assert_eq!(b.take_notice(), None, "the user asked for it");

        let mut m = Background::new(true);
        m.tray_event(TrayEvent::Unavailable("no session bus".into()));
        assert_eq!(m.take_commands(), [C::Minimized(true)]);
        assert_eq!(m.take_notice().as_deref(), Some(NO_TRAY_NOTICE));

        // A call before the tray answered: shown, and the tray's answer
        // does not hide it again.
        let mut c = Background::new(true);
        c.incoming_call();
        c.take_commands();
        c.tray_event(TrayEvent::Shown);
        assert!(c.take_commands().is_empty());
        assert_eq!(c.window(), WindowState::Shown);
    }

    #[test]
    fn an_incoming_call_raises_the_window_from_anywhere() {
        for tray in [TrayEvent::Shown, TrayEvent::Unavailable("none".into())] {
            let mut b = Background::new(false);
            b.tray_event(tray);
            b.close_requested(true);
            b.take_commands();
            b.incoming_call();
            assert_eq!(
                b.take_commands(),
                [
                    C::Visible(true),
                    C::Minimized(false),
                    C::Focus,
                    C::RequestUserAttention(UserAttentionType::Critical)
                ]
            );
            assert_eq!(b.window(), WindowState::Shown);
        }
    }
}
