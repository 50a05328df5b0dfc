//! Writes the tunnel vector dialog as UDP on loopback into a pcap:
//! `cargo run --example write-tunnel-capture > tests/captures/tunnel-dialog.pcap`.
// An example has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::io::stdout().write_all(&ibephone::pcap::write::dialog_capture()?)?;
    Ok(())
}
