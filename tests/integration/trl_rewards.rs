//! The exported TRL script's rewards.py scores completions exactly as thinkbench's rewards do.
//!
//! The corpus is built from the rewards' specification (src/train/rewards.rs, the arithmetic
//! task's grader): boxed answers, fractions, thousands separators, `$`, missing or doubled
//! `</think>`, no end-of-sentence, overlong lengths, empty text. It runs through the exported
//! file with the system `python3` (standard library only) and through the Rust rewards; every
//! score must agree to 1e-12.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use thinkbench::export::trl::{rewards_config, REWARDS_PY};
use thinkbench::train::recipe::{parse, GrpoRecipe, Recipe};
use thinkbench::train::rewards::{RewardInput, Rewards};
use thinkbench::train::task;

const EOS: &str = "<｜end▁of▁sentence｜>";

/// (completion, reference answer, tokens, finished)
fn corpus() -> Vec<(String, &'static str, usize, bool)> {
    let e = EOS;
    let mut v: Vec<(String, &'static str, usize, bool)> = vec![
        (
            format!("Add.\n</think>\n\nThe answer is 12.{e}"),
            "12",
            20,
            true,
        ),
        (format!("r</think>\n\nThe answer is 13.{e}"), "12", 20, true),
        (format!("r</think>\\boxed{{12}}{e}"), "12", 9, true),
        (
            format!("r</think>So \\boxed{{\\frac{{1}}{{2}}}}.{e}"),
            "0.5",
            14,
            true,
        ),
        (
            format!("r</think>\\boxed{{-\\dfrac{{3}}{{4}}}}{e}"),
            "-0.75",
            14,
            true,
        ),
        (
            format!("r</think>The answer is 1,000.{e}"),
            "1000",
            12,
            true,
        ),
        (
            format!("r</think>The answer is $12.50.{e}"),
            "12.5",
            12,
            true,
        ),
        (format!("r</think>The answer is 3/4{e}"), "0.75", 12, true),
        (format!("r</think><answer> 42 </answer>{e}"), "42", 12, true),
        (
            format!("r</think>\\boxed{{1}} then \\boxed{{ 2 }}{e}"),
            "2",
            12,
            true,
        ),
        (
            format!("r</think>The answer is: 3.5. Done{e}"),
            "3.5",
            12,
            true,
        ),
        (format!("r</think>The answer is 0012.{e}"), "12", 12, true),
        (format!("r</think>The answer is -7.{e}"), "-7", 12, true),
        (format!("r</think>Three.{e}"), "3", 12, true),
        // No </think>: the thought never closed.
        (format!("The answer is 5.{e}"), "5", 8, true),
        (
            "\\boxed{5} but the thought never closed".into(),
            "5",
            8,
            false,
        ),
        // Doubled </think>.
        (
            format!("a</think>b</think>The answer is 3.{e}"),
            "3",
            12,
            true,
        ),
        (
            format!("<think>a</think>The answer is 3.{e}"),
            "3",
            12,
            true,
        ),
        (format!("</think>The answer is 3.{e}"), "3", 12, true),
        // No end-of-sentence (truncated).
        ("r</think>The answer is 3.".into(), "3", 48, false),
        ("r r r r".into(), "3", 48, false),
        // Text after the end-of-sentence was never generated.
        (
            format!("r</think>The answer is 3.{e}garbage"),
            "3",
            12,
            true,
        ),
        // Overlong: around L_max - L_cache and L_max (48 - 8 = 40 .. 48).
        (format!("r</think>The answer is 3.{e}"), "3", 40, true),
        (format!("r</think>The answer is 3.{e}"), "3", 41, true),
        (format!("r</think>The answer is 3.{e}"), "3", 44, true),
        (format!("r</think>The answer is 3.{e}"), "3", 48, true),
        (format!("r</think>The answer is 3.{e}"), "3", 49, true),
        // Empty.
        (String::new(), "3", 0, false),
        (EOS.into(), "3", 1, true),
        // Trailing text and closing punctuation.
        (format!("r</think>The answer is 3. Yes.{e}"), "3", 12, true),
        (format!("r</think>$\\boxed{{3}}$.{e}"), "3", 12, true),
        (format!("r</think>\\boxed{{unbalanced{e}"), "3", 12, true),
        (format!("r</think>The ANSWER IS 9\nmore{e}"), "9", 12, true),
        (
            format!("r</think>x + 1 is the answer is x+1{e}"),
            "x+1",
            12,
            true,
        ),
        (
            format!("r</think>The answer is \\text{{7}}{e}"),
            "7",
            12,
            true,
        ),
        (format!("r</think>The answer is 1/0{e}"), "1", 12, true),
        (format!("r</think>The answer is 1e3{e}"), "1000", 12, true),
        (
            format!("r</think>\\boxed{{\\frac{{1e3}}{{2}}}}{e}"),
            "500",
            12,
            true,
        ),
        (
            format!("r\u{00a0}</think>\u{2003}The answer is 4.\u{3000}{e}"),
            "4",
            12,
            true,
        ),
        (format!("r</think>The answer is 12.{e}"), "12.0", 12, true),
    ];
    // The same texts, judged as not finished.
    let unfinished: Vec<_> = v
        .iter()
        .take(6)
        .map(|(t, a, n, _)| (t.replace(EOS, ""), *a, *n, false))
        .collect();
    v.extend(unfinished);
    v
}

