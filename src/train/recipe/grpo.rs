//! The GRPO recipe: Group Relative Policy Optimisation on problems with checkable answers, its
//! model, problems, rewards (read through the reward registry), rollouts, objective and LoRA.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::check::{Check, RecipeError};
use super::shared::{
    check_dtypes, default_dtype, BalanceSection, DataSection, EvalSection, OptimizerSection,
    MAX_TURNS,
};
use crate::train::rewards::{OverlongReward, RewardsSection};
use crate::train::task;

/// Group Relative Policy Optimisation on problems with checkable answers (DeepSeekMath / R1), with
/// DAPO's and Dr. GRPO's variants. Every key is documented in `recipes/tiny-grpo.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoRecipe {
    pub kind: String,
    pub name: String,
    pub seed: u64,
    /// Where checkpoints, metrics and rollouts go (relative paths: to the working dir).
    pub output_dir: PathBuf,
    /// Where the final model is copied when the run completes.
    #[serde(default)]
    pub export_to: Option<PathBuf>,
    pub model: GrpoModelSection,
    pub data: GrpoDataSection,
    pub rewards: RewardsSection,
    pub generation: GenerationSection,
    pub optimizer: OptimizerSection,
    #[serde(default)]
    pub grpo: GrpoSection,
    pub train: GrpoTrainSection,
    /// Auxiliary-loss-free balancing of MoE routers (absent: off).
    #[serde(default)]
    pub balance: Option<BalanceSection>,
    #[serde(default)]
    pub eval: Option<EvalSection>,
    /// Train low-rank adapters instead of every weight (absent: full fine-tune).
    #[serde(default)]
    pub lora: Option<LoraSection>,
}

/// The model GRPO starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoModelSection {
    /// `"builtin"` (models/thinkbench-tiny) or a model directory in the hub layout.
    pub init: String,
    /// Training dtype (f32: the optimiser keeps f32 moments).
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Saved weights' dtype: f32 or bf16.
    #[serde(default = "default_dtype")]
    pub save_dtype: String,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Train the MoE routers' weights too (default: frozen; the balancing bias still moves).
    #[serde(default)]
    pub train_router: bool,
}

fn default_device() -> String {
    "cpu".into()
}

/// The problems: a built-in task's levels, or a JSONL file of `{"prompt": ..., "answer": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoDataSection {
    /// A built-in task (its training split; `thinkbench eval` measures its held-out split).
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub levels: Option<Vec<u32>>,
    #[serde(default)]
    pub level_weights: Option<Vec<f64>>,
    /// Each question asked after this many earlier questions with their answers, `[fewest,
    /// most]` (drawn evenly; training-split problems at `levels`). Absent: asked alone.
    #[serde(default)]
    pub earlier_turns: Option<Vec<u32>>,
    /// A JSONL file, one problem per line with string fields `prompt` and `answer`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Held-out problems for `[eval]` with a JSONL dataset (same format).
    #[serde(default)]
    pub eval_path: Option<PathBuf>,
    /// Text appended to every JSONL prompt (e.g. R1's "Please reason step by step, and put your
    /// final answer within \boxed{}.").
    #[serde(default)]
    pub instruction: Option<String>,
}

/// Rollouts: G completions of each prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationSection {
    /// G: completions per prompt.
    pub group_size: usize,
    /// Prompts per step (the step trains on `group_size * prompts_per_step` completions).
    pub prompts_per_step: usize,
    pub max_new_tokens: usize,
    pub temperature: f32,
    #[serde(default = "one_f32")]
    pub top_p: f32,
    /// Threads generating rollouts, each with its own copy of the model (synced after every
    /// update); a step's groups are shared out among them. On a CPU with tiny models, set it to
    /// the number of cores and train.threads to 1. With train.threads = 1 the results do not
    /// depend on it.
    #[serde(default = "one_usize")]
    pub workers: usize,
    /// The precision rollouts are sampled in: "f32" (the update's own), or "bf16"/"f16", as
    /// inference engines serving RL rollouts run while the update stays in f32. The rollout
    /// copy is refreshed from the policy after every update; its routing can differ from the
    /// update's re-scoring (`router/mismatch`), which is what routing replay is for.
    #[serde(default = "f32_name", skip_serializing_if = "is_f32_name")]
    pub dtype: String,
}

