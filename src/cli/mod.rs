//! The non-interactive commands.

pub mod bench;
pub mod demo;
pub mod generate;
