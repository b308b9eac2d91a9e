//! `[rewards.format]`: the completion is reasoning, one `</think>`, an answer, end-of-sentence, and
//! nothing else; for a built-in task's problem, the task's own form decides.

use serde::{Deserialize, Serialize};

use super::extract::{example, final_answer};
use super::{Reward, RewardContext, RewardKind, Score, Verdict};
use crate::train::task::END_THINK;

/// 1 when the completion is reasoning, `</think>`, an answer, end-of-sentence, and nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatReward {
    pub weight: f64,
}

impl RewardKind for FormatReward {
    const NAME: &'static str = "format";
}

impl Reward for FormatReward {
    fn weight(&self) -> f64 {
        self.weight
    }

    fn score(&self, ctx: &RewardContext) -> Verdict {
        let finished = ctx.finished || ctx.eos_in_text;
        let mut s = format(ctx.body, finished);
        if let Some(task) = ctx.task {
            // A built-in task's own form (the format rate `thinkbench eval` reports).
            let ok = task
                .grade(&example(ctx.answer), ctx.body, finished)
                .format_ok;
            s.value = f64::from(u8::from(ok));
            s.metrics.push(("task_form", s.value));
        }
        Verdict {
            value: s.value,
            metrics: s.metrics,
            answer: None,
        }
    }
}

/// 1 when `body` (the completion without end-of-sentence) is: non-empty reasoning that opens no
/// second `<think>`, exactly one `</think>`, then an answer section whose final answer (boxed,
/// `<answer>` or "The answer is …") ends it — nothing after but closing punctuation — and
/// generation ended on end-of-sentence. Sub-metrics say which parts held.
pub fn format(body: &str, finished: bool) -> Score {
    let closes = body.matches(END_THINK).count();
    let (reasoning, answer) = match body.split_once(END_THINK) {
        Some((r, a)) => (r, a),
        None => (body, ""),
    };
    let one_close = closes == 1;
    let reasoning_ok = !reasoning.trim().is_empty() && !reasoning.contains("<think>");
    let found = if one_close {
        final_answer(answer)
    } else {
        None
    };
    let answer_found = found.is_some() && !answer.contains("<think>");
    let nothing_after = found.is_some_and(|(_, tail)| {
        tail.chars()
            .all(|c| c.is_whitespace() || matches!(c, '.' | '$' | '*' | ')' | ']' | '\\' | '}'))
    });
    let ok = one_close && reasoning_ok && answer_found && nothing_after && finished;
    let b = |x: bool| f64::from(u8::from(x));
    Score {
        name: "format",
        value: b(ok),
        weight: 1.0,
        metrics: vec![
            ("think_closed_once", b(one_close)),
            ("reasoning_nonempty", b(reasoning_ok)),
            ("answer_found", b(answer_found)),
            ("nothing_after_answer", b(nothing_after)),
            ("ended_with_eos", b(finished)),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::super::extract::strip_eos;
    use super::super::testing::EOS;
    use super::*;

    #[test]
    fn format_needs_one_close_an_answer_and_eos() {
        let ok = |s: &str| format(strip_eos(s, EOS), s.contains(EOS)).value;
        assert_eq!(ok(&format!("r\n</think>\n\nThe answer is 3.{EOS}")), 1.0);
        assert_eq!(ok(&format!("r</think>\\boxed{{3}}{EOS}")), 1.0);
        assert_eq!(ok("r</think>The answer is 3."), 0.0, "no end-of-sentence");
        assert_eq!(
            ok(&format!("</think>The answer is 3.{EOS}")),
            0.0,
            "no reasoning"
        );
        assert_eq!(ok(&format!("r</think>Three.{EOS}")), 0.0, "no final answer");
        assert_eq!(ok(&format!("a</think>b</think>The answer is 3.{EOS}")), 0.0);
        assert_eq!(
            ok(&format!("<think>a</think>The answer is 3.{EOS}")),
            0.0,
            "reopened"
        );
        let s = format("r and more", true);
        assert_eq!(s.metrics[0], ("think_closed_once", 0.0));
    }
}
