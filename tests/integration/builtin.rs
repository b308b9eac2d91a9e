//! The shipped built-in model (models/thinkbench-tiny): transformers 5.24 loads it as it is and
//! agrees with thinkbench on the chat prompt ids, greedy tokens, top-5 logprobs and routing
//! (tests/fixtures/builtin/expected.json, written by `scripts/make_fixtures.py builtin`). Plus the
//! `train` and `eval` commands' answers to bad input.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use serde::Deserialize;
use tch::Device;
use thinkbench::model::{DType, Model};
use thinkbench::runtime::{generate, GenerateRequest, SamplingParams};
use thinkbench::text::{ChatMessage, TextCodec};

use crate::common::*;

const LOGPROB_TOL: f64 = 2e-3;

fn builtin_dir() -> PathBuf {
    repo().join("models/thinkbench-tiny")
}

#[derive(Debug, Deserialize)]
struct BuiltinExpected {
    model_type: String,
    cases: Vec<BuiltinCase>,
}

#[derive(Debug, Deserialize)]
struct BuiltinCase {
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    case: Case,
}

fn thinkbench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_thinkbench"))
        .args(args)
        .output()
        .expect("binary runs")
}

#[test]
fn builtin_model_matches_transformers() {
    let dir = builtin_dir();
    let text = std::fs::read_to_string(repo().join("tests/fixtures/builtin/expected.json")).expect(
        "tests/fixtures/builtin/expected.json (run `python3 scripts/make_fixtures.py builtin`)",
    );
    let expected: BuiltinExpected = serde_json::from_str(&text).unwrap();
    assert_eq!(expected.model_type, "deepseek_v3");
    assert!(!expected.cases.is_empty());
    let model = Model::load(&dir, DType::F32, Device::Cpu).expect("models/thinkbench-tiny loads");
    assert!(
        model.unused_weights.is_empty(),
        "{:?}",
        model.unused_weights
    );
    let codec = TextCodec::load(&dir).unwrap();
    for (ci, bc) in expected.cases.iter().enumerate() {
        let case = &bc.case;
        let what = format!("builtin case {ci} ({:?})", bc.messages[0].content);
        // The chat template renders and tokenises as transformers' apply_chat_template does.
        let prompt = codec.encode_chat(&bc.messages, true).unwrap();
        assert_eq!(prompt.ids, case.prompt_ids, "{what}: prompt ids");
        let req = GenerateRequest {
            max_new_tokens: case.generated.len(),
            sampling: SamplingParams::greedy(),
            ignore_eos: true,
            top_logprobs: case.generated[0].top.len(),
            trace_routing: true,
            ..GenerateRequest::new(prompt.ids.clone())
        };
        let gen = generate(
            &model,
            Some(&codec),
            &req,
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap();
        let c = &gen.completions[0];
        let ours: Vec<u32> = c.tokens.iter().map(|t| t.id).collect();
        let theirs: Vec<u32> = case.generated.iter().map(|t| t.id).collect();
        assert_eq!(ours, theirs, "{what}: greedy tokens");
        for (step, (o, t)) in c.tokens.iter().zip(&case.generated).enumerate() {
            let oid: Vec<u32> = o.top.iter().map(|p| p.0).collect();
            let tid: Vec<u32> = t.top.iter().map(|p| p.0).collect();
            assert_eq!(oid, tid, "{what} step {step}: top ids");
            for (a, b) in o.top.iter().zip(&t.top) {
                assert!(
                    (a.1 as f64 - b.1).abs() <= LOGPROB_TOL,
                    "{what} step {step}: logprob of {} is {} vs transformers {}",
                    a.0,
                    a.1,
                    b.1
                );
            }
        }
        // Routing of every prompt token in every MoE layer (pairs compared by expert id).
        assert_eq!(gen.prompt.len(), case.prompt_routing.len(), "{what}");
        for (pos, (o, t)) in gen.prompt.iter().zip(&case.prompt_routing).enumerate() {
            assert_eq!(o.routing.len(), t.len(), "{what} token {pos}");
            for (ol, tl) in o.routing.iter().zip(t) {
                let mut pairs: Vec<(u32, f32)> = ol
                    .experts
                    .iter()
                    .copied()
                    .zip(ol.weights.iter().copied())
                    .collect();
                pairs.sort_by_key(|p| p.0);
                let ids: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                assert_eq!(ids, tl.experts, "{what} token {pos} layer {}", tl.layer);
                for (p, w) in pairs.iter().zip(&tl.weights) {
                    assert!((p.1 as f64 - w).abs() <= 1e-4, "{what} token {pos}: weight");
                }
            }
        }
    }
}

#[test]
fn builtin_model_is_small_and_complete() {
    let dir = builtin_dir();
    let mut total = 0;
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        let meta = std::fs::metadata(dir.join(name)).unwrap_or_else(|_| panic!("{name} missing"));
        total += meta.len();
    }
    assert!(total < 20 * 1024 * 1024, "{total} bytes");
    // No trainer state or temporaries in the shipped folder.
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(
            !n.starts_with('.') && n != "optimizer.safetensors" && n != "trainer_state.json",
            "{n}"
        );
    }
}

