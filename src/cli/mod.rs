//! The non-interactive commands.

pub mod bench;
pub mod demo;
pub mod generate;
pub mod prompt;
