//! The SFT recipe: supervised distillation of a task's teacher traces, into a model trained from
//! scratch (its architecture and tokenizer given here) or an existing one.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::check::{Check, RecipeError};
use super::shared::{
    check_dtypes, default_dtype, BalanceSection, DataSection, EvalSection, OptimizerSection,
};

/// Supervised distillation of a task's teacher traces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftRecipe {
    pub kind: String,
    pub name: String,
    pub seed: u64,
    /// Where checkpoints, metrics and the final model go (relative paths: to the working dir).
    pub output_dir: PathBuf,
    /// Where the final model is copied when the run completes (e.g. models/thinkbench-tiny).
    #[serde(default)]
    pub export_to: Option<PathBuf>,
    pub model: ModelSection,
    #[serde(default)]
    pub tokenizer: Option<TokenizerSection>,
    pub data: DataSection,
    pub train: TrainSection,
    pub optimizer: OptimizerSection,
    pub balance: BalanceSection,
    #[serde(default)]
    pub eval: Option<EvalSection>,
}

/// What to train: a new model from a config (`init = "scratch"`) or an existing model directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `"scratch"`, or a model directory in the hub layout.
    pub init: String,
    /// Training dtype: only f32 (the optimiser keeps f32 moments for f32 weights).
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Saved weights' dtype: f32 or bf16.
    #[serde(default = "default_dtype")]
    pub save_dtype: String,
    /// The architecture of a model trained from scratch (deepseek_v3 keys).
    #[serde(default)]
    pub architecture: Option<Architecture>,
}

/// A `deepseek_v3` configuration: MLA with a compressed query, DeepSeekMoE with shared and routed
/// experts and sigmoid routing. Names are the config.json keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Width of the dense MLP (layers before `first_k_dense_replace`).
    pub intermediate_size: usize,
    pub moe_intermediate_size: usize,
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
    pub num_experts_per_tok: usize,
    pub n_group: usize,
    pub topk_group: usize,
    pub first_k_dense_replace: usize,
    pub routed_scaling_factor: f64,
    pub q_lora_rank: usize,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    /// Standard deviation of the random initial weights.
    pub init_std: f64,
}

/// The tokenizer trained for a from-scratch model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSection {
    /// Target size of the BPE vocabulary (bytes and merges; the added tokens come on top).
    pub vocab_size: usize,
    /// How many task problems (prompt and teacher completion) the BPE is trained on.
    pub corpus_examples: usize,
}

/// The loop's length and rhythm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub steps: u64,
    /// Sequences per optimiser step.
    pub batch_size: usize,
    /// Sequences per forward pass (the batch is sorted by length and cut into these, so short
    /// sequences are not padded to the longest).
    pub micro_batch_size: usize,
    /// libtorch CPU threads (the recipe fixes them: results depend on the reduction order).
    #[serde(default)]
    pub threads: Option<i32>,
    /// A compact line every this many steps.
    pub log_every: u64,
    pub checkpoint_every: u64,
    /// Checkpoints kept (oldest removed first).
    pub keep_checkpoints: usize,
}

impl TrainSection {
    pub fn validate(&self, file: &str) -> Result<(), RecipeError> {
        let c = Check::new(file);
        c.that(self.steps > 0, "train.steps", "must be positive")?;
        c.that(self.batch_size > 0, "train.batch_size", "must be positive")?;
        c.that(
            self.micro_batch_size > 0 && self.micro_batch_size <= self.batch_size,
            "train.micro_batch_size",
            "must be between 1 and train.batch_size",
        )?;
        c.that(self.log_every > 0, "train.log_every", "must be positive")?;
        c.that(
            self.checkpoint_every > 0,
            "train.checkpoint_every",
            "must be positive",
        )?;
        c.that(
            self.keep_checkpoints > 0,
            "train.keep_checkpoints",
            "must be at least 1",
        )?;
        if let Some(t) = self.threads {
            c.that(t >= 1, "train.threads", "must be at least 1")?;
        }
        Ok(())
    }
}

impl SftRecipe {
    pub fn validate(&self, file: &str) -> Result<(), RecipeError> {
        let c = Check::new(file);
        c.that(!self.name.trim().is_empty(), "name", "must not be empty")?;
        check_dtypes(&c, &self.model.dtype, &self.model.save_dtype)?;
        if self.model.init == "scratch" {
            c.that(
                self.model.architecture.is_some(),
                "model.architecture",
                "missing (a model trained from scratch needs its architecture)",
            )?;
            c.that(
                self.tokenizer.is_some(),
                "tokenizer",
                "missing (a model trained from scratch needs a tokenizer section)",
            )?;
        }
        if let Some(a) = &self.model.architecture {
            a.validate(file)?;
        }
        if let Some(t) = &self.tokenizer {
            c.that(
                t.vocab_size >= 260,
                "tokenizer.vocab_size",
                "must be at least 260 (256 bytes and the special tokens)",
            )?;
            c.that(
                t.corpus_examples > 0,
                "tokenizer.corpus_examples",
                "must be positive",
            )?;
        }
        self.data.validate(file)?;
        self.train.validate(file)?;
        self.optimizer.validate(file)?;
        self.balance.validate(file)?;
        if let Some(e) = &self.eval {
            c.that(
                e.max_new_tokens > 0,
                "eval.max_new_tokens",
                "must be positive",
            )?;
            c.that(
                e.turn.is_none(),
                "eval.turn",
                "GRPO only (SFT evaluates questions asked alone)",
            )?;
        }
        Ok(())
    }
}

