//! GRPO's prompts: problems with a reference answer, from a built-in task's training split (by
//! level) or from a JSONL file (`{"prompt": "...", "answer": "..."}` per line). A task's problems
//! can be asked late in a conversation: after earlier training-split questions with their
//! answers, as the workbench sends a follow-up.
//!
//! The problems of step `s` are a pure function of the recipe seed and `s` (and the resampling
//! round), so a resumed run draws exactly what an uninterrupted one would: the data position is
//! the step. A JSONL file is walked in a fresh seeded order each epoch, without repeats within an
//! epoch.

use std::ops::RangeInclusive;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::Value;

use super::conversation::{answered, training_turns, EarlierTurn};
use super::data::Sampler;
use super::recipe::GrpoDataSection;
use super::task::{self, content_hash, Task};

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The user message (instruction included).
    pub prompt: String,
    /// The reference final answer.
    pub answer: String,
    /// The task level, for a built-in task.
    pub level: Option<u32>,
    /// The conversation before the question (empty: asked alone).
    pub earlier: Vec<EarlierTurn>,
}

/// Reads a JSONL file of problems; an error names the file and line.
pub fn read_jsonl(path: &Path, instruction: Option<&str>) -> Result<Vec<Problem>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let msg = match e.kind() {
            std::io::ErrorKind::NotFound => "not found".to_string(),
            _ => e.to_string(),
        };
        format!("{}: {msg}", path.display())
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}: line {}", path.display(), i + 1);
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("{}: invalid JSON: {e}", at()))?;
        let field = |name: &str| -> Result<String, String> {
            match v.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                Some(_) => Err(format!("{}: \"{name}\" must be a string", at())),
                None => Err(format!("{}: missing \"{name}\"", at())),
            }
        };
        let mut prompt = field("prompt")?;
        if let Some(ins) = instruction.filter(|s| !s.is_empty()) {
            prompt = format!("{prompt}\n{ins}");
        }
        out.push(Problem {
            prompt,
            answer: field("answer")?,
            level: None,
            earlier: Vec::new(),
        });
    }
    if out.is_empty() {
        return Err(format!("{}: no problems", path.display()));
    }
    Ok(out)
}

/// Where a run's problems come from.
pub enum Source {
    Task {
        task: Box<dyn Task>,
        levels: Vec<u32>,
        weights: Option<Vec<f64>>,
        /// How many earlier turns come before each question (`data.earlier_turns`).
        earlier_turns: RangeInclusive<u32>,
        seed: u64,
    },
    Jsonl {
        problems: Vec<Problem>,
        seed: u64,
    },
}

impl Source {
    /// The recipe's data section (JSONL paths relative to the working directory).
    pub fn from_recipe(d: &GrpoDataSection, seed: u64) -> Result<Self, String> {
        if let Some(name) = &d.task {
            return Ok(Source::Task {
                task: task::by_name(name)?,
                levels: d.levels.clone().unwrap_or_default(),
                weights: d.level_weights.clone(),
                earlier_turns: match d.earlier_turns.as_deref() {
                    Some(&[a, b]) => a..=b,
                    _ => 0..=0,
                },
                seed,
            });
        }
        let path = d.path.as_ref().ok_or("data: neither a task nor a path")?;
        Ok(Source::Jsonl {
            problems: read_jsonl(path, d.instruction.as_deref())?,
            seed,
        })
    }

    /// The built-in task, whose grader scores accuracy.
    pub fn task(&self) -> Option<&dyn Task> {
        match self {
            Source::Task { task, .. } => Some(task.as_ref()),
            Source::Jsonl { .. } => None,
        }
    }

    /// The `n` problems of `step`; round 0 is the step's batch, later rounds replace groups that
    /// taught nothing (DAPO's dynamic sampling), each from a stream of its own.
    pub fn draw(&self, step: u64, round: usize, n: usize) -> Vec<Problem> {
        match self {
            Source::Task {
                task,
                levels,
                weights,
                earlier_turns,
                seed,
            } => {
                let s = if round == 0 {
                    *seed
                } else {
                    content_hash(&[*seed, 0x2E5A, round as u64])
                };
                let sampler = Sampler::new(task.as_ref(), levels, weights.as_deref(), s);
                let earlier = training_turns(&sampler, step, n, earlier_turns.clone());
                sampler
                    .step(step, n)
                    .into_iter()
                    .zip(earlier)
                    .map(|(ex, earlier)| Problem {
                        prompt: ex.prompt,
                        answer: ex.answer,
                        level: Some(ex.level),
                        earlier: answered(&earlier),
                    })
                    .collect()
            }
            Source::Jsonl { problems, seed } => {
                let len = problems.len() as u64;
                if round > 0 {
                    // Replacements: uniform draws from their own stream.
                    let mut rng =
                        StdRng::seed_from_u64(content_hash(&[*seed, 0x2E5A, step, round as u64]));
                    return (0..n)
                        .map(|_| {
                            problems[rand::Rng::random_range(&mut rng, 0..len) as usize].clone()
                        })
                        .collect();
                }
                (0..n as u64)
                    .map(|k| {
                        let pos = step * n as u64 + k;
                        let (epoch, i) = (pos / len, pos % len);
                        problems[epoch_order(*seed, epoch, len as usize)[i as usize]].clone()
                    })
                    .collect()
            }
        }
    }
}

