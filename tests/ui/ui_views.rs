//! The screens fed with agent events directly (no network): the incoming
//! call badge only for verified callers, warnings otherwise, call failure
//! sentences, the SAS buttons, and contacts driven through the widgets.
#![cfg(feature = "gui")]

use crate::ui_support;

use egui_kittest::kittest::Queryable;
use ibephone::agent::AgentEvent;
use ibephone::ui::app::{MediaSecurity, Phase};
use ibephone::ui::backend::Update;
use ibephone::ui::AppDirs;
use ui_support::*;

fn incoming(call: u64, verified: Option<&str>, tunneled: bool) -> Update {
    Update::Agent(AgentEvent::IncomingCall {
        call,
        from: "\"Alice\" <sip:alice@atlanta.invalid>".into(),
        verified: verified.map(str::to_string),
        tunneled,
        waiting: false,
    })
}

#[test]
fn verified_badge_only_for_a_verified_caller() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready_phone(dir.path());
    assert!(shows(&h, "Ready"));
    h.state_mut().apply(incoming(7, None, true));
    h.run_steps(3);
    assert!(shows(&h, "identity NOT verified"));
    assert!(!shows(&h, "✔ verified"));
    h.get_by_label("Reject").click();
    h.run_steps(3);
    h.state_mut().apply(Update::Agent(AgentEvent::Ended {
        call: 7,
        reason: "local hangup".into(),
    }));
    h.state_mut().apply(incoming(8, None, false));
    h.run_steps(3);
    assert!(shows(&h, "NOT encrypted and NOT verified"));
    h.state_mut().apply(Update::Agent(AgentEvent::Ended {
        call: 8,
        reason: "cancelled".into(),
    }));
    h.state_mut()
        .apply(incoming(9, Some("sip:alice@atlanta.invalid#2026-12"), true));
    h.run_steps(3);
    assert!(shows(&h, "✔ verified: sip:alice@atlanta.invalid"));
    assert!(!shows(&h, "NOT verified"));
    // Missed calls land in the history as missed.
    let r = &h.state().history.records()[0];
    assert_eq!(r.direction, ibephone::ui::history::Direction::Missed);
}

#[test]
fn failed_calls_explain_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready_phone(dir.path());
    for (reason, sentence) in [
        ("rejected 415", "does not support secure calls"),
        ("rejected 480", "is not online right now"),
        ("timeout", "No answer from the network"),
    ] {
        h.state_mut().apply(Update::Agent(AgentEvent::Calling {
            call: 1,
            to: "sip:carol@atlanta.invalid".into(),
            tunneled: true,
        }));
        h.state_mut().apply(Update::Agent(AgentEvent::Ended {
            call: 1,
            reason: reason.into(),
        }));
        h.run_steps(3);
        assert!(shows(&h, sentence), "{reason}");
    }
    h.state_mut().dial = "tel:+15551234".into();
    h.run_steps(3);
    h.get_by_label("📞 Call").click();
    h.run_steps(3);
    assert!(shows(&h, "this phone calls SIP addresses only"));
}

#[test]
fn media_event_fills_the_panel_and_sas_can_be_confirmed_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready_phone(dir.path());
    h.state_mut()
        .apply(incoming(3, Some("sip:alice@atlanta.invalid#2026-12"), true));
    h.state_mut().apply(Update::Agent(AgentEvent::Answered {
        call: 3,
        verified: Some("sip:alice@atlanta.invalid#2026-12".into()),
        tunneled: true,
    }));
    h.run_steps(3);
    assert!(shows(&h, "Media"));
    assert!(!shows(&h, "Matches"), "no SAS buttons without a SAS");
    assert!(matches!(h.state().calls[0].phase, Phase::Active(_)));
    h.state_mut().apply(Update::Agent(AgentEvent::MediaStarted {
        call: 3,
        codec: "PCMU".into(),
        cipher: "AES_CM_128_HMAC_SHA1_80".into(),
        escrow_resistant: true,
        sas: Some("delta echo".into()),
    }));
    h.run_steps(3);
    assert_eq!(
        h.state().calls[0].media,
        Some(MediaSecurity {
            codec: "PCMU".into(),
            cipher: "AES_CM_128_HMAC_SHA1_80".into(),
            escrow_resistant: true,
            sas: Some("delta echo".into()),
            sas_matches: None,
        })
    );
    assert!(shows(&h, "delta echo"));
    assert!(shows(&h, "Audio codec"));
    assert!(shows(&h, "yes: the provider cannot listen in"));
    h.get_by_label("Does not match").click();
    h.run_steps(3);
    h.run_steps(3);
    assert_eq!(
        h.state().calls[0].media.as_ref().unwrap().sas_matches,
        Some(false)
    );
    assert!(shows(&h, "someone may be listening"));
    h.get_by_label("Matches").click();
    h.run_steps(3);
    h.run_steps(3);
    assert!(shows(&h, "Code confirmed"));
}