fn f32_name() -> String {
    "f32".into()
}

fn is_f32_name(s: &str) -> bool {
    s == "f32"
}

fn one_usize() -> usize {
    1
}

fn one_f32() -> f32 {
    1.0
}

/// How per-token losses become the batch loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAggregation {
    /// Each sequence's token mean, then the mean over sequences (DeepSeekMath's GRPO).
    Grpo,
    /// The sum over every token of the batch over the number of tokens (DAPO; TRL's default).
    Dapo,
    /// The sum over every token over (sequences × max_new_tokens), a constant (Dr. GRPO).
    DrGrpo,
}

/// What the reward differences are divided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardScaling {
    /// The group's standard deviation (Bessel) + 1e-4.
    Group,
    /// The whole batch's standard deviation + 1e-4.
    Batch,
    /// Nothing (Dr. GRPO).
    None,
}

/// Groups whose completions all got the same reward (their advantages are all zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZeroStd {
    /// Train on them anyway (they add nothing but the KL term and tokens to the normaliser).
    Keep,
    /// Leave them out of the loss.
    Skip,
    /// Leave them out and draw fresh prompts in their place (DAPO's dynamic sampling).
    Resample,
}

/// Which experts an MoE policy's update passes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingReplay {
    /// Each pass's routers choose afresh.
    Off,
    /// The experts each token went through when its rollout was sampled (R3, arXiv 2510.11370);
    /// the mixing weights still come from the current router, so the router keeps learning.
    Rollout,
}

/// The objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoSection {
    /// β: weight of the k3 KL estimate against the frozen reference (0: no reference model).
    #[serde(default)]
    pub beta: f64,
    /// ε_low: the ratio is clipped below at 1 - ε_low.
    #[serde(default = "default_epsilon")]
    pub epsilon_low: f64,
    /// ε_high: the ratio is clipped above at 1 + ε_high (default: ε_low; DAPO: 0.28).
    #[serde(default)]
    pub epsilon_high: Option<f64>,
    #[serde(default = "default_loss")]
    pub loss: LossAggregation,
    #[serde(default = "default_scaling")]
    pub scale_rewards: RewardScaling,
    /// μ: optimiser updates per batch of rollouts (the ratio is against the rollout policy).
    #[serde(default = "default_iterations")]
    pub iterations: usize,
    #[serde(default = "default_zero_std")]
    pub zero_std: ZeroStd,
    /// With `zero_std = "resample"`: rounds of fresh prompts drawn per step at most.
    #[serde(default = "default_resample_rounds")]
    pub max_resample_rounds: usize,
    /// Leave truncated completions (no end-of-sentence) out of the loss.
    #[serde(default)]
    pub mask_truncated: bool,
    /// MoE policies: replay the rollout's experts in the update and reference passes.
    #[serde(default = "default_replay")]
    pub routing_replay: RoutingReplay,
}

fn default_epsilon() -> f64 {
    0.2
}
fn default_loss() -> LossAggregation {
    LossAggregation::Dapo
}
fn default_scaling() -> RewardScaling {
    RewardScaling::Group
}
fn default_iterations() -> usize {
    1
}
fn default_zero_std() -> ZeroStd {
    ZeroStd::Keep
}
fn default_resample_rounds() -> usize {
    4
}
fn default_replay() -> RoutingReplay {
    RoutingReplay::Off
}

impl Default for GrpoSection {
    /// TRL's defaults.
    fn default() -> Self {
        Self {
            beta: 0.0,
            epsilon_low: default_epsilon(),
            epsilon_high: None,
            loss: default_loss(),
            scale_rewards: default_scaling(),
            iterations: default_iterations(),
            zero_std: default_zero_std(),
            max_resample_rounds: default_resample_rounds(),
            mask_truncated: false,
            routing_replay: default_replay(),
        }
    }
}

impl GrpoSection {
    pub fn epsilon_high(&self) -> f64 {
        self.epsilon_high.unwrap_or(self.epsilon_low)
    }
}