/// What the specification says of each corpus case (src/train/rewards.rs: the final answer
/// after the last `</think>`, compared as numbers; the format reward's reasoning, one
/// `</think>`, a final answer ending the text, end-of-sentence), in corpus order: (correct with
/// `compare = "numeric"`, format). Both sides are held to it, so a case cannot pass by the two
/// agreeing on a wrong score.
const SPEC: [(bool, bool); 46] = [
    (true, true),   // The answer is 12.
    (false, true),  // 13 for 12
    (true, true),   // \boxed{12}
    (true, true),   // \boxed{\frac{1}{2}}. for 0.5
    (true, true),   // \boxed{-\dfrac{3}{4}}
    (true, true),   // 1,000
    (true, true),   // $12.50.
    (true, true),   // 3/4
    (true, true),   // <answer> 42 </answer>
    (true, true),   // the last box
    (true, false),  // "3.5. Done": right, but text after the answer
    (true, true),   // 0012 equals 12 as a number
    (true, true),   // -7
    (false, false), // "Three.": no final answer
    (false, false), // no </think>
    (false, false), // no </think>, not finished
    (true, false),  // doubled </think>: the answer after the last one, format refused
    (true, false),  // a second <think>
    (true, false),  // no reasoning
    (true, false),  // no end-of-sentence
    (false, false), // truncated mid-thought
    (true, true),   // text after end-of-sentence is not the model's
    (true, true),   // 40 tokens
    (true, true),   // 41
    (true, true),   // 44
    (true, true),   // 48
    (true, true),   // 49
    (false, false), // empty
    (false, false), // end-of-sentence only
    (true, false),  // ". Yes." after the answer
    (true, true),   // $\boxed{3}$.
    (false, false), // an unbalanced box and nothing else
    (true, false),  // "ANSWER IS 9" then a new line of text
    (true, true),   // non-numbers compare without spaces
    (true, true),   // \text{7}
    (false, true),  // 1/0 is no number
    (false, true),  // 1e3: plain answers take no exponent
    (true, true),   // exponents inside a fraction are read
    (true, true),   // Unicode spaces are spaces
    (true, true),   // 12 for 12.0
    // The first six again, without end-of-sentence: same answers, format refused.
    (true, false),
    (false, false),
    (true, false),
    (true, false),
    (true, false),
    (true, false),
];

fn recipe(extra_data: &str, accuracy: &str) -> GrpoRecipe {
    let text = format!(
        r#"
kind = "grpo"
name = "t"
seed = 1
output_dir = "runs/t"
[model]
init = "builtin"
[data]
{extra_data}
[rewards.accuracy]
{accuracy}
[rewards.format]
weight = 0.1
[rewards.overlong]
weight = 0.5
buffer = 8
[generation]
group_size = 4
prompts_per_step = 2
max_new_tokens = 48
temperature = 1.0
[optimizer]
lr = 1e-5
betas = [0.9, 0.99]
eps = 1e-8
weight_decay = 0.0
warmup_steps = 0
min_lr_ratio = 1.0
grad_clip = 1.0
[train]
steps = 1
micro_batch_size = 4
checkpoint_every = 1
"#
    );
    match parse("t.toml", &text) {
        Ok(Recipe::Grpo(r)) => *r,
        other => panic!("{other:?}"),
    }
}

