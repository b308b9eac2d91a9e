//! Rule-based rewards, as DeepSeek-R1 used them: no reward model, only checks a program can make.
//!
//! - `accuracy`: the final answer after the reasoning (`\boxed{…}`, `<answer>…</answer>`, "The answer
//!   is …", or a built-in task's own form) against the reference, exactly or as numbers.
//! - `format`: the completion is reasoning, one `</think>`, an answer, end-of-sentence, and nothing
//!   else. The R1 template's generation prompt already opened `<think>`, so a completion starts
//!   inside the thought and must not open another.
//! - `overlong`: DAPO's soft overlong punishment, a function of the completion's length in tokens.
//!
//! Each reward returns its value (before its weight) and named sub-metrics; the recipe's weighted
//! sum is the reward GRPO's advantages are computed from.
//!
//! Every reward is one type implementing [`Reward`] (what it scores) and [`RewardKind`] (its name
//! in `[rewards.NAME]`; serde reads its parameters from that table). Adding one takes its own
//! file here and one line in [`registry`]'s list; the recipe, the scorer, the metrics
//! (`rewards/NAME/mean`) and `thinkbench reward` then know it.
//!
//! - `extract`   answer extraction shared by the rewards: the part after `</think>`, boxed answers,
//!   numbers
//! - `registry`  the list of rewards, and the recipe's `[rewards]` section read through it

mod accuracy;
mod extract;
mod format;
mod overlong;
mod registry;

use std::fmt::Debug;

use serde::Serialize;

use super::recipe::{Check, GrpoRecipe, RecipeError};
use super::task::Task;

pub use accuracy::{answers_match, AccuracyReward, Compare};
pub use extract::{answer_section, extract_final_answer, last_boxed, parse_number};
pub use format::{format, FormatReward};
pub use overlong::{overlong_penalty, OverlongReward};
pub use registry::RewardsSection;

/// One rule-based reward: its parameters are the fields of its `[rewards.NAME]` table.
pub trait Reward: Debug + Send + Sync + std::any::Any + Erased {
    /// The weight of this reward in the sum.
    fn weight(&self) -> f64;

    /// The reward of one completion (before its weight) and its sub-metrics.
    fn score(&self, ctx: &RewardContext) -> Verdict;

    /// Range checks that serde cannot express, against the whole recipe; errors name the key
    /// (`rewards.NAME.KEY`). Run after `[generation]` is checked.
    fn validate(&self, _c: &Check, _recipe: &GrpoRecipe) -> Result<(), RecipeError> {
        Ok(())
    }

    /// Whether the reward needs the reference answer (`thinkbench reward` leaves it out when no
    /// `--answer` is given).
    fn needs_answer(&self) -> bool {
        false
    }
}

/// What registering a reward takes besides [`Reward`]: its name, and serde to read its parameters
/// (`deny_unknown_fields`, so a typo is an error naming the key) and write them into a run's
/// `recipe.json`.
pub trait RewardKind: Reward + serde::de::DeserializeOwned + Serialize + PartialEq {
    /// The name in `[rewards.NAME]`, in scores and in metrics (`rewards/NAME/mean`).
    const NAME: &'static str;
}

/// What a boxed [`Reward`] needs of its [`RewardKind`]: written once, here, for every kind.
pub trait Erased {
    fn name(&self) -> &'static str;
    /// The parameters as `recipe.json` records them (and as two recipes are compared).
    fn params(&self) -> serde_json::Value;
}

impl<R: RewardKind> Erased for R {
    fn name(&self) -> &'static str {
        R::NAME
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("reward parameters are plain data")
    }
}

/// What a reward looks at.
pub struct RewardInput<'a> {
    /// The generated text after the prompt (special tokens rendered as text, end-of-sentence
    /// included when generation stopped on it).
    pub completion: &'a str,
    /// The reference answer.
    pub answer: &'a str,
    /// Generated tokens (end-of-sentence included).
    pub tokens: usize,
    /// Generation ended with end-of-sentence (not by running out of tokens).
    pub finished: bool,
    /// The built-in task the problem came from, whose grader decides accuracy.
    pub task: Option<&'a dyn Task>,
}

/// What one reward sees of a completion: [`RewardInput`] with the end-of-sentence string cut off
/// and the recipe's generation budget.
pub struct RewardContext<'a> {
    /// The completion up to its end-of-sentence string (what follows it was not generated).
    pub body: &'a str,
    /// The reference answer.
    pub answer: &'a str,
    /// Generated tokens (end-of-sentence included).
    pub tokens: usize,
    /// Generation ended with end-of-sentence, as the caller reported it.
    pub finished: bool,
    /// The end-of-sentence string was in the text (so the completion ended, whatever was
    /// reported).
    pub eos_in_text: bool,
    /// The built-in task the problem came from, whose grader decides accuracy and form.
    pub task: Option<&'a dyn Task>,
    /// `generation.max_new_tokens`.
    pub max_new_tokens: usize,
}

/// One reward's verdict on one completion, before its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub value: f64,
    /// Named sub-metrics (e.g. `answer_found`), each a number.
    pub metrics: Vec<(&'static str, f64)>,
    /// For a reward that judges the final answer: what it extracted and whether it was right.
    pub answer: Option<AnswerCheck>,
}

/// The final answer a reward extracted, and whether it matched the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerCheck {
    pub extracted: Option<String>,
    pub correct: bool,
}

/// One reward's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub name: &'static str,
    /// The reward before its weight.
    pub value: f64,
    pub weight: f64,
    /// Named sub-metrics (e.g. `answer_found`), each a number.
    pub metrics: Vec<(&'static str, f64)>,
}

