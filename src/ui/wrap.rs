//! Word wrapping of styled text to a width, keeping styles, with a prefix on every line (the
//! transcript's gutter). ratatui's own wrapping works on whole paragraphs on every frame; this one
//! lets the transcript wrap only what is on screen and know where a given span landed.

use ratatui::style::Style;
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthChar;

/// Builds wrapped lines. Push styled text, then `finish`.
pub struct Wrapper {
    width: usize,
    prefix: Vec<Span<'static>>,
    prefix_width: usize,
    lines: Vec<Line<'static>>,
    cur: Vec<Span<'static>>,
    cur_width: usize,
    /// Pending word and its styled pieces (a word may change style mid-way, e.g. token spans).
    word: Vec<(String, Style)>,
    word_width: usize,
    /// Line index where each marked piece started.
    marks: Vec<usize>,
    pending_marks: usize,
    /// The current line began at a `\n` (its leading spaces are indentation, kept), not at a wrap.
    hard_start: bool,
}

impl Wrapper {
    pub fn new(width: usize, prefix: Vec<Span<'static>>) -> Self {
        let prefix_width = prefix.iter().map(Span::width).sum();
        Self {
            width: width.max(prefix_width + 4),
            prefix,
            prefix_width,
            lines: Vec::new(),
            cur: Vec::new(),
            cur_width: 0,
            word: Vec::new(),
            word_width: 0,
            marks: Vec::new(),
            pending_marks: 0,
            hard_start: true,
        }
    }

    fn room(&self) -> usize {
        self.width - self.prefix_width
    }

    /// Remembers the line on which the next pushed text starts (see [`Wrapper::marks`]).
    pub fn mark(&mut self) {
        self.pending_marks += 1;
    }

    /// Appends text; `\n` ends a line.
    pub fn push(&mut self, text: &str, style: Style) {
        for c in text.chars() {
            if self.pending_marks > 0 {
                // A mark lands where this character will be drawn: resolved at word flush, so
                // record the index into `word` by a placeholder.
                self.flush_marks_at_word();
            }
            match c {
                '\n' => {
                    self.flush_word();
                    self.end_line();
                    self.hard_start = true;
                }
                ' ' | '\t' => {
                    self.flush_word();
                    let indent =
                        self.hard_start && self.cur.iter().all(|s| s.content.trim().is_empty());
                    if (self.cur_width > 0 || indent) && self.cur_width < self.room() {
                        self.push_cur(" ", style);
                    }
                }
                c if c.is_control() => {}
                c => {
                    let w = c.width().unwrap_or(0);
                    if let Some((s, st)) = self.word.last_mut().filter(|(_, st)| *st == style) {
                        let _ = st;
                        s.push(c);
                    } else {
                        self.word.push((c.to_string(), style));
                    }
                    self.word_width += w;
                }
            }
        }
    }

    /// Marks are resolved lazily: a mark pending at a word boundary lands on the line where that
    /// word is placed. Approximation: the current line, or the next if the word will not fit.
    fn flush_marks_at_word(&mut self) {
        let line = if self.cur_width + self.word_width + 1 > self.room() && self.cur_width > 0 {
            self.lines.len() + 1
        } else {
            self.lines.len()
        };
        for _ in 0..self.pending_marks {
            self.marks.push(line);
        }
        self.pending_marks = 0;
    }

    fn push_cur(&mut self, s: &str, style: Style) {
        self.cur_width += unicode_width::UnicodeWidthStr::width(s);
        match self.cur.last_mut() {
            Some(last) if last.style == style => last.content.to_mut().push_str(s),
            _ => self.cur.push(Span::styled(s.to_string(), style)),
        }
    }

    fn flush_word(&mut self) {
        if self.word.is_empty() {
            return;
        }
        let room = self.room();
        if self.cur_width + self.word_width > room && self.cur_width > 0 {
            // Drop a trailing space before breaking.
            if let Some(last) = self.cur.last_mut() {
                if last.content.ends_with(' ') {
                    last.content.to_mut().pop();
                }
            }
            self.end_line();
            self.hard_start = false;
        }
        let word = std::mem::take(&mut self.word);
        self.word_width = 0;
        for (s, style) in word {
            if self.cur_width + unicode_width::UnicodeWidthStr::width(s.as_str()) <= room {
                self.push_cur(&s, style);
                continue;
            }
            // Longer than a line: hard breaks.
            for c in s.chars() {
                let w = c.width().unwrap_or(0);
                if self.cur_width + w > room {
                    self.end_line();
                    self.hard_start = false;
                }
                let mut b = [0u8; 4];
                self.push_cur(c.encode_utf8(&mut b), style);
            }
        }
    }

    fn end_line(&mut self) {
        let mut spans = self.prefix.clone();
        spans.append(&mut self.cur);
        self.lines.push(Line::from(spans));
        self.cur_width = 0;
    }

    /// Ends the text (a last partial line is kept); returns the lines.
    pub fn finish(mut self) -> Vec<Line<'static>> {
        self.flush_word();
        if self.cur_width > 0 || !self.cur.is_empty() {
            self.end_line();
        }
        self.lines
    }

    /// Ends the text and returns the lines and where each mark landed.
    pub fn finish_marked(mut self) -> (Vec<Line<'static>>, Vec<usize>) {
        if self.pending_marks > 0 {
            self.flush_marks_at_word();
        }
        let marks = std::mem::take(&mut self.marks);
        (self.finish(), marks)
    }
}

/// Wraps plain text with one style.
pub fn wrap_text(
    text: &str,
    width: usize,
    style: Style,
    prefix: Vec<Span<'static>>,
) -> Vec<Line<'static>> {
    let mut w = Wrapper::new(width, prefix);
    w.push(text, style);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect()
    }

    #[test]
    fn wraps_at_words_and_breaks_long_ones() {
        let lines = wrap_text(
            "the quick brown fox jumps over\nabcdefghijklmnop",
            12,
            Style::new(),
            vec![Span::raw("> ")],
        );
        assert_eq!(
            plain(&lines),
            [
                "> the quick",
                "> brown fox",
                "> jumps over",
                "> abcdefghij",
                "> klmnop"
            ]
        );
    }

    #[test]
    fn indentation_after_a_newline_is_kept() {
        let lines = wrap_text("def f():\n    return 1", 40, Style::new(), vec![]);
        assert_eq!(plain(&lines), ["def f():", "    return 1"]);
    }

    #[test]
    fn marks_land_on_their_line() {
        let mut w = Wrapper::new(10, vec![]);
        w.push("aaaa ", Style::new());
        w.mark();
        w.push("bbbb ", Style::new());
        w.mark();
        w.push("cccc", Style::new());
        let (lines, marks) = w.finish_marked();
        assert_eq!(plain(&lines), ["aaaa bbbb", "cccc"]);
        assert_eq!(marks, vec![0, 1]);
    }
}
