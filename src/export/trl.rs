//! `thinkbench export trl RECIPE --out DIR`: a GRPO recipe as a runnable TRL 1.16 script.
//!
//! The folder holds `train.py` (GRPOConfig and GRPOTrainer set from every training key of the
//! recipe), `rewards.py` (thinkbench's rewards in plain Python, scored identically),
//! `thinkbench_callback.py` (the run folder the Train tab watches, and DeepSeek-V3 expert
//! balancing), the problems (`train.jsonl`, and `eval.jsonl` with `[eval]`) drawn in the order
//! thinkbench's own trainer draws them, accelerate configs and a README.
//!
//! A key TRL cannot express the same way is refused with one line naming the file and the key;
//! nothing is dropped silently. Keys that are execution settings of thinkbench's own trainer
//! (rollout workers, device, console rhythm) are said to be so in the README and in train.py.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use super::{write_files, ExportFile};
use crate::train::eval::{conversations, EvalOptions};
use crate::train::grpo::resolve_model_dir;
use crate::train::problems::{read_jsonl, Problem, Source};
use crate::train::recipe::{
    self, AccuracyReward, Compare, FormatReward, GrpoRecipe, LossAggregation, OverlongReward,
    Recipe, RecipeError, RewardScaling, RoutingReplay, ZeroStd,
};
use crate::train::task::Split;

pub const TRAIN_PY: &str = include_str!("trl/train.py");
pub const REWARDS_PY: &str = include_str!("trl/rewards.py");
pub const CALLBACK_PY: &str = include_str!("trl/thinkbench_callback.py");
const README_MD: &str = include_str!("trl/README.md");
const ACCELERATE_1GPU: &str = include_str!("trl/accelerate/single_gpu.yaml");
const ACCELERATE_GPUS: &str = include_str!("trl/accelerate/multi_gpu.yaml");
const ACCELERATE_NODES: &str = include_str!("trl/accelerate/multi_node.yaml");

/// Exports the recipe at `recipe_path` into `out`; returns the files written.
pub fn export(recipe_path: &Path, out: &Path, force: bool) -> Result<Vec<PathBuf>> {
    let file = recipe_path.display().to_string();
    let r = match recipe::load(recipe_path)? {
        Recipe::Grpo(r) => r,
        Recipe::Sft(_) => {
            return Err(RecipeError::new(
                &file,
                Some("kind"),
                "TRL's GRPOTrainer runs GRPO recipes only; this is an SFT recipe",
            )
            .into())
        }
    };
    check(&file, &r)?;
    let files = render(&file, &r)?;
    write_files(out, &files, force).map_err(|e| anyhow!(e))
}

/// The refusals: what TRL cannot express the way thinkbench trains it.
pub fn check(file: &str, r: &GrpoRecipe) -> Result<(), RecipeError> {
    let refuse = |key: &str, why: &str| Err(RecipeError::new(file, Some(key), why));
    if r.grpo.zero_std == ZeroStd::Resample {
        return refuse(
            "grpo.zero_std",
            "\"resample\" (DAPO's dynamic sampling) cannot be expressed in TRL: GRPOTrainer draws \
             each step's prompts before scoring and has no way to replace groups; use \"skip\" or \"keep\"",
        );
    }
    if r.grpo.zero_std == ZeroStd::Skip && r.grpo.scale_rewards == RewardScaling::Batch {
        return refuse(
            "grpo.zero_std",
            "\"skip\" with scale_rewards = \"batch\" cannot be expressed in TRL: its batch \
             standard deviation includes the skipped groups",
        );
    }
    if r.balance
        .as_ref()
        .is_some_and(|b| b.bias_update_rate != 0.0)
        && r.grpo.iterations > 1
    {
        return refuse(
            "balance.bias_update_rate",
            "with grpo.iterations > 1 thinkbench counts expert loads in the first pass only, \
             which TRL's repeated passes over a batch cannot tell apart",
        );
    }
    if r.lora.is_some() && r.model.train_router {
        return refuse(
            "model.train_router",
            "with [lora] PEFT freezes every base weight, routers included",
        );
    }
    if r.grpo.routing_replay == RoutingReplay::Rollout {
        return refuse(
            "grpo.routing_replay",
            "\"rollout\" cannot be expressed in TRL 1.16: GRPOTrainer re-scores with the \
             routers' own choices and keeps no rollout routing to replay",
        );
    }
    if r.generation.dtype != "f32" {
        return refuse(
            "generation.dtype",
            "a rollout precision apart from the update's cannot be expressed in TRL 1.16 \
             without vLLM: GRPOTrainer samples with the policy itself (with use_vllm, vLLM \
             samples in the model's dtype); leave it at \"f32\"",
        );
    }
    // rewards.py mirrors these three; a reward added to thinkbench needs its Python twin first.
    if let Some(other) = r
        .rewards
        .iter()
        .map(|w| w.name())
        .find(|n| !["accuracy", "format", "overlong"].contains(n))
    {
        return refuse(
            &format!("rewards.{other}"),
            "this reward has no Python version in the TRL export (rewards.py) yet",
        );
    }
    Ok(())
}

