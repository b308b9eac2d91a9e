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
    #[command(flatten)]
    workbench: cli::workbench::WorkbenchArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Generate from a prompt without the interface; --json prints the per-token trace.
    Generate(cli::generate::GenerateArgs),
    /// Render a conversation through the model's chat template and show the ids fed to the model.
    Prompt(cli::prompt::PromptArgs),
    /// Measure prefill and decode speed and peak memory of a model.
    Bench(cli::bench::BenchArgs),
    /// Run a training recipe (recipes/*.toml); re-running it resumes from the last checkpoint.
    Train(cli::train::TrainArgs),
    /// Apply LoRA adapters (a GRPO checkpoint's) to a base model and write the merged model.
    Merge(cli::merge::MergeArgs),
    /// Score a completion with a GRPO recipe's rewards (the reward playground).
    Reward(cli::reward::RewardArgs),
    /// Write a recipe as another trainer's program: `export trl RECIPE --out DIR`.
    Export(cli::export::ExportArgs),
    /// Accuracy, format rate, reasoning length and expert load on a task's held-out problems.
    Eval(cli::eval::EvalArgs),
    /// Ask a model questions without the interface and save the conversation as a session.
    Record(cli::record::RecordArgs),
    /// Serve the model over the OpenAI API (chat and completions, streamed or not), with its
    /// reasoning, log-probabilities and routed experts; concurrent requests share decode steps.
    Serve(cli::serve::ServeArgs),
    /// Reopen a saved session in the workbench (the inspectors work without the model).
    Open {
        /// A session file (sessions/*.json, or one from the session list).
        file: PathBuf,
        #[command(flatten)]
        workbench: cli::workbench::WorkbenchArgs,
    },
}

fn main() -> ExitCode {
    thinkbench::model::cpu::cap_libraries_too();
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Generate(args)) => cli::generate::run(args),

        Some(Command::Prompt(args)) => cli::prompt::run(args),
        Some(Command::Bench(args)) => cli::bench::run(args),
        Some(Command::Train(args)) => cli::train::run(args),
        Some(Command::Reward(args)) => cli::reward::run(args),
        Some(Command::Merge(args)) => cli::merge::run(args),
        Some(Command::Eval(args)) => cli::eval::run(args),
        Some(Command::Export(args)) => cli::export::run(args),
        Some(Command::Record(args)) => cli::record::run(args),
        Some(Command::Serve(args)) => cli::serve::run(args),
        Some(Command::Open { file, workbench }) => cli::workbench::run(workbench, Some(file)),
        None => cli::demo::run(cli.workbench.model.as_deref(), &cli.workbench),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
