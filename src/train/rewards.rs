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

use serde::Serialize;

use super::recipe::{AccuracyReward, Compare, GrpoRecipe};
use super::task::{Example, Task, END_THINK};

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
    accuracy: Option<AccuracyReward>,
    format: Option<f64>,
    /// (weight, L_max, L_cache)
    overlong: Option<(f64, usize, usize)>,
    /// The end-of-sentence token's text (stripped before the checks).
    eos_text: String,
}

impl Rewards {
    pub fn from_recipe(r: &GrpoRecipe, eos_text: &str) -> Self {
        Self {
            accuracy: r.rewards.accuracy.clone(),
            format: r.rewards.format.as_ref().map(|f| f.weight),
            overlong: r
                .rewards
                .overlong
                .as_ref()
                .zip(r.overlong_max())
                .map(|(o, (max, buffer))| (o.weight, max, buffer)),
            eos_text: eos_text.to_string(),
        }
    }

    /// The names of the rewards, in scoring order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.accuracy.is_some() {
            out.push("accuracy");
        }
        if self.format.is_some() {
            out.push("format");
        }
        if self.overlong.is_some() {
            out.push("overlong");
        }
        out
    }

    pub fn score(&self, input: &RewardInput) -> Scored {
        let body = strip_eos(input.completion, &self.eos_text);
        let mut parts = Vec::new();
        let mut extracted = None;
        let mut correct = false;
        if let Some(a) = &self.accuracy {
            let (s, x, ok) = accuracy(a, body, input);
            extracted = x;
            correct = ok;
            parts.push(s);
        }
        if let Some(w) = self.format {
            let finished = input.finished || body.len() < input.completion.len();
            let mut s = format(body, finished);
            if let Some(task) = input.task {
                // A built-in task's own form (the format rate `thinkbench eval` reports).
                let ok = task.grade(&example(input.answer), body, finished).format_ok;
                s.value = f64::from(u8::from(ok));
                s.metrics.push(("task_form", s.value));
            }
            s.weight = w;
            parts.push(s);
        }
        if let Some((w, max, buffer)) = self.overlong {
            parts.push(Score {
                name: "overlong",
                value: overlong_penalty(input.tokens, max, buffer),
                weight: w,
                metrics: vec![("tokens", input.tokens as f64)],
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

/// `text` without a trailing end-of-sentence string (and what follows the first one: generation
/// stops there, so anything after it was not generated).
fn strip_eos<'a>(text: &'a str, eos: &str) -> &'a str {
    if eos.is_empty() {
        return text;
    }
    match text.find(eos) {
        Some(i) => &text[..i],
        None => text,
    }
}

/// The part after the reasoning: after the last `</think>`. `None` while the thought is open
/// (completions start inside `<think>`).
pub fn answer_section(text: &str) -> Option<&str> {
    text.rfind(END_THINK).map(|i| &text[i + END_THINK.len()..])
}

/// The final answer of a completion: the last `\boxed{…}` after the reasoning, else the last
/// `<answer>…</answer>`, else what follows the last "answer is" up to the end of its sentence.
pub fn extract_final_answer(text: &str) -> Option<String> {
    let after = answer_section(text)?;
    let (answer, _) = final_answer(after)?;
    Some(answer.trim().to_string())
}

/// The final answer in the part after the reasoning, and what follows the construct it sits in
/// (the closing brace, `</answer>`, or the end of the "answer is" sentence).
fn final_answer(after: &str) -> Option<(&str, &str)> {
    if let Some((start, end)) = last_boxed_span(after) {
        let inner = &after[start..end];
        if !inner.trim().is_empty() {
            return Some((inner, &after[end + 1..]));
        }
    }
    if let Some(i) = after.rfind("<answer>") {
        let rest = &after[i + "<answer>".len()..];
        let (inner, tail) = match rest.find("</answer>") {
            Some(j) => (&rest[..j], &rest[j + "</answer>".len()..]),
            None => (rest, ""),
        };
        if !inner.trim().is_empty() {
            return Some((inner, tail));
        }
    }
    let lower = after.to_ascii_lowercase();
    let i = lower.rfind("answer is")?;
    let rest = &after[i + "answer is".len()..];
    let rest = rest.trim_start_matches([' ', ':', '\t']);
    let end = sentence_end(rest);
    let ans = rest[..end].trim();
    (!ans.is_empty()).then(|| (ans, &rest[end..]))
}

/// Where the sentence that starts `s` ends: a newline, or a period not followed by a digit.
fn sentence_end(s: &str) -> usize {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' {
            return i;
        }
        if c == b'.' && !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            return i;
        }
    }
    s.len()
}

/// The contents of the last `\boxed{…}` (or `\fbox{…}`), braces balanced.
pub fn last_boxed(s: &str) -> Option<&str> {
    last_boxed_span(s).map(|(a, b)| &s[a..b])
}

/// Byte range of the last box's contents (the closing brace is at the end of the range).
fn last_boxed_span(s: &str) -> Option<(usize, usize)> {
    let i = ["\\boxed{", "\\fbox{"]
        .iter()
        .filter_map(|p| s.rfind(p).map(|i| i + p.len()))
        .max()?;
    let mut depth = 1usize;
    for (j, c) in s[i..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((i, i + j));
                }
            }
            _ => {}
        }
    }
    None
}