/// The loop's length and rhythm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoTrainSection {
    pub steps: u64,
    /// Sequences per forward pass when log-probabilities are recomputed with gradients.
    pub micro_batch_size: usize,
    /// libtorch CPU threads (the recipe fixes them: results depend on the reduction order).
    #[serde(default)]
    pub threads: Option<i32>,
    /// A compact line every this many steps.
    #[serde(default = "one_u64")]
    pub log_every: u64,
    pub checkpoint_every: u64,
    /// Checkpoints kept (oldest removed first).
    #[serde(default = "two")]
    pub keep_checkpoints: usize,
    /// Stop after this many steps in a row whose loss or gradient was NaN or infinite.
    #[serde(default = "five")]
    pub max_bad_steps: u64,
}

fn one_u64() -> u64 {
    1
}
fn two() -> usize {
    2
}
fn five() -> u64 {
    5
}

/// Low-rank adapters: `W x + (alpha / rank) · B A x` on the named modules; A and B are trained,
/// W is not. The reference policy is the base with the adapters off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    pub rank: usize,
    pub alpha: f64,
    /// Module names (the last part of the weight's name before `.weight`), e.g. q_proj, v_proj.
    pub target_modules: Vec<String>,
}

impl GrpoRecipe {
    pub fn validate(&self, file: &str) -> Result<(), RecipeError> {
        let c = Check::new(file);
        c.that(!self.name.trim().is_empty(), "name", "must not be empty")?;
        c.that(
            self.model.init != "scratch" && !self.model.init.trim().is_empty(),
            "model.init",
            "GRPO starts from a trained model: \"builtin\" or a model directory",
        )?;
        check_dtypes(&c, &self.model.dtype, &self.model.save_dtype)?;
        let device_ok = self.model.device == "cpu"
            || self.model.device == "cuda"
            || self
                .model
                .device
                .strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<usize>().is_ok());
        c.that(
            device_ok,
            "model.device",
            format!("\"{}\": expected cpu, cuda or cuda:N", self.model.device),
        )?;
        self.validate_data(file)?;
        let known = RewardsSection::known_names().join(", ");
        c.that(
            !self.rewards.is_empty(),
            "rewards",
            format!("name at least one reward ({known})"),
        )?;
        for reward in self.rewards.iter() {
            c.that(
                reward.weight().is_finite(),
                &format!("rewards.{}.weight", reward.name()),
                "must be a finite number",
            )?;
        }
        let g = &self.generation;
        c.that(
            g.group_size >= 2,
            "generation.group_size",
            "must be at least 2 (advantages compare completions of the same prompt)",
        )?;
        c.that(
            g.prompts_per_step >= 1,
            "generation.prompts_per_step",
            "must be positive",
        )?;
        c.that(
            g.max_new_tokens >= 1,
            "generation.max_new_tokens",
            "must be positive",
        )?;
        c.that(
            g.temperature > 0.0 && g.temperature.is_finite(),
            "generation.temperature",
            "must be positive (GRPO samples; the log-probabilities are divided by it)",
        )?;
        c.that(
            g.top_p > 0.0 && g.top_p <= 1.0,
            "generation.top_p",
            "must be in (0, 1]",
        )?;
        c.that(
            (1..=64).contains(&g.workers),
            "generation.workers",
            "must be between 1 and 64",
        )?;
        c.that(
            matches!(g.dtype.as_str(), "f32" | "bf16" | "f16"),
            "generation.dtype",
            format!(
                "\"{}\" is not a rollout precision (f32, bf16 or f16)",
                g.dtype
            ),
        )?;
        // After [generation]: a reward's range may depend on it (overlong's default max_length).
        for reward in self.rewards.iter() {
            reward.validate(&c, self)?;
        }
        self.optimizer.validate(file)?;
        let p = &self.grpo;
        c.that(
            p.beta >= 0.0 && p.beta.is_finite(),
            "grpo.beta",
            "must be >= 0",
        )?;
        c.that(
            (0.0..1.0).contains(&p.epsilon_low),
            "grpo.epsilon_low",
            "must be in [0, 1)",
        )?;
        if let Some(e) = p.epsilon_high {
            c.that(
                e >= 0.0 && e.is_finite(),
                "grpo.epsilon_high",
                "must be >= 0",
            )?;
        }
        c.that(p.iterations >= 1, "grpo.iterations", "must be at least 1")?;
        c.that(
            p.zero_std != ZeroStd::Resample || p.max_resample_rounds >= 1,
            "grpo.max_resample_rounds",
            "must be at least 1 with zero_std = \"resample\"",
        )?;
        let t = &self.train;
        c.that(t.steps > 0, "train.steps", "must be positive")?;
        c.that(
            t.micro_batch_size > 0,
            "train.micro_batch_size",
            "must be positive",
        )?;
        c.that(t.log_every > 0, "train.log_every", "must be positive")?;
        c.that(
            t.checkpoint_every > 0,
            "train.checkpoint_every",
            "must be positive",
        )?;
        c.that(
            t.keep_checkpoints > 0,
            "train.keep_checkpoints",
            "must be at least 1",
        )?;
        c.that(
            t.max_bad_steps > 0,
            "train.max_bad_steps",
            "must be at least 1",
        )?;
        if let Some(n) = t.threads {
            c.that(n >= 1, "train.threads", "must be at least 1")?;
        }
        if let Some(b) = &self.balance {
            b.validate(file)?;
        }
        if let Some(e) = &self.eval {
            c.that(e.n > 0, "eval.n", "must be positive")?;
            c.that(
                e.max_new_tokens > 0,
                "eval.max_new_tokens",
                "must be positive",
            )?;
            if let Some(every) = e.every {
                c.that(every > 0, "eval.every", "must be positive")?;
            }
            if let Some(levels) = &e.levels {
                let Some(name) = &self.data.task else {
                    return Err(RecipeError::new(
                        file,
                        Some("eval.levels"),
                        "levels need a built-in task (data.task)",
                    ));
                };
                let range = task::by_name(name)
                    .map_err(|m| RecipeError::new(file, Some("data.task"), m))?
                    .levels();
                c.that(
                    !levels.is_empty(),
                    "eval.levels",
                    "must list at least one level",
                )?;
                for l in levels {
                    c.that(
                        range.contains(l),
                        "eval.levels",
                        format!(
                            "level {l} is outside the task's levels {}-{}",
                            range.start(),
                            range.end()
                        ),
                    )?;
                }
            }
            if let Some(turn) = e.turn {
                c.that(
                    self.data.task.is_some(),
                    "eval.turn",
                    "conversations need a built-in task (data.task)",
                )?;
                c.that(
                    (1..=MAX_TURNS as usize + 1).contains(&turn),
                    "eval.turn",
                    format!("must be 1-{} (1: asked alone)", MAX_TURNS + 1),
                )?;
            }
            if self.data.path.is_some() {
                c.that(
                    self.data.eval_path.is_some(),
                    "data.eval_path",
                    "missing ([eval] with a JSONL dataset needs held-out problems)",
                )?;
            }
        }
        if let Some(l) = &self.lora {
            c.that(l.rank >= 1, "lora.rank", "must be at least 1")?;
            c.that(
                l.alpha > 0.0 && l.alpha.is_finite(),
                "lora.alpha",
                "must be positive",
            )?;
            c.that(
                !l.target_modules.is_empty(),
                "lora.target_modules",
                "must name at least one module",
            )?;
        }
        Ok(())
    }

    fn validate_data(&self, file: &str) -> Result<(), RecipeError> {
        let c = Check::new(file);
        let d = &self.data;
        match (&d.task, &d.path) {
            (Some(_), Some(_)) => Err(RecipeError::new(
                file,
                Some("data.path"),
                "give either data.task or data.path, not both",
            )),
            (None, None) => Err(RecipeError::new(
                file,
                Some("data"),
                "missing data.task (a built-in task) or data.path (a JSONL file)",
            )),
            (Some(name), None) => {
                let levels = d.levels.clone().ok_or_else(|| {
                    RecipeError::new(
                        file,
                        Some("data.levels"),
                        "missing (data.task needs levels)",
                    )
                })?;
                DataSection {
                    task: name.clone(),
                    levels,
                    level_weights: d.level_weights.clone(),
                    max_earlier_turns: 0,
                    earlier_turns_from_step: 0,
                }
                .validate(file)?;
                if let Some(t) = &d.earlier_turns {
                    let ok = matches!(t[..], [a, b] if a <= b && b <= MAX_TURNS);
                    c.that(
                        ok,
                        "data.earlier_turns",
                        format!(
                            "must be [fewest, most] with fewest <= most <= {MAX_TURNS}, e.g. [4, 7]"
                        ),
                    )?;
                }
                c.that(
                    d.eval_path.is_none(),
                    "data.eval_path",
                    "only with data.path (a task evaluates on its held-out split)",
                )
            }
            (None, Some(_)) => {
                c.that(d.levels.is_none(), "data.levels", "only with data.task")?;
                c.that(
                    d.earlier_turns.is_none(),
                    "data.earlier_turns",
                    "only with data.task (a JSONL problem is asked alone)",
                )?;
                c.that(
                    d.level_weights.is_none(),
                    "data.level_weights",
                    "only with data.task",
                )
            }
        }
    }

    /// The length where the overlong penalty reaches -1, and the ramp's length.
    pub fn overlong_max(&self) -> Option<(usize, usize)> {
        self.rewards
            .get::<OverlongReward>()
            .map(|o| o.ramp(self.generation.max_new_tokens))
    }
}

