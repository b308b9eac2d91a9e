//! `thinkbench export trl RECIPE --out DIR [--force]`: a recipe as another trainer's program.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub target: ExportTarget,
}

#[derive(Debug, Subcommand)]
pub enum ExportTarget {
    /// A GRPO recipe as a runnable TRL 1.16 script (train.py, rewards.py, the Train tab's
    /// callback, the problems, accelerate configs, README.md).
    Trl(TrlArgs),
}

#[derive(Debug, Args)]
pub struct TrlArgs {
    /// A GRPO recipe (recipes/*.toml).
    pub recipe: PathBuf,
    /// The folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Write into a folder that is not empty.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    match &args.target {
        ExportTarget::Trl(a) => {
            let files = crate::export::trl::export(&a.recipe, &a.out, a.force)?;
            println!("wrote {} files to {}", files.len(), a.out.display());
            println!("  python {}/train.py --max-steps 3", a.out.display());
            Ok(())
        }
    }
}