/// Every file of the export.
pub fn render(file: &str, r: &GrpoRecipe) -> Result<Vec<ExportFile>> {
    let (train, eval) = problems(file, r)?;
    let mut files = vec![
        ExportFile::new("train.py", train_py(file, r, eval.is_some())),
        ExportFile::new("rewards.py", REWARDS_PY),
        ExportFile::new("thinkbench_callback.py", CALLBACK_PY),
        ExportFile::new("README.md", readme(file, r)),
        ExportFile::new("accelerate/single_gpu.yaml", ACCELERATE_1GPU),
        ExportFile::new("accelerate/multi_gpu.yaml", ACCELERATE_GPUS),
        ExportFile::new("accelerate/multi_node.yaml", ACCELERATE_NODES),
        ExportFile::new("train.jsonl", jsonl(&train)),
    ];
    if let Some(eval) = eval {
        files.push(ExportFile::new("eval.jsonl", jsonl(&eval)));
    }
    Ok(files)
}

/// The training problems in the order thinkbench's trainer asks them (step 0's first), and the
/// held-out ones `[eval]` measures.
fn problems(file: &str, r: &GrpoRecipe) -> Result<(Vec<Problem>, Option<Vec<Problem>>)> {
    let source = Source::from_recipe(&r.data, r.seed).map_err(|e| anyhow!("{file}: {e}"))?;
    let per_step = r.generation.prompts_per_step;
    let train: Vec<Problem> = (0..r.train.steps)
        .flat_map(|s| source.draw(s, 0, per_step))
        .collect();
    let Some(e) = &r.eval else {
        return Ok((train, None));
    };
    let eval = match source.task() {
        Some(task) => {
            // The conversations `thinkbench eval` (and the trainer's evaluation) builds.
            let opts = EvalOptions {
                n: e.n,
                seed: 0,
                levels: e
                    .levels
                    .clone()
                    .or_else(|| r.data.levels.clone())
                    .unwrap_or_else(|| task.levels().collect()),
                max_new_tokens: e.max_new_tokens,
                temperature: 0.0,
                top_p: 1.0,
                split: Split::HeldOut,
                batch: 1,
                first_turn: e.turn.unwrap_or(1),
                turns: e.turn.unwrap_or(1),
                samples: 1,
            };
            conversations(task, &opts)
                .into_iter()
                .map(|(ex, earlier)| Problem {
                    prompt: ex.prompt,
                    answer: ex.answer,
                    level: Some(ex.level),
                    earlier: crate::train::conversation::answered(&earlier),
                })
                .collect()
        }
        None => {
            let path = r.data.eval_path.as_ref().ok_or_else(|| {
                RecipeError::new(
                    file,
                    Some("data.eval_path"),
                    "needed for [eval] with a JSONL dataset",
                )
            })?;
            let mut v = read_jsonl(path, r.data.instruction.as_deref()).map_err(|e| anyhow!(e))?;
            v.truncate(e.n);
            v
        }
    };
    Ok((train, Some(eval)))
}