/// `text` read as a GRPO recipe from `recipes/g.toml`, or the one-line error (tests).
#[cfg(test)]
pub(crate) fn parse_grpo(text: &str) -> Result<GrpoRecipe, String> {
    match super::parse("recipes/g.toml", text).map_err(|e| e.to_string())? {
        super::Recipe::Grpo(r) => Ok(*r),
        super::Recipe::Sft(_) => Err("parsed as SFT".into()),
    }
}

/// A small valid GRPO recipe for tests (the model path is filled in by the test).
#[cfg(test)]
pub(crate) const TEST_GRPO_RECIPE: &str = r#"
kind = "grpo"
name = "g"
seed = 3
output_dir = "runs/g"

[model]
init = "builtin"

[data]
task = "arithmetic"
levels = [1, 2]

[rewards.accuracy]
weight = 1.0
[rewards.format]
weight = 0.5
[rewards.overlong]
weight = 1.0
buffer = 8

[generation]
group_size = 4
prompts_per_step = 2
max_new_tokens = 48
temperature = 1.0

[optimizer]
lr = 1e-4
betas = [0.9, 0.99]
eps = 1e-8
weight_decay = 0.0
warmup_steps = 0
min_lr_ratio = 1.0
grad_clip = 1.0

[grpo]
beta = 0.04
epsilon_low = 0.2
epsilon_high = 0.28
loss = "dapo"
scale_rewards = "group"
iterations = 2

