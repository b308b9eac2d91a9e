//! `[rewards.accuracy]`: the final answer against the reference. A built-in task's grader decides
//! when the problem came from one (the verdict `thinkbench eval` gives); otherwise the answer
//! after the reasoning is extracted and compared exactly or as numbers.

use serde::{Deserialize, Serialize};

use super::extract::{example, extract_final_answer, parse_number};
use super::{AnswerCheck, Reward, RewardContext, RewardKind, Verdict};
use crate::train::recipe::{Check, GrpoRecipe, RecipeError};

/// How an extracted answer is compared with the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// Equal strings (after trimming).
    Exact,
    /// Equal as numbers (integers, decimals, fractions; commas and `$` ignored), else equal strings.
    Numeric,
}

/// 1 (`correct`) when the final answer matches, else `wrong` (0; DAPO uses -1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccuracyReward {
    pub weight: f64,
    #[serde(default = "default_compare")]
    pub compare: Compare,
    #[serde(default = "one")]
    pub correct: f64,
    #[serde(default)]
    pub wrong: f64,
}

fn default_compare() -> Compare {
    Compare::Numeric
}

fn one() -> f64 {
    1.0
}

impl RewardKind for AccuracyReward {
    const NAME: &'static str = "accuracy";
}

impl Reward for AccuracyReward {
    fn weight(&self) -> f64 {
        self.weight
    }

    fn score(&self, ctx: &RewardContext) -> Verdict {
        let (extracted, correct) = match ctx.task {
            // A built-in task's own grader: the same verdict `thinkbench eval` gives.
            Some(task) => {
                let g = task.grade(&example(ctx.answer), ctx.body, ctx.finished);
                (g.extracted, g.correct)
            }
            None => {
                let x = extract_final_answer(ctx.body);
                let ok = x
                    .as_deref()
                    .is_some_and(|x| answers_match(x, ctx.answer, self.compare));
                (x, ok)
            }
        };
        Verdict {
            value: if correct { self.correct } else { self.wrong },
            metrics: vec![
                ("answer_found", f64::from(u8::from(extracted.is_some()))),
                ("correct", f64::from(u8::from(correct))),
            ],
            answer: Some(AnswerCheck { extracted, correct }),
        }
    }

    fn validate(&self, c: &Check, _recipe: &GrpoRecipe) -> Result<(), RecipeError> {
        c.that(
            self.correct.is_finite() && self.wrong.is_finite(),
            "rewards.accuracy.correct",
            "correct and wrong must be finite",
        )
    }

    fn needs_answer(&self) -> bool {
        true
    }
}

/// Whether `got` equals `want`.
pub fn answers_match(got: &str, want: &str, compare: Compare) -> bool {
    let norm = |s: &str| -> String {
        let s = s.trim().trim_end_matches('.');
        s.chars().filter(|c| !c.is_whitespace()).collect()
    };
    match compare {
        Compare::Exact => got.trim() == want.trim(),
        Compare::Numeric => match (parse_number(got), parse_number(want)) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * b.abs().max(1.0),
            _ => norm(got) == norm(want),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_as_numbers() {
        assert!(answers_match("1,000", "1000", Compare::Numeric));
        assert!(answers_match("\\frac{1}{2}", "0.5", Compare::Numeric));
        assert!(answers_match("-\\dfrac{3}{4}", "-0.75", Compare::Numeric));
        assert!(answers_match("$12.50", "12.5", Compare::Numeric));
        assert!(answers_match("7.", "7", Compare::Numeric));
        assert!(!answers_match("7", "8", Compare::Numeric));
        assert!(!answers_match("1,000", "1000", Compare::Exact));
        assert!(
            answers_match("x + 1", "x+1", Compare::Numeric),
            "non-numbers: spacing ignored"
        );
        assert!(!answers_match("inf", "inf1", Compare::Numeric));
        assert_eq!(parse_number("nan"), None);
    }
}
