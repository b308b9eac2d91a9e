//! `thinkbench eval --model DIR --task NAME --n N`: accuracy, format-correct rate, reasoning
//! length and expert load on a task's held-out problems, through the one decode loop. A table, or
//! one JSON object with `--json`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde_json::json;

use crate::model::Model;
use crate::runtime::divergence::{divergence, DivergenceSummary};
use crate::text::TextCodec;
use crate::train::eval::{evaluate, render, EvalOptions};
use crate::train::task::{self, Split};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model directory in the Hugging Face layout.
    #[arg(long)]
    pub model: PathBuf,
    /// A built-in task (arithmetic, multiplication).
    #[arg(long)]
    pub task: String,
    /// Number of problems (spread evenly over the levels).
    #[arg(long, default_value_t = 240)]
    pub n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Levels to draw from, e.g. 1-6 or 2,4 (default: all of the task's levels).
    #[arg(long)]
    pub levels: Option<String>,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Evaluate on training-split problems instead of held-out ones.
    #[arg(long)]
    pub train_split: bool,
    /// Problems decoding together (continuous batching); 1 runs them one at a time.
    #[arg(long, default_value_t = crate::train::eval::EVAL_BATCH)]
    pub batch: usize,
    /// Also ask every problem as the 2nd … N-th question of a conversation whose earlier turns
    /// are other problems with their correct answers; accuracy by turn (`by_turn` in --json).
    #[arg(long, default_value_t = 1)]
    pub turns: usize,
    /// Ask every problem only as the K-th question of its conversation (the same conversations
    /// as --turns K; what a GRPO recipe's `eval.turn = K` measures).
    #[arg(long, value_name = "K", conflicts_with = "turns")]
    pub turn: Option<usize>,
    /// Completions per question: accuracy is then pass@1 (their mean), and each level also
    /// gets pass@K; needs --temperature above 0.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub samples: usize,
    /// With --quant: also load the checkpoint unquantized (at --dtype) and report the per-token
    /// KL divergence from it to the quantized model over every generated token, and how often
    /// both pick the same most likely token (`kl_to_unquantized` in --json).
    #[arg(long)]
    pub kl: bool,
    #[command(flatten)]
    pub runtime: super::runtime_args::RuntimeArgs,
    /// Print one JSON object (the report, plus every graded completion).
    #[arg(long)]
    pub json: bool,
}

/// "1-6", "2,4", "1-3,8" to levels, each checked against the task's range.
pub fn parse_levels(s: &str, range: std::ops::RangeInclusive<u32>) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |x: &str| {
            x.parse::<u32>()
                .map_err(|_| format!("--levels {s}: \"{x}\" is not a level"))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        for l in a..=b {
            if !range.contains(&l) {
                return Err(format!(
                    "--levels {s}: level {l} is outside {}-{}",
                    range.start(),
                    range.end()
                ));
            }
            out.push(l);
        }
    }
    if out.is_empty() {
        return Err(format!("--levels {s}: no levels"));
    }
    Ok(out)
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let task = task::by_name(&args.task).map_err(|e| anyhow!("--task: {e}"))?;
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    if args.samples == 0 || (args.samples > 1 && args.temperature == 0.0) {
        bail!("--samples must be at least 1, and above 1 needs --temperature above 0 (greedy gives the same answer every time)");
    }
    if args.turns == 0 || args.turn == Some(0) {
        bail!("--turns and --turn must be at least 1 (1: every problem asked alone)");
    }
    let levels = match &args.levels {
        Some(s) => parse_levels(s, task.levels()).map_err(|e| anyhow!(e))?,
        None => task.levels().collect(),
    };
    let (dtype, device) = args.runtime.apply()?;
    let quant = args.runtime.quant()?;
    if args.kl && quant.is_none() {
        bail!("--kl compares a --quant model with the same checkpoint unquantized: give --quant q8_0 or q4_0");
    }
    let model = Model::load_quantized(&args.model, dtype, device, quant)?;
    let codec = TextCodec::load(&args.model)?;
    let opts = EvalOptions {
        n: args.n,
        seed: args.seed,
        levels,
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        split: if args.train_split {
            Split::Train
        } else {
            Split::HeldOut
        },
        batch: args.batch,
        first_turn: args.turn.unwrap_or(1),
        turns: args.turn.unwrap_or(args.turns),
        samples: args.samples,
    };
    let show = !args.json && std::io::stderr().is_terminal();
    // With several samples per question, progress counts answers.
    let unit = if args.samples > 1 {
        "answers"
    } else {
        "problems"
    };
    let mut correct = 0;
    let (report, items) = evaluate(
        &model,
        &codec,
        task.as_ref(),
        &opts,
        &mut |done, total, s| {
            correct += usize::from(s.correct);
            if show {
                eprint!("\r{done}/{total} {unit}, {correct} correct");
                if done == total {
                    eprint!("\r\x1b[K");
                }
            }
        },
    )
    .map_err(|e| anyhow!(e))?;
    // Per completion, then over all of them: --json lists each completion's own, to find where
    // quantization hurts most.
    let mut per_item = Vec::new();
    let mut all_tokens = Vec::new();
    if args.kl {
        let float = Model::load(&args.model, dtype, device)?;
        for s in &items {
            let d = divergence(&float, &model, &s.prompt_ids, &s.completion_ids)?;
            per_item.push(DivergenceSummary::of(&d));
            all_tokens.extend(d);
        }
    }
    let kl = DivergenceSummary::of(&all_tokens);
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["model"] = json!(args.model.display().to_string());
        v["items"] = serde_json::to_value(&items)?;
        if args.kl {
            v["kl_to_unquantized"] = serde_json::to_value(&kl)?;
            let listed = v["items"].as_array_mut().into_iter().flatten();
            for (item, k) in listed.zip(&per_item) {
                item["kl_to_unquantized"] = serde_json::to_value(k)?;
            }
        }
        println!("{v}");
    } else {
        print!("{}", render(&report, &args.model.display().to_string()));
        if args.kl {
            let what = kl.map_or("no generated tokens".to_string(), |k| k.render());
            println!("\nagainst the unquantized model ({}): {what}", dtype.name());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_ranges_and_lists() {
        assert_eq!(parse_levels("1-3,8", 1..=8).unwrap(), vec![1, 2, 3, 8]);
        assert_eq!(parse_levels("5", 1..=8).unwrap(), vec![5]);
        assert_eq!(
            parse_levels("0-2", 1..=8).unwrap_err(),
            "--levels 0-2: level 0 is outside 1-8"
        );
        assert!(parse_levels("a", 1..=8).is_err());
    }
}
