//! The input box: multi-line text with a cursor, and a history of what was sent.

/// Multi-line text being typed. `cursor` is a byte offset on a character boundary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    pub text: String,
    pub cursor: usize,
    history: Vec<String>,
    /// Position in `history` while browsing it; `None` while editing the draft.
    browsing: Option<usize>,
    /// The draft kept aside while browsing history.
    draft: String,
}

impl Input {
    pub fn is_empty(&self) -> bool {
        self.text.trim().is_empty()
    }

    pub fn set(&mut self, text: &str) {
        self.text = text.to_string();
        self.cursor = self.text.len();
        self.browsing = None;
    }

    /// Takes the text out (for sending) and remembers it in the history.
    pub fn take(&mut self) -> String {
        let text = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.browsing = None;
        self.draft.clear();
        if !text.trim().is_empty() && self.history.last() != Some(&text) {
            self.history.push(text.clone());
        }
        text
    }

    pub fn history(&self) -> &[String] {
        &self.history
    }

    pub fn insert(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    pub fn insert_str(&mut self, s: &str) {
        // Pasted text: keep newlines, drop carriage returns and other control characters.
        let clean: String = s
            .chars()
            .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
            .collect();
        self.text.insert_str(self.cursor, &clean);
        self.cursor += clean.len();
    }

    pub fn backspace(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
            self.text.remove(self.cursor);
        }
    }

    pub fn delete(&mut self) {
        if self.cursor < self.text.len() {
            self.text.remove(self.cursor);
        }
    }

    pub fn left(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
        }
    }

    pub fn right(&mut self) {
        if let Some(c) = self.text[self.cursor..].chars().next() {
            self.cursor += c.len_utf8();
        }
    }

    fn line_start(&self) -> usize {
        self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1)
    }

    fn line_end(&self) -> usize {
        self.text[self.cursor..]
            .find('\n')
            .map_or(self.text.len(), |i| self.cursor + i)
    }

    pub fn home(&mut self) {
        self.cursor = self.line_start();
    }

    pub fn end(&mut self) {
        self.cursor = self.line_end();
    }

    /// Deletes from the start of the line to the cursor (Ctrl-U).
    pub fn kill_to_start(&mut self) {
        let s = self.line_start();
        self.text.replace_range(s..self.cursor, "");
        self.cursor = s;
    }

    /// Deletes from the cursor to the end of the line (Ctrl-K).
    pub fn kill_to_end(&mut self) {
        let e = self.line_end();
        self.text.replace_range(self.cursor..e, "");
    }

    /// Deletes the word before the cursor (Ctrl-W).
    pub fn delete_word(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches([' ', '\t']);
        let start = trimmed
            .rfind(|c: char| c.is_whitespace())
            .map_or(0, |i| i + 1);
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// (line, column in characters) of the cursor.
    pub fn cursor_pos(&self) -> (usize, usize) {
        let before = &self.text[..self.cursor];
        let line = before.matches('\n').count();
        let col = before[self.line_start()..].chars().count();
        (line, col)
    }

    pub fn line_count(&self) -> usize {
        self.text.matches('\n').count() + 1
    }

    /// Moves up a line; on the first line, recalls the previous history entry. Returns whether
    /// anything changed.
    pub fn up(&mut self) -> bool {
        let (line, col) = self.cursor_pos();
        if line > 0 {
            let start = self.line_start();
            let prev_start = self.text[..start - 1].rfind('\n').map_or(0, |i| i + 1);
            self.cursor = column_offset(&self.text, prev_start, start - 1, col);
            return true;
        }
        let next = match self.browsing {
            None if !self.history.is_empty() => {
                self.draft = self.text.clone();
                self.history.len() - 1
            }
            Some(i) if i > 0 => i - 1,
            _ => return false,
        };
        self.browsing = Some(next);
        self.text = self.history[next].clone();
        self.cursor = self.text.len();
        true
    }

    /// Moves down a line; on the last line, goes forward in history (back to the draft).
    pub fn down(&mut self) -> bool {
        let (line, col) = self.cursor_pos();
        if line + 1 < self.line_count() {
            let end = self.line_end();
            let next_end = self.text[end + 1..]
                .find('\n')
                .map_or(self.text.len(), |i| end + 1 + i);
            self.cursor = column_offset(&self.text, end + 1, next_end, col);
            return true;
        }
        match self.browsing {
            Some(i) if i + 1 < self.history.len() => {
                self.browsing = Some(i + 1);
                self.text = self.history[i + 1].clone();
            }
            Some(_) => {
                self.browsing = None;
                self.text = std::mem::take(&mut self.draft);
            }
            None => return false,
        }
        self.cursor = self.text.len();
        true
    }
}

/// Byte offset of character column `col` in `text[start..end]`, clamped to `end`.
fn column_offset(text: &str, start: usize, end: usize, col: usize) -> usize {
    text[start..end]
        .char_indices()
        .nth(col)
        .map_or(end, |(i, _)| start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editing_multi_line_text() {
        let mut i = Input::default();
        for c in "héllo".chars() {
            i.insert(c);
        }
        i.insert('\n');
        i.insert_str("wörld\r");
        assert_eq!(i.text, "héllo\nwörld");
        assert_eq!(i.cursor_pos(), (1, 5));
        i.up();
        assert_eq!(i.cursor_pos(), (0, 5));
        i.left();
        i.backspace();
        assert_eq!(i.text, "hélo\nwörld");
        i.home();
        i.delete();
        assert_eq!(i.text, "élo\nwörld");
        i.down();
        assert_eq!(i.cursor_pos(), (1, 0));
        i.end();
        i.delete_word();
        assert_eq!(i.text, "élo\n");
    }

    #[test]
    fn history_recall_keeps_the_draft() {
        let mut i = Input::default();
        i.set("first");
        i.take();
        i.set("second");
        i.take();
        i.set("draft");
        assert!(i.up());
        assert_eq!(i.text, "second");
        assert!(i.up());
        assert_eq!(i.text, "first");
        assert!(!i.up(), "no older entry");
        assert!(i.down());
        assert_eq!(i.text, "second");
        assert!(i.down());
        assert_eq!(i.text, "draft");
        assert!(!i.down());
        assert_eq!(i.history(), ["first", "second"]);
    }
}