impl Architecture {
    pub fn validate(&self, file: &str) -> Result<(), RecipeError> {
        let c = Check::new(file);
        let k = |n: &str| format!("model.architecture.{n}");
        c.that(
            self.n_group > 0 && self.n_routed_experts.is_multiple_of(self.n_group),
            &k("n_group"),
            "must divide n_routed_experts",
        )?;
        c.that(
            self.n_routed_experts / self.n_group.max(1) >= 2,
            &k("n_group"),
            "deepseek_v3 routing needs at least 2 experts per group",
        )?;
        c.that(
            self.topk_group >= 1 && self.topk_group <= self.n_group,
            &k("topk_group"),
            "must be between 1 and n_group",
        )?;
        c.that(
            self.num_experts_per_tok >= 1
                && self.num_experts_per_tok
                    <= self.topk_group * (self.n_routed_experts / self.n_group.max(1)),
            &k("num_experts_per_tok"),
            "must be between 1 and the experts in the topk_group kept groups",
        )?;
        c.that(
            self.qk_rope_head_dim.is_multiple_of(2),
            &k("qk_rope_head_dim"),
            "must be even",
        )?;
        c.that(
            self.num_hidden_layers > 0,
            &k("num_hidden_layers"),
            "must be positive",
        )?;
        c.that(self.init_std > 0.0, &k("init_std"), "must be positive")
    }
}

/// A small valid recipe for tests: a 2-layer deepseek_v3 that trains in well under a second per
/// step.
#[cfg(test)]
pub(crate) const TEST_RECIPE: &str = r#"
kind = "sft"
name = "t"
seed = 1
output_dir = "runs/t"

[model]
init = "scratch"
[model.architecture]
hidden_size = 32
num_hidden_layers = 2
num_attention_heads = 2
intermediate_size = 64
moe_intermediate_size = 16
n_routed_experts = 4
n_shared_experts = 1
num_experts_per_tok = 2
n_group = 2
topk_group = 2
first_k_dense_replace = 1
routed_scaling_factor = 1.0
q_lora_rank = 16
kv_lora_rank = 16
qk_nope_head_dim = 8
qk_rope_head_dim = 8
v_head_dim = 8
max_position_embeddings = 256
rope_theta = 10000
init_std = 0.02

[tokenizer]
vocab_size = 300
corpus_examples = 100

[data]
task = "arithmetic"
levels = [1, 2]

[train]
steps = 4
batch_size = 4
micro_batch_size = 2
log_every = 1
checkpoint_every = 2
keep_checkpoints = 2

[optimizer]
lr = 1e-3
betas = [0.9, 0.95]
eps = 1e-8
weight_decay = 0.0
warmup_steps = 1
min_lr_ratio = 0.1
grad_clip = 1.0

[balance]
bias_update_rate = 0.001
"#;

#[cfg(test)]
mod tests {
    use super::TEST_RECIPE as GOOD;
    use crate::train::recipe::{parse, Recipe};

    fn err(text: &str) -> String {
        parse("recipes/x.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn good_recipe_parses_to_its_values() {
        let Recipe::Sft(r) = parse("recipes/x.toml", GOOD).unwrap() else {
            panic!("an SFT recipe")
        };
        assert_eq!(r.name, "t");
        assert_eq!(r.model.dtype, "f32");
        assert_eq!(r.model.architecture.as_ref().unwrap().hidden_size, 32);
        assert_eq!(r.model.architecture.as_ref().unwrap().rope_theta, 10000.0);
        assert_eq!(r.optimizer.betas, [0.9, 0.95]);
        assert_eq!(r.data.levels, vec![1, 2]);
        assert_eq!(r.train.micro_batch_size, 2);
        assert!(r.eval.is_none());
    }

    #[test]
    fn values_out_of_range_and_unknown_names() {
        let text = GOOD.replace("task = \"arithmetic\"", "task = \"chess\"");
        assert_eq!(
            err(&text),
            "recipes/x.toml: key data.task: unknown task \"chess\" (known: arithmetic, multiplication)"
        );
        let text = GOOD.replace("levels = [1, 2]", "levels = [1, 12]");
        assert_eq!(
            err(&text),
            "recipes/x.toml: key data.levels: level 12 is outside arithmetic's levels 1-8"
        );
        let text = GOOD.replace("kind = \"sft\"", "kind = \"ppo\"");
        assert_eq!(
            err(&text),
            "recipes/x.toml: key kind: unknown recipe kind \"ppo\" (expected \"sft\" or \"grpo\")"
        );
        let text = GOOD.replace("betas = [0.9, 0.95]", "betas = [0.9, 1.5]");
        assert_eq!(
            err(&text),
            "recipes/x.toml: key optimizer.betas: beta2 = 1.5 must be in [0, 1)"
        );
        let text = GOOD.replace("betas = [0.9, 0.95]", "betas = [0.9]");
        assert_eq!(
            err(&text),
            "recipes/x.toml: key optimizer.betas: invalid length 1, expected an array of length 2"
        );
        let text = GOOD.replace("micro_batch_size = 2", "micro_batch_size = 9");
        assert_eq!(
            err(&text),
            "recipes/x.toml: key train.micro_batch_size: must be between 1 and train.batch_size"
        );
    }
}
