//! `thinkbench reward RECIPE --text FILE|-`: the reward playground. Scores a completion with a
//! GRPO recipe's rewards before any training is launched, showing every reward's value, weight
//! and sub-metrics, and the answer it extracted.
//!
//! The text is a completion as the model would write it after the chat template's generation
//! prompt (R1's ends inside `<think>`): reasoning, `</think>`, the answer, and the end-of-sentence
//! token's text if it ended there (or pass `--finished`). Lengths are counted in the recipe
//! model's tokens.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use crate::text::TextCodec;
use crate::train::grpo::resolve_model_dir;
use crate::train::recipe::{self, Recipe};
use crate::train::rewards::{RewardInput, Rewards};
use crate::train::task;

#[derive(Debug, Args)]
pub struct RewardArgs {
    /// A GRPO recipe (recipes/*.toml).
    pub recipe: PathBuf,
    /// The completion to score: a file, or - for standard input.
    #[arg(long)]
    pub text: String,
    /// The reference answer (without it the accuracy reward is not scored).
    #[arg(long)]
    pub answer: Option<String>,
    /// Treat the text as ended by end-of-sentence even if its token text is not at the end.
    #[arg(long)]
    pub finished: bool,
    /// The completion's length in tokens (default: counted with the recipe model's tokenizer).
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &RewardArgs) -> Result<()> {
    let Recipe::Grpo(r) = recipe::load(&args.recipe)? else {
        bail!(
            "{}: the reward playground needs a GRPO recipe (kind = \"grpo\")",
            args.recipe.display()
        );
    };
    let text = if args.text == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the text from standard input")?;
        s
    } else {
        std::fs::read_to_string(&args.text).with_context(|| format!("--text {}", args.text))?
    };
    let model_dir = resolve_model_dir(&r.model.init);
    let codec = TextCodec::load(&model_dir).map_err(|e| {
        anyhow!(
            "{e} (the recipe's model {} gives the tokenizer; pass --tokens N to score without it)",
            model_dir.display()
        )
    });
    let (eos_text, tokens) = match (&codec, args.tokens) {
        (Ok(c), t) => {
            let eos = c
                .eos_ids()
                .first()
                .map(|&id| c.token_text(id))
                .unwrap_or_default();
            let n = match t {
                Some(n) => n,
                None => {
                    // The end-of-sentence string is one token, not text to tokenise.
                    let body = match text.find(eos.as_str()).filter(|_| !eos.is_empty()) {
                        Some(i) => &text[..i],
                        None => text.as_str(),
                    };
                    let ended = body.len() < text.len() || args.finished;
                    c.encode_raw(body).map_err(|e| anyhow!("{e}"))?.len() + usize::from(ended)
                }
            };
            (eos, n)
        }
        (Err(_), Some(n)) => ("<｜end▁of▁sentence｜>".to_string(), n),
        (Err(e), None) => bail!("{e}"),
    };
    let mut r = (*r).clone();
    let mut unscored = Vec::new();
    if args.answer.is_none() {
        r.rewards.retain(|reward| {
            if reward.needs_answer() {
                unscored.push(reward.name());
            }
            !reward.needs_answer()
        });
    }
    let rewards = Rewards::from_recipe(&r, &eos_text);
    if rewards.names().is_empty() {
        bail!(
            "the recipe's only reward is {}: pass --answer to score it",
            unscored.join(" and ")
        );
    }
    let task = r
        .data
        .task
        .as_deref()
        .map(task::by_name)
        .transpose()
        .map_err(|e| anyhow!(e))?;
    let finished = args.finished || (!eos_text.is_empty() && text.contains(&eos_text));
    let scored = rewards.score(&RewardInput {
        completion: &text,
        answer: args.answer.as_deref().unwrap_or(""),
        tokens,
        finished,
        task: task.as_deref(),
    });
    if args.json {
        let mut v = serde_json::to_value(&scored)?;
        v["tokens"] = serde_json::json!(tokens);
        v["finished"] = serde_json::json!(finished);
        println!("{v}");
        return Ok(());
    }
    println!(
        "{:<10} {:>7} {:>8} {:>9}  details",
        "reward", "weight", "value", "weighted"
    );
    for p in &scored.parts {
        let details: Vec<String> = p.metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<10} {:>7} {:>8.3} {:>9.3}  {}",
            p.name,
            p.weight,
            p.value,
            p.weight * p.value,
            details.join(" ")
        );
    }
    println!("{:<10} {:>7} {:>8} {:>9.3}", "total", "", "", scored.total);
    if args.answer.is_some() {
        println!(
            "extracted answer: {}  (reference {}: {})",
            scored
                .extracted
                .as_deref()
                .map_or("none".into(), |x| format!("{x:?}")),
            args.answer.as_deref().unwrap_or(""),
            if scored.correct { "correct" } else { "wrong" }
        );
    } else {
        println!("accuracy not scored: pass --answer");
    }
    println!(
        "{tokens} tokens, {}",
        if finished {
            "ended with end-of-sentence"
        } else {
            "did not end with end-of-sentence"
        }
    );
    Ok(())
}
