//! Training recipes: `recipes/*.toml` read into typed structs.
//!
//! Every error is one line that names the file and the key: a missing key, an unknown key (a typo
//! must not be silently ignored), a value of the wrong type, or a value out of range:
//!
//! ```text
//! recipes/x.toml: key optimizer.lr: expected a number, found "fast"
//! ```
//!
//! The sections are shared by every recipe kind: `[optimizer]`, `[balance]` and `[eval]` mean the
//! same in an SFT and a GRPO recipe; GRPO's `[data]` and `[train]` add what RL needs (a JSONL file
//! of problems, no batch size of its own), and `[rewards]`, `[generation]`, `[grpo]` and `[lora]`
//! are GRPO's alone.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::task;

/// A recipe error: the file, the dotted key when there is one, and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {}{msg}", key.as_ref().map(|k| format!("key {k}: ")).unwrap_or_default())]
pub struct RecipeError {
    pub file: String,
    pub key: Option<String>,
    pub msg: String,
}

impl RecipeError {
    pub fn new(file: &str, key: Option<&str>, msg: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            key: key.map(str::to_string),
            msg: msg.into(),
        }
    }
}

/// Every kind of recipe `thinkbench train` runs, told apart by the top-level `kind` key.
#[derive(Debug, Clone)]
pub enum Recipe {
    Sft(Box<SftRecipe>),
    Grpo(Box<GrpoRecipe>),
}

impl Recipe {
    pub fn name(&self) -> &str {
        match self {
            Recipe::Sft(r) => &r.name,
            Recipe::Grpo(r) => &r.name,
        }
    }
}

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

fn default_dtype() -> String {
    "f32".into()
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

/// Reads and validates a recipe file.
pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let msg = match e.kind() {
            std::io::ErrorKind::NotFound => "not found".to_string(),
            _ => e.to_string(),
        };
        RecipeError::new(&file, None, msg)
    })?;
    parse(&file, &text)
}

/// Parses recipe text; `file` is only used in messages.
pub fn parse(file: &str, text: &str) -> Result<Recipe, RecipeError> {
    let table = parse_table(file, text)?;
    let kind = match table.get("kind") {
        None => {
            return Err(RecipeError::new(
                file,
                Some("kind"),
                "missing (expected \"sft\" or \"grpo\")",
            ))
        }
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(RecipeError::new(
                file,
                Some("kind"),
                format!("expected a string, found {}", describe_value(other)),
            ))
        }
    };
    match kind.as_str() {
        "sft" => {
            let r: SftRecipe = from_table(file, table)?;
            r.validate(file)?;
            Ok(Recipe::Sft(Box::new(r)))
        }
        "grpo" => {
            let r: GrpoRecipe = from_table(file, table)?;
            r.validate(file)?;
            Ok(Recipe::Grpo(Box::new(r)))
        }
        other => Err(RecipeError::new(
            file,
            Some("kind"),
            format!("unknown recipe kind \"{other}\" (expected \"sft\" or \"grpo\")"),
        )),
    }
}

/// TOML text to a table; a syntax error names its line and column.
pub fn parse_table(file: &str, text: &str) -> Result<toml::Table, RecipeError> {
    text.parse::<toml::Table>().map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {col}: ")
            })
            .unwrap_or_default();
        RecipeError::new(
            file,
            None,
            format!("invalid TOML: {at}{}", one_line(e.message())),
        )
    })
}

/// Deserialises a typed section from a table, turning serde's message into one naming the key.
pub fn from_table<T: DeserializeOwned>(file: &str, table: toml::Table) -> Result<T, RecipeError> {
    serde_path_to_error::deserialize(table).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let (key, msg) = explain(&path, &e.inner().to_string());
        RecipeError::new(file, key.as_deref(), msg)
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// serde's wording ("invalid type: string \"eight\", expected usize") to ours
/// ("expected an integer, found \"eight\""), with the key the message is about.
fn explain(path: &str, msg: &str) -> (Option<String>, String) {
    let mut msg = one_line(msg);
    // toml appends where it was (" in `train.batch_size`", " in optimizer"); the key says it.
    if let Some(i) = msg.rfind(" in ") {
        let tail = &msg[i + 4..];
        if !tail.trim_matches('`').contains([' ', ',']) {
            msg.truncate(i);
        }
    }
    let key = (!path.is_empty()).then(|| path.to_string());
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or("");
        return (Some(join(path, name)), "missing".into());
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or("");
        // The path may already end at the unknown key.
        let path = match path.rsplit_once('.') {
            Some((parent, last)) if last == name => parent,
            None if path == name => "",
            _ => path,
        };
        let expected = rest
            .split_once("expected one of ")
            .map(|(_, list)| format!(" (expected one of {})", list.replace('`', "")))
            .or_else(|| {
                rest.split_once("expected ")
                    .map(|(_, one)| format!(" (expected {})", one.replace('`', "")))
            })
            .unwrap_or_default();
        return (Some(join(path, name)), format!("unknown key{expected}"));
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (value, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = tail
            .split_once("expected one of ")
            .map(|(_, list)| format!(" (expected one of {})", list.replace('`', "")))
            .or_else(|| {
                tail.split_once("expected ")
                    .map(|(_, one)| format!(" (expected {})", one.replace('`', "")))
            })
            .unwrap_or_default();
        return (key, format!("unknown value \"{value}\"{expected}"));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.rsplit_once(", expected ") {
                // An enum key given a number: serde cannot say what was found.
                if expected == "string only" {
                    return (key, "expected a string".into());
                }
                return (
                    key,
                    format!(
                        "expected {}, found {}",
                        describe_expected(expected),
                        describe_found(found)
                    ),
                );
            }
        }
    }
    (key, msg)
}

