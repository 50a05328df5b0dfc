//! Subcommands of the `ibephone` binary that are more than a call into the
//! library.

pub mod demo;
