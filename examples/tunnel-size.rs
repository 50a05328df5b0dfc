//! Plain versus tunneled bytes of a call, per message and in total,
//! signatures included: `cargo run --release --example tunnel-size`.
//! Two calls: a typical one (messages as an ordinary phone sends them) and
//! the known-answer dialog (already compact inner messages: the worst case).
// An example has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

use ibephone::tunnel::kat::{dialog, typical_call, vector_time, vector_tunnel};

fn report(
    title: &str,
    call: Vec<(&'static str, bool, Vec<u8>)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (mut alice, _) = vector_tunnel("alice", None)?;
    let (mut bob, _) = vector_tunnel("bob", None)?;
    println!("{title}");
    println!(
        "{:18} {:>7} {:>9} {:>6}",
        "message", "plain", "tunneled", "ratio"
    );
    let (mut plain, mut tunneled) = (0usize, 0usize);
    for (name, from_alice, inner) in call {
        let (s, r) = if from_alice {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        let outer = s.seal(vector_time(), &inner)?;
        r.open(vector_time(), &outer)?;
        println!(
            "{name:18} {:>7} {:>9} {:>6.2}",
            inner.len(),
            outer.len(),
            outer.len() as f64 / inner.len() as f64
        );
        plain += inner.len();
        tunneled += outer.len();
    }
    println!(
        "{:18} {plain:>7} {tunneled:>9} {:>6.2}\n",
        "whole call",
        tunneled as f64 / plain as f64
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    report(
        "Typical call (RFC 3665 3.1 style, full headers)",
        typical_call(),
    )?;
    report("Known-answer dialog (compact inner messages)", dialog())?;
    Ok(())
}
