//! `--model FILE.gguf`: our HF test checkpoints converted by llama.cpp's own converter
//! (`scripts/make_gguf_model_fixtures.py`) run exactly as the safetensors they came from — the same
//! greedy tokens, log-probabilities within 1e-4, the same experts, the same chat prompt ids — and a
//! broken file is one line, not a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use tch::Device;
use thinkbench::model::{DType, Model};
use thinkbench::text::{ChatMessage, TextCodec};

use crate::common::*;

fn gguf(name: &str) -> PathBuf {
    repo().join("tests/fixtures/gguf/models").join(name)
}

fn same_run(file: &Path, dir: &Path, tol: f32) {
    let prompt = [3, 40, 41, 42, 7, 99];
    let a = greedy_traced(
        &Model::load(file, DType::F32, Device::Cpu).unwrap(),
        &prompt,
        12,
    );
    let b = greedy_traced(
        &Model::load(dir, DType::F32, Device::Cpu).unwrap(),
        &prompt,
        12,
    );
    assert_same_run(&a, &b, tol, &file.display().to_string());
}

#[test]
fn f32_gguf_runs_as_its_safetensors() {
    for name in [
        "qwen2",
        "llama",
        "qwen3",
        "deepseek_v2_lite",
        "deepseek_v3_qlora",
    ] {
        same_run(
            &gguf(&format!("{name}.gguf")),
            &models_dir().join(name),
            1e-4,
        );
    }
}

#[test]
fn f16_gguf_runs_as_its_f16_safetensors() {
    // qwen2's checkpoint is f16, so its f16 GGUF holds the very same values.
    same_run(&gguf("qwen2.f16.gguf"), &models_dir().join("qwen2"), 1e-4);
}

#[test]
fn gguf_tokenizer_and_template_give_the_same_prompt_ids() {
    for name in ["llama", "qwen3", "deepseek_v3_qlora"] {
        let a = TextCodec::load(&gguf(&format!("{name}.gguf"))).unwrap();
        let b = TextCodec::load(&models_dir().join(name)).unwrap();
        let chat = [
            ChatMessage::new("user", "What is 23 + 58?\nThink it through, then answer."),
            ChatMessage::new("assistant", "The answer is 81."),
            ChatMessage::new("user", "Compute 958 + 67 — and 2²."),
        ];
        let (pa, pb) = (
            a.encode_chat(&chat, true).unwrap(),
            b.encode_chat(&chat, true).unwrap(),
        );
        assert_eq!(pa.text, pb.text, "{name}: rendered prompt");
        assert_eq!(pa.ids, pb.ids, "{name}: prompt ids");
        assert_eq!(a.eos_ids(), b.eos_ids(), "{name}: eos");
    }
}

#[test]
fn a_broken_gguf_is_one_line_and_a_failing_exit() {
    let good = std::fs::read(gguf("qwen2.gguf")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let not_gguf = dir.path().join("not.gguf");
    std::fs::write(&not_gguf, b"this is not a model").unwrap();
    for (path, says) in [(&truncated, "truncated"), (&not_gguf, "not a GGUF file")] {
        let out = Command::new(env!("CARGO_BIN_EXE_thinkbench"))
            .args([
                "generate",
                "--model",
                path.to_str().unwrap(),
                "--prompt-ids",
                "3,4",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: exit status", path.display());
        assert!(err.contains(says), "{}: {err}", path.display());
        assert!(
            err.contains(path.file_name().unwrap().to_str().unwrap()),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}
