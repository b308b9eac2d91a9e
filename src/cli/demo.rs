//! What `thinkbench` (and `make run`) does until the terminal workbench lands: one streamed
//! generation with the chain of thought and the routing of the first answer tokens, so a user can
//! see the engine work end to end.

use std::path::Path;

use anyhow::Result;

use super::generate::{run as generate, GenerateArgs};

/// The stand-in model until the built-in one ships: the tiny random deepseek_v3 parity fixture.
pub const STAND_IN_MODEL: &str = "tests/fixtures/models/deepseek_v3_qlora";

pub fn run(model: Option<&Path>) -> Result<()> {
    let model = model
        .map(Path::to_path_buf)
        .unwrap_or_else(|| STAND_IN_MODEL.into());
    eprintln!(
        "thinkbench {}: the interactive workbench is not built yet; running one generation on {}",
        env!("CARGO_PKG_VERSION"),
        model.display()
    );
    eprintln!("(try `thinkbench generate --model DIR --chat \"...\" --json` for the full per-token trace)");
    let args = GenerateArgs {
        model,
        prompt: None,
        chat: Some("What is 17 + 25?".into()),
        prompt_ids: None,
        max_new_tokens: 48,
        temperature: None,
        top_p: None,
        top_k: None,
        min_p: None,
        repetition_penalty: None,
        seed: 0,
        top_logprobs: 5,
        ignore_eos: false,
        think_budget: None,
        stop: Vec::new(),
        device: "cpu".into(),
        dtype: "f32".into(),
        threads: None,
        json: false,
    };
    generate(&args)
}
