//! The desktop phone's life outside its window: closing keeps it running
//! (hidden into a shown tray, minimised when there is none or on Wayland,
//! where nothing hides; `wayland.rs` runs the real binary there), Quit and
//! Ctrl+Q end it, an incoming call raises the window with attention, and
//! Settings' "Start at login" writes and removes the XDG autostart entry.
//! The window's viewport commands are read from the frame's output.
#![cfg(feature = "gui")]

use crate::ui_support;

use egui::{UserAttentionType, ViewportCommand as C, ViewportId};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use ibephone::agent::AgentEvent;
use ibephone::ui::app::{Screen, Tab};
use ibephone::ui::backend::Update;
use ibephone::ui::background::{
    TrayEvent, WindowState, HIDDEN_NOTICE, NO_TRAY_NOTICE, WAYLAND_TRAY_NOTICE,
};
use ibephone::ui::window_system::WindowSystem;
use ibephone::ui::{AppDirs, PhoneApp};
use ui_support::*;

/// The viewport commands the last frame sent.
fn commands(h: &Harness<'_, PhoneApp>) -> Vec<C> {
    h.output()
        .viewport_output
        .get(&ViewportId::ROOT)
        .map(|v| v.commands.clone())
        .unwrap_or_default()
}

/// The user clicks the window's close button; one frame runs.
fn close(h: &mut Harness<'_, PhoneApp>) -> Vec<C> {
    h.input_mut()
        .viewports
        .entry(ViewportId::ROOT)
        .or_default()
        .events
        .push(egui::ViewportEvent::Close);
    h.step();
    commands(h)
}

#[test]
fn closing_hides_into_the_tray_and_an_incoming_call_raises_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready_phone(dir.path());
    h.state_mut().background.tray_event(TrayEvent::Shown);
    let cmds = close(&mut h);
    assert_eq!(
        cmds,
        [C::CancelClose, C::Visible(false)],
        "hidden, not closed"
    );
    assert_eq!(h.state().background.window(), WindowState::Hidden);
    h.run_steps(2);
    assert!(shows(&h, HIDDEN_NOTICE), "says where the phone went");
    assert!(commands(&h).is_empty());
    // A call arrives while hidden: the window comes up, focused, asking
    // for attention, in the frame that shows the call.
    h.state_mut().apply(Update::Agent(AgentEvent::IncomingCall {
        call: 4,
        from: "<sip:alice@atlanta.invalid>".into(),
        verified: None,
        tunneled: true,
        waiting: false,
    }));
    h.step();
    let cmds = commands(&h);
    for c in [
        C::Visible(true),
        C::Minimized(false),
        C::Focus,
        C::RequestUserAttention(UserAttentionType::Critical),
    ] {
        assert!(cmds.contains(&c), "{c:?} missing from {cmds:?}");
    }
    assert_eq!(h.state().background.window(), WindowState::Shown);
    assert!(shows(&h, "Answer"));
}

/// With no tray host (a bare X server, a desktop without tray) hiding
/// would leave an invisible phone: closing minimises instead and says how
/// to quit; the window is never made invisible.
#[test]
fn without_a_tray_closing_minimises_and_never_hides() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready_phone(dir.path());
    // Before the tray answered, and after it said there is none.
    let cmds = close(&mut h);
    assert_eq!(cmds, [C::CancelClose, C::Minimized(true)]);
    h.state_mut().background.tray_event(TrayEvent::Unavailable(
        "org.kde.StatusNotifierWatcher was not provided by any .service files".into(),
    ));
    let cmds = close(&mut h);
    assert_eq!(cmds, [C::CancelClose, C::Minimized(true)]);
    assert!(!cmds.contains(&C::Visible(false)));
    h.run_steps(2);
    assert!(shows(&h, NO_TRAY_NOTICE));
    // Hidden into a tray that then goes away: back, minimised.
    h.state_mut().background.tray_event(TrayEvent::Shown);
    close(&mut h);
    h.state_mut()
        .background
        .tray_event(TrayEvent::Unavailable("the tray host went away".into()));
    h.step();
    assert_eq!(commands(&h), [C::Visible(true), C::Minimized(true)]);
}

