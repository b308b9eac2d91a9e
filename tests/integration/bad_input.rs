//! Bad input gets one clear message naming the file or weight and the problem — never a panic.

use std::path::{Path, PathBuf};

use tch::Device;
use thinkbench::model::{DType, Model};

use crate::common::*;

fn base() -> PathBuf {
    models_dir().join("deepseek_v3_qlora")
}

/// A scratch copy of the base fixture that a test may break.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(base()).unwrap().flatten() {
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> String {
    let err = Model::load(dir, DType::F32, Device::Cpu)
        .err()
        .expect("loading should fail")
        .to_string();
    assert!(!err.contains('\n'), "one line: {err}");
    err
}

/// Rewrites model.safetensors' JSON header with `edit`, keeping the data bytes.
fn edit_header(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut text = serde_json::to_vec(&header).unwrap();
    // the data must start where it did: pad the header with spaces, as the format allows
    assert!(text.len() <= n, "edited header grew");
    text.resize(n, b' ');
    let mut out = (n as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn missing_model_directory() {
    let e = load_err(Path::new("/nonexistent/model"));
    assert!(
        e.contains("/nonexistent/model") && e.contains("not found"),
        "{e}"
    );
}

#[test]
fn invalid_config_json() {
    let d = scratch();
    std::fs::write(d.path().join("config.json"), "{ \"model_type\": ").unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("config.json") && e.contains("invalid JSON"),
        "{e}"
    );
}

#[test]
fn unknown_model_type() {
    let d = scratch();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("config.json")).unwrap())
            .unwrap();
    cfg["model_type"] = "mamba".into();
    std::fs::write(d.path().join("config.json"), cfg.to_string()).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("config.json") && e.contains("model_type") && e.contains("mamba"),
        "{e}"
    );
}

#[test]
fn missing_weight_is_named_in_full() {
    let d = scratch();
    let victim = "model.layers.1.mlp.experts.3.down_proj.weight";
    edit_header(d.path(), |h| {
        assert!(h.remove(victim).is_some(), "fixture has {victim}");
    });
    let e = load_err(d.path());
    assert!(e.contains(victim) && e.contains("missing"), "{e}");
}

#[test]
fn wrong_shape_is_named_in_full() {
    let d = scratch();
    let victim = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight";
    edit_header(d.path(), |h| {
        let shape = h[victim]["shape"].as_array().unwrap().clone();
        h.get_mut(victim).unwrap()["shape"] = serde_json::json!([shape[1], shape[0]]);
    });
    let e = load_err(d.path());
    assert!(e.contains(victim) && e.contains("shape"), "{e}");
}

#[test]
fn truncated_safetensors() {
    let d = scratch();
    let path = d.path().join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn pickle_checkpoints_are_refused_with_the_reason() {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(base().join("config.json"), d.path().join("config.json")).unwrap();
    std::fs::write(d.path().join("pytorch_model.bin"), b"\x80\x02not really").unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("pytorch_model.bin")
            && e.contains("arbitrary code")
            && e.contains("safetensors"),
        "{e}"
    );
}
