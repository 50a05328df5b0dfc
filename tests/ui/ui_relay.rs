//! Media across NATs in the desktop phone (issue 14): ICE is on by
//! default, with the STUN server and relay its provider announces. Against
//! a real PKG with the embedded STUN/TURN relay on 127.0.0.1, each call
//! gathers a relayed candidate (an allocation on the provider's relay,
//! made with credentials from `POST /v1/turn-credentials`), a phone
//! started later from its stored keys gets credentials too, and once ICE
//! nominates the direct pair (all on one loopback) the allocation is
//! given back while the call goes on.

use crate::ui_support;

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use ibephone::ui::{AppDirs, PhoneApp};
use std::time::Duration;
use ui_support::*;

/// The kinds of the pair a window's call uses (from `media_stats`).
fn pair(h: &Harness<'_, PhoneApp>) -> Option<(String, String)> {
    let s = h.state().calls.first()?.stats.as_ref()?;
    Some((s.local_candidate.clone()?, s.remote_candidate.clone()?))
}

/// Alice calls bob; while bob's phone rings alice holds an allocation on
/// the relay; once both are in call on the direct pair, the allocations
/// are released (within RELAY_GRACE plus margin) and audio keeps flowing.
fn call_holds_then_releases_the_relay(
    p: &Provider,
    alice: &mut Harness<'_, PhoneApp>,
    bob: &mut Harness<'_, PhoneApp>,
) {
    let relay = p.relay.as_ref().expect("the provider runs a relay");
    ring_with_a_relayed_candidate(relay, alice, bob);
    bob.get_by_label("Answer").click();
    wait_for(bob, "In call", 10);
    wait_for(alice, "In call", 10);
    until(alice, bob, 10, "a nominated pair on both sides", |a, b| {
        pair(a).is_some() && pair(b).is_some()
    });
    let (local, _) = pair(alice).unwrap();
    assert_eq!(local, "host", "on one loopback the direct pair wins");
    until(alice, bob, 10, "both allocations released", |_, _| {
        relay.allocations_of("alice") == 0 && relay.allocations_of("bob") == 0
    });
    let sent = |h: &Harness<'_, PhoneApp>| h.state().calls[0].stats.as_ref().map_or(0, |s| s.sent);
    let before = sent(alice);
    until(
        alice,
        bob,
        5,
        "media still flows after the release",
        |a, _| sent(a) > before + 20,
    );
    assert!(shows(alice, "In call"), "the call goes on");
    alice.get_by_label("Hang up").click();
    alice.run_steps(3);
    wait_for(bob, "Dial", 10);
    wait_for(alice, "Dial", 10);
}

#[test]
fn gui_calls_gather_relayed_candidates_from_setup_and_from_stored_keys() {
    let p = Provider::with_relay();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = phone(AppDirs::at(da.path()));
    let mut bob = phone(AppDirs::at(db.path()));
    set_up(&mut alice, &p, "alice", ALICE_PW);
    set_up(&mut bob, &p, "bob", BOB_PW);
    wait_for(&mut alice, "Ready", 10);
    wait_for(&mut bob, "Ready", 10);
    assert!(alice.state().settings.ice, "ICE on by default");
    // The relay credentials are fetched in the background after start.
    std::thread::sleep(Duration::from_secs(2));
    call_holds_then_releases_the_relay(&p, &mut alice, &mut bob);

    // Alice starts again from her stored keys (no key fetch, no wizard):
    // the relay credentials kept in her store serve (renewed before they
    // expire).
    drop(alice);
    let mut alice = phone(AppDirs::at(da.path()));
    wait_for(&mut alice, "Ready", 20);
    std::thread::sleep(Duration::from_secs(2));
    call_holds_then_releases_the_relay(&p, &mut alice, &mut bob);
}
