//! GRPO from the command line: the reward playground, recipe errors, a short run.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::*;

fn thinkbench(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_thinkbench"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

const EOS: &str = "<｜end▁of▁sentence｜>";

fn tiny_recipe() -> String {
    repo().join("recipes/tiny-grpo.toml").display().to_string()
}

fn part(v: &Value, name: &str) -> Option<f64> {
    v["parts"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["value"].as_f64())
}

#[test]
fn reward_playground_scores_text_with_the_recipe_rewards() {
    let text = format!(
        "4821+397: 1+7+0=8, 8\n482+39: 2+9+0=11, 18\n48+3: 8+3+1=12, 218\n4+0: 4+0+1=5, 5218\n</think>\n\nThe answer is 5218.{EOS}"
    );
    let recipe = tiny_recipe();
    let run = |answer: &str, body: &str| -> Value {
        let out = thinkbench(
            &[
                "reward", &recipe, "--text", "-", "--answer", answer, "--json",
            ],
            Some(body),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = run("5218", &text);
    assert_eq!(v["correct"], true);
    assert_eq!(v["extracted"], "5218");
    assert_eq!(v["finished"], true);
    let parts = v["parts"].as_array().unwrap().clone();
    assert_eq!(part(&v, "accuracy"), Some(1.0));
    assert_eq!(part(&v, "format"), Some(1.0));
    // The recipe's weighted sum.
    let total: f64 = parts
        .iter()
        .map(|p| p["value"].as_f64().unwrap() * p["weight"].as_f64().unwrap())
        .sum();
    assert!((v["total"].as_f64().unwrap() - total).abs() < 1e-12);
    // A wrong answer, and text after the answer (bad format) from a file.
    let v = run("5219", &text);
    assert_eq!(v["correct"], false);
    assert_eq!(part(&v, "accuracy"), Some(0.0));
    assert_eq!(part(&v, "format"), Some(1.0));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.txt");
    std::fs::write(&f, text.replace("5218.", "5218. Sure?")).unwrap();
    let out = thinkbench(
        &[
            "reward",
            &recipe,
            "--text",
            f.to_str().unwrap(),
            "--answer",
            "5218",
        ],
        None,
    );
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("format"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("format") && l.contains(" 0.000 ")),
        "{table}"
    );
}

#[test]
fn bad_grpo_recipes_fail_naming_the_key() {
    let good = std::fs::read_to_string(repo().join("recipes/tiny-grpo.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (from, to, want) in [
        (
            "loss = \"dapo\"",
            "loss = \"ppo\"",
            "key grpo.loss: unknown value \"ppo\"",
        ),
        (
            "group_size = ",
            "group_size = 1\n#",
            "key generation.group_size: must be at least 2",
        ),
        (
            "[rewards.format]",
            "[rewards.style]",
            "key rewards.style: unknown key",
        ),
    ] {
        assert!(good.contains(from), "{from}");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
        let out = thinkbench(&["train", path.to_str().unwrap()], None);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        let out = thinkbench(
            &["reward", path.to_str().unwrap(), "--text", "-"],
            Some("x"),
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains(want));
    }
}

#[test]
fn a_short_grpo_run_from_the_command_line() {
    let good = std::fs::read_to_string(repo().join("recipes/tiny-grpo.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let mut text = String::new();
    // Keep the recipe, shrink the run: one step of two small groups, no evaluation.
    for line in good.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let line = match key {
            "output_dir" => format!("output_dir = {:?}", out_dir.display().to_string()),
            "steps" => "steps = 2".into(),
            "prompts_per_step" => "prompts_per_step = 2".into(),
            "group_size" => "group_size = 4".into(),
            _ => line.to_string(),
        };
        text.push_str(&line);
        text.push('\n');
    }
    let path = dir.path().join("r.toml");
    std::fs::write(&path, &text).unwrap();
    let p = path.to_str().unwrap();
    let out = thinkbench(&["train", p, "--no-eval", "--stop-after", "1"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = thinkbench(&["train", p, "--no-eval", "--resume"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("step    2/2"), "{stdout}");
    let metrics = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    let steps: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("reward").is_some())
        .collect();
    assert_eq!(steps.len(), 2);
    for k in [
        "reward",
        "reward_std",
        "accuracy",
        "entropy",
        "frac_reward_zero_std",
        "completions/mean_length",
    ] {
        assert!(steps[1][k].is_number(), "{k}");
    }
    // The checkpoint is a model directory the engine opens.
    let ck = out_dir.join("checkpoints/step-00000002");
    let out = Command::new(env!("CARGO_BIN_EXE_thinkbench"))
        .args([
            "generate",
            "--model",
            ck.to_str().unwrap(),
            "--chat",
            "What is 2 + 3?",
            "--temperature",
            "0",
            "--max-new-tokens",
            "40",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lora_adapters_merge_from_the_command_line() {
    let good = std::fs::read_to_string(repo().join("recipes/tiny-grpo.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let mut text = String::new();
    for line in good.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let line = match key {
            "output_dir" => format!("output_dir = {:?}", out_dir.display().to_string()),
            "steps" => "steps = 2".into(),
            "prompts_per_step" => "prompts_per_step = 2".into(),
            "group_size" => "group_size = 4".into(),
            "temperature" => "temperature = 1.6".into(),
            "lr" => "lr = 1e-3".into(),
            _ => line.to_string(),
        };
        text.push_str(&line);
        text.push('\n');
    }
    text = text.replace(
        "[train]",
        "[lora]\nrank = 2\nalpha = 4.0\ntarget_modules = [\"q_b_proj\", \"o_proj\"]\n[train]",
    );
    let path = dir.path().join("r.toml");
    std::fs::write(&path, &text).unwrap();
    let out = thinkbench(&["train", path.to_str().unwrap(), "--no-eval"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ck = out_dir.join("checkpoints/step-00000002");
    assert!(ck.join("adapter_model.safetensors").is_file());
    let merged = dir.path().join("merged");
    let base = repo().join("models/thinkbench-tiny");
    let out = thinkbench(
        &[
            "merge",
            "--base",
            base.to_str().unwrap(),
            "--adapter",
            ck.to_str().unwrap(),
            "--out",
            merged.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("merged 8 adapted weights"), "{err}");
    // The merged model generates what the trained checkpoint generates.
    let gen = |m: &std::path::Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_thinkbench"))
            .args([
                "generate",
                "--model",
                m.to_str().unwrap(),
                "--chat",
                "What is 41 + 27?",
            ])
            .args(["--temperature", "0", "--max-new-tokens", "60", "--json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["generated"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(gen(&merged), gen(&ck));
}
