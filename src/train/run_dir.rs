//! A training run's output folder: claiming it for one recipe (resuming under a different recipe
//! would mix two runs), and the model files every checkpoint carries besides its weights. SFT and
//! GRPO share it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::checkpoint::{model_tensors, safetensors_bytes, write_synced, AtomicDir};
use super::optim::AdamW;

/// The safetensors metadata transformers writes.
pub fn metadata() -> BTreeMap<String, String> {
    BTreeMap::from([("format".to_string(), "pt".to_string())])
}

/// Writes what every checkpoint of a full-weight or LoRA run holds besides its model files: the
/// weights in f32 (`model.safetensors`, transformers' layout) and the AdamW state.
pub fn write_weights_and_optimizer(
    w: &AtomicDir,
    model: &crate::model::Model,
    opt: &AdamW,
) -> Result<()> {
    let weights = model_tensors(model, tch::Kind::Float);
    w.write(
        "model.safetensors",
        &safetensors_bytes(&weights, &metadata()).map_err(|e| anyhow!(e))?,
    )?;
    w.write(
        "optimizer.safetensors",
        &safetensors_bytes(&opt.state_tensors(), &BTreeMap::new()).map_err(|e| anyhow!(e))?,
    )?;
    Ok(())
}

/// The first key at which two JSON values differ (for "this folder holds another recipe").
pub fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                first_difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &p,
                )
            })
        }
        _ if a == b => None,
        _ => Some(if path.is_empty() {
            ".".into()
        } else {
            path.to_string()
        }),
    }
}

/// Checks that `dir` can be created and written, with one clear message if not.
pub fn ensure_writable(dir: &Path, what: &str) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow!("{what} {}: cannot create it: {e}", dir.display()))?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .map_err(|e| anyhow!("{what} {}: not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Records `recipe` in `out/recipe.json`, or checks that the run already there was started with
/// the same recipe. Top-level keys in `free_top` and keys of `[train]` in `free_train` may differ
/// (they do not change what the steps so far computed: the length of the run, logging, where it
/// is exported, how it is evaluated).
pub fn claim_output_dir(
    out: &Path,
    recipe: &Value,
    free_top: &[&str],
    free_train: &[&str],
) -> Result<()> {
    let recipe_path = out.join("recipe.json");
    match std::fs::read_to_string(&recipe_path) {
        Ok(text) => {
            let before: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", recipe_path.display()))?;
            let mut a = before;
            let mut b = recipe.clone();
            for v in [&mut a, &mut b] {
                if let Some(o) = v.as_object_mut() {
                    for k in free_top {
                        o.remove(*k);
                    }
                    if let Some(t) = o.get_mut("train").and_then(Value::as_object_mut) {
                        for k in free_train {
                            t.remove(*k);
                        }
                    }
                }
            }
            if let Some(key) = first_difference(&a, &b, "") {
                bail!(
                    "output_dir {} holds a run of a different recipe (key {key} differs); delete the folder or choose another output_dir",
                    out.display()
                );
            }
        }
        Err(_) => {
            let w = serde_json::to_string_pretty(recipe)?;
            write_synced(&recipe_path, format!("{w}\n").as_bytes())
                .with_context(|| recipe_path.display().to_string())?;
        }
    }
    Ok(())
}

/// The files of a model directory besides its weights, kept in memory for every checkpoint.
pub struct ModelFiles {
    pub config: Vec<u8>,
    pub tokenizer: Vec<u8>,
    pub tokenizer_config: Vec<u8>,
    pub generation_config: Vec<u8>,
}

impl ModelFiles {
    pub fn read(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).with_context(|| format!("{}", dir.join(name).display()))
        };
        let generation_config = match std::fs::read(dir.join("generation_config.json")) {
            Ok(b) => b,
            Err(_) => b"{}\n".to_vec(),
        };
        Ok(Self {
            config: read("config.json")?,
            tokenizer: read("tokenizer.json")?,
            tokenizer_config: read("tokenizer_config.json")?,
            generation_config,
        })
    }

    pub fn write_into(&self, w: &AtomicDir) -> Result<()> {
        w.write("config.json", &self.config)?;
        w.write("tokenizer.json", &self.tokenizer)?;
        w.write("tokenizer_config.json", &self.tokenizer_config)?;
        w.write("generation_config.json", &self.generation_config)?;
        Ok(())
    }
}
