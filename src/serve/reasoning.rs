//! Splitting a row's text into `reasoning_content` and `content`, incrementally, the way
//! DeepSeek's API and SGLang present them: reasoning without surrounding whitespace (R1 writes
//! `<think>\n...\n</think>`), and the answer without the blank lines that follow `</think>`.
//!
//! Streaming needs the same strings as the whole reply, so whitespace is decided as text
//! arrives: leading whitespace is dropped until the first visible character; trailing reasoning
//! whitespace is held until more reasoning follows it (then sent) or the answer starts (then
//! dropped). The deltas therefore concatenate to exactly the trimmed strings.

use super::row_text::Piece;

/// A piece of a chat reply as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delta {
    Reasoning(String),
    Content(String),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ReasoningSplitter {
    /// Some think-phase token was seen (the answer's leading whitespace is then trimmed).
    thought: bool,
    reasoning_started: bool,
    /// Reasoning whitespace not sent yet: it is trailing unless more reasoning follows.
    held_space: String,
    answer_started: bool,
}

impl ReasoningSplitter {
    pub fn push(&mut self, piece: Piece) -> Option<Delta> {
        match piece {
            Piece::Think(text) => {
                self.thought = true;
                let text = if self.reasoning_started {
                    text
                } else {
                    text.trim_start().to_string()
                };
                if text.is_empty() {
                    return None;
                }
                self.reasoning_started = true;
                let mut body = std::mem::take(&mut self.held_space);
                body.push_str(&text);
                let end = body.trim_end().len();
                self.held_space = body.split_off(end);
                (!body.is_empty()).then_some(Delta::Reasoning(body))
            }
            Piece::Answer(text) => {
                self.held_space.clear();
                let text = if self.thought && !self.answer_started {
                    text.trim_start().to_string()
                } else {
                    text
                };
                if text.is_empty() {
                    return None;
                }
                self.answer_started = true;
                Some(Delta::Content(text))
            }
        }
    }
}

/// The whole reply's `(reasoning_content, content)` from its deltas; reasoning is `None`
/// without reasoning text.
pub(crate) fn join(deltas: impl IntoIterator<Item = Delta>) -> (Option<String>, String) {
    let (mut reasoning, mut content) = (String::new(), String::new());
    for delta in deltas {
        match delta {
            Delta::Reasoning(t) => reasoning.push_str(&t),
            Delta::Content(t) => content.push_str(&t),
        }
    }
    ((!reasoning.is_empty()).then_some(reasoning), content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Piece::{Answer, Think};

    fn split_all(pieces: Vec<Piece>) -> (Option<String>, String) {
        let mut s = ReasoningSplitter::default();
        join(pieces.into_iter().filter_map(|p| s.push(p)))
    }

    fn t(s: &str) -> Piece {
        Think(s.into())
    }
    fn a(s: &str) -> Piece {
        Answer(s.into())
    }

    #[test]
    fn r1_shape_is_trimmed_like_deepseek() {
        let pieces = vec![
            t("\n"),
            t("Let"),
            t(" me "),
            t("think"),
            t(".\n"),
            t(""),
            a("\n\n"),
            a("The"),
            a(" answer."),
        ];
        assert_eq!(
            split_all(pieces),
            (Some("Let me think.".into()), "The answer.".into())
        );
    }

    #[test]
    fn streamed_deltas_equal_the_whole() {
        let pieces = vec![
            t(" \n"),
            t("a "),
            t(" "),
            t("b"),
            t("\n\n"),
            t(""),
            a("\n"),
            a(" x "),
            a("y\n"),
        ];
        let mut s = ReasoningSplitter::default();
        let deltas: Vec<Delta> = pieces
            .clone()
            .into_iter()
            .filter_map(|p| s.push(p))
            .collect();
        assert_eq!(
            deltas,
            vec![
                Delta::Reasoning("a".into()),
                Delta::Reasoning("  b".into()),
                Delta::Content("x ".into()),
                Delta::Content("y\n".into()),
            ]
        );
        assert_eq!(split_all(pieces), (Some("a  b".into()), "x y\n".into()));
    }

    #[test]
    fn no_reasoning_is_none_and_answers_keep_their_whitespace() {
        assert_eq!(split_all(vec![a("  hi")]), (None, "  hi".into()));
        // Thought (tags only) but nothing to say: null reasoning, trimmed answer.
        assert_eq!(
            split_all(vec![t(""), t("\n"), a("\n\nhi")]),
            (None, "hi".into())
        );
    }
}