/// The order in which epoch `epoch` walks `len` problems.
fn epoch_order(seed: u64, epoch: u64, len: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut StdRng::seed_from_u64(content_hash(&[
        seed, 0xE90C, epoch,
    ])));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonl(lines: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.jsonl");
        std::fs::write(&p, lines).unwrap();
        (dir, p)
    }

    #[test]
    fn jsonl_reads_and_names_bad_lines() {
        let (_d, p) = jsonl(
            "{\"prompt\": \"1+1?\", \"answer\": \"2\"}\n\n{\"prompt\": \"x\", \"answer\": 3}\n",
        );
        let got = read_jsonl(&p, Some("Box it.")).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].prompt, "1+1?\nBox it.");
        assert_eq!(got[1].answer, "3");
        let (_d, p) = jsonl("{\"prompt\": \"a\", \"answer\": \"1\"}\n{\"prompt\": \"b\"}\n");
        let e = read_jsonl(&p, None).unwrap_err();
        assert!(e.ends_with("p.jsonl: line 2: missing \"answer\""), "{e}");
        let (_d, p) = jsonl("{\"prompt\": [1], \"answer\": \"1\"}\n");
        assert!(read_jsonl(&p, None)
            .unwrap_err()
            .ends_with("line 1: \"prompt\" must be a string"));
        let (_d, p) = jsonl("not json\n");
        assert!(read_jsonl(&p, None)
            .unwrap_err()
            .contains("line 1: invalid JSON"));
    }

    #[test]
    fn jsonl_epochs_cover_every_problem_once() {
        let lines: String = (0..10)
            .map(|i| format!("{{\"prompt\": \"p{i}\", \"answer\": \"{i}\"}}\n"))
            .collect();
        let (_d, p) = jsonl(&lines);
        let src = Source::Jsonl {
            problems: read_jsonl(&p, None).unwrap(),
            seed: 4,
        };
        // 5 steps of 2 = one epoch: every problem exactly once.
        let mut seen: Vec<String> = (0..5)
            .flat_map(|s| src.draw(s, 0, 2))
            .map(|p| p.answer)
            .collect();
        seen.sort();
        let mut want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        want.sort();
        assert_eq!(seen, want);
        // Pure function of (seed, step, round).
        assert_eq!(src.draw(7, 0, 2), src.draw(7, 0, 2));
        assert_eq!(src.draw(7, 1, 3), src.draw(7, 1, 3));
    }

    #[test]
    fn task_draws_follow_the_levels() {
        let src = Source::Task {
            task: task::by_name("arithmetic").unwrap(),
            levels: vec![3],
            weights: None,
            earlier_turns: 0..=0,
            seed: 1,
        };
        let a = src.draw(2, 0, 4);
        assert!(a.iter().all(|p| p.level == Some(3) && p.earlier.is_empty()));
        assert_eq!(a, src.draw(2, 0, 4));
        assert_ne!(
            a,
            src.draw(2, 1, 4),
            "a resampling round draws new problems"
        );
    }

    #[test]
    fn task_problems_can_come_late_in_a_conversation() {
        let alone = Source::Task {
            task: task::by_name("arithmetic").unwrap(),
            levels: vec![5, 6],
            weights: None,
            earlier_turns: 0..=0,
            seed: 3,
        };
        let late = Source::Task {
            task: task::by_name("arithmetic").unwrap(),
            levels: vec![5, 6],
            weights: None,
            earlier_turns: 4..=6,
            seed: 3,
        };
        let (a, b) = (alone.draw(9, 0, 16), late.draw(9, 0, 16));
        for (x, y) in a.iter().zip(&b) {
            // The same questions, now after 4-6 answered ones.
            assert_eq!((&x.prompt, &x.answer), (&y.prompt, &y.answer));
            assert!((4..=6).contains(&y.earlier.len()), "{}", y.earlier.len());
            for t in &y.earlier {
                assert!(t.reply.starts_with("The answer is "), "{}", t.reply);
                assert_ne!(t.prompt, "");
            }
        }
        assert_eq!(b, late.draw(9, 0, 16), "a resumed run draws the same turns");
        assert_ne!(b[0].earlier, late.draw(9, 1, 16)[0].earlier);
    }
}
