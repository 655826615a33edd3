//! Subcommands of the `epa` binary that are thin wrappers over the library.

pub mod generate;
pub mod score;
