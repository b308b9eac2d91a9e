//! The sections both recipe kinds use: `[optimizer]`, `[balance]` and `[eval]` mean the same in an
//! SFT and a GRPO recipe, and a built-in task's levels are checked the same way.

use serde::{Deserialize, Serialize};

use super::check::{Check, RecipeError};
use crate::train::task;

pub(super) fn default_dtype() -> String {
    "f32".into()
}

/// The most earlier turns a training conversation may have: a conversation must fit the
/// model's context.
pub const MAX_TURNS: u32 = 16;

/// Where problems come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// A built-in task (`thinkbench eval --task` takes the same names).
    pub task: String,
    /// Difficulty levels drawn from.
    pub levels: Vec<u32>,
    /// Relative frequency of each level (default: equal).
    #[serde(default)]
    pub level_weights: Option<Vec<f64>>,
    /// Each sequence is a conversation: 0 to this many earlier question/answer turns (other
    /// training problems, their replies reduced to the answer as R1's template renders them)
    /// before the trained question (default 0: single-turn prompts only). Left out of a saved
    /// recipe when 0, so run folders of older recipes still resume.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_earlier_turns: u32,
    /// The first step whose sequences get earlier turns (default 0). Before it every sequence is
    /// a single question: a model trained from scratch on conversations from the first step
    /// learned the arithmetic far worse (17% held-out against 71%), the earlier questions' digits
    /// distracting it before it could copy digits at all; one that learns the task first then
    /// learns quickly to read only the newest question.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub earlier_turns_from_step: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero64(n: &u64) -> bool {
    *n == 0
}

/// AdamW with warm-up and cosine decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSection {
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    pub warmup_steps: u64,
    /// The cosine decays to `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    /// Global gradient-norm clip (0: off).
    pub grad_clip: f64,
}

/// DeepSeek-V3's auxiliary-loss-free load balancing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceSection {
    /// γ: each step, every routed expert's selection bias moves by ±γ toward even load (0: off).
    pub bias_update_rate: f64,
}

/// Held-out evaluation at the end of the run (and every `every` steps when set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    pub n: usize,
    #[serde(default)]
    pub every: Option<u64>,
    pub max_new_tokens: usize,
    /// The task levels evaluated (default: every level of the task). GRPO only.
    #[serde(default)]
    pub levels: Option<Vec<u32>>,
    /// Ask the held-out problems as the `turn`-th question of a conversation (the same
    /// conversations as `thinkbench eval --turns`; default 1: alone). GRPO only.
    #[serde(default)]
    pub turn: Option<usize>,
}

impl DataSection {
    pub fn validate(&self, file: &str) -> Result<(), RecipeError> {
        let c = Check::new(file);
        let t =
            task::by_name(&self.task).map_err(|m| RecipeError::new(file, Some("data.task"), m))?;
        let range = t.levels();
        c.that(
            !self.levels.is_empty(),
            "data.levels",
            "must list at least one level",
        )?;
        for &l in &self.levels {
            c.that(
                range.contains(&l),
                "data.levels",
                format!(
                    "level {l} is outside {}'s levels {}-{}",
                    t.name(),
                    range.start(),
                    range.end()
                ),
            )?;
        }
        c.that(
            self.max_earlier_turns <= MAX_TURNS,
            "data.max_earlier_turns",
            format!("must be at most {MAX_TURNS} (a conversation must fit the model's context)"),
        )?;
        if let Some(w) = &self.level_weights {
            c.that(
                w.len() == self.levels.len(),
                "data.level_weights",
                format!("has {} entries for {} levels", w.len(), self.levels.len()),
            )?;
            c.that(
                w.iter().all(|&x| x.is_finite() && x >= 0.0) && w.iter().sum::<f64>() > 0.0,
                "data.level_weights",
                "must be non-negative and not all zero",
            )?;
        }
        Ok(())
    }
}

impl BalanceSection {
    pub fn validate(&self, file: &str) -> Result<(), RecipeError> {
        Check::new(file).that(
            self.bias_update_rate >= 0.0,
            "balance.bias_update_rate",
            "must be >= 0",
        )
    }
}

/// `model.dtype` (training: f32 only, the optimiser keeps f32 moments) and `model.save_dtype`.
pub(super) fn check_dtypes(c: &Check, dtype: &str, save_dtype: &str) -> Result<(), RecipeError> {
    c.that(
        dtype == "f32",
        "model.dtype",
        format!("\"{dtype}\" is not supported for training (f32)"),
    )?;
    c.that(
        matches!(save_dtype, "f32" | "bf16"),
        "model.save_dtype",
        format!("\"{save_dtype}\": expected \"f32\" or \"bf16\""),
    )
}

impl OptimizerSection {
    pub fn validate(&self, file: &str) -> Result<(), RecipeError> {
        let c = Check::new(file);
        c.that(
            self.lr > 0.0 && self.lr.is_finite(),
            "optimizer.lr",
            "must be positive",
        )?;
        for (i, b) in self.betas.iter().enumerate() {
            c.that(
                (0.0..1.0).contains(b),
                "optimizer.betas",
                format!("beta{} = {b} must be in [0, 1)", i + 1),
            )?;
        }
        c.that(self.eps > 0.0, "optimizer.eps", "must be positive")?;
        c.that(
            self.weight_decay >= 0.0,
            "optimizer.weight_decay",
            "must be >= 0",
        )?;
        c.that(
            (0.0..=1.0).contains(&self.min_lr_ratio),
            "optimizer.min_lr_ratio",
            "must be in [0, 1]",
        )?;
        c.that(self.grad_clip >= 0.0, "optimizer.grad_clip", "must be >= 0")
    }
}
