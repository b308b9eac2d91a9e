//! Tasks with answers a program can check: each draws a problem at a difficulty level from a
//! seeded RNG, writes the teacher's step-by-step reasoning for it, and grades a completion.
//!
//! SFT distils the teacher's reasoning; evaluation and GRPO's accuracy reward use the grader. A
//! problem belongs to the training or the held-out split by a hash of its content, so a held-out
//! problem is never trained on, at any level (even level 1, where problems repeat).

pub mod arithmetic;
pub mod multiplication;

use rand::rngs::StdRng;
use serde::Serialize;

/// The closing of the reasoning span and the lead-in of the final answer, as the teacher writes them.
pub const END_THINK: &str = "</think>";
pub const ANSWER_PREFIX: &str = "The answer is ";

/// Which side of the content hash a problem must fall on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    HeldOut,
}

/// One problem with its teacher solution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Difficulty level it was drawn at.
    pub level: u32,
    /// The user message.
    pub prompt: String,
    /// The expected final answer, as it must appear (e.g. "5218").
    pub answer: String,
    /// The teacher's reasoning: what comes after the template's `<think>\n` and before `</think>`.
    pub reasoning: String,
}

impl Example {
    /// The whole assistant completion the model learns: reasoning, `</think>`, then the answer.
    /// (The end-of-sentence token follows it; it is a token, not text.)
    pub fn completion(&self) -> String {
        format!("{}{END_THINK}\n\n{}", self.reasoning, self.final_answer())
    }

    /// The reply without its reasoning ("The answer is N."): what a later turn of a conversation
    /// sees of this one, since R1's template (and the workbench, `Message::answer_text`) drops
    /// earlier reasoning.
    pub fn final_answer(&self) -> String {
        format!("{ANSWER_PREFIX}{}.", self.answer)
    }
}

/// How a completion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grade {
    /// The extracted final answer equals the expected one.
    pub correct: bool,
    /// Reasoning, then exactly one `</think>`, then only "The answer is N." and end of sentence.
    pub format_ok: bool,
    /// What was extracted as the final answer, if anything.
    pub extracted: Option<String>,
}

/// How a completion reasoned, for a task whose teacher has more than one way to think
/// ([`Task::shape`]): the numbers an experiment on the reasoning's form tracks, and where the
/// marks of that form sit in the text.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Shape {
    /// Worked it out (the long form) rather than answering at once.
    pub long: bool,
    /// Check lines written.
    pub checks: u32,
    /// Check lines that ended in "wait".
    pub waits: u32,
    /// Checks whose claimed result (the result line just before the check) was wrong: real slips.
    pub slips: u32,
    /// "wait"s that followed a real slip (the claimed result before that check was wrong).
    pub waits_after_slip: u32,
    /// Byte ranges in the completion of each check line and each "wait" (wherever it stands),
    /// in order of position, for the rollout viewer to mark.
    pub marks: Vec<(std::ops::Range<usize>, MarkKind)>,
}

/// What a [`Shape`] mark covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    /// A whole check line.
    Check,
    /// The word "wait".
    Wait,
}

/// A task: problems, teacher traces and a grader.
pub trait Task: Send + Sync {
    fn name(&self) -> &'static str;
    /// The difficulty levels, easiest first.
    fn levels(&self) -> std::ops::RangeInclusive<u32>;
    /// A problem of `level` from `split`, with its teacher reasoning.
    fn sample(&self, rng: &mut StdRng, level: u32, split: Split) -> Example;
    /// Grades `completion` (the generated text after the prompt, special tokens rendered as text;
    /// `finished` is whether generation ended with end-of-sentence rather than running out).
    fn grade(&self, example: &Example, completion: &str, finished: bool) -> Grade {
        grade_answer(&example.answer, completion, finished)
    }
    /// How the completion reasoned, for tasks whose teacher has more than one way to think (None:
    /// not analysed, or nothing in the completion shows which way it took).
    fn shape(&self, _example: &Example, _completion: &str) -> Option<Shape> {
        None
    }
}

/// Every task thinkbench ships, by name.
pub fn names() -> Vec<&'static str> {
    vec![
        arithmetic::Arithmetic.name(),
        multiplication::Multiplication::default().name(),
    ]
}

/// The task called `name`, or an error listing the known ones.
pub fn by_name(name: &str) -> Result<Box<dyn Task>, String> {
    match name {
        "arithmetic" => Ok(Box::new(arithmetic::Arithmetic)),
        "multiplication" => Ok(Box::new(multiplication::Multiplication::default())),
        _ => Err(format!(
            "unknown task \"{name}\" (known: {})",
            names().join(", ")
        )),
    }
}

/// The final answer of a completion: the number after the last "The answer is " following
/// `</think>` (or `\boxed{...}`), if there is one.
pub fn extract_answer(completion: &str) -> Option<String> {
    let after = &completion[completion.rfind(END_THINK)? + END_THINK.len()..];
    if let Some(i) = after.rfind(ANSWER_PREFIX) {
        let rest = &after[i + ANSWER_PREFIX.len()..];
        let num = leading_integer(rest)?;
        return Some(num.to_string());
    }
    let i = after.rfind("\\boxed{")?;
    let rest = &after[i + "\\boxed{".len()..];
    let end = rest.find('}')?;
    Some(rest[..end].trim().to_string())
}