fn describe_expected(e: &str) -> String {
    match e {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a non-negative integer".into(),
        "i64" | "i32" | "isize" => "an integer".into(),
        "f64" | "f32" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" | "a borrowed string" => "a string".into(),
        "a sequence" => "a list".into(),
        _ if e.starts_with("struct ") => "a table".into(),
        _ if e.starts_with("an array of length ") => format!("a list of {}", &e[19..]),
        _ => e.to_string(),
    }
}

fn describe_found(f: &str) -> String {
    let ticked = |s: &str| s.trim_matches('`').to_string();
    if let Some(s) = f.strip_prefix("string ") {
        return s.to_string();
    }
    for p in ["integer ", "floating point ", "boolean "] {
        if let Some(v) = f.strip_prefix(p) {
            return ticked(v);
        }
    }
    match f {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        _ => f.to_string(),
    }
}

fn describe_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Range checks that types cannot express; each names its key.
pub struct Check<'a> {
    file: &'a str,
}

impl Check<'_> {
    pub fn that(&self, ok: bool, key: &str, msg: impl Into<String>) -> Result<(), RecipeError> {
        if ok {
            Ok(())
        } else {
            Err(RecipeError::new(self.file, Some(key), msg))
        }
    }
}

impl DataSection {
    pub fn validate(&self, file: &str) -> Result<(), RecipeError> {
        let c = Check { file };
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

impl OptimizerSection {
    pub fn validate(&self, file: &str) -> Result<(), RecipeError> {
        let c = Check { file };
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

impl TrainSection {
    pub fn validate(&self, file: &str) -> Result<(), RecipeError> {
        let c = Check { file };
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
        let c = Check { file };
        c.that(!self.name.trim().is_empty(), "name", "must not be empty")?;
        c.that(
            self.model.dtype == "f32",
            "model.dtype",
            format!(
                "\"{}\" is not supported for training (f32)",
                self.model.dtype
            ),
        )?;
        c.that(
            matches!(self.model.save_dtype.as_str(), "f32" | "bf16"),
            "model.save_dtype",
            format!(
                "\"{}\": expected \"f32\" or \"bf16\"",
                self.model.save_dtype
            ),
        )?;
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
        c.that(
            self.balance.bias_update_rate >= 0.0,
            "balance.bias_update_rate",
            "must be >= 0",
        )?;
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
        let c = Check { file };
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

// ---------------------------------------------------------------------------------------------
// GRPO
// ---------------------------------------------------------------------------------------------

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

/// The reward functions and their weights; the reward of a completion is the weighted sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardsSection {
    #[serde(default)]
    pub accuracy: Option<AccuracyReward>,
    #[serde(default)]
    pub format: Option<FormatReward>,
    #[serde(default)]
    pub overlong: Option<OverlongReward>,
}

/// How an extracted answer is compared with the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// Equal strings (after trimming).
    Exact,
    /// Equal as numbers (integers, decimals, fractions; commas and `$` ignored), else equal strings.
    Numeric,
}

/// 1 (`correct`) when the final answer matches, else `wrong` (0; DAPO uses -1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccuracyReward {
    pub weight: f64,
    #[serde(default = "default_compare")]
    pub compare: Compare,
    #[serde(default = "one")]
    pub correct: f64,
    #[serde(default)]
    pub wrong: f64,
}

fn default_compare() -> Compare {
    Compare::Numeric
}

fn one() -> f64 {
    1.0
}

/// 1 when the completion is reasoning, `</think>`, an answer, end-of-sentence, and nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatReward {
    pub weight: f64,
}

/// DAPO's soft overlong punishment: 0 up to `max_length - buffer` tokens, then falling linearly
/// to -1 at `max_length`, -1 beyond.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlongReward {
    pub weight: f64,
    /// L_cache: the length of the penalty ramp.
    pub buffer: usize,
    /// L_max (default: generation.max_new_tokens).
    #[serde(default)]
    pub max_length: Option<usize>,
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
        let c = Check { file };
        c.that(!self.name.trim().is_empty(), "name", "must not be empty")?;
        c.that(
            self.model.init != "scratch" && !self.model.init.trim().is_empty(),
            "model.init",
            "GRPO starts from a trained model: \"builtin\" or a model directory",
        )?;
        c.that(
            self.model.dtype == "f32",
            "model.dtype",
            format!(
                "\"{}\" is not supported for training (f32)",
                self.model.dtype
            ),
        )?;
        c.that(
            matches!(self.model.save_dtype.as_str(), "f32" | "bf16"),
            "model.save_dtype",
            format!(
                "\"{}\": expected \"f32\" or \"bf16\"",
                self.model.save_dtype
            ),
        )?;
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
        let r = &self.rewards;
        c.that(
            r.accuracy.is_some() || r.format.is_some() || r.overlong.is_some(),
            "rewards",
            "name at least one reward (accuracy, format, overlong)",
        )?;
        for (name, w) in [
            ("accuracy", r.accuracy.as_ref().map(|x| x.weight)),
            ("format", r.format.as_ref().map(|x| x.weight)),
            ("overlong", r.overlong.as_ref().map(|x| x.weight)),
        ] {
            if let Some(w) = w {
                c.that(
                    w.is_finite(),
                    &format!("rewards.{name}.weight"),
                    "must be a finite number",
                )?;
            }
        }
        if let Some(a) = &r.accuracy {
            c.that(
                a.correct.is_finite() && a.wrong.is_finite(),
                "rewards.accuracy.correct",
                "correct and wrong must be finite",
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
        if let Some(o) = &r.overlong {
            let max = o.max_length.unwrap_or(g.max_new_tokens);
            c.that(
                o.buffer >= 1 && o.buffer <= max,
                "rewards.overlong.buffer",
                format!("must be between 1 and max_length ({max})"),
            )?;
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
            c.that(
                b.bias_update_rate >= 0.0,
                "balance.bias_update_rate",
                "must be >= 0",
            )?;
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
        let c = Check { file };
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

    /// The length where the overlong penalty reaches -1.
    pub fn overlong_max(&self) -> Option<(usize, usize)> {
        self.rewards.overlong.as_ref().map(|o| {
            (
                o.max_length.unwrap_or(self.generation.max_new_tokens),
                o.buffer,
            )
        })
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
    use super::*;
    const GOOD: &str = TEST_RECIPE;

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
    fn wrong_type_names_file_key_and_value() {
        let text = GOOD.replace("batch_size = 4", "batch_size = \"eight\"");
        assert_eq!(
            err(&text),
            "recipes/x.toml: key train.batch_size: expected a non-negative integer, found \"eight\""
        );
        let text = GOOD.replace("lr = 1e-3", "lr = \"fast\"");
        assert_eq!(
            err(&text),
            "recipes/x.toml: key optimizer.lr: expected a number, found \"fast\""
        );
        let text = GOOD.replace("steps = 4", "steps = -4");
        assert_eq!(
            err(&text),
            "recipes/x.toml: key train.steps: expected a non-negative integer, found -4"
        );
        let text = GOOD.replace("levels = [1, 2]", "levels = 3");
        assert_eq!(
            err(&text),
            "recipes/x.toml: key data.levels: expected a list, found 3"
        );
    }

    #[test]
    fn missing_keys_are_named() {
        let text = GOOD.replace("eps = 1e-8\n", "");
        assert_eq!(err(&text), "recipes/x.toml: key optimizer.eps: missing");
        let text = GOOD.replace("seed = 1\n", "");
        assert_eq!(err(&text), "recipes/x.toml: key seed: missing");
        let text = GOOD.replace("[balance]\nbias_update_rate = 0.001\n", "");
        assert_eq!(err(&text), "recipes/x.toml: key balance: missing");
        let text = GOOD.replace("kind = \"sft\"\n", "");
        assert_eq!(
            err(&text),
            "recipes/x.toml: key kind: missing (expected \"sft\" or \"grpo\")"
        );
        let text = GOOD.replace("hidden_size = 32\n", "");
        assert_eq!(
            err(&text),
            "recipes/x.toml: key model.architecture.hidden_size: missing"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = GOOD.replace("lr = 1e-3", "lr = 1e-3\nlearning_rate = 1e-3");
        let e = err(&text);
        assert!(
            e.starts_with("recipes/x.toml: key optimizer.learning_rate: unknown key (expected one of lr, betas"),
            "{e}"
        );
    }

    #[test]
    fn values_out_of_range_and_unknown_names() {
        let text = GOOD.replace("task = \"arithmetic\"", "task = \"chess\"");
        assert_eq!(
            err(&text),
            "recipes/x.toml: key data.task: unknown task \"chess\" (known: arithmetic)"
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

    #[test]
    fn syntax_errors_name_the_line() {
        let e = err("kind = \"sft\"\nname = \n");
        assert!(e.starts_with("recipes/x.toml: invalid TOML: line 2"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn missing_file_is_one_line() {
        let e = load(Path::new("/nonexistent/r.toml")).unwrap_err();
        assert_eq!(e.to_string(), "/nonexistent/r.toml: not found");
    }

    fn grpo(text: &str) -> Result<GrpoRecipe, String> {
        match parse("recipes/g.toml", text).map_err(|e| e.to_string())? {
            Recipe::Grpo(r) => Ok(*r),
            Recipe::Sft(_) => Err("parsed as SFT".into()),
        }
    }

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
            r.rewards.accuracy.as_ref().unwrap().compare,
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
