//! Splitting `<think>…</think>` out of streamed `content` for servers that run no reasoning
//! parser (llama.cpp with `--reasoning-format none`, vLLM or SGLang without
//! `--reasoning-parser`): the thought then arrives as plain content, tags included.
//!
//! The splitter is lossless but for the tags themselves and any whitespace before an opening
//! `<think>` at the very start of the reply: text after `</think>` (R1 writes "\n\n" there)
//! is passed on as answer text for the caller to trim.

/// A run of streamed text, by the part of the reply it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Reasoning(String),
    Answer(String),
}

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Splits `<think>…</think>` out of streamed content for servers without a reasoning parser.
#[derive(Debug, Clone)]
pub struct ThinkSplitter {
    in_thought: bool,
    /// Nothing but whitespace seen yet: an opening `<think>` here is swallowed (in either mode).
    at_start: bool,
    /// Text not yet emitted: leading whitespace at the start, or a possible tag prefix.
    held: String,
}

impl ThinkSplitter {
    /// `in_thought`: whether the reply starts inside a thought (R1's chat template ends the
    /// prompt with "<think>\n", so the server's output starts in the thought and only
    /// "</think>" appears). When false, text before a "<think>" tag is answer text; a reply
    /// that begins (after optional whitespace) with "<think>" enters the thought. When true, a
    /// reply that nevertheless begins with "<think>" (a template that does not add it) stays
    /// in the thought with the tag dropped.
    pub fn new(in_thought: bool) -> Self {
        ThinkSplitter {
            in_thought,
            at_start: true,
            held: String::new(),
        }
    }

    /// Feeds a content delta; returns the pieces in order (adjacent pieces of one kind merged).
    /// A possible tag prefix at the end ("</thi") is held back until the next delta decides
    /// it; tags themselves are not emitted.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut buf = std::mem::take(&mut self.held);
        buf.push_str(text);
        let mut rest = buf.as_str();
        if self.at_start {
            let trimmed = rest.trim_start();
            if trimmed.is_empty() || OPEN.starts_with(trimmed) {
                // Undecided: whitespace only, or a prefix of "<think>".
                self.held = rest.to_owned();
                return out;
            }
            self.at_start = false;
            if let Some(after) = trimmed.strip_prefix(OPEN) {
                self.in_thought = true;
                rest = after;
            }
        }
        loop {
            let tag = if self.in_thought { CLOSE } else { OPEN };
            if let Some(i) = rest.find(tag) {
                self.emit(&mut out, &rest[..i]);
                self.in_thought = !self.in_thought;
                rest = &rest[i + tag.len()..];
                continue;
            }
            let keep = partial_tag_suffix(rest, tag);
            let (now, later) = rest.split_at(rest.len() - keep);
            self.emit(&mut out, now);
            self.held = later.to_owned();
            return out;
        }
    }

    /// End of stream: releases anything held back, as text of the current part.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        let held = std::mem::take(&mut self.held);
        self.emit(&mut out, &held);
        self.at_start = false;
        out
    }

    /// Whether the text now arriving belongs to the thought.
    pub fn in_thought(&self) -> bool {
        self.in_thought
    }

    fn emit(&self, out: &mut Vec<Piece>, text: &str) {
        if text.is_empty() {
            return;
        }
        match (out.last_mut(), self.in_thought) {
            (Some(Piece::Reasoning(s)), true) | (Some(Piece::Answer(s)), false) => s.push_str(text),
            (_, true) => out.push(Piece::Reasoning(text.to_owned())),
            (_, false) => out.push(Piece::Answer(text.to_owned())),
        }
    }
}

