//! Stop strings on streamed text: release text as soon as it cannot be part of a stop string,
//! hold back what might be the start of one, and cut at the first stop string (never releasing
//! it or anything after it).
//!
//! Why looking at the held text alone is enough: a stop string can only begin at a position
//! whose text so far is a prefix of some stop string; once a position is not, more text cannot
//! make it one. So everything before the first such position is final, and is released.
//!
//! Text arrives in labelled pieces (which phase, shown or hidden) and leaves in the same pieces,
//! split where a cut falls, so the caller can still tell reasoning from answer.

/// See the module docs. `L` labels each piece of text.
#[derive(Debug, Clone)]
pub(crate) struct StopScanner<L> {
    stops: Vec<String>,
    held: Vec<(L, String)>,
    stopped: bool,
}

impl<L: Copy> StopScanner<L> {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stops,
            held: Vec::new(),
            stopped: false,
        }
    }

    /// Adds a piece; returns the pieces that became final. Nothing once a stop string was seen.
    pub fn push(&mut self, label: L, text: &str) -> Vec<(L, String)> {
        if self.stopped {
            return Vec::new();
        }
        self.held.push((label, text.to_string()));
        let joined: String = self.held.iter().map(|(_, t)| t.as_str()).collect();
        if let Some(at) = self.first_stop(&joined) {
            self.stopped = true;
            let out = self.release(at);
            self.held.clear();
            return out;
        }
        let keep_from = self.possible_start(&joined);
        self.release(keep_from)
    }

    /// The text ended without a stop string: whatever was held is final.
    pub fn finish(&mut self) -> Vec<(L, String)> {
        std::mem::take(&mut self.held)
    }

    /// Whether a stop string was found (the text ends before it).
    #[cfg(test)]
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Where the earliest complete stop string starts.
    fn first_stop(&self, text: &str) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
    }

    /// The first position from which the rest of `text` is a proper prefix of a stop string,
    /// or the end.
    fn possible_start(&self, text: &str) -> usize {
        text.char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&text[i..])))
            .unwrap_or(text.len())
    }

    /// Takes the first `bytes` bytes of held text out, in their pieces (the piece that straddles
    /// the boundary is split). Empty pieces up to the boundary go out too: their labels count.
    fn release(&mut self, bytes: usize) -> Vec<(L, String)> {
        let mut out = Vec::new();
        let mut left = bytes;
        while let Some((label, text)) = self.held.first_mut() {
            if text.len() <= left {
                left -= text.len();
                out.push(self.held.remove(0));
            } else {
                if left > 0 {
                    let rest = text.split_off(left);
                    out.push((*label, std::mem::replace(text, rest)));
                }
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(pieces: &[(u8, String)]) -> String {
        pieces.iter().map(|(_, t)| t.as_str()).collect()
    }

    /// Feeds `tokens`, returning what each push released and the finish.
    fn run(stops: &[&str], tokens: &[&str]) -> (Vec<String>, bool) {
        let mut s = StopScanner::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out: Vec<String> = tokens.iter().map(|t| text(&s.push(0, t))).collect();
        out.push(text(&s.finish()));
        (out, s.stopped())
    }

    #[test]
    fn no_stops_releases_everything_at_once() {
        assert_eq!(run(&[], &["a", "b"]).0, vec!["a", "b", ""]);
    }

    #[test]
    fn holds_a_possible_start_and_releases_it_when_it_is_not() {
        let (out, stopped) = run(&["END"], &["hi E", "N", "x", "!"]);
        assert_eq!(out, vec!["hi ", "", "ENx", "!", ""]);
        assert!(!stopped);
    }

    #[test]
    fn stop_split_across_tokens_is_cut_and_never_sent() {
        let (out, stopped) = run(&["END"], &["ab E", "ND more", "ignored"]);
        assert_eq!(out, vec!["ab ", "", "", ""]);
        assert!(stopped);
        // Within one token, with text before and after it.
        let (out, _) = run(&["\n\n"], &["line\n\nrest"]);
        assert_eq!(out, vec!["line", ""]);
    }

    #[test]
    fn earliest_of_several_stops_wins_and_held_text_flushes_at_the_end() {
        let (out, _) = run(&["bc", "abcd"], &["a", "b", "c"]);
        assert_eq!(out.concat(), "a");
        let (out, stopped) = run(&["xyz"], &["a", "x", "y"]);
        assert_eq!(out, vec!["a", "", "", "xy"]);
        assert!(!stopped);
    }

    #[test]
    fn labels_survive_splits() {
        let mut s = StopScanner::new(vec!["STOP".into()]);
        assert_eq!(s.push(1, "think"), vec![(1, "think".to_string())]);
        assert_eq!(s.push(2, ""), vec![(2, String::new())]);
        assert_eq!(s.push(3, "ans S"), vec![(3, "ans ".to_string())]);
        assert_eq!(s.push(4, "TOP"), vec![]);
        assert!(s.stopped());
        let mut s = StopScanner::new(vec!["é!".into()]);
        assert_eq!(s.push(1, "aé"), vec![(1, "a".to_string())]);
        assert_eq!(
            s.push(2, "b"),
            vec![(1, "é".to_string()), (2, "b".to_string())]
        );
    }
}
