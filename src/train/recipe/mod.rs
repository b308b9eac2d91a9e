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
//!
//! - `check`   the one-line error, serde's messages reworded, range checks naming their key
//! - `shared`  the sections both kinds use (`[optimizer]`, `[balance]`, `[eval]`, a task's levels)
//! - `sft`     the SFT recipe and its sections
//! - `grpo`    the GRPO recipe and its sections (`[rewards]` is read through the reward registry)

mod check;
mod grpo;
mod sft;
mod shared;

use std::path::Path;

use check::describe_value;
pub use check::{from_table, parse_table, Check, RecipeError};
#[cfg(test)]
pub(crate) use grpo::{parse_grpo, TEST_GRPO_RECIPE};
pub use grpo::{
    GenerationSection, GrpoDataSection, GrpoModelSection, GrpoRecipe, GrpoSection,
    GrpoTrainSection, LoraSection, LossAggregation, RewardScaling, RoutingReplay, ZeroStd,
};
#[cfg(test)]
pub(crate) use sft::TEST_RECIPE;
pub use sft::{Architecture, ModelSection, SftRecipe, TokenizerSection, TrainSection};
pub use shared::{BalanceSection, DataSection, EvalSection, OptimizerSection, MAX_TURNS};
// The rewards' parameters live with their rewards; these paths are the ones recipes always had.
pub use crate::train::rewards::{
    AccuracyReward, Compare, FormatReward, OverlongReward, RewardsSection,
};

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

#[cfg(test)]
mod tests {
    use super::*;
    const GOOD: &str = TEST_RECIPE;

    fn err(text: &str) -> String {
        parse("recipes/x.toml", text).unwrap_err().to_string()
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
