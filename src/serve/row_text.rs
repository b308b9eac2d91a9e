//! One row's output text: each token's text, labelled with its phase, goes through the stop
//! strings; tokens whose text never shows (end-of-sequence, and on chat the `<think>` and
//! `</think>` tags) still take part in stop matching, as the engine matched on all of it, but
//! come out empty.

use super::stop::StopScanner;
use crate::trace::{Phase, TokenRecord};

/// Released text, by phase. A hidden think-phase token comes out as an empty `Think`, which
/// still says the model was reasoning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Think(String),
    Answer(String),
}

impl Piece {
    pub fn text(&self) -> &str {
        match self {
            Piece::Think(t) | Piece::Answer(t) => t,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Label {
    phase: Phase,
    shown: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct RowText {
    scanner: StopScanner<Label>,
    /// Ids whose text never shows.
    hidden: Vec<u32>,
}

impl RowText {
    pub fn new(stops: Vec<String>, hidden: Vec<u32>) -> Self {
        Self {
            scanner: StopScanner::new(stops),
            hidden,
        }
    }

    pub fn push(&mut self, token: &TokenRecord) -> Vec<Piece> {
        let label = Label {
            phase: token.phase,
            shown: !self.hidden.contains(&token.id),
        };
        let released = self.scanner.push(label, &token.text);
        pieces(released)
    }

    /// The row ended: text held back for a possible stop string is final after all.
    pub fn finish(&mut self) -> Vec<Piece> {
        let released = self.scanner.finish();
        pieces(released)
    }
}

fn pieces(released: Vec<(Label, String)>) -> Vec<Piece> {
    released
        .into_iter()
        .filter_map(|(label, text)| {
            let text = if label.shown { text } else { String::new() };
            match label.phase {
                Phase::Think => Some(Piece::Think(text)),
                Phase::Answer if text.is_empty() => None,
                Phase::Answer => Some(Piece::Answer(text)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: u32, text: &str, phase: Phase) -> TokenRecord {
        TokenRecord {
            id,
            text: text.into(),
            logprob: 0.0,
            top: Vec::new(),
            entropy: 0.0,
            phase,
            routing: Vec::new(),
            forced: false,
        }
    }

    #[test]
    fn hidden_tokens_match_stops_but_never_show() {
        let mut r = RowText::new(vec!["</think>\n\nX".into()], vec![9, 1]);
        let mut out = Vec::new();
        out.extend(r.push(&token(5, "hm", Phase::Think)));
        out.extend(r.push(&token(9, "</think>", Phase::Think)));
        out.extend(r.push(&token(6, "\n\nY", Phase::Answer)));
        out.extend(r.push(&token(1, "<eos>", Phase::Answer)));
        out.extend(r.finish());
        let want = vec![
            Piece::Think("hm".into()),
            Piece::Think(String::new()),
            Piece::Answer("\n\nY".into()),
        ];
        assert_eq!(out, want);

        let mut r = RowText::new(vec!["</think>\n\nX".into()], vec![9]);
        r.push(&token(9, "</think>", Phase::Think));
        assert_eq!(r.push(&token(6, "\n\nX", Phase::Answer)), vec![]);
        assert_eq!(r.finish(), vec![]);
    }
}
