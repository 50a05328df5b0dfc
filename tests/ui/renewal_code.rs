//! A key renewal in the background when the account has a second factor
//! (pkg-api.md "Second factor at login", issue 16): the phone keeps
//! running on the keys it holds, shows a notice with a field for the code,
//! a wrong code gives a sentence and changes nothing, a valid one renews.
#![cfg(feature = "gui")]

use crate::ui_support::*;
use egui_kittest::kittest::Queryable;
use ibephone::ibe::Period;
use ibephone::ui::AppDirs;
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Next month's key forgotten: the renewal is due as soon as the phone
/// starts.
fn forget_next_period(dirs: &AppDirs) -> String {
    let next = Period::month_at(now()).next_month().unwrap();
    forget_periods(dirs, std::slice::from_ref(&next));
    next.as_str().to_string()
}

/// Alice set up through the wizard in a fresh data folder (kept alive by
/// the returned directory), the window closed again.
fn set_up_alice(p: &Provider) -> (tempfile::TempDir, AppDirs) {
    let dir = tempfile::tempdir().unwrap();
    let dirs = AppDirs::at(dir.path());
    let mut h = phone(dirs.clone());
    set_up(&mut h, p, "alice", ALICE_PW);
    (dir, dirs)
}

#[test]
fn renewal_with_a_second_factor_asks_for_the_code_without_blocking_and_renews() {
    let p = Provider::start();
    let (_dir, dirs) = set_up_alice(&p);
    // The administrator turns the second factor on (pkg-admin user otp);
    // next month's key is not held yet.
    let seed = p.enrol_otp("alice");
    let next = forget_next_period(&dirs);
    let before = stored_periods(&dirs);
    assert!(!before.contains(&next));
    let mut h = phone(dirs.clone());
    // The phone starts and registers on the keys it has, and says what
    // the renewal needs.
    wait_for(&mut h, "asks for the one-time code", 30);
    wait_for(&mut h, "Ready", 20);
    assert!(shows(&h, "Fetch keys with the code"));
    // A wrong code: a sentence, the keys and the phone as they were, the
    // field still there.
    let right = seed.code_at(now()).unwrap();
    let wrong = if right == "000000" {
        "000001"
    } else {
        "000000"
    };
    type_into(&mut h, "One-time code", wrong);
    h.get_by_label("Fetch keys with the code").click();
    wait_for(&mut h, "Your keys are unchanged", 30);
    assert!(shows(&h, "Wrong password or one-time code"));
    assert_eq!(stored_periods(&dirs), before, "nothing lost or added");
    assert!(shows(&h, "Ready"), "still registered");
    assert!(h.state().renewal_code.is_some(), "the field stays");
    assert!(
        h.state().renewal_code.as_ref().unwrap().codes[0].is_empty(),
        "the refused code is not kept"
    );
    // A valid code: next month's keys are fetched, stored and held.
    type_into(&mut h, "One-time code", &seed.code_at(now()).unwrap());
    h.get_by_label("Fetch keys with the code").click();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while h.state().renewal_code.is_some() {
        assert!(std::time::Instant::now() < deadline, "not renewed");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let held = &h.state().ready.as_ref().unwrap().periods;
    assert!(held.contains(&next), "{held:?}");
    assert!(stored_periods(&dirs).contains(&next));
    assert!(!shows(&h, "Fetch keys with the code"));
}

#[test]
fn a_start_without_this_months_key_and_a_second_factor_does_not_block() {
    let p = Provider::start();
    let (_dir, dirs) = set_up_alice(&p);
    let seed = p.enrol_otp("alice");
    let current = Period::month_at(now());
    let next = current.next_month().unwrap();
    forget_periods(&dirs, &[current.clone(), next.clone()]);
    // The phone starts on the key it has (it says this month's is
    // missing) and asks for the code instead of stopping.
    let mut h = phone(dirs.clone());
    wait_for(&mut h, "asks for the one-time code", 30);
    assert!(h.state().ready.is_some(), "the phone runs");
    assert!(shows(&h, "Keys missing"));
    type_into(&mut h, "One-time code", &seed.code_at(now()).unwrap());
    h.get_by_label("Fetch keys with the code").click();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while h.state().renewal_code.is_some() {
        assert!(std::time::Instant::now() < deadline, "not renewed");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let held = stored_periods(&dirs);
    assert!(held.contains(&current.as_str().to_string()), "{held:?}");
    assert!(held.contains(&next.as_str().to_string()), "{held:?}");
    h.run_steps(3);
    assert!(shows(&h, "Keys up to date"));
}