fn jsonl(problems: &[Problem]) -> String {
    let mut out = String::new();
    for p in problems {
        let line = json!({
            "prompt": p.prompt,
            "answer": p.answer,
            "level": p.level,
            "earlier": p.earlier,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// The rewards as `rewards.py` takes them (its `Rewards(config)`); `eos_text` is added by
/// train.py from the tokenizer.
pub fn rewards_config(r: &GrpoRecipe) -> Value {
    let w = &r.rewards;
    json!({
        "accuracy": w.get::<AccuracyReward>().map(|a| json!({
            "weight": a.weight,
            "compare": match a.compare { Compare::Exact => "exact", Compare::Numeric => "numeric" },
            "correct": a.correct,
            "wrong": a.wrong,
        })),
        "format": w.get::<FormatReward>().map(|f| json!({"weight": f.weight})),
        "overlong": w.get::<OverlongReward>().zip(r.overlong_max()).map(|(o, (max, buffer))| json!({
            "weight": o.weight, "max_length": max, "buffer": buffer,
        })),
        "task": r.data.task,
    })
}

/// GRPOConfig's fields, each with the recipe key it comes from.
pub fn grpo_args(r: &GrpoRecipe) -> Vec<(&'static str, Value, &'static str)> {
    let g = &r.grpo;
    let o = &r.optimizer;
    let weights: Vec<f64> = [
        r.rewards.get::<AccuracyReward>().map(|a| a.weight),
        r.rewards.get::<FormatReward>().map(|f| f.weight),
        r.rewards.get::<OverlongReward>().map(|o| o.weight),
    ]
    .into_iter()
    .flatten()
    .collect();
    vec![
        (
            "beta",
            json!(g.beta),
            "grpo.beta (k3 KL to the frozen start)",
        ),
        ("epsilon", json!(g.epsilon_low), "grpo.epsilon_low"),
        ("epsilon_high", json!(g.epsilon_high()), "grpo.epsilon_high"),
        ("loss_type", json!(loss_type(g.loss)), "grpo.loss"),
        (
            "scale_rewards",
            json!(scale_rewards(g.scale_rewards)),
            "grpo.scale_rewards",
        ),
        ("num_iterations", json!(g.iterations), "grpo.iterations"),
        (
            "mask_truncated_completions",
            json!(g.mask_truncated),
            "grpo.mask_truncated",
        ),
        (
            "num_generations",
            json!(r.generation.group_size),
            "generation.group_size",
        ),
        (
            "max_completion_length",
            json!(r.generation.max_new_tokens),
            "generation.max_new_tokens",
        ),
        (
            "temperature",
            json!(r.generation.temperature),
            "generation.temperature",
        ),
        ("top_p", json!(r.generation.top_p), "generation.top_p"),
        ("reward_weights", json!(weights), "rewards.<name>.weight"),
        ("learning_rate", json!(o.lr), "optimizer.lr"),
        ("adam_beta1", json!(o.betas[0]), "optimizer.betas[0]"),
        ("adam_beta2", json!(o.betas[1]), "optimizer.betas[1]"),
        ("adam_epsilon", json!(o.eps), "optimizer.eps"),
        (
            "weight_decay",
            json!(o.weight_decay),
            "optimizer.weight_decay (matrices only: create_optimizer)",
        ),
        (
            "warmup_steps",
            json!(o.warmup_steps),
            "optimizer.warmup_steps (the schedule: lr_factor)",
        ),
        ("max_grad_norm", json!(o.grad_clip), "optimizer.grad_clip"),
        (
            "use_vllm",
            json!(false),
            "no recipe key: generation with the policy itself",
        ),
    ]
}

fn loss_type(l: LossAggregation) -> &'static str {
    match l {
        LossAggregation::Grpo => "grpo",
        LossAggregation::Dapo => "dapo",
        LossAggregation::DrGrpo => "dr_grpo",
    }
}

fn scale_rewards(s: RewardScaling) -> &'static str {
    match s {
        RewardScaling::Group => "group",
        RewardScaling::Batch => "batch",
        RewardScaling::None => "none",
    }
}

/// What train.py needs beyond GRPOConfig.
fn settings(r: &GrpoRecipe, has_eval: bool) -> Value {
    let model = if r.model.init == "builtin" {
        resolve_model_dir("builtin")
            .canonicalize()
            .unwrap_or_else(|_| resolve_model_dir("builtin"))
    } else {
        PathBuf::from(&r.model.init)
    };
    json!({
        "model": model.display().to_string(),
        "eos_ids": eos_ids(&model),
        "dtype": r.model.dtype,
        "save_dtype": r.model.save_dtype,
        "train_router": r.model.train_router,
        "output_dir": r.output_dir.display().to_string(),
        "export_to": r.export_to.as_ref().map(|p| p.display().to_string()),
        "steps": r.train.steps,
        "prompts_per_step": r.generation.prompts_per_step,
        "group_size": r.generation.group_size,
        "micro_batch_size": r.train.micro_batch_size,
        "checkpoint_every": r.train.checkpoint_every,
        "keep_checkpoints": r.train.keep_checkpoints,
        "max_bad_steps": r.train.max_bad_steps,
        "threads": r.train.threads,
        "warmup_steps": r.optimizer.warmup_steps,
        "min_lr_ratio": r.optimizer.min_lr_ratio,
        "optimizer": {
            "lr": r.optimizer.lr,
            "betas": r.optimizer.betas,
            "eps": r.optimizer.eps,
            "weight_decay": r.optimizer.weight_decay,
        },
        "zero_std": match r.grpo.zero_std {
            ZeroStd::Keep => "keep",
            ZeroStd::Skip => "skip",
            ZeroStd::Resample => "resample",
        },
        "bias_update_rate": r.balance.as_ref().map_or(0.0, |b| b.bias_update_rate),
        "lora": r.lora.as_ref().map(|l| json!({
            "rank": l.rank, "alpha": l.alpha, "target_modules": l.target_modules,
        })),
        "train_data": "train.jsonl",
        "eval_data": has_eval.then_some("eval.jsonl"),
        "eval": r.eval.as_ref().map(|e| json!({
            "n": e.n, "every": e.every, "max_new_tokens": e.max_new_tokens,
        })),
    })
}

/// The end-of-sentence ids of a local model (generation_config.json, else config.json), as
/// thinkbench stops on them; empty for a hub id (train.py then asks the tokenizer).
fn eos_ids(model: &Path) -> Vec<u64> {
    for name in ["generation_config.json", "config.json"] {
        let Ok(text) = std::fs::read_to_string(model.join(name)) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match v.get("eos_token_id") {
            Some(Value::Number(n)) => return n.as_u64().into_iter().collect(),
            Some(Value::Array(a)) => return a.iter().filter_map(Value::as_u64).collect(),
            _ => {}
        }
    }
    Vec::new()
}

fn train_py(file: &str, r: &GrpoRecipe, has_eval: bool) -> String {
    let mut args = String::new();
    for (name, value, key) in grpo_args(r) {
        let _ = writeln!(args, "    {name}={},  # {key}", py_literal(&value));
    }
    let recipe = serde_json::to_string_pretty(r).expect("a recipe serialises");
    TRAIN_PY
        .replace("@RECIPE_NAME@", &r.name)
        .replace("@RECIPE_FILE@", file)
        .replace("@RECIPE_JSON@", &recipe.replace("'''", "\\'\\'\\'"))
        .replace("@SETTINGS@", &py_literal(&settings(r, has_eval)))
        .replace("@GRPO_ARGS@", args.trim_end())
        .replace("@REWARDS@", &py_literal(&rewards_config(r)))
}

fn readme(file: &str, r: &GrpoRecipe) -> String {
    let mut table = String::new();
    for (name, value, key) in grpo_args(r) {
        let _ = writeln!(table, "| `{key}` | `{name} = {}` |", py_literal(&value));
    }
    README_MD
        .replace("@RECIPE_NAME@", &r.name)
        .replace("@RECIPE_FILE@", file)
        .replace("@OUTPUT_DIR@", &r.output_dir.display().to_string())
        .replace("@MAPPING@", table.trim_end())
}

/// A JSON value as a Python literal (True/False/None; strings and numbers as JSON spells them,
/// which Python reads the same).
fn py_literal(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(_) | Value::String(_) => v.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(py_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), py_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(extra: &str) -> GrpoRecipe {
        let text = format!("{}\n{extra}", include_str!("../../recipes/tiny-grpo.toml"));
        match recipe::parse("r.toml", &text) {
            Ok(Recipe::Grpo(r)) => *r,
            other => panic!("{other:?}"),
        }
    }

    fn with(section_key: &str, value: &str) -> GrpoRecipe {
        // Replace one `key = value` line of the built-in recipe.
        let base = include_str!("../../recipes/tiny-grpo.toml");
        let key = section_key.rsplit('.').next().unwrap();
        let text: String = base
            .lines()
            .map(|l| {
                if l.trim_start().starts_with(&format!("{key} ")) {
                    format!("{key} = {value}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        match recipe::parse("r.toml", &text) {
            Ok(Recipe::Grpo(r)) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_builtin_recipe_exports() {
        let r = recipe("");
        check("r.toml", &r).unwrap();
        let args = grpo_args(&r);
        let get = |n: &str| args.iter().find(|a| a.0 == n).map(|a| a.1.clone()).unwrap();
        assert_eq!(get("epsilon_high"), json!(0.28));
        assert_eq!(get("loss_type"), json!("dapo"));
        assert_eq!(get("num_generations"), json!(8));
        assert_eq!(get("reward_weights"), json!([1.0, 0.1]));
        assert_eq!(get("adam_beta2"), json!(0.99));
    }

    #[test]
    fn resampling_is_refused_naming_the_file_and_key() {
        let e = check("r.toml", &with("grpo.zero_std", "\"resample\"")).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("r.toml: key grpo.zero_std: \"resample\""),
            "{s}"
        );
        assert!(s.contains("cannot be expressed in TRL"), "{s}");
        assert_eq!(s.lines().count(), 1);
    }

    #[test]
    fn routing_replay_is_refused() {
        let e = check("r.toml", &with("grpo.routing_replay", "\"rollout\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("r.toml: key grpo.routing_replay: \"rollout\" cannot be expressed"),
            "{e}"
        );
    }

    #[test]
    fn a_separate_rollout_precision_is_refused() {
        let mut r = with("grpo.beta", "0.04");
        r.generation.dtype = "bf16".into();
        let e = check("r.toml", &r).unwrap_err().to_string();
        assert!(e.starts_with("r.toml: key generation.dtype: "), "{e}");
    }

    #[test]
    fn skip_with_batch_scaling_is_refused() {
        let mut r = recipe("");
        r.grpo.scale_rewards = RewardScaling::Batch;
        let s = check("r.toml", &r).unwrap_err().to_string();
        assert!(s.starts_with("r.toml: key grpo.zero_std: "), "{s}");
        assert!(s.contains("batch standard deviation"), "{s}");
        r.grpo.zero_std = ZeroStd::Keep;
        check("r.toml", &r).unwrap();
    }

    #[test]
    fn balancing_with_several_iterations_is_refused() {
        let s = check("r.toml", &with("grpo.iterations", "2"))
            .unwrap_err()
            .to_string();
        assert!(
            s.starts_with("r.toml: key balance.bias_update_rate: "),
            "{s}"
        );
    }

    #[test]
    fn lora_with_a_trained_router_and_sft_recipes_are_refused() {
        let mut r = recipe("[lora]\nrank = 4\nalpha = 8\ntarget_modules = [\"q_proj\"]");
        check("r.toml", &r).unwrap();
        r.model.train_router = true;
        let s = check("r.toml", &r).unwrap_err().to_string();
        assert!(s.starts_with("r.toml: key model.train_router: "), "{s}");
        let d = tempfile::tempdir().unwrap();
        let e = export(
            Path::new("recipes/tiny-sft.toml"),
            &d.path().join("out"),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("recipes/tiny-sft.toml: key kind: "), "{e}");
        assert!(!d.path().join("out").exists(), "nothing written");
    }

    #[test]
    fn the_exported_script_is_filled_in_and_parses() {
        let mut r = recipe("");
        r.train.steps = 2;
        let files = render("r.toml", &r).unwrap();
        let text = |name: &str| {
            files
                .iter()
                .find(|f| f.path == Path::new(name))
                .map(|f| f.text.clone())
                .unwrap()
        };
        let train = text("train.py");
        for t in [&train, &text("README.md")] {
            assert!(
                !t.contains("@RECIPE") && !t.contains("@SETTINGS@") && !t.contains("@GRPO_ARGS@")
            );
            assert!(!t.contains("@REWARDS@") && !t.contains("@MAPPING@"));
        }
        assert!(
            train.contains("    num_generations=8,  # generation.group_size"),
            "{train}"
        );
        assert_eq!(text("train.jsonl").lines().count(), 2 * 8);
        // It is valid Python (compiled only; running it needs TRL).
        let d = tempfile::tempdir().unwrap();
        for f in &files {
            if f.path.extension().is_some_and(|e| e == "py") {
                let p = d.path().join(&f.path);
                std::fs::write(&p, &f.text).unwrap();
                let out = std::process::Command::new("python3")
                    .args(["-m", "py_compile"])
                    .arg(&p)
                    .output()
                    .expect("python3 (its standard library only) checks the exported files");
                assert!(
                    out.status.success(),
                    "{}: {}",
                    f.path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    #[test]
    fn python_literals() {
        let v = json!({"a": [true, null, 1.5, "x'y"], "b": false});
        assert_eq!(
            py_literal(&v),
            r#"{"a": [True, None, 1.5, "x'y"], "b": False}"#
        );
    }

    #[test]
    fn the_problems_follow_thinkbench_draws() {
        let mut r = recipe("");
        r.train.steps = 3;
        r.eval.as_mut().unwrap().n = 4;
        let (train, eval) = problems("r.toml", &r).unwrap();
        assert_eq!(train.len(), 3 * r.generation.prompts_per_step);
        let src = Source::from_recipe(&r.data, r.seed).unwrap();
        assert_eq!(&train[8..16], src.draw(1, 0, 8).as_slice());
        assert!(train.iter().all(|p| (4..=7).contains(&p.earlier.len())));
        let eval = eval.unwrap();
        assert_eq!(eval.len(), 4);
        // Asked as the 7th question: six earlier turns.
        assert!(
            eval.iter().all(|p| p.earlier.len() == 6),
            "{:?}",
            eval[0].earlier.len()
        );
    }
}