/// `s` as a number: integers, decimals, `a/b`, `\frac{a}{b}` (`\dfrac`, `\tfrac`), with `$`,
/// commas, spaces, `\!`, `\left`/`\right` and a trailing period ignored.
pub fn parse_number(s: &str) -> Option<f64> {
    let mut t: String = s
        .replace("\\!", "")
        .replace("\\left", "")
        .replace("\\right", "")
        .replace("\\dfrac", "\\frac")
        .replace("\\tfrac", "\\frac")
        .chars()
        .filter(|c| !matches!(c, '$' | ',' | ' ' | '\u{a0}'))
        .collect();
    while t.ends_with('.') {
        t.pop();
    }
    if let Some(rest) = t.strip_prefix("\\text{").and_then(|r| r.strip_suffix('}')) {
        t = rest.to_string();
    }
    let (neg, body) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.as_str()),
    };
    let v = if let Some(f) = body.strip_prefix("\\frac{") {
        let (num, rest) = f.split_once("}{")?;
        let den = rest.strip_suffix('}')?;
        num.parse::<f64>().ok()? / den.parse::<f64>().ok()?
    } else if let Some((num, den)) = body.split_once('/') {
        num.parse::<f64>().ok()? / den.parse::<f64>().ok()?
    } else {
        // Plain decimal digits only (no "inf", "nan", exponents).
        if body.is_empty() || !body.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return None;
        }
        body.parse::<f64>().ok()?
    };
    v.is_finite().then_some(if neg { -v } else { v })
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

/// A task example carrying only the reference answer (what a grader reads).
fn example(answer: &str) -> Example {
    Example {
        level: 0,
        prompt: String::new(),
        answer: answer.to_string(),
        reasoning: String::new(),
    }
}

fn accuracy(a: &AccuracyReward, body: &str, input: &RewardInput) -> (Score, Option<String>, bool) {
    let (extracted, correct) = match input.task {
        // A built-in task's own grader: the same verdict `thinkbench eval` gives.
        Some(task) => {
            let g = task.grade(&example(input.answer), body, input.finished);
            (g.extracted, g.correct)
        }
        None => {
            let x = extract_final_answer(body);
            let ok = x
                .as_deref()
                .is_some_and(|x| answers_match(x, input.answer, a.compare));
            (x, ok)
        }
    };
    let score = Score {
        name: "accuracy",
        value: if correct { a.correct } else { a.wrong },
        weight: a.weight,
        metrics: vec![
            ("answer_found", f64::from(u8::from(extracted.is_some()))),
            ("correct", f64::from(u8::from(correct))),
        ],
    };
    (score, extracted, correct)
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

/// DAPO's soft overlong punishment for a completion of `len` tokens:
/// 0 up to `max - buffer`, then `((max - buffer) - len) / buffer` down to -1 at `max`, -1 beyond.
pub fn overlong_penalty(len: usize, max: usize, buffer: usize) -> f64 {
    let start = max.saturating_sub(buffer);
    if len <= start {
        0.0
    } else if len <= max {
        (start as f64 - len as f64) / buffer as f64
    } else {
        -1.0
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::recipe::{parse, Recipe, TEST_GRPO_RECIPE};
    use crate::train::task::arithmetic::Arithmetic;

    const EOS: &str = "<｜end▁of▁sentence｜>";

    fn rewards() -> Rewards {
        let Recipe::Grpo(r) = parse("t.toml", TEST_GRPO_RECIPE).unwrap() else {
            panic!("a GRPO recipe")
        };
        Rewards::from_recipe(&r, EOS)
    }

    fn input<'a>(text: &'a str, answer: &'a str, tokens: usize) -> RewardInput<'a> {
        RewardInput {
            completion: text,
            answer,
            tokens,
            finished: text.ends_with(EOS),
            task: None,
        }
    }

    #[test]
    fn overlong_matches_dapo_test_values() {
        // L_max = 20480, L_cache = 4096 (DAPO's settings).
        assert_eq!(overlong_penalty(16384, 20480, 4096), 0.0);
        assert_eq!(overlong_penalty(10, 20480, 4096), 0.0);
        assert_eq!(overlong_penalty(18432, 20480, 4096), -0.5);
        assert_eq!(overlong_penalty(20480, 20480, 4096), -1.0);
        assert_eq!(overlong_penalty(20481, 20480, 4096), -1.0);
        assert_eq!(overlong_penalty(17408, 20480, 4096), -0.25);
    }

    #[test]
    fn answers_are_extracted_after_the_thought() {
        let x = |s: &str| extract_final_answer(s);
        assert_eq!(
            x("r</think>so \\boxed{\\frac{1}{2}} ok").as_deref(),
            Some("\\frac{1}{2}")
        );
        assert_eq!(
            x("r</think>\\boxed{1} then \\boxed{ 2 }").as_deref(),
            Some("2")
        );
        assert_eq!(
            x("r</think>\n\nThe answer is 5218.").as_deref(),
            Some("5218")
        );
        assert_eq!(
            x("r</think>The answer is: 3.5. Done").as_deref(),
            Some("3.5")
        );
        assert_eq!(x("r</think><answer> 42 </answer>").as_deref(), Some("42"));
        assert_eq!(x("The answer is 5.</think>nothing here"), None);
        assert_eq!(x("\\boxed{5} but the thought never closed"), None);
        assert_eq!(x("r</think>\\boxed{unbalanced"), None);
    }

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
