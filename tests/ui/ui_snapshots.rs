//! Snapshot tests of the main screens: each scene is drawn with fixed data
//! (names, fingerprints, a frozen clock) and rendered on the CPU
//! ([`soft_render::SoftRenderer`], no GPU), then compared with its PNG in
//! `tests/snapshots/`. Any differing pixel fails the test.
//!
//! After an intended change of the screens, redraw the pictures with
//! `UPDATE_SNAPSHOTS=1 cargo test --test ui ui_snapshots::` and commit them.
#![cfg(feature = "gui")]

use crate::ui_support;
use crate::ui_support::soft_render;

use egui_kittest::{Harness, SnapshotOptions};
use ibephone::agent::media::MediaCounters;
use ibephone::agent::AgentEvent;
use ibephone::pkg_client::first_contact::FirstTrust;
use ibephone::ui::app::{Clock, Screen, Tab};
use ibephone::ui::audio_devices::{DeviceList, Devices};
use ibephone::ui::backend::{ProviderProbe, ReadyInfo, Update};
use ibephone::ui::contacts::Contact;
use ibephone::ui::{AppDirs, PhoneApp};
use soft_render::SoftRenderer;
use std::time::{Duration, Instant};
use ui_support::shows;

/// 2026-12-15 12:00 UTC.
const NOW_UNIX: u64 = 1_797_336_000;

/// A window of fixed size on a fresh data directory, its clock frozen.
fn window(dir: &std::path::Path) -> Harness<'static, PhoneApp> {
    window_themed(dir, egui::Theme::Dark)
}

/// As [`window`] in `theme` (the system's, in the app).
fn window_themed(dir: &std::path::Path, theme: egui::Theme) -> Harness<'static, PhoneApp> {
    let mut app = PhoneApp::new(AppDirs::at(dir), egui::Context::default()).unwrap();
    app.clock = Clock::Frozen {
        unix: NOW_UNIX,
        instant: Instant::now(),
    };
    // Not this machine's autostart entry: the switch draws off.
    app.autostart_path = Some(
        dir.join("autostart")
            .join(ibephone::ui::autostart::FILE_NAME),
    );
    let mut h = Harness::builder()
        .with_size(egui::vec2(760.0, 560.0))
        .with_pixels_per_point(1.0)
        .with_theme(theme)
        .renderer(SoftRenderer::new())
        .build_state(|ctx, app: &mut PhoneApp| app.show(ctx), app);
    h.run_steps(2);
    h
}

/// No per-pixel tolerance, no pixel may differ.
fn exact() -> SnapshotOptions {
    SnapshotOptions::new()
        .threshold(0.0)
        .failed_pixel_count_threshold(0)
}

/// Whether this run redraws the stored pictures (`UPDATE_SNAPSHOTS`).
fn updating() -> bool {
    std::env::var("UPDATE_SNAPSHOTS")
        .is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false" | "no" | "off"))
}

/// Renders the window and compares it with `tests/snapshots/{name}.png`
/// through kittest (which writes `.new.png`/`.diff.png` on a mismatch and
/// redraws under `UPDATE_SNAPSHOTS`), then byte for byte: kittest's
/// comparison forgives pixels it takes for anti-aliasing, this one does not.
fn check(h: &mut Harness<'static, PhoneApp>, name: &str) {
    let image = h.render().unwrap();
    if let Err(e) = egui_kittest::try_image_snapshot_options(&image, name, &exact()) {
        panic!("{e}");
    }
    if updating() {
        return;
    }
    let path = format!("tests/snapshots/{name}.png");
    let stored = image::open(&path).unwrap().to_rgba8();
    if stored != image {
        let new = format!("tests/snapshots/{name}.new.png");
        image.save(&new).unwrap();
        panic!("{path} differs from this rendering (saved as {new}); UPDATE_SNAPSHOTS=1 redraws it if the change is intended");
    }
}

/// A phone registered as bob at atlanta.invalid.
fn ready(dir: &std::path::Path) -> Harness<'static, PhoneApp> {
    ready_themed(dir, egui::Theme::Dark)
}

/// As [`ready`] in `theme`.
fn ready_themed(dir: &std::path::Path, theme: egui::Theme) -> Harness<'static, PhoneApp> {
    let mut h = window_themed(dir, theme);
    let app = h.state_mut();
    app.screen = Screen::Phone;
    app.settings.pkg_url = "https://pkg.atlanta.invalid:8443".into();
    app.settings.user = "bob".into();
    app.settings_draft = app.settings.clone();
    app.apply(Update::Ready(ReadyInfo {
        aor: "sip:bob@atlanta.invalid".into(),
        domain: "atlanta.invalid".into(),
        periods: vec!["2026-11".into(), "2026-12".into(), "2027-01".into()],
        params_fingerprint: "3f2a 91c0 5be7 d044 8a19 e6f3".into(),
        pkg_fingerprint: Some("a1b2".repeat(16)),
        local: "127.0.0.1:5099".parse().unwrap(),
        key_servers: None,
    }));
    app.apply(Update::Agent(AgentEvent::Registered { expires: 600 }));
    h.run_steps(2);
    h
}

