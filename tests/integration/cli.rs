//! The real binary, as a user or another tool calls it.

use std::process::Command;

use serde_json::Value;

use crate::common::*;

fn thinkbench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_thinkbench"))
        .args(args)
        .output()
        .expect("binary runs")
}

#[test]
fn generate_json_follows_the_contract_and_matches_transformers() {
    let dir = models_dir().join("deepseek_v3_qlora");
    let expected = load_expected(&dir);
    let case = &expected.cases[0];
    let ids: Vec<String> = case.prompt_ids.iter().map(u32::to_string).collect();
    let n = case.generated.len().to_string();
    let out = thinkbench(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        &ids.join(","),
        "--max-new-tokens",
        &n,
        "--temperature",
        "0",
        "--ignore-eos",
        "--top-logprobs",
        "3",
        "--json",
        "--threads",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(text.trim()).expect("stdout is exactly one JSON object");
    assert_eq!(v["finish_reason"], "length");
    let prompt = v["prompt"].as_array().unwrap();
    assert_eq!(prompt.len(), case.prompt_ids.len());
    assert_eq!(v["stats"]["prompt_tokens"], case.prompt_ids.len());
    let generated = v["generated"].as_array().unwrap();
    let got: Vec<u64> = generated
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = case.generated.iter().map(|t| t.id as u64).collect();
    assert_eq!(got, want, "greedy tokens vs transformers");
    for (t, e) in generated.iter().zip(&case.generated) {
        let top = t["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // greedy: the chosen token is the most likely one, and its logprob is transformers'
        assert_eq!(top[0][0], t["id"]);
        assert!((t["logprob"].as_f64().unwrap() - e.top[0].1).abs() < 2e-3);
        assert!(t["entropy"].as_f64().unwrap() > 0.0);
        assert!(matches!(
            t["phase"].as_str(),
            Some("think") | Some("answer")
        ));
        let routing = t["routing"]
            .as_array()
            .expect("MoE model: routing on every token");
        assert!(!routing.is_empty());
        for r in routing {
            assert_eq!(
                r["experts"].as_array().unwrap().len(),
                r["weights"].as_array().unwrap().len()
            );
        }
    }
    for p in prompt {
        assert!(!p["routing"].as_array().unwrap().is_empty());
    }
}

#[test]
fn chat_prompt_starts_in_the_think_phase() {
    // The R1 template's generation prompt ends inside an open <think>.
    let dir = models_dir().join("deepseek_v3_qlora");
    let out = thinkbench(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--chat",
        "What is 2+2?",
        "--max-new-tokens",
        "3",
        "--temperature",
        "0",
        "--ignore-eos",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &v["generated"][0];
    let think_seen_later = v["generated"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["text"] == "</think>");
    if !think_seen_later {
        assert_eq!(first["phase"], "think");
    }
}

#[test]
fn bad_input_is_one_line_and_a_nonzero_exit() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "generate",
                "--model",
                "/nonexistent/dir",
                "--prompt-ids",
                "1,2",
            ],
            "/nonexistent/dir",
        ),
        (
            vec![
                "generate",
                "--model",
                "tests/fixtures/models/qwen2",
                "--prompt-ids",
                "1,2",
                "--dtype",
                "f64",
            ],
            "--dtype",
        ),
        (
            vec![
                "generate",
                "--model",
                "tests/fixtures/models/qwen2",
                "--prompt-ids",
                "1,999999",
            ],
            "999999",
        ),
        (
            vec![
                "generate",
                "--model",
                "tests/fixtures/models/qwen2",
                "--prompt-ids",
                "1",
                "--device",
                "tpu",
            ],
            "--device",
        ),
    ];
    for (args, must_name) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_thinkbench"))
            .current_dir(repo())
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line, got {err}"
        );
        assert!(err.contains(must_name), "{args:?}: {err}");
    }
}

#[test]
fn generate_chat_without_a_model_uses_the_built_in_one_and_prints_prose() {
    let out = thinkbench(&[
        "generate",
        "--chat",
        "What is 23 + 58?",
        "--temperature",
        "0",
        "--threads",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // The built-in model's answer form; the end-of-sequence marker is not prose.
    assert!(text.contains("The answer is "), "{text}");
    assert!(!text.contains("end▁of▁sentence"), "{text}");
    let json = thinkbench(&[
        "generate",
        "--chat",
        "What is 23 + 58?",
        "--temperature",
        "0",
        "--threads",
        "1",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    let last = v["generated"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["text"], "<｜end▁of▁sentence｜>", "the trace keeps it");
}
