//! Issue 15's "zero effort": from the first start to the first secured
//! call a new user gives the address, the password and one fingerprint
//! confirmation (each a field or a button: two typed, two clicked), and
//! nothing else; the provider's PKG and SIP proxy are found by DNS
//! (`ui_support::zero_effort`). The inputs are deterministic, so they are
//! asserted here; the time is a figure of `cargo bench --bench first_call`.
#![cfg(feature = "gui")]

use crate::ui_support::zero_effort::{first_secured_call, FOUND_DOMAIN};
use crate::ui_support::Provider;

#[test]
fn zero_effort_first_secured_call_takes_address_password_and_one_confirmation() {
    let p = Provider::start_for(FOUND_DOMAIN);
    let run = first_secured_call(&p);
    assert_eq!(
        run.setup.0,
        [
            "type Your address",
            "type Password",
            "click Connect",
            "click They match: log in",
        ],
        "the inputs from the first start to a ready phone"
    );
    assert_eq!(
        run.call.0,
        ["type Call", "click 📞 Call"],
        "the inputs of the call itself"
    );
    // Found by DNS, not typed: the PKG under its SRV target's name, the
    // proxy at the address its SRV record leads to.
    let pkg_port = p.url.rsplit_once(':').unwrap().1;
    assert_eq!(
        run.found.0,
        format!("https://pkg.{FOUND_DOMAIN}:{pkg_port}")
    );
    assert_eq!(run.found.1, p.proxy.to_string());
}