#[test]
fn contacts_add_edit_remove_through_the_widgets() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready_phone(dir.path());
    h.get_by_label("Contacts").click();
    h.run_steps(3);
    type_into(&mut h, "Name", "Carol");
    type_into(&mut h, "Address", "carol@chicago.invalid");
    h.get_by_label("Add contact").click();
    h.run_steps(3);
    assert!(shows(&h, "carol@chicago.invalid"));
    h.get_by_label("Edit").click();
    h.run_steps(3);
    h.state_mut().contact_form.1 = "sip:carol@chicago.invalid".into();
    h.run_steps(3);
    h.get_by_label("Save contact").click();
    h.run_steps(3);
    assert!(shows(&h, "sip:carol@chicago.invalid"));
    let saved = std::fs::read_to_string(AppDirs::at(dir.path()).contacts()).unwrap();
    assert!(saved.contains("sip:carol@chicago.invalid"));
    h.get_by_label("Remove").click();
    h.run_steps(3);
    assert!(shows(&h, "No contacts yet"));
}

#[test]
fn settings_offer_the_listed_sound_devices() {
    use ibephone::ui::audio_devices::{DeviceList, Devices};
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready_phone(dir.path());
    h.state_mut().devices = Devices::Listed(DeviceList {
        inputs: vec!["USB Headset Mic".into(), "Built-in Mic".into()],
        outputs: vec!["USB Headset".into()],
        note: None,
    });
    h.get_by_label("Settings").click();
    h.run_steps(3);
    h.get_by_label("Microphone").click();
    h.run_steps(3);
    assert!(shows(&h, "Built-in Mic"));
    h.get_by_label("USB Headset Mic").click();
    h.run_steps(3);
    assert_eq!(
        h.state().settings_draft.input_device.as_deref(),
        Some("USB Headset Mic")
    );
    // Back to the system default through the list, then the headset again.
    h.get_by_label("Microphone").click();
    h.run_steps(3);
    h.get_by_label("system default").click();
    h.run_steps(3);
    assert_eq!(h.state().settings_draft.input_device, None);
    h.get_by_label("Microphone").click();
    h.run_steps(3);
    h.get_by_label("USB Headset Mic").click();
    h.run_steps(3);

    // No devices on this machine: only the default and the note.
    h.state_mut().devices = Devices::Listed(DeviceList::from_results(
        Ok(vec![]),
        Err("no sound server".into()),
    ));
    h.state_mut().settings_draft.output_device = Some("Old USB Speaker".into());
    h.run_steps(3);
    assert!(shows(&h, "No microphones found"));
    assert_eq!(
        h.get_by_label("Speaker").value().as_deref(),
        Some("Old USB Speaker (not found)")
    );
    h.get_by_label("Speaker").click();
    h.run_steps(3);
    assert!(!shows(&h, "USB Headset"));
    assert!(shows(&h, "system default"));
    h.get_by_label("Speaker").click();
    h.run_steps(3);

    // Saved on Apply. This comes last: Apply restarts the phone, and this
    // phone has no keys, so the window leaves the settings when the
    // backend answers (whenever that is).
    h.state_mut().devices = Devices::Listed(DeviceList {
        inputs: vec!["USB Headset Mic".into()],
        outputs: vec![],
        note: None,
    });
    h.state_mut().settings_draft.output_device = None;
    h.run_steps(3);
    h.get_by_label("Apply").click();
    h.run_steps(1);
    let saved = ibephone::ui::Settings::load(&AppDirs::at(dir.path()).settings()).unwrap();
    assert_eq!(saved.input_device.as_deref(), Some("USB Headset Mic"));
    assert_eq!(saved.output_device, None, "the speaker stays the default");
}