[train]
steps = 3
micro_batch_size = 4
threads = 1
checkpoint_every = 1
"#;

#[cfg(test)]
mod tests {
    use super::parse_grpo as grpo;
    use super::*;
    use crate::train::recipe::Compare;
    use crate::train::rewards::AccuracyReward;

    #[test]
    fn grpo_recipe_parses_with_trl_defaults() {
        let r = grpo(TEST_GRPO_RECIPE).unwrap();
        assert_eq!(r.generation.group_size, 4);
        assert_eq!(r.generation.top_p, 1.0, "default top_p");
        assert_eq!(r.grpo.loss, LossAggregation::Dapo);
        assert_eq!(r.grpo.epsilon_high(), 0.28);
        assert_eq!(r.grpo.zero_std, ZeroStd::Keep);
        assert_eq!(r.overlong_max(), Some((48, 8)));
        assert_eq!(
            r.rewards.get::<AccuracyReward>().unwrap().compare,
            Compare::Numeric
        );
        assert_eq!(r.model.device, "cpu");
        assert!(!r.model.train_router);
        // With nothing said, [grpo] is TRL's GRPOConfig.
        let bare = TEST_GRPO_RECIPE.split("[grpo]").next().unwrap().to_string()
            + "[train]\nsteps = 1\nmicro_batch_size = 2\ncheckpoint_every = 1\n";
        let r = grpo(&bare).unwrap();
        assert_eq!(r.grpo, GrpoSection::default());
        assert_eq!(r.grpo.beta, 0.0);
        assert_eq!(r.grpo.epsilon_high(), 0.2);
        assert_eq!(r.grpo.scale_rewards, RewardScaling::Group);
        assert_eq!(r.train.max_bad_steps, 5);
    }

