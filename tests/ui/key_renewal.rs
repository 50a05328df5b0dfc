//! A running `[pkg]` agent renews its keys against a real PKG (in-process,
//! 127.0.0.1): due only when the next period's key is missing, fetched keys
//! handed to the agent's inbox, a wrong password refused.

use crate::ui_support;

use ibephone::agent::config::PkgSettings;
use ibephone::agent::key_inbox::KeyInbox;
use ibephone::agent::renewal::{RenewOutcome, Renewal};
use ibephone::ibe::{Aor, Period};
use ibephone::pkg_client::api::SecretString;
use std::time::{SystemTime, UNIX_EPOCH};
use ui_support::{Provider, ALICE_PW, DOMAIN};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn renewal(provider: &Provider, store: &std::path::Path, password: &str) -> Renewal {
    let current = Period::month_at(now());
    Renewal::new(
        PkgSettings {
            discover: false,
            url: provider.url.clone(),
            fingerprint: Some(provider.fingerprint),
            store: store.to_path_buf(),
            user: "alice".into(),
            otp_command: None,
        },
        Aor::parse(&format!("sip:alice@{DOMAIN}")).unwrap(),
        SecretString::new(password.into()),
        // Started without next month's key (e.g. the PKG was down then).
        vec![current.previous_month().unwrap(), current],
    )
}

#[test]
fn missing_next_period_is_fetched_once_and_handed_to_the_agent() {
    let provider = Provider::start();
    let store = tempfile::tempdir().unwrap();
    let mut r = renewal(&provider, store.path(), ALICE_PW);
    let inbox = KeyInbox::new();
    let next = Period::month_at(now()).next_month().unwrap();
    assert!(r.due(now()));
    let outcome = provider.rt.block_on(r.check(now(), &inbox)).unwrap();
    assert_eq!(outcome, RenewOutcome::Renewed(vec![next.clone()]));
    assert_eq!(inbox.pending(), 1);
    assert!(r.held().contains(&next));
    // Nothing more to do until the calendar moves on.
    let again = provider.rt.block_on(r.check(now(), &inbox)).unwrap();
    assert_eq!(again, RenewOutcome::NotDue);
    assert_eq!(inbox.pending(), 1);
}

#[test]
fn a_wrong_password_is_an_error_and_hands_over_nothing() {
    let provider = Provider::start();
    let store = tempfile::tempdir().unwrap();
    let mut r = renewal(&provider, store.path(), "not alice's password");
    let inbox = KeyInbox::new();
    let err = provider.rt.block_on(r.check(now(), &inbox)).unwrap_err();
    assert!(err.to_string().contains("PKG"), "{err}");
    assert_eq!(inbox.pending(), 0);
    assert!(r.due(now()), "still due: retried at the next check");
}