/// `-?[0-9]+` at the start of `s`.
fn leading_integer(s: &str) -> Option<&str> {
    let digits_from = usize::from(s.starts_with('-'));
    let n = s[digits_from..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    (n > 0).then(|| &s[..digits_from + n])
}

/// The grader every task with a single integer answer uses.
pub fn grade_answer(answer: &str, completion: &str, finished: bool) -> Grade {
    let extracted = extract_answer(completion);
    let correct = extracted.as_deref() == Some(answer);
    Grade {
        correct,
        format_ok: format_ok(completion, finished),
        extracted,
    }
}

/// The R1 format: non-empty reasoning without think tags, one `</think>`, then exactly
/// "The answer is N." (whitespace around it allowed) and nothing else, ended by end-of-sentence.
pub fn format_ok(completion: &str, finished: bool) -> bool {
    const EOS: &str = "<｜end▁of▁sentence｜>";
    if !finished {
        return false;
    }
    let body = completion.strip_suffix(EOS).unwrap_or(completion);
    let Some((reasoning, answer)) = body.split_once(END_THINK) else {
        return false;
    };
    if reasoning.trim().is_empty() || reasoning.contains("<think>") || answer.contains(END_THINK) {
        return false;
    }
    let Some(rest) = answer.trim().strip_prefix(ANSWER_PREFIX) else {
        return false;
    };
    match leading_integer(rest) {
        Some(n) => &rest[n.len()..] == ".",
        None => false,
    }
}

/// A 64-bit mix of a problem's content (splitmix64 finaliser), fixed forever: it decides the split.
pub fn content_hash(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for &p in parts {
        h ^= p.wrapping_add(0x9E37_79B9_7F4A_7C15);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
    }
    h
}

/// One problem in ten is held out.
pub fn split_of(hash: u64) -> Split {
    if hash.is_multiple_of(10) {
        Split::HeldOut
    } else {
        Split::Train
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_answer_after_the_thought() {
        let c = "1+2+0=3, 3\n</think>\n\nThe answer is 3.<｜end▁of▁sentence｜>";
        assert_eq!(extract_answer(c).as_deref(), Some("3"));
        assert_eq!(
            extract_answer("x</think>The answer is -42.").as_deref(),
            Some("-42")
        );
        assert_eq!(
            extract_answer("x</think> so \\boxed{ 17 }").as_deref(),
            Some("17")
        );
        // An answer inside the reasoning does not count.
        assert_eq!(extract_answer("The answer is 5.</think>nothing"), None);
        assert_eq!(extract_answer("The answer is 5."), None);
        assert_eq!(extract_answer("x</think>The answer is ."), None);
    }

    #[test]
    fn format_needs_reasoning_one_close_and_a_bare_answer() {
        let eos = "<｜end▁of▁sentence｜>";
        let good = format!("a\n</think>\n\nThe answer is 12.{eos}");
        assert!(format_ok(&good, true));
        assert!(!format_ok(&good, false), "ran out of tokens");
        assert!(
            !format_ok("</think>The answer is 1.", true),
            "empty reasoning"
        );
        assert!(
            !format_ok("a</think>The answer is 1. Yes.", true),
            "trailing text"
        );
        assert!(!format_ok("a</think>b</think>The answer is 1.", true));
        assert!(!format_ok("a<think>b</think>The answer is 1.", true));
        assert!(!format_ok("a The answer is 1.", true), "no close");
        assert!(format_ok("a</think>The answer is -1.", true));
    }

    #[test]
    fn grade_compares_exactly() {
        let g = grade_answer("5218", "r</think>\n\nThe answer is 5218.", true);
        assert!(g.correct && g.format_ok);
        let g = grade_answer("5218", "r</think>\n\nThe answer is 5219.", true);
        assert!(!g.correct && g.format_ok);
        assert_eq!(g.extracted.as_deref(), Some("5219"));
        let g = grade_answer("5218", "r</think>\n\nThe answer is 05218.", true);
        assert!(!g.correct, "leading zeros are a different answer");
    }

    #[test]
    fn unknown_task_lists_the_known_ones() {
        let e = by_name("countup").err().unwrap();
        assert_eq!(
            e,
            "unknown task \"countup\" (known: arithmetic, multiplication)"
        );
        assert_eq!(by_name("arithmetic").unwrap().name(), "arithmetic");
        assert_eq!(by_name("multiplication").unwrap().name(), "multiplication");
    }

    #[test]
    fn content_hash_is_fixed() {
        // Pinned: changing the hash would silently move problems between the splits.
        assert_eq!(content_hash(&[]), 0x9E37_79B9_7F4A_7C15);
        assert_eq!(content_hash(&[1, 2]), content_hash(&[1, 2]));
        assert_ne!(content_hash(&[1, 2]), content_hash(&[2, 1]));
    }
}
