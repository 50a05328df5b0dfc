//! Issue 15's "zero effort" figure: the time from a new user's first
//! start to the first secured call, through the window (egui_kittest)
//! against a real PKG and registrar on 127.0.0.1 found by DNS
//! (`tests/ui_support/zero_effort.rs`, the scenario whose inputs
//! `tests/ui/zero_effort.rs` asserts). The user's own typing and reading
//! take no time here: the figure is what the phone makes them wait
//! (discovery, first contact, login, key fetch, registration, the call).
//! Target: <= 30 s including the key fetch.
//!
//! `cargo bench --bench first_call` runs 5 times (`-- --runs N`) and
//! prints each run and the medians.
// A bench has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

// The fixtures of the ui tests; their own unit tests (compiled here too
// under `clippy --all-targets`) import what this build does not use.
#[path = "../tests/ui_support/mod.rs"]
#[allow(unused_imports)]
mod ui_support;

use std::time::Duration;
use ui_support::zero_effort::{first_secured_call, process_dns, FOUND_DOMAIN};
use ui_support::Provider;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(5)
        .max(1);
    // The resolver variable is set before any other thread runs.
    process_dns();
    let (mut ready, mut call) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let p = Provider::start_for(FOUND_DOMAIN);
        let run = first_secured_call(&p);
        println!(
            "run {}: ready after {:.2} s, secured call up after {:.2} s; inputs: setup {} {:?}, call {} {:?}",
            i + 1,
            run.to_ready.as_secs_f64(),
            run.to_call.as_secs_f64(),
            run.setup.0.len(),
            run.setup.0,
            run.call.0.len(),
            run.call.0,
        );
        ready.push(run.to_ready);
        call.push(run.to_call);
    }
    println!(
        "zero effort, first start to first secured call (median of {runs}): ready {:.2} s, call up {:.2} s (target <= 30 s)",
        median(ready).as_secs_f64(),
        median(call).as_secs_f64(),
    );
}