/// Every reward's verdict and their weighted sum.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    pub total: f64,
    pub parts: Vec<Score>,
    /// The answer the accuracy reward extracted, if any.
    pub extracted: Option<String>,
    /// Whether the accuracy reward judged the answer right (false without an accuracy reward).
    pub correct: bool,
}

impl Scored {
    pub fn value(&self, name: &str) -> Option<f64> {
        self.parts.iter().find(|p| p.name == name).map(|p| p.value)
    }
}

/// A recipe's rewards, ready to score completions.
#[derive(Debug, Clone)]
pub struct Rewards {
    section: RewardsSection,
    max_new_tokens: usize,
    /// The end-of-sentence token's text (stripped before the checks).
    eos_text: String,
}

impl Rewards {
    pub fn from_recipe(r: &GrpoRecipe, eos_text: &str) -> Self {
        Self {
            section: r.rewards.clone(),
            max_new_tokens: r.generation.max_new_tokens,
            eos_text: eos_text.to_string(),
        }
    }

    /// The names of the rewards, in scoring order.
    pub fn names(&self) -> Vec<&'static str> {
        self.section.iter().map(|r| r.name()).collect()
    }

    pub fn score(&self, input: &RewardInput) -> Scored {
        let body = extract::strip_eos(input.completion, &self.eos_text);
        let ctx = RewardContext {
            body,
            answer: input.answer,
            tokens: input.tokens,
            finished: input.finished,
            eos_in_text: body.len() < input.completion.len(),
            task: input.task,
            max_new_tokens: self.max_new_tokens,
        };
        let mut parts = Vec::new();
        let mut extracted = None;
        let mut correct = false;
        for reward in self.section.iter() {
            let v = reward.score(&ctx);
            if let Some(a) = v.answer {
                extracted = a.extracted;
                correct = a.correct;
            }
            parts.push(Score {
                name: reward.name(),
                value: v.value,
                weight: reward.weight(),
                metrics: v.metrics,
            });
        }
        let total = parts.iter().map(|p| p.weight * p.value).sum();
        Scored {
            total,
            parts,
            extracted,
            correct,
        }
    }
}

/// Occurrences of the reflection words "wait", "verify" and "check" (case-insensitive, as whole
/// words or word starts: "checking", "verified"), the "aha" signal R1-Zero's report counts.
pub fn reflection_words(text: &str) -> usize {
    let lower = text.to_lowercase();
    let bytes = lower.as_bytes();
    let mut n = 0;
    for w in ["wait", "verif", "check"] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(w) {
            let at = from + i;
            let starts_word = at == 0 || !bytes[at - 1].is_ascii_alphabetic();
            if starts_word {
                n += 1;
            }
            from = at + w.len();
        }
    }
    n
}

/// Test helpers shared by the rewards' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::RewardInput;

    pub const EOS: &str = "<｜end▁of▁sentence｜>";

    pub fn input<'a>(text: &'a str, answer: &'a str, tokens: usize) -> RewardInput<'a> {
        RewardInput {
            completion: text,
            answer,
            tokens,
            finished: text.ends_with(EOS),
            task: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{input, EOS};
    use super::*;
    use crate::train::recipe::{parse, Recipe, TEST_GRPO_RECIPE};
    use crate::train::task::arithmetic::Arithmetic;

    fn rewards() -> Rewards {
        let Recipe::Grpo(r) = parse("t.toml", TEST_GRPO_RECIPE).unwrap() else {
            panic!("a GRPO recipe")
        };
        Rewards::from_recipe(&r, EOS)
    }

    #[test]
    fn weighted_sum_and_sub_metrics() {
        let r = rewards();
        assert_eq!(r.names(), vec!["accuracy", "format", "overlong"]);
        // Right and well-formed, 20 tokens (no penalty below 48 - 8 = 40).
        let good = format!("r</think>\n\nThe answer is 12.{EOS}");
        let s = r.score(&input(&good, "12", 20));
        assert_eq!(s.total, 1.0 + 0.5);
        assert!(s.correct);
        assert_eq!(s.extracted.as_deref(), Some("12"));
        // Wrong answer, good format, 44 tokens: overlong (40 - 44)/8 = -0.5.
        let wrong = format!("r</think>\n\nThe answer is 13.{EOS}");
        let s = r.score(&input(&wrong, "12", 44));
        assert_eq!(s.value("accuracy"), Some(0.0));
        assert_eq!(s.value("format"), Some(1.0));
        assert_eq!(s.value("overlong"), Some(-0.5));
        assert_eq!(s.total, 0.5 - 0.5);
        // Truncated mid-thought: nothing but the length penalty.
        let s = r.score(&input("r r r", "12", 48));
        assert_eq!(s.total, -1.0);
        assert_eq!(
            s.parts[0].metrics,
            vec![("answer_found", 0.0), ("correct", 0.0)]
        );
    }

    #[test]
    fn a_task_grades_in_its_own_form() {
        let r = rewards();
        // The arithmetic grader compares exactly: a leading zero is a different answer, though
        // the numbers are equal.
        let text = format!("r</think>\n\nThe answer is 0012.{EOS}");
        let mut i = input(&text, "12", 10);
        assert!(r.score(&i).correct, "numeric comparison without the task");
        i.task = Some(&Arithmetic);
        assert!(!r.score(&i).correct, "the task's exact grader");
    }

    #[test]
    fn reflection_words_are_counted() {
        assert_eq!(reflection_words("Wait, let me verify. Checking: wait"), 4);
        // Only word starts count: "checkered" does, "await" and "unverified" do not.
        assert_eq!(reflection_words("await the checkered unverified"), 1);
        assert_eq!(reflection_words("no reflection"), 0);
    }
}
