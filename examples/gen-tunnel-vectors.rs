//! Writes the tunnel known-answer vectors to stdout:
//! `cargo run --example gen-tunnel-vectors > tests/vectors/tunnel-v1.json`.
// An example has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let doc = ibephone::tunnel::kat::generate()?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