fn incoming(h: &mut Harness<'static, PhoneApp>, verified: bool) {
    h.state_mut().apply(Update::Agent(AgentEvent::IncomingCall {
        call: 4,
        from: "\"Alice\" <sip:alice@atlanta.invalid>".into(),
        verified: verified.then(|| "sip:alice@atlanta.invalid#2026-12".to_string()),
        tunneled: true,
        waiting: false,
    }));
    h.run_steps(2);
}

/// Alice's verified call (number 4) arrived and was answered.
fn in_call_with_alice(h: &mut Harness<'static, PhoneApp>) {
    incoming(h, true);
    h.state_mut().apply(Update::Agent(AgentEvent::Answered {
        call: 4,
        verified: Some("sip:alice@atlanta.invalid#2026-12".into()),
        tunneled: true,
    }));
}

#[test]
fn wizard_first_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = window(dir.path());
    assert_eq!(h.state().screen, Screen::Wizard);
    h.state_mut().wizard.address = "alice@atlanta.invalid".into();
    h.run_steps(2);
    assert!(shows(&h, "Your address"));
    // Two inputs: the provider and the SIP proxy are found, or given under
    // Advanced (folded).
    assert!(!shows(&h, "Provider address"));
    check(&mut h, "wizard_account");
}

#[test]
fn wizard_fingerprint_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = window(dir.path());
    let cert: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    h.state_mut().apply(Update::Probed(ProviderProbe {
        url: "https://pkg.atlanta.invalid:8443".into(),
        trust: FirstTrust::Certificate,
        cert_fingerprint: cert,
        params_fingerprint_display: "3f2a 91c0 5be7 d044 8a19 e6f3".into(),
        params_fingerprint: [7; 32],
        domain: "atlanta.invalid".into(),
        sip_proxy: None,
    }));
    h.run_steps(2);
    assert!(shows(&h, "They match: log in"));
    check(&mut h, "wizard_confirm");
}

/// The provider's certificate chains to the platform's roots for its host
/// name: the user compares the parameter fingerprint's short form.
#[test]
fn wizard_parameter_fingerprint_of_a_certified_provider() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = window(dir.path());
    let params: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(91).wrapping_add(5));
    h.state_mut().apply(Update::Probed(ProviderProbe {
        url: "https://pkg.atlanta.invalid".into(),
        trust: FirstTrust::PlatformRoots,
        cert_fingerprint: [9; 32],
        params_fingerprint_display: ibephone::ibe::fingerprint::full(&params),
        params_fingerprint: params,
        domain: "atlanta.invalid".into(),
        sip_proxy: None,
    }));
    h.run_steps(2);
    assert!(shows(&h, "Your provider atlanta.invalid's keys:"));
    assert!(shows(&h, &ibephone::ibe::fingerprint::short(&params)));
    check(&mut h, "wizard_confirm_certified");
}

#[test]
fn main_window_dial_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready(dir.path());
    h.state_mut().dial = "bob@biloxi.invalid".into();
    h.run_steps(2);
    assert!(shows(&h, "Ready"));
    check(&mut h, "main_dial");
}

#[test]
fn main_window_contacts() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready(dir.path());
    let app = h.state_mut();
    for (name, address) in [
        ("Alice", "alice"),
        ("Carol", "carol@chicago.invalid"),
        ("Dave", "sip:dave@atlanta.invalid"),
    ] {
        let c = Contact {
            name: name.into(),
            address: address.into(),
        };
        app.contacts.add(c, "atlanta.invalid").unwrap();
    }
    app.tab = Tab::Contacts;
    h.run_steps(2);
    assert!(shows(&h, "carol@chicago.invalid"));
    check(&mut h, "main_contacts");
}

#[test]
fn incoming_call_verified_and_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready(dir.path());
    incoming(&mut h, true);
    assert!(shows(&h, "✔ verified: sip:alice@atlanta.invalid"));
    check(&mut h, "incoming_verified");
    h.state_mut().calls.clear();
    incoming(&mut h, false);
    assert!(shows(&h, "identity NOT verified"));
    check(&mut h, "incoming_unverified");
}

/// The light theme (a desktop in light mode): the incoming call with its
/// verified badge, the screen where contrast matters most.
#[test]
fn light_theme_incoming_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready_themed(dir.path(), egui::Theme::Light);
    incoming(&mut h, true);
    assert!(shows(&h, "✔ verified: sip:alice@atlanta.invalid"));
    check(&mut h, "incoming_verified_light");
}

