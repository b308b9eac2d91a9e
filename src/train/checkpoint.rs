//! Writing model directories in the hub layout, atomically.
//!
//! A checkpoint is written into a hidden temporary folder next to its target
//! (`.step-00000200.tmp-<pid>`), every file is fsynced, then the folder is renamed into place and
//! the parent fsynced. A loader never sees a half-written checkpoint: either the old folder (or
//! none) or the complete new one. A write that fails, or a process killed mid-write, leaves only
//! the hidden folder, which nothing loads and the next run sweeps away.
//!
//! A training checkpoint is a complete model directory (config.json, model.safetensors,
//! tokenizer files, generation_config.json) that `thinkbench generate --model` opens as it is,
//! plus the trainer's state for an exact resume: `optimizer.safetensors` (AdamW moments) and
//! `trainer_state.json` (step, the data position, the recipe).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

/// safetensors: 8-byte little-endian header length, the JSON header (padded with spaces to a
/// multiple of 8), then the raw little-endian data of each tensor in header order.
pub fn safetensors_bytes(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), json!(metadata));
    }
    let mut data: Vec<u8> = Vec::new();
    for (name, t) in sorted {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let dtype = match t.kind() {
            Kind::Float => "F32",
            Kind::BFloat16 => "BF16",
            Kind::Half => "F16",
            Kind::Int64 => "I64",
            Kind::Int => "I32",
            k => return Err(format!("{name}: cannot save tensors of kind {k:?}")),
        };
        let numel = t.numel();
        let bytes = numel * t.kind().elt_size_in_bytes();
        let start = data.len();
        data.resize(start + bytes, 0);
        t.f_copy_data_u8(&mut data[start..], numel)
            .map_err(|e| format!("{name}: {e}"))?;
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": t.size(), "data_offsets": [start, start + bytes]}),
        );
    }
    let mut head = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + data.len());
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Reads every tensor of one safetensors file (f32 or bf16 on disk; f32 on the CPU). The
/// engine's reader serves model directories; this reads single files such as optimizer state.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = |m: &str| format!("{}: {m}", path.display());
    if bytes.len() < 8 {
        return Err(bad("truncated"));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    if 8 + n > bytes.len() {
        return Err(bad("header runs past the end"));
    }
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(&e.to_string()))?;
    let data = &bytes[8 + n..];
    let mut out = HashMap::new();
    for (name, v) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = v["dtype"].as_str().unwrap_or("");
        let kind = match dtype {
            "F32" => Kind::Float,
            "BF16" => Kind::BFloat16,
            _ => return Err(bad(&format!("{name}: unsupported dtype {dtype}"))),
        };
        let shape: Vec<i64> = v["shape"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        let off = &v["data_offsets"];
        let (s, e) = (
            off[0].as_u64().unwrap_or(0) as usize,
            off[1].as_u64().unwrap_or(0) as usize,
        );
        if e > data.len() || s > e {
            return Err(bad(&format!("{name}: data runs past the end")));
        }
        let t = Tensor::f_from_data_size(&data[s..e], &shape, kind)
            .map_err(|err| bad(&format!("{name}: {err}")))?;
        out.insert(name, t.to_kind(Kind::Float));
    }
    Ok(out)
}

/// Writes `bytes` to `path` and fsyncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An error while writing a checkpoint, naming the path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct WriteError {
    pub path: String,
    pub msg: String,
}

impl WriteError {
    pub fn at(path: &Path, e: impl std::fmt::Display) -> Self {
        Self {
            path: path.display().to_string(),
            msg: e.to_string(),
        }
    }
}

/// A directory being written; it appears at its target only on [`AtomicDir::commit`]. Dropped
/// without a commit, it removes what it wrote.
pub struct AtomicDir {
    target: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

/// The prefix of every temporary folder (nothing that looks for checkpoints matches it).
pub const TMP_PREFIX: &str = ".";

impl AtomicDir {
    /// Starts writing `target` (its parent must exist or be creatable).
    pub fn begin(target: &Path) -> Result<Self, WriteError> {
        let parent = target.parent().filter(|p| !p.as_os_str().is_empty());
        let parent = parent.unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(|e| WriteError::at(parent, e))?;
        let name = target
            .file_name()
            .ok_or_else(|| WriteError::at(target, "not a folder name"))?
            .to_string_lossy();
        let tmp = parent.join(format!("{TMP_PREFIX}{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| WriteError::at(&tmp, e))?;
        }
        fs::create_dir(&tmp).map_err(|e| WriteError::at(&tmp, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            tmp,
            committed: false,
        })
    }

    /// The folder to write into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
        let p = self.tmp.join(name);
        write_synced(&p, bytes).map_err(|e| WriteError::at(&p, e))
    }

