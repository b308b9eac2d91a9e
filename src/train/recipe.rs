//! Training recipes: `recipes/*.toml` read into typed structs.
//!
//! Every error is one line that names the file and the key: a missing key, an unknown key (a typo
//! must not be silently ignored), a value of the wrong type, or a value out of range:
//!
//! ```text
//! recipes/x.toml: key optimizer.lr: expected a number, found "fast"
//! ```
//!
//! The sections are shared by every recipe kind: `[data]`, `[optimizer]`, `[train]` and
//! `[balance]` mean the same in an SFT and a GRPO recipe.

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
    Sft(SftRecipe),
}

impl Recipe {
    pub fn name(&self) -> &str {
        match self {
            Recipe::Sft(r) => &r.name,
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
                "missing (expected \"sft\")",
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
            Ok(Recipe::Sft(r))
        }
        other => Err(RecipeError::new(
            file,
            Some("kind"),
            format!("unknown recipe kind \"{other}\" (expected \"sft\")"),
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
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.rsplit_once(", expected ") {
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
        let Recipe::Sft(r) = parse("recipes/x.toml", GOOD).unwrap();
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
            "recipes/x.toml: key kind: missing (expected \"sft\")"
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
            "recipes/x.toml: key kind: unknown recipe kind \"ppo\" (expected \"sft\")"
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
}