#[test]
fn messages_survive_a_restart_and_a_damaged_file_is_reported() {
    use ibephone::ui::app::Author;
    let dir = tempfile::tempdir().unwrap();
    let dirs = AppDirs::at(dir.path());
    // A set-up phone has the key store's key file.
    std::fs::create_dir_all(dirs.keys()).unwrap();
    ibephone::pkg_client::seal::SealKey::load_or_create_file(
        &dirs.keys().join(ibephone::pkg_client::store::KEY_FILE),
    )
    .unwrap();
    {
        let mut h = ready_phone(dir.path());
        h.state_mut()
            .apply(Update::Agent(AgentEvent::MessageReceived {
                from: "sip:alice@atlanta.invalid".into(),
                text: "see you at noon".into(),
                verified: Some("sip:alice@atlanta.invalid#2026-12".into()),
                tunneled: true,
            }));
        h.run_steps(3);
    }
    assert!(dirs.messages().exists());
    let mut h = ready_phone(dir.path());
    let lines = &h.state().conversations["sip:alice@atlanta.invalid"];
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (lines[0].author, lines[0].text.as_str()),
        (Author::Them, "see you at noon")
    );
    h.get_by_label("Messages").click();
    h.run_steps(3);
    assert!(shows(&h, "see you at noon"));
    // Logging out deletes them.
    h.state_mut().apply(Update::LoggedOut);
    h.run_steps(3);
    assert!(h.state().conversations.is_empty());
    assert!(!dirs.messages().exists());
    drop(h);

    // A damaged file: a sentence in the window, the file kept aside.
    std::fs::write(dirs.messages(), "garbage").unwrap();
    let h = ready_phone(dir.path());
    assert!(
        shows(&h, "Your saved messages could not be read"),
        "{:?}",
        h.state().banners
    );
    assert!(shows(&h, "New messages are saved in a fresh file"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("messages.damaged-1.sealed")).unwrap(),
        "garbage"
    );
}

#[cfg(unix)]
#[test]
fn a_key_file_others_may_read_is_refused_with_a_sentence() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let dirs = AppDirs::at(dir.path());
    std::fs::create_dir_all(dirs.keys()).unwrap();
    let key_file = dirs.keys().join(ibephone::pkg_client::store::KEY_FILE);
    ibephone::pkg_client::seal::SealKey::load_or_create_file(&key_file).unwrap();
    {
        let mut h = ready_phone(dir.path());
        h.state_mut()
            .apply(Update::Agent(AgentEvent::MessageReceived {
                from: "sip:alice@atlanta.invalid".into(),
                text: "see you at noon".into(),
                verified: Some("sip:alice@atlanta.invalid#2026-12".into()),
                tunneled: true,
            }));
        h.run_steps(3);
    }
    let sealed = std::fs::read(dirs.messages()).unwrap();
    // Someone made the key file readable by the group: the window refuses
    // it with a sentence, shows no message, and the file is left as it was.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let h = ready_phone(dir.path());
    assert!(
        shows(&h, "group or others may access it"),
        "{:?}",
        h.state().banners
    );
    assert!(shows(&h, "chmod 600"));
    assert!(h.state().conversations.is_empty());
    assert_eq!(std::fs::read(dirs.messages()).unwrap(), sealed);
    assert!(!dir.path().join("messages.damaged-1.sealed").exists());
    drop(h);
    // Made private again, the messages come back.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let h = ready_phone(dir.path());
    assert_eq!(
        h.state().conversations["sip:alice@atlanta.invalid"].len(),
        1
    );
}

