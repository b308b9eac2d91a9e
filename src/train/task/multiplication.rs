//! Multiplication, with a teacher that thinks in one of two ways, for experiments in which RL
//! should change *how* a small model reasons rather than what it knows.
//!
//! Levels, by the digits of the two operands (the prompt always puts the longer first):
//!
//! | level | 1   | 2   | 3   | 4   | 5   | 6   |
//! |-------|-----|-----|-----|-----|-----|-----|
//! | x*y   | 1×1 | 2×1 | 3×1 | 4×1 | 2×2 | 3×2 |
//!
//! ordered by the digit products a product needs (1, 2, 3, 4, 4, 6; 2×2 after 4×1 because it also
//! adds into a running total). One-digit operands are 2–9: multiplying by 0 or 1 teaches nothing
//! about either form. The levels stop at 3×2 for length: the built-in tokenizer spends a token on
//! nearly every character of these traces (digits are single tokens), and a 3×2 trace with a slip
//! and its redo runs to about 550 tokens; 4×2 would reach about 680.
//!
//! The first line of the reasoning restates the problem and commits to a form with the token
//! right after it, so that RL can move the choice with one token:
//!
//! - **direct** (`1 - long_share` of examples): `347*26 = 9022.` and nothing else; the model
//!   has to produce the product at once, which a tiny model can do for the easy levels only.
//! - **long** (`long_share`): `347*26, by parts:`, then the product built up one digit of the
//!   multiplier at a time, column by column from the right with the carry. Each line restates what
//!   is left of the multiplicand (and, from the second digit on, of the total so far), so the
//!   digits of the column are the last ones of its left side: every lookup local, in the spirit of
//!   the arithmetic task's teacher. Each partial product is added into the total as it is made
//!   (`347*2+208` is exactly the work left: the total 2082's last digit is final, and
//!   347*26 = (347*2 + 208)*10 + 2), which costs a term per column instead of a block of addition
//!   lines restating two long numbers; the top column writes its whole value, so there is no line
//!   for the last carry. Then the result line (the direct form's line) and a check by casting out
//!   nines, each number's digits summed until one digit is left:
//!
//! ```text
//! 347*26, by parts:
//! 347*6: 7*6+0=42, 2
//! 34*6: 4*6+4=28, 82
//! 3*6: 3*6+2=20, 2082
//! 347*2+208: 7*2+8+0=22, 22
//! 34*2+20: 4*2+0+2=10, 022
//! 3*2+2: 3*2+2+1=9, 9022
//! 347*26 = 9022.
//! check: 347 -> 3+4+7=14 -> 1+4=5, 26 -> 2+6=8, 5*8=40 -> 4+0=4; 9022 -> 9+0+2+2=13 -> 1+3=4. 4 = 4, ok
//! ```
//!
//!   A multiplier digit 0 adds nothing and gets one line, `347*0: 0`.
//!
//! - **long with a slip** (`slip_share` of the long ones): one column of one partial product
//!   gets a wrong units digit (`4*2+0+2=13` for 10), off by 1–8, and everything after it consistently
//!   builds on the wrong value. The result is then off by that amount times a power of ten, never
//!   by a multiple of nine, so the check always catches it: `... 4 != 7, wait`. The teacher then
//!   writes `347*26, again:` and redoes the whole computation, which ends in a check that passes.
//!   It redoes everything rather than the slipped partial product because the check only says
//!   *that* the result is wrong, not *where*: a model that learned to jump to the slipped line
//!   would have to know where its own slip was, which nothing in its text tells it.
//!
//! The shares are the same at every level on purpose: the teacher does not know which levels need
//! the long form. Learning *when* to think is left to RL.

use rand::rngs::StdRng;
use rand::Rng;

use super::{content_hash, split_of, Example, MarkKind, Shape, Split, Task, END_THINK};

/// Share of examples whose teacher trace takes the long form, at every level.
pub const LONG_SHARE: f64 = 0.25;
/// Share of long traces that slip, get caught by the check and redo the work.
pub const SLIP_SHARE: f64 = 0.3;

/// Operand digits `(x, y)` of each level, easiest first (level 1 is index 0).
pub const LEVELS: [(u32, u32); 6] = [(1, 1), (2, 1), (3, 1), (4, 1), (2, 2), (3, 2)];
/// The hardest level.
pub const MAX_LEVEL: u32 = LEVELS.len() as u32;

/// The task, with the mix of teacher forms it samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Multiplication {
    /// Share of examples in the long form (0–1).
    pub long_share: f64,
    /// Share of long examples that slip and redo (0–1).
    pub slip_share: f64,
}

impl Default for Multiplication {
    fn default() -> Self {
        Multiplication {
            long_share: LONG_SHARE,
            slip_share: SLIP_SHARE,
        }
    }
}

/// How the teacher reasons about one problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The product at once.
    Direct,
    /// Partial products added up as they are made, the result and a check that passes.
    Long,
    /// The long form with one deliberate slip, a check that fails, "wait", and a clean redo.
    LongWithSlip(Slip),
}

/// Where the teacher slips: in the partial product of the multiplier digit `block` places from
/// the right (0: ones), at the column of the multiplicand digit `column` places from the right,
/// it writes `digit` as the units digit of that column's value instead of the true one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slip {
    pub block: usize,
    pub column: usize,
    pub digit: u8,
}