#[test]
fn in_call_security_panel_with_sas() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready(dir.path());
    in_call_with_alice(&mut h);
    h.state_mut().apply(Update::Agent(AgentEvent::MediaStarted {
        call: 4,
        codec: "PCMU".into(),
        cipher: "AES_CM_128_HMAC_SHA1_80".into(),
        escrow_resistant: true,
        sas: Some("delta echo".into()),
    }));
    // RTCP figures of the agent's last media_stats.
    h.state_mut().apply(Update::Agent(AgentEvent::MediaStats {
        call: 4,
        stats: MediaCounters {
            sent: 4150,
            received: 4140,
            jitter_ms: 2,
            peer_loss_permille: Some(4),
            peer_lost: Some(3),
            peer_jitter_ms: Some(1),
            rtt_ms: Some(42),
            rtcp_sent: 16,
            rtcp_received: 16,
            ..MediaCounters::default()
        },
    }));
    // The call has lasted 83 s on the frozen clock.
    if let Clock::Frozen { unix, instant } = h.state().clock {
        h.state_mut().clock = Clock::Frozen {
            unix,
            instant: instant + Duration::from_secs(83),
        };
    }
    h.run_steps(2);
    assert!(shows(&h, "In call 1:23") || shows(&h, "In call 01:23"));
    assert!(shows(&h, "delta echo"));
    assert!(shows(&h, "Good connection · 42 ms"));
    check(&mut h, "in_call_security");
}

/// Call waiting: carol calls while bob talks to alice (verified); the
/// call screen with its Transfer field under the waiting call.
#[test]
fn call_waiting_screen() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready(dir.path());
    in_call_with_alice(&mut h);
    h.state_mut().apply(Update::Agent(AgentEvent::IncomingCall {
        call: 5,
        from: "<sip:carol@atlanta.invalid>".into(),
        verified: Some("sip:carol@atlanta.invalid#2026-12".into()),
        tunneled: true,
        waiting: true,
    }));
    h.run_steps(2);
    assert!(shows(&h, "Call waiting: sip:carol@atlanta.invalid"));
    check(&mut h, "call_waiting");
    // Answered: alice on hold with a Switch line, carol's call in full.
    h.state_mut().apply(Update::Agent(AgentEvent::Answered {
        call: 5,
        verified: Some("sip:carol@atlanta.invalid#2026-12".into()),
        tunneled: true,
    }));
    h.state_mut().apply(Update::Agent(AgentEvent::MediaUpdated {
        call: 4,
        direction: "sendonly".into(),
        codec: "PCMU".into(),
        cipher: "AEAD_AES_128_GCM".into(),
        escrow_resistant: true,
        sas: None,
    }));
    h.state_mut().show_security = false;
    h.run_steps(2);
    assert!(shows(&h, "On hold: sip:alice@atlanta.invalid"));
    check(&mut h, "two_calls_one_on_hold");
}

#[test]
fn settings_tab() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready(dir.path());
    h.state_mut().devices = Devices::Listed(DeviceList {
        inputs: vec!["USB Headset Mic".into(), "Built-in Microphone".into()],
        outputs: vec!["USB Headset".into()],
        note: None,
    });
    h.state_mut().settings_draft.input_device = Some("USB Headset Mic".into());
    h.state_mut().tab = Tab::Settings;
    h.run_steps(2);
    assert!(shows(&h, "Unprotected calls"));
    check(&mut h, "settings");
}

#[test]
fn error_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready(dir.path());
    h.state_mut().apply(Update::Agent(AgentEvent::Calling {
        call: 2,
        to: "sip:carol@chicago.invalid".into(),
        tunneled: true,
    }));
    h.state_mut().apply(Update::Agent(AgentEvent::Ended {
        call: 2,
        reason: "rejected 415".into(),
    }));
    h.run_steps(2);
    assert!(shows(&h, "does not support secure calls"));
    check(&mut h, "error_no_secure_calls");
}

/// A changed picture must fail: the stored PNG of one scene compared
/// against another scene's rendering is reported as a difference.
#[test]
fn a_differing_picture_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready(dir.path());
    h.state_mut().dial = "someone else".into();
    h.run_steps(2);
    let image = h.render().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    std::fs::copy(
        "tests/snapshots/main_dial.png",
        scratch.path().join("main_dial.png"),
    )
    .unwrap();
    let options = exact().output_path(scratch.path());
    let r = egui_kittest::try_image_snapshot_options(&image, "main_dial", &options);
    if !updating() {
        assert!(
            matches!(r, Err(egui_kittest::SnapshotError::Diff { .. })),
            "{r:?}"
        );
    }
    let stored = image::open("tests/snapshots/main_dial.png").unwrap();
    assert_ne!(
        stored.to_rgba8(),
        image,
        "the stored picture shows another dial field"
    );
    // The same rendering twice is identical, pixel for pixel.
    assert_eq!(image, h.render().unwrap());
}