    #[test]
    fn bad_grpo_recipes_name_the_key() {
        let e = |from: &str, to: &str| {
            let text = TEST_GRPO_RECIPE.replace(from, to);
            assert_ne!(text, TEST_GRPO_RECIPE, "{from}");
            grpo(&text).unwrap_err()
        };
        assert_eq!(
            e("loss = \"dapo\"", "loss = \"ppo\""),
            "recipes/g.toml: key grpo.loss: unknown value \"ppo\" (expected one of grpo, dapo, dr_grpo)"
        );
        assert_eq!(
            e("scale_rewards = \"group\"", "scale_rewards = 3"),
            "recipes/g.toml: key grpo.scale_rewards: expected a string"
        );
        assert_eq!(
            e("group_size = 4\n", ""),
            "recipes/g.toml: key generation.group_size: missing"
        );
        assert_eq!(
            e("group_size = 4", "group_size = 1"),
            "recipes/g.toml: key generation.group_size: must be at least 2 (advantages compare completions of the same prompt)"
        );
        assert_eq!(
            e("[rewards.format]", "[rewards.length]"),
            "recipes/g.toml: key rewards.length: unknown key (expected one of accuracy, format, overlong)"
        );
        assert_eq!(
            e(
                "task = \"arithmetic\"",
                "task = \"arithmetic\"\npath = \"p.jsonl\""
            ),
            "recipes/g.toml: key data.path: give either data.task or data.path, not both"
        );
        assert_eq!(
            e("levels = [1, 2]\n", ""),
            "recipes/g.toml: key data.levels: missing (data.task needs levels)"
        );
        assert_eq!(
            e("levels = [1, 2]\n", "levels = [1, 2]\nearlier_turns = [5, 3]\n"),
            "recipes/g.toml: key data.earlier_turns: must be [fewest, most] with fewest <= most <= 16, e.g. [4, 7]"
        );
        assert_eq!(
            e("levels = [1, 2]\n", "levels = [1, 2]\nearlier_turns = [3]\n"),
            "recipes/g.toml: key data.earlier_turns: must be [fewest, most] with fewest <= most <= 16, e.g. [4, 7]"
        );
        let late = TEST_GRPO_RECIPE.replace(
            "levels = [1, 2]\n",
            "levels = [1, 2]\nearlier_turns = [2, 4]\n",
        );
        assert_ne!(late, TEST_GRPO_RECIPE);
        assert_eq!(grpo(&late).unwrap().data.earlier_turns, Some(vec![2, 4]));
        let eval_at = |turn: &str| {
            grpo(&format!(
                "{TEST_GRPO_RECIPE}\n[eval]\nn = 4\nmax_new_tokens = 8\nturn = {turn}\n"
            ))
        };
        assert_eq!(eval_at("7").unwrap().eval.unwrap().turn, Some(7));
        assert_eq!(
            eval_at("0").unwrap_err(),
            "recipes/g.toml: key eval.turn: must be 1-17 (1: asked alone)"
        );
        assert_eq!(
            e("temperature = 1.0", "temperature = 0.0"),
            "recipes/g.toml: key generation.temperature: must be positive (GRPO samples; the log-probabilities are divided by it)"
        );
        assert_eq!(
            e("buffer = 8", "buffer = 80"),
            "recipes/g.toml: key rewards.overlong.buffer: must be between 1 and max_length (48)"
        );
        assert_eq!(
            e("beta = 0.04", "beta = -1.0"),
            "recipes/g.toml: key grpo.beta: must be >= 0"
        );
        assert_eq!(
            e("init = \"builtin\"", "init = \"scratch\""),
            "recipes/g.toml: key model.init: GRPO starts from a trained model: \"builtin\" or a model directory"
        );
        assert_eq!(
            e("iterations = 2", "iterations = 0"),
            "recipes/g.toml: key grpo.iterations: must be at least 1"
        );
        assert_eq!(
            e(
                "[train]",
                "[lora]\nrank = 0\nalpha = 16.0\ntarget_modules = [\"q_proj\"]\n[train]"
            ),
            "recipes/g.toml: key lora.rank: must be at least 1"
        );
        let no_rewards = TEST_GRPO_RECIPE
            .replace("[rewards.accuracy]\nweight = 1.0\n", "")
            .replace("[rewards.format]\nweight = 0.5\n", "")
            .replace(
                "[rewards.overlong]\nweight = 1.0\nbuffer = 8\n",
                "[rewards]\n",
            );
        assert_eq!(
            grpo(&no_rewards).unwrap_err(),
            "recipes/g.toml: key rewards: name at least one reward (accuracy, format, overlong)"
        );
    }
}