/// The length of the longest proper prefix of `tag` that `text` ends with (0 if none). The
/// tags are ASCII and start with '<', so the split point is a character boundary.
fn partial_tag_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&k| text.as_bytes().ends_with(&tag.as_bytes()[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Piece::{Answer as A, Reasoning as R};

    fn r(s: &str) -> Piece {
        R(s.into())
    }
    fn a(s: &str) -> Piece {
        A(s.into())
    }

    /// Feeds every delta and finishes; all pieces, merged across deltas.
    fn run(in_thought: bool, deltas: &[&str]) -> Vec<Piece> {
        let mut s = ThinkSplitter::new(in_thought);
        let mut all: Vec<Piece> = Vec::new();
        let mut pieces: Vec<Piece> = deltas.iter().flat_map(|d| s.push(d)).collect();
        pieces.extend(s.finish());
        for p in pieces {
            match (all.last_mut(), p) {
                (Some(R(x)), R(y)) | (Some(A(x)), A(y)) => x.push_str(&y),
                (_, p) => all.push(p),
            }
        }
        all
    }

    #[test]
    fn r1_template_starts_in_the_thought_and_the_close_tag_is_split() {
        let mut s = ThinkSplitter::new(true);
        assert_eq!(
            s.push("\nLet me add 2 and 2."),
            vec![r("\nLet me add 2 and 2.")]
        );
        assert_eq!(s.push(" Four.</thi"), vec![r(" Four.")]);
        assert!(s.in_thought());
        assert_eq!(s.push("nk>\n\nThe"), vec![a("\n\nThe")]);
        assert!(!s.in_thought());
        assert_eq!(s.push(" answer is 4."), vec![a(" answer is 4.")]);
        assert_eq!(s.finish(), vec![]);
    }

    #[test]
    fn explicit_open_tag_at_the_start_in_either_mode() {
        let deltas = ["<th", "ink>\nhmm", "</think>", "ok"];
        let want = vec![r("\nhmm"), a("ok")];
        assert_eq!(run(false, &deltas), want);
        assert_eq!(run(true, &deltas), want);
        // Leading whitespace before the tag is dropped.
        assert_eq!(
            run(false, &["\n", " <think>x</think>y"]),
            vec![r("x"), a("y")]
        );
    }

    #[test]
    fn answer_mode_without_tags_is_all_answer() {
        assert_eq!(
            run(false, &["Hello", " <b>world</b>"]),
            vec![a("Hello <b>world</b>")]
        );
        // A "<" that turns out not to start a tag is released with the next delta.
        let mut s = ThinkSplitter::new(false);
        assert_eq!(s.push("x <"), vec![a("x ")]);
        assert_eq!(s.push("= y"), vec![a("<= y")]);
    }

    #[test]
    fn text_before_a_mid_reply_open_tag_is_answer() {
        assert_eq!(
            run(false, &["Sure. <thi", "nk>plan", "</th", "ink>Done"]),
            vec![a("Sure. "), r("plan"), a("Done")]
        );
    }

    #[test]
    fn tag_split_one_character_per_delta() {
        let text = "abc</think>def";
        let deltas: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
        assert_eq!(run(true, &refs), vec![r("abc"), a("def")]);
    }

    #[test]
    fn finish_releases_a_held_partial_tag_and_whitespace() {
        let mut s = ThinkSplitter::new(true);
        assert_eq!(s.push("thinking </th"), vec![r("thinking ")]);
        assert_eq!(s.finish(), vec![r("</th")]);
        let mut s = ThinkSplitter::new(false);
        assert_eq!(s.push("  "), vec![]);
        assert_eq!(s.finish(), vec![a("  ")]);
        let mut s = ThinkSplitter::new(false);
        assert_eq!(s.push("<thi"), vec![]);
        assert_eq!(s.finish(), vec![a("<thi")]);
    }

    #[test]
    fn multibyte_text_next_to_tags() {
        assert_eq!(
            run(true, &["思考é<", "/think>答え"]),
            vec![r("思考é"), a("答え")]
        );
    }

    #[test]
    fn empty_thought_and_tags_in_one_delta() {
        assert_eq!(run(true, &["</think>hi"]), vec![a("hi")]);
        assert_eq!(run(false, &["<think></think>hi"]), vec![a("hi")]);
    }
}
