//! `thinkbench prompt`: render a conversation through the model's chat template and show the
//! ids the engine would feed for it (see DESIGN.md for the contract).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::text::{load_messages, ChatPrompt, TextCodec};

#[derive(Debug, Clone, Args)]
pub struct PromptArgs {
    /// Model directory in the Hugging Face layout (only the tokenizer files are read).
    #[arg(long)]
    pub model: PathBuf,
    /// JSON file with the conversation: [{"role": "...", "content": "..."}, ...] or
    /// {"messages": [...]}.
    #[arg(long)]
    pub messages: PathBuf,
    /// Render without the assistant's generation prompt.
    #[arg(long)]
    pub no_generation_prompt: bool,
    /// Print exactly one JSON object: {"text": "...", "ids": [...]}.
    #[arg(long)]
    pub json: bool,
}

/// Renders and tokenises the conversation the arguments name.
pub fn prompt(args: &PromptArgs) -> Result<ChatPrompt> {
    let codec = TextCodec::load(&args.model)?;
    let messages = load_messages(&args.messages)?;
    Ok(codec.encode_chat(&messages, !args.no_generation_prompt)?)
}

/// What `run` prints: with `--json` one JSON object and a newline; otherwise the rendered text as
/// is, then a line with the ids (comma-separated, ready for `generate --prompt-ids`).
pub fn output(args: &PromptArgs) -> Result<String> {
    let p = prompt(args)?;
    if args.json {
        let v = serde_json::json!({"text": p.text, "ids": p.ids});
        Ok(format!("{v}\n"))
    } else {
        let ids: Vec<String> = p.ids.iter().map(u32::to_string).collect();
        let sep = if p.text.ends_with('\n') { "" } else { "\n" };
        Ok(format!(
            "{}{sep}--- {} ids\n{}\n",
            p.text,
            p.ids.len(),
            ids.join(",")
        ))
    }
}

pub fn run(args: &PromptArgs) -> Result<()> {
    use std::io::Write;
    let out = output(args)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
