//! Reading a completion the way the rewards do: the part after the reasoning, its final answer
//! (boxed, `<answer>` or "The answer is …"), numbers as a person writes them.

use crate::train::task::{Example, END_THINK};

/// `text` without a trailing end-of-sentence string (and what follows the first one: generation
/// stops there, so anything after it was not generated).
pub(super) fn strip_eos<'a>(text: &'a str, eos: &str) -> &'a str {
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
pub(super) fn final_answer(after: &str) -> Option<(&str, &str)> {
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

/// A task example carrying only the reference answer (what a grader reads).
pub(super) fn example(answer: &str) -> Example {
    Example {
        level: 0,
        prompt: String::new(),
        answer: answer.to_string(),
        reasoning: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
