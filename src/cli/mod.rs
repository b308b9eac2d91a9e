//! The commands: the workbench (`workbench`, `demo` picks its default model) and the
//! non-interactive ones.

pub mod bench;
pub mod demo;
pub mod eval;
pub mod export;
pub mod generate;
pub mod generate_remote;
pub mod merge;
pub mod prompt;
pub mod record;
pub mod remote_args;
pub mod reward;
pub mod runtime_args;
pub mod serve;
pub mod train;
pub mod workbench;
