//! Which part of the answer a token belongs to: the reasoning (`think`) or the reply (`answer`).
//!
//! The tracker works on token ids only, never on decoded strings: a `<think>` that a user typed,
//! or that the model spells out of ordinary tokens, does not open a reasoning span; only the
//! vocabulary's own `<think>`/`</think>` ids do. Rules:
//! - the prompt decides the start: if its last `<think>` id comes after its last `</think>` id
//!   (the R1 template ends the prompt with `<think>\n`), generation starts in `think`; otherwise
//!   in `answer`;
//! - a `<think>` id is itself labelled `think` and switches to `think`;
//! - a `</think>` id is itself labelled `think`; the tokens after it are `answer`.
//!
//! A model without those ids in its vocabulary is always in `answer`. Models that begin reasoning
//! without any opening tag are not guessed at: only ids count.

use serde::{Deserialize, Serialize};

/// The two phases of an R1-style reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Think,
    Answer,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Think => "think",
            Phase::Answer => "answer",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Labels generated ids with their [`Phase`], one id at a time.
#[derive(Debug, Clone)]
pub struct PhaseTracker {
    think: Option<(u32, u32)>,
    current: Phase,
}

impl PhaseTracker {
    /// `think_ids` are the `(<think>, </think>)` ids (see `TextCodec::think_ids`); `prompt` is the
    /// prompt's ids, which decide the starting phase.
    pub fn new(think_ids: Option<(u32, u32)>, prompt: &[u32]) -> Self {
        let current = match think_ids {
            Some((open, close)) => {
                let last_open = prompt.iter().rposition(|&t| t == open);
                let last_close = prompt.iter().rposition(|&t| t == close);
                match (last_open, last_close) {
                    (Some(o), Some(c)) if o > c => Phase::Think,
                    (Some(_), None) => Phase::Think,
                    _ => Phase::Answer,
                }
            }
            None => Phase::Answer,
        };
        Self {
            think: think_ids,
            current,
        }
    }

    /// The phase the next ordinary token would get.
    pub fn current(&self) -> Phase {
        self.current
    }

    /// Labels `id` and advances.
    pub fn push(&mut self, id: u32) -> Phase {
        let Some((open, close)) = self.think else {
            return Phase::Answer;
        };
        if id == open {
            self.current = Phase::Think;
            Phase::Think
        } else if id == close {
            self.current = Phase::Answer;
            Phase::Think
        } else {
            self.current
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Phase::{Answer, Think};

    const OPEN: u32 = 151648;
    const CLOSE: u32 = 151649;
    const IDS: Option<(u32, u32)> = Some((OPEN, CLOSE));

    fn labels(prompt: &[u32], gen: &[u32]) -> Vec<Phase> {
        let mut t = PhaseTracker::new(IDS, prompt);
        gen.iter().map(|&id| t.push(id)).collect()
    }

    #[test]
    fn prompt_ending_in_open_think_starts_thinking() {
        // `<｜Assistant｜><think>\n` then reasoning, `</think>`, answer.
        let got = labels(&[1, 2, OPEN, 198], &[10, 11, CLOSE, 198, 20]);
        assert_eq!(got, vec![Think, Think, Think, Answer, Answer]);
    }

    #[test]
    fn closed_or_absent_think_starts_answering() {
        assert_eq!(PhaseTracker::new(IDS, &[1, 2, 3]).current(), Answer);
        assert_eq!(
            PhaseTracker::new(IDS, &[OPEN, 5, CLOSE, 6]).current(),
            Answer
        );
        assert_eq!(PhaseTracker::new(IDS, &[CLOSE, OPEN, 5]).current(), Think);
        assert_eq!(PhaseTracker::new(IDS, &[]).current(), Answer);
    }

    #[test]
    fn think_tag_opens_and_is_labelled_think() {
        let got = labels(&[1], &[5, OPEN, 6, CLOSE, 7, OPEN, 8]);
        assert_eq!(got, vec![Answer, Think, Think, Think, Answer, Think, Think]);
    }

    #[test]
    fn no_think_ids_is_always_answer() {
        let mut t = PhaseTracker::new(None, &[OPEN]);
        assert_eq!(t.current(), Answer);
        assert_eq!(t.push(OPEN), Answer);
        assert_eq!(t.push(CLOSE), Answer);
    }

    #[test]
    fn serde_lowercase() {
        assert_eq!(serde_json::to_string(&Think).unwrap(), "\"think\"");
        assert_eq!(serde_json::from_str::<Phase>("\"answer\"").unwrap(), Answer);
        assert_eq!(Think.to_string(), "think");
    }
}