const PHRASES: [(&str, &str, &str); 5] = [
    ("What is ", " * ", "?"),
    ("Compute ", " * ", "."),
    ("Calculate ", " * ", "."),
    ("How much is ", " * ", "?"),
    ("Multiply ", " by ", "."),
];

/// A number with exactly `digits` digits; one digit: 2–9.
fn operand(rng: &mut StdRng, digits: u32) -> u64 {
    if digits <= 1 {
        rng.random_range(2..10)
    } else {
        rng.random_range(10u64.pow(digits - 1)..10u64.pow(digits))
    }
}

/// The split a problem `x * y` falls in.
pub fn split_of_problem(x: u64, y: u64) -> Split {
    split_of(content_hash(&['*' as u64, x, y]))
}

impl Task for Multiplication {
    fn name(&self) -> &'static str {
        "multiplication"
    }

    fn levels(&self) -> std::ops::RangeInclusive<u32> {
        1..=MAX_LEVEL
    }

    fn sample(&self, rng: &mut StdRng, level: u32, split: Split) -> Example {
        let level = level.clamp(1, MAX_LEVEL);
        let (dx, dy) = LEVELS[level as usize - 1];
        let (x, y) = loop {
            let (x, y) = (operand(rng, dx), operand(rng, dy));
            if split_of_problem(x, y) == split {
                break (x, y);
            }
        };
        let (lead, op, tail) = PHRASES[rng.random_range(0..PHRASES.len())];
        let form = if rng.random_bool(self.long_share.clamp(0.0, 1.0)) {
            if rng.random_bool(self.slip_share.clamp(0.0, 1.0)) {
                random_slip(rng, x, y).map_or(Form::Long, Form::LongWithSlip)
            } else {
                Form::Long
            }
        } else {
            Form::Direct
        };
        Example {
            level,
            prompt: format!("{lead}{x}{op}{y}{tail}"),
            answer: (x * y).to_string(),
            reasoning: teacher(x, y, form),
        }
    }

    fn shape(&self, example: &Example, completion: &str) -> Option<Shape> {
        shape(&example.answer, completion)
    }
}

/// The teacher's reasoning for `x * y` in `form`. Panics if a slip is not one [`slip_is_valid`]
/// accepts.
pub fn teacher(x: u64, y: u64, form: Form) -> String {
    let mut out = format!("{x}*{y}");
    match form {
        Form::Direct => out.push_str(&format!(" = {}.\n", x * y)),
        Form::Long => {
            out.push_str(", by parts:\n");
            work(&mut out, x, y, None);
        }
        Form::LongWithSlip(slip) => {
            assert!(
                slip_is_valid(x, y, slip),
                "{slip:?} is not a slip of {x}*{y}"
            );
            out.push_str(", by parts:\n");
            work(&mut out, x, y, Some(slip));
            out.push_str(&format!("{x}*{y}, again:\n"));
            work(&mut out, x, y, None);
        }
    }
    out
}

/// Digits, least significant first.
fn digits_lsf(n: u64) -> Vec<u64> {
    n.to_string()
        .bytes()
        .rev()
        .map(|b| u64::from(b - b'0'))
        .collect()
}

/// The partial products, each added into the total as it is made, then the result line and the
/// check.
fn work(out: &mut String, x: u64, y: u64, slip: Option<Slip>) {
    let mut total = 0;
    for (k, &d) in digits_lsf(y).iter().enumerate() {
        total = add_partial_product(out, x, d, k, total, slip.filter(|s| s.block == k));
    }
    out.push_str(&format!("{x}*{y} = {total}.\n"));
    out.push_str(&check_line(x, y, total));
}

/// Adds `x` times the multiplier digit `d` at place `k` to `total` (the product with the lower
/// digits of the multiplier), column by column; returns the new total as written (after a slip,
/// the wrong one). The low `k` digits of `total` are final and pass through; each line restates
/// what is left of `x` and of the rest of `total`, so the digits of the column are the last ones
/// of the line's left side (the ones block has no total yet and leaves that part out):
/// `347*2+208: 7*2+8+0=22, 22` — the remaining work is exactly 347*2 + 208 (plus the carry).
fn add_partial_product(
    out: &mut String,
    x: u64,
    d: u64,
    k: usize,
    total: u64,
    slip: Option<Slip>,
) -> u64 {
    if d == 0 {
        // Adds nothing; the line keeps the block's place.
        out.push_str(&format!("{x}*0: 0\n"));
        return total;
    }
    let place = 10u64.pow(k as u32);
    let xs = digits_lsf(x);
    // The total's last k digits (none for the ones block: a zero-width format would still
    // print a 0).
    let mut partial = if k == 0 {
        String::new()
    } else {
        format!("{:0k$}", total % place)
    };
    let (mut rest_x, mut rest_t) = (x, total / place);
    let mut carry = 0;
    for (i, &a) in xs.iter().enumerate() {
        let b = rest_t % 10;
        let mut value = a * d + b + carry;
        if let Some(s) = slip.filter(|s| s.column == i) {
            value = value - value % 10 + u64::from(s.digit);
        }
        // The top column writes its whole value: no separate line for the last carry. (Nothing
        // of the total is left by then: it is less than x times 10^k.)
        let written = if i + 1 == xs.len() {
            value.to_string()
        } else {
            (value % 10).to_string()
        };
        partial.insert_str(0, &written);
        let line = if k == 0 {
            format!("{rest_x}*{d}: {a}*{d}+{carry}={value}, {partial}\n")
        } else {
            format!("{rest_x}*{d}+{rest_t}: {a}*{d}+{b}+{carry}={value}, {partial}\n")
        };
        out.push_str(&line);
        carry = value / 10;
        rest_x /= 10;
        rest_t /= 10;
    }
    partial.parse().expect("digits")
}