/// On Wayland no window can hide itself: with the tray shown, closing
/// minimises and the window says the tray icon brings it back; "Show" and
/// a call ask the compositor for activation (un-minimise and focus do
/// nothing there); the report names the window system.
#[test]
fn on_wayland_closing_minimises_with_a_tray_and_a_call_asks_for_activation() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready_phone(dir.path());
    h.state_mut()
        .background
        .set_window_system(WindowSystem::Wayland);
    h.state_mut().background.tray_event(TrayEvent::Shown);
    let cmds = close(&mut h);
    assert_eq!(cmds, [C::CancelClose, C::Minimized(true)]);
    assert_eq!(h.state().background.window(), WindowState::Minimised);
    h.run_steps(2);
    assert!(shows(&h, WAYLAND_TRAY_NOTICE));
    assert!(!shows(&h, HIDDEN_NOTICE));
    h.state_mut().background.tray_event(TrayEvent::ShowWindow);
    h.step();
    assert_eq!(
        commands(&h),
        [C::RequestUserAttention(UserAttentionType::Informational)]
    );
    close(&mut h);
    h.state_mut().apply(Update::Agent(AgentEvent::IncomingCall {
        call: 5,
        from: "<sip:alice@atlanta.invalid>".into(),
        verified: None,
        tunneled: true,
        waiting: false,
    }));
    h.step();
    assert_eq!(
        commands(&h),
        [C::RequestUserAttention(UserAttentionType::Critical)]
    );
    assert!(h
        .state()
        .diagnostics()
        .contains("window: wayland, tray icon shown"));
}

#[test]
fn quit_from_the_tray_settings_or_ctrl_q_closes_for_good() {
    let dir = tempfile::tempdir().unwrap();
    // The tray menu's Quit.
    let mut h = ready_phone(dir.path());
    h.state_mut().background.tray_event(TrayEvent::Shown);
    h.state_mut().background.tray_event(TrayEvent::Quit);
    h.step();
    assert_eq!(commands(&h), [C::Close]);
    assert_eq!(close(&mut h), [], "the close goes through: no CancelClose");
    drop(h);
    // Settings' button.
    let mut h = ready_phone(dir.path());
    h.state_mut().tab = Tab::Settings;
    h.run_steps(2);
    h.get_by_label("Quit ibephone").click();
    h.step();
    assert!(commands(&h).contains(&C::Close));
    drop(h);
    // Ctrl+Q.
    let mut h = ready_phone(dir.path());
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Q);
    h.step();
    let cmds = commands(&h);
    assert!(
        cmds.contains(&C::Close) || h.state().background.quitting(),
        "{cmds:?}"
    );
    assert!(h.state().background.quitting());
}

/// Closing the wizard (nothing set up, nothing to keep running) quits.
#[test]
fn closing_the_wizard_quits() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = phone(AppDirs::at(dir.path()));
    h.state_mut().background.tray_event(TrayEvent::Shown);
    assert_eq!(h.state().screen, Screen::Wizard);
    assert_eq!(close(&mut h), []);
    assert!(h.state().background.quitting());
}

/// The switch under XDG_CONFIG_HOME set to a temporary directory: on
/// writes `autostart/org.ibephone.ibephone.desktop` starting
/// `--background`, off removes it.
#[test]
fn start_at_login_writes_and_removes_the_autostart_entry() {
    let config = tempfile::tempdir().unwrap();
    // Read when a window is made; the other tests of this binary only
    // read it too (and click no switch).
    std::env::set_var("XDG_CONFIG_HOME", config.path());
    let entry = config
        .path()
        .join("autostart/org.ibephone.ibephone.desktop");
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready_phone(dir.path());
    assert_eq!(h.state().autostart_path.as_deref(), Some(entry.as_path()));
    h.state_mut().tab = Tab::Settings;
    h.run_steps(2);
    let label = "start ibephone in the tray when I log in";
    h.get_by_label(label).click();
    h.run_steps(2);
    let text = std::fs::read_to_string(&entry).unwrap();
    assert!(text.starts_with("[Desktop Entry]\n"), "{text}");
    let exec = text.lines().find(|l| l.starts_with("Exec=")).unwrap();
    assert!(exec.ends_with(" --background"), "{exec}");
    assert!(shows(&h, "now starts in the tray when you log in"));
    h.get_by_label(label).click();
    h.run_steps(2);
    assert!(!entry.exists());
    assert!(shows(&h, "no longer starts when you log in"));
}