fn python_scores(config: &Value, cases: &[(String, &str, usize, bool)]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rewards.py");
    std::fs::write(&script, REWARDS_PY).unwrap();
    let mut child = match Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "python3 is needed to check the exported rewards.py against thinkbench's rewards \
             (install Python 3; only its standard library is used): {e}"
        ),
    };
    let mut input = json!({ "config": config }).to_string() + "\n";
    for (text, answer, tokens, finished) in cases {
        let line = json!({"text": text, "answer": answer, "tokens": tokens, "finished": finished});
        input.push_str(&(line.to_string() + "\n"));
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "rewards.py failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn compare(r: &GrpoRecipe) -> Vec<(bool, f64, f64)> {
    let rust = Rewards::from_recipe(r, EOS);
    let task = r.data.task.as_deref().map(|t| task::by_name(t).unwrap());
    let mut config = rewards_config(r);
    config["eos_text"] = json!(EOS);
    let cases = corpus();
    let py = python_scores(&config, &cases);
    assert_eq!(py.len(), cases.len());
    let mut out = Vec::new();
    for ((text, answer, tokens, finished), p) in cases.iter().zip(&py) {
        let s = rust.score(&RewardInput {
            completion: text,
            answer,
            tokens: *tokens,
            finished: *finished,
            task: task.as_deref(),
        });
        let at = format!("{text:?} (answer {answer}, {tokens} tokens, finished {finished})");
        let total = p["total"].as_f64().unwrap();
        assert!(
            (total - s.total).abs() <= 1e-12,
            "total {total} vs {} for {at}",
            s.total
        );
        for part in &s.parts {
            let v = p["parts"][part.name].as_f64().unwrap();
            assert!(
                (v - part.value).abs() <= 1e-12,
                "{} {v} vs {} for {at}",
                part.name,
                part.value
            );
        }
        assert_eq!(p["correct"].as_bool(), Some(s.correct), "correct for {at}");
        assert_eq!(
            p["extracted"].as_str(),
            s.extracted.as_deref(),
            "extracted for {at}"
        );
        out.push((
            s.correct,
            s.value("format").unwrap_or(f64::NAN),
            s.value("overlong").unwrap_or(f64::NAN),
        ));
    }
    out
}

#[test]
fn exported_rewards_match_for_jsonl_problems_numeric() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.jsonl");
    std::fs::write(&p, "{\"prompt\": \"1+1?\", \"answer\": \"2\"}\n").unwrap();
    let data = format!("path = {:?}", p.display().to_string());
    let got = compare(&recipe(
        &data,
        "weight = 1.0\ncompare = \"numeric\"\nwrong = -1.0",
    ));
    let cases = corpus();
    assert_eq!(cases.len(), SPEC.len());
    for (((text, answer, tokens, finished), &(correct, format)), g) in
        cases.iter().zip(&SPEC).zip(&got)
    {
        let at = format!("{text:?} (answer {answer}, {tokens} tokens, finished {finished})");
        assert_eq!(g.0, correct, "correct for {at}");
        assert_eq!(g.1, f64::from(u8::from(format)), "format for {at}");
        // DAPO's soft punishment with L_max = 48, L_cache = 8: 0 up to 40, -1 from 48.
        let overlong = match tokens {
            0..=40 => 0.0,
            41..=47 => (40.0 - *tokens as f64) / 8.0,
            _ => -1.0,
        };
        assert_eq!(g.2, overlong, "overlong for {at}");
    }
    // The overlong cases, spelled out: 40, 41, 44, 48, 49 tokens.
    let ramp: Vec<f64> = got[22..27].iter().map(|g| g.2).collect();
    assert_eq!(ramp, [0.0, -0.125, -0.5, -1.0, -1.0]);
}

#[test]
fn exported_rewards_match_for_jsonl_problems_exact() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.jsonl");
    std::fs::write(&p, "{\"prompt\": \"1+1?\", \"answer\": \"2\"}\n").unwrap();
    let data = format!("path = {:?}", p.display().to_string());
    let got = compare(&recipe(
        &data,
        "weight = 2.0\ncompare = \"exact\"\ncorrect = 1.5",
    ));
    // Exact comparison: the same text only (trimmed), so these numbers are wrong answers.
    let cases = corpus();
    for (i, ((text, answer, ..), &(numeric, _))) in cases.iter().zip(&SPEC).enumerate() {
        let exact_differs = matches!(i, 3 | 4 | 5 | 6 | 7 | 11 | 34 | 37 | 39 | 43 | 44 | 45);
        let want = numeric && !exact_differs;
        assert_eq!(
            got[i].0, want,
            "correct (exact) for {text:?} (answer {answer})"
        );
    }
}

#[test]
fn exported_rewards_match_for_the_builtin_task() {
    let got = compare(&recipe(
        "task = \"arithmetic\"\nlevels = [1, 2]",
        "weight = 1.0",
    ));
    // The task's grader: an integer after the last "The answer is " (or the last box's text),
    // equal to the answer exactly; the form is "The answer is N." and nothing else.
    let cases = corpus();
    let correct: Vec<usize> = (0..cases.len()).filter(|&i| got[i].0).collect();
    assert_eq!(
        correct,
        [0, 2, 9, 12, 16, 17, 18, 19, 21, 22, 23, 24, 25, 26, 29, 30, 35, 38, 40, 42],
        "the cases the arithmetic grader finds right"
    );
    let formatted: Vec<usize> = (0..cases.len()).filter(|&i| got[i].1 == 1.0).collect();
    assert_eq!(
        formatted,
        [0, 1, 11, 12, 21, 22, 23, 24, 25, 26, 38, 39],
        "the cases in the arithmetic task's own form"
    );
}