/// The true value of one column (digit times digit, plus the total's digit and the carry in) in
/// the block of multiplier digit `block`.
fn column_value(x: u64, y: u64, block: usize, column: usize) -> u64 {
    let place = 10u64.pow(block as u32);
    let d = y / place % 10;
    let mut rest_t = x * (y % place) / place;
    let mut carry = 0;
    for (i, a) in digits_lsf(x).into_iter().enumerate() {
        let value = a * d + rest_t % 10 + carry;
        if i == column {
            return value;
        }
        carry = value / 10;
        rest_t /= 10;
    }
    unreachable!("column {column} of {x}")
}

/// A slip the teacher can make in `x * y`: a column that exists, of a multiplier digit that is
/// not 0 (its partial product has no columns), a units digit that differs from the true one by
/// 1–8 (a difference of 9 would leave the result's residue mod 9 unchanged and the check blind to
/// it), and no leading zero where the top column's value is written whole.
pub fn slip_is_valid(x: u64, y: u64, slip: Slip) -> bool {
    let (xs, ys) = (digits_lsf(x), digits_lsf(y));
    if slip.block >= ys.len() || ys[slip.block] == 0 || slip.column >= xs.len() || slip.digit > 9 {
        return false;
    }
    let value = column_value(x, y, slip.block, slip.column);
    let true_digit = value % 10;
    let wrong = u64::from(slip.digit);
    let top = slip.column + 1 == xs.len();
    wrong != true_digit && wrong.abs_diff(true_digit) != 9 && !(top && value < 10 && wrong == 0)
}

/// A slip drawn uniformly from every valid one (None: `x * y` has none).
pub fn random_slip(rng: &mut StdRng, x: u64, y: u64) -> Option<Slip> {
    let (nx, ny) = (digits_lsf(x).len(), digits_lsf(y).len());
    let all: Vec<Slip> = (0..ny)
        .flat_map(|block| (0..nx).map(move |column| (block, column)))
        .flat_map(|(block, column)| {
            (0..10u8).map(move |digit| Slip {
                block,
                column,
                digit,
            })
        })
        .filter(|&s| slip_is_valid(x, y, s))
        .collect();
    (!all.is_empty()).then(|| all[rng.random_range(0..all.len())])
}

/// `n` and its digit sums until one digit is left ("347 -> 3+4+7=14 -> 1+4=5"), and that digit:
/// `n`'s residue mod 9 (as 1–9 for `n > 0`). Each step only adds the digits just written.
fn casting_out_nines(n: u64) -> (String, u64) {
    let mut text = n.to_string();
    let mut cur = n;
    while cur >= 10 {
        let ds: Vec<u64> = digits_lsf(cur).into_iter().rev().collect();
        let sum: u64 = ds.iter().sum();
        let terms: Vec<String> = ds.iter().map(u64::to_string).collect();
        text.push_str(&format!(" -> {}={sum}", terms.join("+")));
        cur = sum;
    }
    (text, cur)
}

/// The check of a claimed product: the residues of both operands, of their product, and of the
/// claim, then the comparison ("ok", or "wait" when they differ).
fn check_line(x: u64, y: u64, claimed: u64) -> String {
    let (cx, rx) = casting_out_nines(x);
    let (cy, ry) = casting_out_nines(y);
    let (cp, rp) = casting_out_nines(rx * ry);
    let (cc, rc) = casting_out_nines(claimed);
    let verdict = if rp == rc {
        format!("{rp} = {rc}, ok")
    } else {
        format!("{rp} != {rc}, wait")
    };
    format!("check: {cx}, {cy}, {rx}*{ry}={cp}; {cc}. {verdict}\n")
}

/// The claimed product on a result line (`347*26 = 9022.`): the digits after " = ", when what is
/// before it looks like a product.
fn result_claim(line: &str) -> Option<&str> {
    let (lhs, rhs) = line.split_once(" = ")?;
    let lhs = lhs.trim();
    if !lhs.contains('*') || !lhs.ends_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let n = rhs.bytes().take_while(u8::is_ascii_digit).count();
    (n > 0).then(|| &rhs[..n])
}

