//! The `thinkbench` binary: parses the command line and hands off to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use thinkbench::cli;

#[derive(Parser)]
#[command(
    name = "thinkbench",
    version,
    about = "A terminal workbench for studying R1-style reasoning models"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Model directory (Hugging Face layout) to open the workbench on.
    #[arg(long, global = false)]
    model: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate from a prompt without the interface; --json prints the per-token trace.
    Generate(cli::generate::GenerateArgs),
    /// Render a conversation through the model's chat template and show the ids fed to the model.
    /// Render a conversation through the model's chat template and show the ids fed to the model.
    Prompt(cli::prompt::PromptArgs),
    /// Measure prefill and decode speed and peak memory of a model.
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Generate(args)) => cli::generate::run(args),

        Some(Command::Prompt(args)) => cli::prompt::run(args),
        Some(Command::Bench(args)) => cli::bench::run(args),
        None => cli::demo::run(cli.model.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