/// Key continuity (spec 6) on the call screen: a peer that proved the
/// confirmed call's keys shows "same keys as your confirmed call" and no
/// SAS to compare; a missing or wrong proof shows the loud warning and
/// keeps the SAS to compare.
#[test]
fn key_continuity_replaces_the_sas_question_or_warns() {
    for (verified, message) in [
        (
            true,
            "same keys as your confirmed call: no need to compare the SAS",
        ),
        (
            false,
            "WARNING: this peer did not prove the keys of your confirmed call",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut h = ready_phone(dir.path());
        let id = "sip:alice@atlanta.invalid#2026-12";
        h.state_mut().apply(incoming(3, Some(id), true));
        h.state_mut().apply(Update::Agent(AgentEvent::Answered {
            call: 3,
            verified: Some(id.into()),
            tunneled: true,
        }));
        h.state_mut().apply(Update::Agent(AgentEvent::MediaStarted {
            call: 3,
            codec: "PCMU".into(),
            cipher: "AEAD_AES_128_GCM".into(),
            escrow_resistant: true,
            sas: Some("ybnd".into()),
        }));
        h.state_mut()
            .apply(Update::Agent(AgentEvent::KeyContinuity {
                call: 3,
                verified,
                message: message.into(),
            }));
        h.state_mut().show_security = true;
        h.run_steps(3);
        assert!(shows(&h, message), "{message}");
        assert_eq!(
            h.state().calls[0].continuity,
            Some((verified, message.to_string()))
        );
        assert_eq!(shows(&h, "Matches"), !verified, "{message}");
    }
}

/// "Copy diagnostics" in Settings puts the report on the clipboard: the
/// version, the registration, the transport and proxy, the keys and the
/// last refusal; never a message text.
#[test]
fn copy_diagnostics_puts_a_report_on_the_clipboard() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready_phone(dir.path());
    let app = h.state_mut();
    app.apply(Update::Agent(AgentEvent::MessageReceived {
        from: "sip:alice@atlanta.invalid".into(),
        text: "the meeting code is 4711".into(),
        verified: Some("sip:alice@atlanta.invalid#2026-12".into()),
        tunneled: true,
    }));
    app.apply(Update::Agent(AgentEvent::Rejected {
        reason: "not tunneled".into(),
    }));
    app.tab = ibephone::ui::app::Tab::Settings;
    h.run_steps(3);
    h.get_by_label("Copy diagnostics").click();
    h.step();
    let copied: Vec<String> = h
        .output()
        .platform_output
        .commands
        .iter()
        .filter_map(|c| match c {
            egui::OutputCommand::CopyText(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(copied.len(), 1, "{:?}", h.output().platform_output.commands);
    let report = &copied[0];
    for line in [
        format!("version: ibephone {}", env!("CARGO_PKG_VERSION")),
        "account: sip:bob@atlanta.invalid".to_string(),
        "registration: registered (expires 600 s)".to_string(),
        "transport: UDP to proxy 127.0.0.1:5060".to_string(),
        "this phone: 127.0.0.1:5099".to_string(),
        "policy: require".to_string(),
    ] {
        assert!(
            report.lines().any(|l| l == line),
            "no {line:?} in\n{report}"
        );
    }
    assert!(report.contains("keys: held for 2026-12"), "{report}");
    assert!(report.contains("message refused: not tunneled"), "{report}");
    assert!(!report.contains("4711"), "a message text in\n{report}");
    h.run_steps(2);
    assert!(shows(&h, "Copied to the clipboard"));
}

/// Call waiting and transfer in the call screen: a second call while one
/// is up is drawn as waiting (Answer holds the current call, Decline);
/// once the agent holds the first call it gets a Switch line; the Transfer
/// field sends a transfer and shows its progress, a failure says the call
/// goes on.
#[test]
fn call_waiting_swap_and_transfer_controls() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready_phone(dir.path());
    let alice = "sip:alice@atlanta.invalid#2026-12";
    h.state_mut().apply(incoming(1, Some(alice), true));
    h.state_mut().apply(Update::Agent(AgentEvent::Answered {
        call: 1,
        verified: Some(alice.into()),
        tunneled: true,
    }));
    h.run_steps(3);
    assert!(!shows(&h, "Call waiting"));
    h.state_mut().apply(Update::Agent(AgentEvent::IncomingCall {
        call: 2,
        from: "<sip:carol@atlanta.invalid>".into(),
        verified: Some("sip:carol@atlanta.invalid#2026-12".into()),
        tunneled: true,
        waiting: true,
    }));
    h.run_steps(3);
    assert!(shows(&h, "Call waiting: sip:carol@atlanta.invalid"));
    assert!(shows(&h, "✔ verified: sip:carol@atlanta.invalid"));
    assert!(shows(&h, "Decline"));
    assert!(!shows(&h, "Reject"), "a waiting call is declined busy");
    h.get_by_label("Answer (holds your call)").click();
    h.run_steps(3);
    // No agent runs behind this window: the Answer command comes back,
    // asynchronously, as a notice banner above the calls. Wait for it, or
    // it may arrive between finding the Transfer button below and
    // clicking it, move the controls down and take the click (seen once
    // under load).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !shows(&h, "not running yet") {
        assert!(
            std::time::Instant::now() < deadline,
            "no notice for the Answer command"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
        h.run_steps(1);
    }
    // The agent answers carol and holds alice.
    h.state_mut().apply(Update::Agent(AgentEvent::Answered {
        call: 2,
        verified: Some("sip:carol@atlanta.invalid#2026-12".into()),
        tunneled: true,
    }));
    h.state_mut().apply(Update::Agent(AgentEvent::MediaUpdated {
        call: 1,
        direction: "sendonly".into(),
        codec: "PCMU".into(),
        cipher: "AEAD_AES_128_GCM".into(),
        escrow_resistant: true,
        sas: None,
    }));
    h.run_steps(3);
    assert!(h.state().calls[0].held);
    assert!(shows(&h, "On hold: sip:alice@atlanta.invalid"));
    assert!(shows(&h, "Switch to sip:alice@atlanta.invalid"));
    // Transfer carol's call to dave.
    // An empty field transfers nothing.
    h.get_by_label("Transfer").click();
    h.run_steps(3);
    assert_eq!(h.state().calls[1].transfer, None);
    h.state_mut().transfer_to = "dave".into();
    h.run_steps(3);
    h.get_by_label("Transfer").click();
    h.run_steps(3);
    h.run_steps(3);
    assert_eq!(h.state().transfer_to, "", "the field is cleared");
    assert_eq!(
        h.state().calls[1].transfer.as_deref(),
        Some("Transferring to dave…")
    );
    h.state_mut()
        .apply(Update::Agent(AgentEvent::TransferProgress {
            call: 2,
            status: 180,
            reason: "Ringing".into(),
            done: false,
        }));
    h.run_steps(3);
    assert!(shows(&h, "Transferring: 180 Ringing"));
    h.state_mut()
        .apply(Update::Agent(AgentEvent::TransferFailed {
            call: 2,
            status: 486,
            reason: "the transfer target's call failed (486 Busy Here)".into(),
        }));
    h.run_steps(3);
    assert!(shows(&h, "The transfer did not work"));
    assert_eq!(h.state().calls[1].transfer, None);
}

/// The fingerprint to confirm fits the window at its default and at its
/// smallest width: the short form, and the full form once unfolded (the
/// 16 groups wrap instead of running past the edge).
#[test]
fn fingerprints_are_never_cut_off() {
    use egui_kittest::Harness;
    use ibephone::ibe::fingerprint;
    use ibephone::ui::backend::ProviderProbe;
    use ibephone::ui::fingerprint_view::SHOW_FULL;
    let cert: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    for [w, h_] in [ibephone::ui::DEFAULT_SIZE, ibephone::ui::MIN_SIZE] {
        let dir = tempfile::tempdir().unwrap();
        let app =
            ibephone::ui::PhoneApp::new(AppDirs::at(dir.path()), egui::Context::default()).unwrap();
        let mut h = Harness::builder()
            .with_size(egui::vec2(w, h_))
            .build_state(|ctx, app: &mut ibephone::ui::PhoneApp| app.show(ctx), app);
        h.state_mut().apply(Update::Probed(ProviderProbe {
            url: "https://pkg.atlanta.invalid:8443".into(),
            trust: ibephone::pkg_client::first_contact::FirstTrust::Certificate,
            cert_fingerprint: cert,
            params_fingerprint_display: "3f2a 91c0".into(),
            params_fingerprint: [7; 32],
            domain: "atlanta.invalid".into(),
            sip_proxy: None,
        }));
        h.run_steps(3);
        let fits = |r: egui::Rect, what: &str| {
            assert!(
                r.min.x >= 0.0 && r.max.x <= w && r.max.y <= h_,
                "{what} at width {w}: {r:?}"
            );
        };
        fits(
            h.get_by_label(&fingerprint::short(&cert)).rect(),
            "short form",
        );
        assert!(
            !shows(&h, &fingerprint::full(&cert)),
            "the full form is folded"
        );
        h.get_by_label(SHOW_FULL).click();
        h.run_steps(3);
        fits(
            h.get_by_label(&fingerprint::full(&cert)).rect(),
            "full form",
        );
        fits(h.get_by_label("They match: log in").rect(), "the button");
    }
}

/// The status bar speaks plain words: "Ready" and "Keys up to date" (the
/// registration lifetime only in the tooltip), and a proxy that does not
/// answer is "Can't reach your provider - retrying".
#[test]
fn status_bar_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = ready_phone(dir.path());
    assert!(shows(&h, "Ready"));
    assert!(!shows(&h, "refresh every"));
    assert!(!shows(&h, "600 s"));
    h.state_mut()
        .apply(Update::Agent(AgentEvent::RegistrationFailed {
            status: 408,
        }));
    h.run_steps(3);
    assert!(shows(&h, "Can't reach your provider - retrying"));
    h.state_mut()
        .apply(Update::Agent(AgentEvent::RegistrationFailed {
            status: 403,
        }));
    h.run_steps(3);
    assert!(shows(&h, "Not connected"));
    assert!(!shows(&h, "retrying"));
}