/// How a completion of a problem whose product is `answer` reasoned, read leniently: whatever
/// lines can be recognised count, the rest is skipped. None when the first line of the reasoning
/// is neither the long form's opening nor a result line (no branching line: not counted at all).
pub fn shape(answer: &str, completion: &str) -> Option<Shape> {
    let reasoning = &completion[..completion.find(END_THINK).unwrap_or(completion.len())];
    let mut lines = Vec::new();
    let mut start = 0;
    for piece in reasoning.split_inclusive('\n') {
        let line = piece.trim_end_matches(['\n', '\r']);
        lines.push((start..start + line.len(), line));
        start += piece.len();
    }
    let first = lines
        .iter()
        .map(|(_, l)| l.trim())
        .find(|l| !l.is_empty())?;
    let long = if first.contains("by parts") {
        true
    } else if result_claim(first).is_some() {
        false
    } else {
        return None;
    };
    let mut shape = Shape {
        long,
        ..Shape::default()
    };
    let mut claim: Option<&str> = None;
    for (range, line) in lines {
        if line.trim_start().starts_with("check") {
            shape.checks += 1;
            shape.marks.push((range, MarkKind::Check));
            let slipped = claim.is_some_and(|c| c != answer);
            shape.slips += u32::from(slipped);
            let end = line.trim_end_matches(|c: char| c.is_whitespace() || ".,!".contains(c));
            let waited = end.len() >= 4
                && end.is_char_boundary(end.len() - 4)
                && end[end.len() - 4..].eq_ignore_ascii_case("wait");
            shape.waits += u32::from(waited);
            shape.waits_after_slip += u32::from(waited && slipped);
        } else if let Some(c) = result_claim(line) {
            claim = Some(c);
        }
    }
    // Every "wait" in the reasoning, as a word: the viewer shows them wherever the model puts one.
    let lower = reasoning.to_ascii_lowercase();
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
    for (i, _) in lower.match_indices("wait") {
        if !word(lower[..i].chars().next_back()) && !word(lower[i + 4..].chars().next()) {
            shape.marks.push((i..i + 4, MarkKind::Wait));
        }
    }
    shape.marks.sort_by_key(|(r, _)| (r.start, r.end));
    Some(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::task::grade_answer;
    use rand::SeedableRng;

    fn ex(x: u64, y: u64, form: Form) -> Example {
        Example {
            level: 1,
            prompt: format!("What is {x} * {y}?"),
            answer: (x * y).to_string(),
            reasoning: teacher(x, y, form),
        }
    }

    #[test]
    fn direct_trace_by_hand() {
        assert_eq!(teacher(347, 26, Form::Direct), "347*26 = 9022.\n");
        assert_eq!(teacher(7, 8, Form::Direct), "7*8 = 56.\n");
    }

    #[test]
    fn long_trace_by_hand() {
        assert_eq!(
            teacher(347, 26, Form::Long),
            "347*26, by parts:\n\
             347*6: 7*6+0=42, 2\n\
             34*6: 4*6+4=28, 82\n\
             3*6: 3*6+2=20, 2082\n\
             347*2+208: 7*2+8+0=22, 22\n\
             34*2+20: 4*2+0+2=10, 022\n\
             3*2+2: 3*2+2+1=9, 9022\n\
             347*26 = 9022.\n\
             check: 347 -> 3+4+7=14 -> 1+4=5, 26 -> 2+6=8, 5*8=40 -> 4+0=4; \
             9022 -> 9+0+2+2=13 -> 1+3=4. 4 = 4, ok\n"
        );
        assert_eq!(
            teacher(7, 8, Form::Long),
            "7*8, by parts:\n\
             7*8: 7*8+0=56, 56\n\
             7*8 = 56.\n\
             check: 7, 8, 7*8=56 -> 5+6=11 -> 1+1=2; 56 -> 5+6=11 -> 1+1=2. 2 = 2, ok\n"
        );
    }

    #[test]
    fn a_zero_multiplier_digit_is_one_line() {
        assert_eq!(
            teacher(12, 30, Form::Long),
            "12*30, by parts:\n\
             12*0: 0\n\
             12*3+0: 2*3+0+0=6, 60\n\
             1*3+0: 1*3+0+0=3, 360\n\
             12*30 = 360.\n\
             check: 12 -> 1+2=3, 30 -> 3+0=3, 3*3=9; 360 -> 3+6+0=9. 9 = 9, ok\n"
        );
    }

    const SLIP_23_4: &str = "23*4, by parts:\n\
        23*4: 3*4+0=13, 3\n\
        2*4: 2*4+1=9, 93\n\
        23*4 = 93.\n\
        check: 23 -> 2+3=5, 4, 5*4=20 -> 2+0=2; 93 -> 9+3=12 -> 1+2=3. 2 != 3, wait\n\
        23*4, again:\n\
        23*4: 3*4+0=12, 2\n\
        2*4: 2*4+1=9, 92\n\
        23*4 = 92.\n\
        check: 23 -> 2+3=5, 4, 5*4=20 -> 2+0=2; 92 -> 9+2=11 -> 1+1=2. 2 = 2, ok\n";

    #[test]
    fn slip_trace_by_hand() {
        let slip = Slip {
            block: 0,
            column: 0,
            digit: 3,
        };
        assert_eq!(teacher(23, 4, Form::LongWithSlip(slip)), SLIP_23_4);
        // A slip in the second partial product carries on into the total; the redo starts
        // from the top.
        let slip = Slip {
            block: 1,
            column: 1,
            digit: 3,
        };
        assert!(teacher(347, 26, Form::LongWithSlip(slip)).starts_with(
            "347*26, by parts:\n\
             347*6: 7*6+0=42, 2\n\
             34*6: 4*6+4=28, 82\n\
             3*6: 3*6+2=20, 2082\n\
             347*2+208: 7*2+8+0=22, 22\n\
             34*2+20: 4*2+0+2=13, 322\n\
             3*2+2: 3*2+2+1=9, 9322\n\
             347*26 = 9322.\n\
             check: 347 -> 3+4+7=14 -> 1+4=5, 26 -> 2+6=8, 5*8=40 -> 4+0=4; \
             9322 -> 9+3+2+2=16 -> 1+6=7. 4 != 7, wait\n\
             347*26, again:\n\
             347*6: 7*6+0=42, 2\n"
        ));
        // The top column of a partial product is written whole, with the wrong units digit.
        let top = Slip {
            block: 0,
            column: 2,
            digit: 3,
        };
        assert!(teacher(347, 6, Form::LongWithSlip(top)).contains("3*6: 3*6+2=23, 2382\n"));
    }

    #[test]
    fn invalid_slips_are_refused() {
        let s = |block, column, digit| Slip {
            block,
            column,
            digit,
        };
        assert!(slip_is_valid(23, 4, s(0, 0, 3)));
        assert!(!slip_is_valid(23, 4, s(0, 0, 2)), "the true digit");
        assert!(!slip_is_valid(23, 4, s(1, 0, 3)), "no such block");
        assert!(!slip_is_valid(23, 4, s(0, 2, 3)), "no such column");
        assert!(!slip_is_valid(23, 4, s(0, 0, 10)), "not a digit");
        // 5*2=10: writing 19 is off by 9, invisible mod 9.
        assert!(!slip_is_valid(5, 2, s(0, 0, 9)));
        // 2*3+1=7 at the top: writing 0 would be a leading zero.
        assert!(!slip_is_valid(25, 3, s(0, 1, 0)));
        assert!(
            !slip_is_valid(12, 30, s(0, 0, 1)),
            "a zero digit has no columns"
        );
        assert!(slip_is_valid(12, 30, s(1, 0, 1)));
    }

    #[test]
    #[should_panic(expected = "is not a slip")]
    fn teacher_panics_on_an_invalid_slip() {
        teacher(
            23,
            4,
            Form::LongWithSlip(Slip {
                block: 0,
                column: 0,
                digit: 2,
            }),
        );
    }

    /// The operands of a prompt: its two numbers.
    fn operands(prompt: &str) -> (u64, u64) {
        let nums: Vec<u64> = prompt
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(nums.len(), 2, "{prompt}");
        (nums[0], nums[1])
    }

    /// One pass of long work, as re-derived from the text.
    #[derive(Debug)]
    struct Attempt {
        /// Column equations whose value is not digit times digit plus carry.
        wrong_columns: usize,
        result: u64,
        check_passed: bool,
    }

    /// `n`'s digits, most significant first, as numbers.
    fn ds(n: u64) -> Vec<u64> {
        n.to_string().bytes().map(|b| u64::from(b - b'0')).collect()
    }

    /// A casting-out-nines chain "N -> a+b=s -> ...": checks each digit sum against the number
    /// before it and that it stops at the first single digit; returns (N, final digit).
    fn read_chain(chain: &str) -> (u64, u64) {
        let mut steps = chain.split(" -> ");
        let start: u64 = steps.next().unwrap().parse().expect(chain);
        let mut cur = start;
        for step in steps {
            assert!(cur >= 10, "a step after a single digit: {chain}");
            let (terms, sum) = step.split_once('=').expect(chain);
            let terms: Vec<u64> = terms.split('+').map(|t| t.parse().unwrap()).collect();
            assert_eq!(terms, ds(cur), "{chain}");
            let sum: u64 = sum.parse().expect(chain);
            assert_eq!(sum, terms.iter().sum::<u64>(), "{chain}");
            cur = sum;
        }
        assert!(cur < 10, "{chain}");
        // The digit is the residue mod 9 (9 for multiples of nine).
        assert_eq!(cur, 1 + (start - 1) % 9, "{chain}");
        (start, cur)
    }

    /// Re-derives one check line of `x * y` claiming `claimed`; returns whether it passed.
    fn read_check(x: u64, y: u64, claimed: u64, line: &str) -> bool {
        let body = line.strip_prefix("check: ").expect(line);
        let (chains, verdict) = body.rsplit_once(". ").expect(line);
        let (operand_chains, claim_chain) = chains.split_once("; ").expect(line);
        let parts: Vec<&str> = operand_chains.split(", ").collect();
        assert_eq!(parts.len(), 3, "{line}");
        let (cx, rx) = read_chain(parts[0]);
        let (cy, ry) = read_chain(parts[1]);
        assert_eq!((cx, cy), (x, y), "{line}");
        let (product, chain) = parts[2].split_once('=').expect(line);
        assert_eq!(product, format!("{rx}*{ry}"), "{line}");
        let (p, rp) = read_chain(chain);
        assert_eq!(p, rx * ry, "{line}");
        let (c, rc) = read_chain(claim_chain);
        assert_eq!(c, claimed, "{line}");
        if rp == rc {
            assert_eq!(verdict, format!("{rp} = {rc}, ok"), "{line}");
        } else {
            assert_eq!(verdict, format!("{rp} != {rc}, wait"), "{line}");
        }
        rp == rc
    }

    /// Re-derives a whole long trace of `x * y` from its text: every column of every partial
    /// product as it is added into the total (a column's value may be wrong, but everything after
    /// it must follow from what was written), the result line and the check.
    fn read_long(x: u64, y: u64, trace: &str) -> Vec<Attempt> {
        let mut lines = trace.lines();
        assert_eq!(lines.next(), Some(format!("{x}*{y}, by parts:").as_str()));
        let mut attempts = Vec::new();
        loop {
            let mut wrong_columns = 0;
            let mut total = 0u64;
            for (k, &d) in ds(y).iter().rev().enumerate() {
                if d == 0 {
                    assert_eq!(lines.next(), Some(format!("{x}*0: 0").as_str()));
                    continue;
                }
                let place = 10u64.pow(k as u32);
                // The total's last k digits are final.
                let mut partial: String = (0..k as u32)
                    .rev()
                    .map(|j| char::from(b'0' + (total / 10u64.pow(j) % 10) as u8))
                    .collect();
                let mut carry = 0;
                let n = ds(x).len() as u32;
                for i in 0..n {
                    let line = lines.next().expect("a column");
                    let rest = x / 10u64.pow(i);
                    let rest_total = total / place / 10u64.pow(i);
                    let (a, b) = (rest % 10, rest_total % 10);
                    let (lhs, eq) = line.split_once(": ").expect(line);
                    let (eq, written) = eq.split_once(", ").expect(line);
                    let (terms, value) = eq.split_once('=').expect(line);
                    let value: u64 = value.parse().expect(line);
                    if k == 0 {
                        assert_eq!(lhs, format!("{rest}*{d}"), "{line}");
                        assert_eq!(terms, format!("{a}*{d}+{carry}"), "{line}");
                    } else {
                        assert_eq!(lhs, format!("{rest}*{d}+{rest_total}"), "{line}");
                        assert_eq!(terms, format!("{a}*{d}+{b}+{carry}"), "{line}");
                    }
                    wrong_columns += usize::from(value != a * d + b + carry);
                    let digit = if i + 1 == n {
                        value.to_string()
                    } else {
                        (value % 10).to_string()
                    };
                    partial.insert_str(0, &digit);
                    assert_eq!(written, partial, "{line}");
                    carry = value / 10;
                }
                assert_eq!(total / place / 10u64.pow(n), 0, "total left over");
                let next: u64 = partial.parse().unwrap();
                // What the block added: x*d at its place, plus what a slip put in.
                if wrong_columns == 0 {
                    assert_eq!(next, total + x * d * place);
                }
                total = next;
            }
            assert_eq!(lines.next(), Some(format!("{x}*{y} = {total}.").as_str()));
            let check_passed = read_check(x, y, total, lines.next().expect("a check"));
            attempts.push(Attempt {
                wrong_columns,
                result: total,
                check_passed,
            });
            if check_passed {
                assert_eq!(lines.next(), None, "lines after a passed check");
                return attempts;
            }
            assert_eq!(lines.next(), Some(format!("{x}*{y}, again:").as_str()));
        }
    }

    #[test]
    fn every_trace_is_correct_arithmetic_and_every_slip_is_caught() {
        let task = Multiplication {
            long_share: 0.5,
            slip_share: 0.5,
        };
        let mut rng = StdRng::seed_from_u64(11);
        for level in task.levels() {
            let (dx, dy) = LEVELS[level as usize - 1];
            let mut seen = [0; 3];
            for i in 0..400 {
                let split = if i % 2 == 0 {
                    Split::Train
                } else {
                    Split::HeldOut
                };
                let e = task.sample(&mut rng, level, split);
                let (x, y) = operands(&e.prompt);
                assert_eq!(
                    (ds(x).len() as u32, ds(y).len() as u32),
                    (dx, dy),
                    "{}",
                    e.prompt
                );
                assert_eq!(split_of_problem(x, y), split);
                assert_eq!(e.answer, (x * y).to_string());
                if e.reasoning.contains("by parts") {
                    let attempts = read_long(x, y, &e.reasoning);
                    let last = attempts.last().unwrap();
                    assert_eq!((last.wrong_columns, last.result), (0, x * y), "{e:?}");
                    match attempts.as_slice() {
                        [_] => seen[1] += 1,
                        [slipped, _] => {
                            seen[2] += 1;
                            assert_eq!(slipped.wrong_columns, 1, "{e:?}");
                            let off = slipped.result.abs_diff(x * y);
                            assert!(off > 0 && off % 9 != 0, "{e:?}");
                            assert!(!slipped.check_passed);
                        }
                        _ => panic!("more than one redo: {e:?}"),
                    }
                } else {
                    seen[0] += 1;
                    assert_eq!(e.reasoning, format!("{x}*{y} = {}.\n", x * y));
                }
                let g = grade_answer(&e.answer, &e.completion(), true);
                assert!(g.correct && g.format_ok, "{e:?}");
            }
            assert!(seen.iter().all(|&n| n > 50), "level {level}: {seen:?}");
        }
    }

    #[test]
    fn every_valid_slip_of_small_problems_is_caught() {
        for x in [7, 23, 99, 305, 4096] {
            for y in [2, 9, 10, 47, 90] {
                let mut any = false;
                for block in 0..2 {
                    for column in 0..4 {
                        for digit in 0..10 {
                            let slip = Slip {
                                block,
                                column,
                                digit,
                            };
                            if !slip_is_valid(x, y, slip) {
                                continue;
                            }
                            any = true;
                            let attempts =
                                read_long(x, y, &teacher(x, y, Form::LongWithSlip(slip)));
                            assert_eq!(attempts.len(), 2, "{x}*{y} {slip:?}");
                            assert_eq!(attempts[0].wrong_columns, 1);
                        }
                    }
                }
                assert!(any, "{x}*{y} has no slip");
            }
        }
    }

    #[test]
    fn shares_of_the_forms_follow_the_constants() {
        let task = Multiplication::default();
        let mut rng = StdRng::seed_from_u64(5);
        let (mut long, mut slipped) = (0, 0);
        let n = 2000;
        for i in 0..n {
            let e = task.sample(&mut rng, 1 + i % MAX_LEVEL, Split::Train);
            long += usize::from(e.reasoning.contains("by parts"));
            slipped += usize::from(e.reasoning.contains("again"));
        }
        let long_share = long as f64 / n as f64;
        let slip_share = slipped as f64 / long as f64;
        assert!((long_share - LONG_SHARE).abs() < 0.04, "{long_share}");
        assert!((slip_share - SLIP_SHARE).abs() < 0.07, "{slip_share}");
        // The extremes: all direct, all slips.
        let mut rng = StdRng::seed_from_u64(5);
        let direct = Multiplication {
            long_share: 0.0,
            slip_share: 1.0,
        };
        let slips = Multiplication {
            long_share: 1.0,
            slip_share: 1.0,
        };
        for level in 1..=MAX_LEVEL {
            assert!(!direct
                .sample(&mut rng, level, Split::Train)
                .reasoning
                .contains("by parts"));
            assert!(slips
                .sample(&mut rng, level, Split::Train)
                .reasoning
                .contains("wait"));
        }
    }

    #[test]
    fn splits_never_mix_and_level_one_has_held_out_problems() {
        let task = Multiplication::default();
        let mut rng = StdRng::seed_from_u64(9);
        for level in 1..=MAX_LEVEL {
            for _ in 0..300 {
                let e = task.sample(&mut rng, level, Split::Train);
                let (x, y) = operands(&e.prompt);
                assert_eq!(split_of_problem(x, y), Split::Train, "{}", e.prompt);
            }
        }
        let held: Vec<(u64, u64)> = (2..10)
            .flat_map(|x| (2..10).map(move |y| (x, y)))
            .filter(|&(x, y)| split_of_problem(x, y) == Split::HeldOut)
            .collect();
        assert!(!held.is_empty() && held.len() < 16, "{held:?}");
        let e = task.sample(&mut rng, 1, Split::HeldOut);
        assert!(held.contains(&operands(&e.prompt)));
    }

    #[test]
    fn same_seed_same_examples() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..30)
                .map(|i| {
                    Multiplication::default().sample(&mut rng, 1 + i % MAX_LEVEL, Split::Train)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn shape_of_the_teachers_own_forms() {
        let task = Multiplication::default();
        let direct = ex(347, 26, Form::Direct);
        assert_eq!(
            task.shape(&direct, &direct.completion()),
            Some(Shape::default())
        );

        let long = ex(347, 26, Form::Long);
        let c = long.completion();
        let check = c.find("check: ").unwrap();
        let check_end = check + c[check..].find('\n').unwrap();
        assert_eq!(
            task.shape(&long, &c),
            Some(Shape {
                long: true,
                checks: 1,
                marks: vec![(check..check_end, MarkKind::Check)],
                ..Shape::default()
            })
        );

        let slip = ex(
            23,
            4,
            Form::LongWithSlip(Slip {
                block: 0,
                column: 0,
                digit: 3,
            }),
        );
        let c = slip.completion();
        let first = "check: 23 -> 2+3=5, 4, 5*4=20 -> 2+0=2; 93 -> 9+3=12 -> 1+2=3. 2 != 3, wait";
        let second = "check: 23 -> 2+3=5, 4, 5*4=20 -> 2+0=2; 92 -> 9+2=11 -> 1+1=2. 2 = 2, ok";
        let (a, b) = (c.find(first).unwrap(), c.find(second).unwrap());
        let w = a + first.len() - 4;
        assert_eq!(&c[w..w + 4], "wait");
        assert_eq!(
            task.shape(&slip, &c),
            Some(Shape {
                long: true,
                checks: 2,
                waits: 1,
                slips: 1,
                waits_after_slip: 1,
                marks: vec![
                    (a..a + first.len(), MarkKind::Check),
                    (w..w + 4, MarkKind::Wait),
                    (b..b + second.len(), MarkKind::Check),
                ],
            })
        );
    }

    #[test]
    fn a_false_alarm_is_a_wait_without_a_slip() {
        // The result is right, the model's check goes wrong and it waits anyway.
        let c = "23*4, by parts:\n\
                 23*4: 3*4+0=12, 2\n\
                 2*4: 2*4+1=9, 92\n\
                 23*4 = 92.\n\
                 check: 23 -> 2+3=5, 4, 5*4=20 -> 2+0=2; 92 -> 9+2=11 -> 1+1=3. 2 != 3, wait\n\
                 23*4, again:\n\
                 23*4 = 92.\n\
                 check: 23 -> 5, 4, 5*4=20 -> 2; 92 -> 2. 2 = 2, ok\n\
                 </think>\n\nThe answer is 92.";
        let s = shape("92", c).unwrap();
        assert_eq!(
            (s.long, s.checks, s.waits, s.slips, s.waits_after_slip),
            (true, 2, 1, 0, 0)
        );
        // A slip the check misses: a slip, no wait.
        let c = "23*4, by parts:\n23*4 = 93.\ncheck: ... 2 = 2, ok\n</think>\n\nThe answer is 93.";
        let s = shape("92", c).unwrap();
        assert_eq!((s.checks, s.waits, s.slips), (1, 0, 1));
        // Text after </think> is not reasoning.
        let c = "23*4 = 92.\n</think>\n\ncheck: wait";
        assert_eq!(shape("92", c), Some(Shape::default()));
    }

    #[test]
    fn shape_survives_malformed_text() {
        let slip = ex(
            23,
            4,
            Form::LongWithSlip(Slip {
                block: 0,
                column: 0,
                digit: 3,
            }),
        );
        let c = format!("{}é ✓ wait", slip.completion());
        for (cut, _) in c.char_indices() {
            let s = shape(&slip.answer, &c[..cut]);
            if let Some(s) = &s {
                assert!(s.waits <= s.checks && s.waits_after_slip <= s.waits.min(s.slips));
                for (r, _) in &s.marks {
                    assert!(c.get(r.clone()).is_some());
                }
            }
        }
        // Truncated mid-trace: what is there counts.
        let cut = c.find("23*4, again").unwrap();
        let s = shape(&slip.answer, &c[..cut]).unwrap();
        assert_eq!(
            (s.checks, s.waits, s.slips, s.waits_after_slip),
            (1, 1, 1, 1)
        );
        for garbage in [
            "",
            "\n\n",
            "</think>",
            "wait",
            "check: wait",
            "hello\ncheck: wait",
            "= = =\n",
            " = 5",
            "*3 = \n",
            "3*4 = x.\ncheck",
            "by parts\ncheck:\ncheck: wait\nwaiting\nawait",
            "ä*ö = ü\ncheck: wai",
            "\u{1F600} by parts\r\ncheck: 1 != 2, WAIT.\r\n",
        ] {
            let _ = shape("12", garbage);
        }
        assert_eq!(shape("12", "hello\n3*4 = 12."), None, "no branching line");
        assert_eq!(shape("12", "check: wait"), None);
        let s = shape("12", "\u{1F600} by parts\r\ncheck: 1 != 2, WAIT.\r\n").unwrap();
        assert_eq!((s.long, s.checks, s.waits, s.slips), (true, 1, 1, 0));
        // "waiting" and "await" are not the word.
        let s = shape("12", "by parts\ncheck:\ncheck: wait\nwaiting\nawait").unwrap();
        assert_eq!(s.checks, 2);
        assert_eq!(
            s.marks.iter().filter(|(_, k)| *k == MarkKind::Wait).count(),
            1
        );
    }

    /// Characters per trace, by level and form, over random problems; the hardest level's
    /// slip traces must leave room in a context of a few hundred tokens.
    #[test]
    fn trace_lengths() {
        let forms = [("direct", 0.0, 0.0), ("long", 1.0, 0.0), ("slip", 1.0, 1.0)];
        let mut rng = StdRng::seed_from_u64(1);
        let mut worst = 0;
        for level in 1..=MAX_LEVEL {
            let mut row = format!("level {level}:");
            for (name, long_share, slip_share) in forms {
                let task = Multiplication {
                    long_share,
                    slip_share,
                };
                let lens: Vec<usize> = (0..500)
                    .map(|_| {
                        task.sample(&mut rng, level, Split::Train)
                            .completion()
                            .len()
                    })
                    .collect();
                let max = *lens.iter().max().unwrap();
                let mean = lens.iter().sum::<usize>() as f64 / lens.len() as f64;
                row.push_str(&format!("  {name} max {max} mean {mean:.0}"));
                worst = worst.max(max);
            }
            println!("{row}");
        }
        // The largest operands (not quite the longest trace: digit sums vary).
        let slip = Slip {
            block: 1,
            column: 2,
            digit: 7,
        };
        let longest = ex(999, 99, Form::LongWithSlip(slip)).completion().len();
        println!("999*99 with a slip: {longest}");
        assert!(worst.max(longest) < 700, "{worst} {longest}");
    }

    /// Tokens per completion with a tokenizer trained as a from-scratch run trains it (byte-level
    /// BPE, vocabulary 320, on prompts and completions of every level).
    #[test]
    #[ignore = "trains a tokenizer; run with --ignored --nocapture to measure"]
    fn trace_tokens() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut texts = Vec::new();
        for i in 0..4000 {
            let e = Multiplication::default().sample(&mut rng, 1 + i % MAX_LEVEL, Split::Train);
            texts.push(e.prompt.clone());
            texts.push(e.completion());
        }
        let tok = crate::train::tokenizer::train_bpe(texts.into_iter(), 320).unwrap();
        let count = |s: &str| tok.encode(s, false).unwrap().get_ids().len();
        for level in 1..=MAX_LEVEL {
            let mut row = format!("level {level}:");
            for (name, long_share, slip_share) in
                [("direct", 0.0, 0.0), ("long", 1.0, 0.0), ("slip", 1.0, 1.0)]
            {
                let task = Multiplication {
                    long_share,
                    slip_share,
                };
                let (mut max, mut sum, mut chars) = (0, 0, 0);
                for _ in 0..500 {
                    let e = task.sample(&mut rng, level, Split::Train);
                    let c = e.completion();
                    let n = count(&c);
                    max = max.max(n);
                    sum += n;
                    chars += c.len();
                }
                row.push_str(&format!(
                    "  {name} max {max} mean {:.0} ({:.2} chars/token)",
                    sum as f64 / 500.0,
                    chars as f64 / sum as f64
                ));
            }
            println!("{row}");
        }
        let slip = Slip {
            block: 1,
            column: 2,
            digit: 7,
        };
        let e = ex(999, 99, Form::LongWithSlip(slip));
        println!("999*99 with a slip: {} tokens", count(&e.completion()));
        println!("prompt: {} tokens", count("What is 999 * 99?"));
    }
}