    pub fn write_json(&self, name: &str, value: &serde_json::Value) -> Result<(), WriteError> {
        let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
        self.write(name, format!("{text}\n").as_bytes())
    }

    /// Copies `name` from `src` (fsynced like every other file).
    pub fn copy_from(&self, src: &Path, name: &str) -> Result<(), WriteError> {
        let from = src.join(name);
        let bytes = fs::read(&from).map_err(|e| WriteError::at(&from, e))?;
        self.write(name, &bytes)
    }

    /// Puts the folder in place: the previous target (if any) is replaced as a whole.
    pub fn commit(mut self) -> Result<(), WriteError> {
        sync_dir(&self.tmp).map_err(|e| WriteError::at(&self.tmp, e))?;
        let parent = self.tmp.parent().expect("tmp has a parent").to_path_buf();
        if self.target.exists() {
            // Move the old one aside first; a folder is never half old, half new.
            let old = parent.join(format!(
                "{TMP_PREFIX}{}.old-{}",
                self.target.file_name().unwrap().to_string_lossy(),
                std::process::id()
            ));
            if old.exists() {
                fs::remove_dir_all(&old).map_err(|e| WriteError::at(&old, e))?;
            }
            fs::rename(&self.target, &old).map_err(|e| WriteError::at(&self.target, e))?;
            fs::rename(&self.tmp, &self.target).map_err(|e| WriteError::at(&self.target, e))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&self.tmp, &self.target).map_err(|e| WriteError::at(&self.target, e))?;
        }
        sync_dir(&parent).map_err(|e| WriteError::at(&parent, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Removes temporary folders a killed writer left in `dir`.
pub fn sweep_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(TMP_PREFIX) && (name.contains(".tmp-") || name.contains(".old-")) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The folder name of the checkpoint after `step` optimiser steps.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Completed checkpoints in `dir`, by step, oldest first (temporary folders never match).
pub fn list_checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            let p = e.path();
            (p.join("trainer_state.json").is_file()).then_some((step, p))
        })
        .collect();
    found.sort();
    found
}

/// The newest completed checkpoint in `dir`.
pub fn latest_checkpoint(dir: &Path) -> Option<(u64, PathBuf)> {
    list_checkpoints(dir).pop()
}

/// Removes all but the newest `keep` checkpoints.
pub fn prune_checkpoints(dir: &Path, keep: usize) {
    let all = list_checkpoints(dir);
    if all.len() > keep {
        for (_, p) in &all[..all.len() - keep] {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// A model's weights by HF key name, in the save dtype. The routers' selection biases stay f32
/// whatever the save dtype (as DeepSeek-V3 publishes them): the model names them.
pub fn model_tensors(model: &crate::model::Model, kind: Kind) -> Vec<(String, Tensor)> {
    let keep_f32: std::collections::HashSet<String> = model
        .routers()
        .into_iter()
        .filter_map(|r| r.bias_name)
        .collect();
    let mut out: Vec<(String, Tensor)> = model
        .vars
        .variables()
        .into_iter()
        .map(|(name, t)| {
            let k = if keep_f32.contains(&name) {
                Kind::Float
            } else {
                kind
            };
            (name, t.to_kind(k))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The `generation_config.json` of the built-in model: R1's recommended sampling.
pub fn generation_config(bos: u32, eos: u32) -> serde_json::Value {
    json!({
        "bos_token_id": bos,
        "do_sample": true,
        "eos_token_id": eos,
        "temperature": 0.6,
        "top_p": 0.95,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::Checkpoint;

    #[test]
    fn safetensors_round_trip_through_the_engine_reader() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0]).view([2, 3]);
        let b = Tensor::from_slice(&[1.0f32, 2.0]).to_kind(Kind::BFloat16);
        let bytes = safetensors_bytes(
            &[
                ("z.w".into(), a.shallow_clone()),
                ("a.b".into(), b.shallow_clone()),
            ],
            &BTreeMap::from([("format".to_string(), "pt".to_string())]),
        )
        .unwrap();
        // Header length is a multiple of 8 and the data section is exactly the tensors' bytes.
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        assert_eq!(bytes.len(), 8 + n + 6 * 4 + 2 * 2);
        std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
        let ck = Checkpoint::open(dir.path()).unwrap();
        let got = ck.read_raw("z.w").unwrap();
        assert_eq!(got.size(), vec![2, 3]);
        assert!(got.equal(&a));
        assert_eq!(ck.read_raw("a.b").unwrap().kind(), Kind::BFloat16);
    }

    #[test]
    fn a_failed_write_leaves_the_previous_checkpoint_intact() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("step-00000002");
        let w = AtomicDir::begin(&target).unwrap();
        w.write("config.json", b"old").unwrap();
        w.write("trainer_state.json", b"{}").unwrap();
        w.commit().unwrap();

        // A second write of the same checkpoint fails half-way (the writer is dropped without a
        // commit, as when an error propagates).
        {
            let w = AtomicDir::begin(&target).unwrap();
            w.write("config.json", b"new").unwrap();
            let tmp = w.path().to_path_buf();
            assert!(tmp.exists());
            // Nothing that looks for checkpoints sees the half-written one.
            assert_eq!(list_checkpoints(root.path()).len(), 1);
            drop(w);
            assert!(!tmp.exists(), "the temporary folder is removed");
        }
        assert_eq!(fs::read(target.join("config.json")).unwrap(), b"old");

        // A killed writer (no Drop runs) leaves a hidden folder that is never picked up.
        let killed = root.path().join(".step-00000004.tmp-999");
        fs::create_dir(&killed).unwrap();
        fs::write(killed.join("trainer_state.json"), b"{}").unwrap();
        let found = latest_checkpoint(root.path()).unwrap();
        assert_eq!(found.0, 2);
        sweep_temporaries(root.path());
        assert!(!killed.exists());

        // A committed rewrite replaces the folder as a whole.
        let w = AtomicDir::begin(&target).unwrap();
        w.write("config.json", b"new").unwrap();
        w.commit().unwrap();
        assert_eq!(fs::read(target.join("config.json")).unwrap(), b"new");
        assert!(!target.join("trainer_state.json").exists());
    }

    #[test]
    fn checkpoints_are_listed_by_step_and_pruned_oldest_first() {
        let root = tempfile::tempdir().unwrap();
        for step in [10u64, 2, 30] {
            let w = AtomicDir::begin(&root.path().join(step_dir_name(step))).unwrap();
            w.write("trainer_state.json", b"{}").unwrap();
            w.commit().unwrap();
        }
        // A folder without trainer state is not a checkpoint.
        fs::create_dir(root.path().join("step-00000099")).unwrap();
        let steps: Vec<u64> = list_checkpoints(root.path()).iter().map(|c| c.0).collect();
        assert_eq!(steps, vec![2, 10, 30]);
        prune_checkpoints(root.path(), 2);
        let steps: Vec<u64> = list_checkpoints(root.path()).iter().map(|c| c.0).collect();
        assert_eq!(steps, vec![10, 30]);
    }

    #[test]
    fn unwritable_parent_is_one_clear_error() {
        let e = AtomicDir::begin(Path::new("/proc/thinkbench-no/step-1"))
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("/proc/thinkbench-no"), "{e}");
    }

    /// Saved in bf16, the built-in model keeps exactly its routers' selection biases in f32 (found
    /// through the model, not by name): 3 MoE layers, so 3 f32 tensors.
    #[test]
    fn a_bf16_save_keeps_only_the_selection_biases_in_f32() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/thinkbench-tiny");
        let model =
            crate::model::Model::load(&dir, crate::model::DType::F32, tch::Device::Cpu).unwrap();
        let tensors = model_tensors(&model, Kind::BFloat16);
        let f32_names: Vec<&str> = tensors
            .iter()
            .filter(|(_, t)| t.kind() == Kind::Float)
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(
            f32_names,
            [1, 2, 3].map(|l| format!("model.layers.{l}.mlp.gate.e_score_correction_bias"))
        );
        assert!(tensors.len() > 20);
    }
}