#[test]
fn eval_rejects_an_unknown_task_in_one_line() {
    let out = thinkbench(&[
        "eval",
        "--model",
        builtin_dir().to_str().unwrap(),
        "--task",
        "chess",
        "--n",
        "2",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "error: --task: unknown task \"chess\" (known: arithmetic, multiplication)"
    );
}

#[test]
fn eval_reports_json_on_the_builtin_model() {
    let out = thinkbench(&[
        "eval",
        "--model",
        builtin_dir().to_str().unwrap(),
        "--task",
        "arithmetic",
        "--n",
        "2",
        "--levels",
        "1",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["n"], 2);
    assert_eq!(v["by_level"][0]["level"], 1);
    assert!(v["accuracy"].as_f64().unwrap() >= 0.0);
    let load = v["expert_load"].as_array().unwrap();
    assert!(!load.is_empty(), "MoE model: expert load per layer");
    let share: f64 = load[0]["share"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .sum();
    assert!((share - 1.0).abs() < 1e-9);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
}

/// `eval --turns 3`: every problem asked alone and as the 2nd and 3rd question. The table's
/// numbers are recomputed from the items, turn 1 is the plain evaluation, and a 3rd-turn
/// completion is generated again here from its conversation, rendered by the chat template;
/// `--turn 3` asks exactly the 3rd questions.
#[test]
fn eval_asks_each_problem_as_a_later_turn() {
    let dir = builtin_dir();
    let run_with = |flag: &str, turns: &str| {
        let out = thinkbench(&[
            "eval",
            "--model",
            dir.to_str().unwrap(),
            "--task",
            "arithmetic",
            "--n",
            "4",
            "--levels",
            "1-2",
            flag,
            turns,
            "--threads",
            "1",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("one JSON object")
    };
    let run = |turns: &str| run_with("--turns", turns);
    let v = run("3");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 12);
    assert_eq!(v["n"], 12);
    let by_turn = v["by_turn"].as_array().unwrap();
    assert_eq!(by_turn.len(), 3);
    for (k, t) in by_turn.iter().enumerate() {
        let these: Vec<&serde_json::Value> = items.iter().filter(|i| i["turn"] == k + 1).collect();
        assert_eq!(t["turn"], k + 1);
        assert_eq!(t["n"], these.len());
        assert_eq!(these.len(), 4);
        let right = these.iter().filter(|i| i["correct"] == true).count();
        assert!((t["accuracy"].as_f64().unwrap() - right as f64 / 4.0).abs() < 1e-12);
        for i in &these {
            let earlier = i["earlier"].as_array().map_or(0, Vec::len);
            assert_eq!(earlier, k, "turn {} has {k} earlier turns", k + 1);
        }
    }
    // Turn 1 is the single-turn evaluation, problem for problem.
    let plain = run("1");
    let firsts: Vec<&serde_json::Value> = items.iter().filter(|i| i["turn"] == 1).collect();
    for (a, b) in firsts.iter().zip(plain["items"].as_array().unwrap()) {
        assert_eq!(a["prompt"], b["prompt"]);
        assert_eq!(a["completion"], b["completion"]);
    }
    // The same problem as the 2nd and 3rd question: turn 2's history is turn 3's first turn,
    // with the earlier problem's correct answer as the reply.
    let third = items
        .iter()
        .find(|i| i["turn"] == 3)
        .expect("a third-turn item");
    let second = items
        .iter()
        .find(|i| i["turn"] == 2 && i["prompt"] == third["prompt"])
        .unwrap();
    assert_eq!(second["earlier"][0], third["earlier"][0]);
    // --turn 3: the third questions alone, the same conversations and completions.
    let only = run_with("--turn", "3");
    let thirds: Vec<&serde_json::Value> = items.iter().filter(|i| i["turn"] == 3).collect();
    let got = only["items"].as_array().unwrap();
    assert_eq!(got.len(), thirds.len());
    assert_eq!(only["by_turn"].as_array().unwrap().len(), 1);
    for (a, b) in got.iter().zip(&thirds) {
        assert_eq!(a["turn"], 3);
        assert_eq!(
            (&a["prompt"], &a["earlier"], &a["completion"]),
            (&b["prompt"], &b["earlier"], &b["completion"])
        );
    }
    let mut messages = Vec::new();
    for e in third["earlier"].as_array().unwrap() {
        let reply = e["reply"].as_str().unwrap();
        assert!(reply.starts_with("The answer is ") && reply.ends_with('.'));
        assert_ne!(e["prompt"], third["prompt"]);
        messages.push(ChatMessage::user(e["prompt"].as_str().unwrap()));
        messages.push(ChatMessage::assistant(reply));
    }
    messages.push(ChatMessage::user(third["prompt"].as_str().unwrap()));
    let model = Model::load(&dir, DType::F32, Device::Cpu).unwrap();
    let codec = TextCodec::load(&dir).unwrap();
    let prompt = codec.encode_chat(&messages, true).unwrap();
    let req = GenerateRequest {
        max_new_tokens: 512,
        sampling: SamplingParams::greedy(),
        eos_ids: codec.eos_ids().to_vec(),
        ..GenerateRequest::new(prompt.ids)
    };
    let gen = generate(
        &model,
        Some(&codec),
        &req,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        gen.completions[0].text,
        third["completion"].as_str().unwrap()
    );
}

/// A conversation longer than the built-in model's 512-token context: `record` keeps going, and
/// the replies past that point say how many of the oldest turns their prompt left out. Checked
/// on the saved session: each such prompt leaves the reply its budget, is the thread without
/// those turns (rendered here by the chat template), and the reply before it saw everything.
#[test]
fn a_long_conversation_drops_its_oldest_turns_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out_file = tmp.path().join("long.json");
    // About 19 tokens a turn: the 14th or so question no longer fits with 240 tokens to spare.
    let questions: Vec<String> = (0..20)
        .map(|i| format!("What is {} + {}?", 10 + i, 3 * i))
        .collect();
    let mut args = vec![
        "record".to_string(),
        "--model".into(),
        builtin_dir().display().to_string(),
        "--out".into(),
        out_file.display().to_string(),
        "--temperature".into(),
        "0".into(),
        "--max-tokens".into(),
        "240".into(),
    ];
    args.extend(questions.iter().cloned());
    let out = Command::new(env!("CARGO_BIN_EXE_thinkbench"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the context is full"),
        "record says so"
    );
    let session: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let nodes = session["conversation"]["nodes"].as_array().unwrap();
    let replies: Vec<&serde_json::Value> = nodes
        .iter()
        .map(|n| &n["message"])
        .filter(|m| m["role"] == "assistant")
        .collect();
    assert_eq!(replies.len(), 20);
    let codec = TextCodec::load(&builtin_dir()).unwrap();
    let (open, close) = codec.think_ids().unwrap();
    let special: Vec<u64> = [open, close]
        .iter()
        .chain(codec.eos_ids())
        .map(|&i| i as u64)
        .collect();
    let answer = |m: &serde_json::Value| -> String {
        // The reply's text after the thought, as the template gets it.
        let text: String = m["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["phase"] == "answer" && !special.contains(&t["id"].as_u64().unwrap()))
            .map(|t| t["text"].as_str().unwrap())
            .collect();
        text.trim().to_string()
    };
    let dropped = |m: &serde_json::Value| m["dropped_turns"].as_u64().unwrap_or(0) as usize;
    let first_trimmed = replies
        .iter()
        .position(|m| dropped(m) > 0)
        .expect("a reply past the context's end");
    assert!(first_trimmed >= 8, "many turns fit before");
    assert_eq!(dropped(replies[first_trimmed - 1]), 0);
    for (k, m) in replies.iter().enumerate().skip(first_trimmed) {
        let d = dropped(m);
        assert!(d > 0 && d < k + 1, "reply {k}: {d} turns left out");
        let prompt: Vec<u64> = m["prompt"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect();
        assert!(
            prompt.len() + 240 <= 512,
            "reply {k}: {} prompt tokens",
            prompt.len()
        );
        let mut messages = Vec::new();
        for j in d..k {
            messages.push(ChatMessage::user(questions[j].as_str()));
            messages.push(ChatMessage::assistant(answer(replies[j])));
        }
        messages.push(ChatMessage::user(questions[k].as_str()));
        let want: Vec<u64> = codec
            .encode_chat(&messages, true)
            .unwrap()
            .ids
            .iter()
            .map(|&i| i as u64)
            .collect();
        assert_eq!(
            prompt, want,
            "reply {k}: the thread without its {d} oldest turns"
        );
        // One more turn would not have left the reply its budget.
        let mut more = vec![
            ChatMessage::user(questions[d - 1].as_str()),
            ChatMessage::assistant(answer(replies[d - 1])),
        ];
        more.extend(messages);
        assert!(codec.encode_chat(&more, true).unwrap().ids.len() + 240 > 512);
    }
}

#[test]
fn train_rejects_a_bad_recipe_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(repo().join("recipes/tiny-sft.toml")).unwrap();
    let bad = good.replace("batch_size = 32", "batch_size = \"thirty-two\"");
    assert_ne!(bad, good, "the recipe has the key this test breaks");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let out = thinkbench(&["train", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "error: {}: key train.batch_size: expected a non-negative integer, found \"thirty-two\"",
            path.display()
        )
    );
    let missing = good.replace("lr = ", "# lr = ");
    std::fs::write(&path, missing).unwrap();
    let out = thinkbench(&["train", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: {}: key optimizer.lr: missing", path.display())
    );
}

#[test]
fn train_refuses_an_unwritable_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(repo().join("recipes/tiny-sft.toml")).unwrap();
    let bad = good.replace(
        "output_dir = \"runs/tiny-sft\"",
        "output_dir = \"/proc/thinkbench-no-such-place\"",
    );
    assert_ne!(bad, good);
    let path = dir.path().join("r.toml");
    std::fs::write(&path, bad).unwrap();
    let out = thinkbench(&["train", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.trim()
            .starts_with("error: output_dir /proc/thinkbench-no-such-place: cannot create it"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn every_shipped_recipe_parses() {
    let mut n = 0;
    for e in std::fs::read_dir(repo().join("recipes")).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "toml") {
            thinkbench::train::recipe::load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1);
}
