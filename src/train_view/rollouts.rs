//! rollouts.jsonl: one line per prompt group per step, with its G completions, their rewards and
//! advantages. A long run's file is large (every completion's text), so the watcher keeps only an
//! index of where each step's lines are and reads one step when the viewer asks for it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

use super::tail::TailLine;

/// One completion of a group as the trainer logged it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RolloutCompletion {
    #[serde(default)]
    pub text: String,
    /// Generated tokens (end-of-sentence included).
    #[serde(default)]
    pub tokens: usize,
    /// Ran out of tokens instead of ending.
    #[serde(default)]
    pub truncated: bool,
    /// The weighted sum of the rewards.
    #[serde(default)]
    pub reward: f64,
    /// Each reward function's own score.
    #[serde(default)]
    pub rewards: BTreeMap<String, f64>,
    #[serde(default)]
    pub correct: bool,
    #[serde(default)]
    pub extracted: Option<String>,
    /// None when the group was not trained on (skipped for zero std).
    #[serde(default)]
    pub advantage: Option<f64>,
    /// How it reasoned, for tasks that analyse it.
    #[serde(default)]
    pub shape: Option<RolloutShape>,
}

/// A completion's reasoning form as the trainer logged it (`task::Shape`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct RolloutShape {
    /// Worked it out rather than answering at once.
    pub long: bool,
    pub checks: u32,
    pub waits: u32,
    /// Waits whose check followed a really wrong result.
    pub waits_after_slip: u32,
    /// Byte ranges of the text and what they are ("check" or "wait").
    pub marks: Vec<(std::ops::Range<usize>, String)>,
}

/// An earlier question of a rollout's conversation and the reply the model was shown.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RolloutTurn {
    pub prompt: String,
    pub reply: String,
}

/// A prompt's G completions at one step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RolloutGroup {
    pub step: u64,
    pub group: usize,
    /// 0: the step's own draw; more: prompts drawn again to replace zero-std groups.
    #[serde(default)]
    pub round: usize,
    /// Trained on (a zero-std group may be skipped).
    #[serde(default)]
    pub used: bool,
    /// Every completion got the same reward: no advantage, no gradient from this group.
    #[serde(default)]
    pub zero_std: bool,
    #[serde(default)]
    pub prompt: String,
    /// The conversation the question was asked in (empty: asked alone).
    #[serde(default)]
    pub earlier: Vec<RolloutTurn>,
    #[serde(default, deserialize_with = "text_or_number")]
    pub answer: String,
    #[serde(default)]
    pub level: Option<u32>,
    #[serde(default)]
    pub completions: Vec<RolloutCompletion>,
}

/// A step's groups in brief, for navigation before any are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutStep {
    pub step: u64,
    pub groups: usize,
    pub zero_std: usize,
}

/// What the index needs of a line (serde skips the completions' text).
#[derive(Deserialize)]
struct Head {
    step: u64,
    #[serde(default)]
    zero_std: bool,
}

/// Where each step's lines are in rollouts.jsonl.
#[derive(Debug, Default)]
pub struct RolloutIndex {
    steps: BTreeMap<u64, StepLines>,
}

#[derive(Debug, Default)]
struct StepLines {
    ranges: Vec<(u64, u64)>,
    zero_std: usize,
}

impl RolloutIndex {
    pub fn clear(&mut self) {
        self.steps.clear();
    }

    /// Adds lines read from the file; returns the steps they touched, or the first bad line's
    /// number and what is wrong with it.
    pub fn add(&mut self, lines: &[TailLine]) -> (Vec<RolloutStep>, Option<(usize, String)>) {
        let mut touched = Vec::new();
        let mut bad = None;
        for l in lines {
            match serde_json::from_str::<Head>(&l.text) {
                Ok(h) => {
                    let s = self.steps.entry(h.step).or_default();
                    s.ranges.push((l.offset, l.len));
                    s.zero_std += usize::from(h.zero_std);
                    if !touched.contains(&h.step) {
                        touched.push(h.step);
                    }
                }
                Err(e) => {
                    bad.get_or_insert((l.number, e.to_string()));
                }
            }
        }
        let steps = touched
            .into_iter()
            .map(|step| {
                let s = &self.steps[&step];
                RolloutStep {
                    step,
                    groups: s.ranges.len(),
                    zero_std: s.zero_std,
                }
            })
            .collect();
        (steps, bad)
    }

    /// Reads the groups of `step` from `path`.
    pub fn read_step(&self, path: &Path, step: u64) -> Result<Vec<RolloutGroup>, String> {
        let Some(s) = self.steps.get(&step) else {
            return Ok(Vec::new());
        };
        let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut groups = Vec::with_capacity(s.ranges.len());
        for &(offset, len) in &s.ranges {
            let mut buf = vec![0u8; len as usize];
            f.seek(SeekFrom::Start(offset))
                .and_then(|_| f.read_exact(&mut buf))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let g: RolloutGroup = serde_json::from_slice(&buf)
                .map_err(|e| format!("{}: step {step}: {e}", path.display()))?;
            groups.push(g);
        }
        groups.sort_by_key(|g| g.group);
        Ok(groups)
    }
}

fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        v => v.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train_view::tail::LineTail;

    #[test]
    fn the_fixture_run_indexes_by_step_and_reads_one_step() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train_run/rollouts.jsonl");
        let mut tail = LineTail::new(&path);
        let mut index = RolloutIndex::default();
        let (steps, bad) = index.add(&tail.read().unwrap().lines);
        assert_eq!(bad, None);
        assert_eq!(steps.len(), 6);
        assert_eq!(
            steps[2],
            RolloutStep {
                step: 3,
                groups: 2,
                zero_std: 1
            }
        );
        let groups = index.read_step(&path, 3).unwrap();
        assert_eq!(groups.len(), 2);
        let trained = &groups[1];
        assert!(trained.used && !trained.zero_std);
        assert_eq!(trained.completions.len(), 4);
        assert!(trained.completions[0].advantage.unwrap() > 0.0);
        assert!(trained.completions[1].advantage.unwrap() < 0.0);
        assert_eq!(trained.completions[0].rewards["accuracy"], 1.0);
        assert!(index.read_step(&path, 99).unwrap().is_empty());
    }
}
