//! Multi-digit addition and subtraction with carries and borrows.
//!
//! Level `L` (1–8): the larger operand has `L` digits, the other between 1 and `L`. Subtraction
//! keeps the result non-negative. The teacher works column by column, right to left, the way it is
//! done on paper, and keeps every lookup local so that a small model can learn it: each line
//! restates what is left of both operands (so the next digits are the last ones on the line),
//! adds (or subtracts) one column with the carry (borrow) in, and writes the result so far:
//!
//! ```text
//! 4821+397: 1+7+0=8, 8
//! 482+39: 2+9+0=11, 18
//! 48+3: 8+3+1=12, 218
//! 4+0: 4+0+1=5, 5218
//! ```
//!
//! A subtraction column that goes negative borrows ten: `1-7-0=-6+10=4, 4`.

use rand::rngs::StdRng;
use rand::Rng;

use super::{content_hash, split_of, Example, Split, Task};

/// The hardest level: 8-digit operands.
pub const MAX_LEVEL: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
}

impl Op {
    fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
        }
    }
}

/// The task.
pub struct Arithmetic;

const PHRASES: [(&str, &str); 4] = [
    ("What is ", "?"),
    ("Compute ", "."),
    ("Calculate ", "."),
    ("How much is ", "?"),
];

/// A number with exactly `digits` digits (1 digit: 0–9).
fn with_digits(rng: &mut StdRng, digits: u32) -> u64 {
    if digits <= 1 {
        rng.random_range(0..10)
    } else {
        rng.random_range(10u64.pow(digits - 1)..10u64.pow(digits))
    }
}

/// The split a problem falls in (its content: operator and operands in printed order).
pub fn split_of_problem(op: Op, x: u64, y: u64) -> Split {
    split_of(content_hash(&[op.symbol() as u64, x, y]))
}

impl Task for Arithmetic {
    fn name(&self) -> &'static str {
        "arithmetic"
    }

    fn levels(&self) -> std::ops::RangeInclusive<u32> {
        1..=MAX_LEVEL
    }

    fn sample(&self, rng: &mut StdRng, level: u32, split: Split) -> Example {
        let level = level.clamp(1, MAX_LEVEL);
        loop {
            let op = if rng.random_bool(0.5) {
                Op::Add
            } else {
                Op::Sub
            };
            let big = with_digits(rng, level);
            let small_digits = rng.random_range(1..=level);
            let small = with_digits(rng, small_digits);
            let (x, y) = match op {
                Op::Sub => (big.max(small), big.min(small)),
                Op::Add if rng.random_bool(0.5) => (small, big),
                Op::Add => (big, small),
            };
            if split_of_problem(op, x, y) != split {
                continue;
            }
            let (lead, tail) = PHRASES[rng.random_range(0..PHRASES.len())];
            return Example {
                level,
                prompt: format!("{lead}{x} {} {y}{tail}", op.symbol()),
                answer: match op {
                    Op::Add => (x + y).to_string(),
                    Op::Sub => (x - y).to_string(),
                },
                reasoning: teacher(op, x, y),
            };
        }
    }
}

/// The teacher's column-by-column reasoning for `x op y` (for subtraction, `x >= y`).
pub fn teacher(op: Op, x: u64, y: u64) -> String {
    let mut xs: Vec<u8> = x.to_string().bytes().map(|b| b - b'0').collect();
    let mut ys: Vec<u8> = y.to_string().bytes().map(|b| b - b'0').collect();
    let mut out = String::new();
    let mut partial = String::new();
    let mut carry: i32 = 0;
    loop {
        let a = xs.pop().unwrap_or(0) as i32;
        let b = ys.pop().unwrap_or(0) as i32;
        // What was left of both operands before this column.
        let (rx, ry) = (restore(&xs, a), restore(&ys, b));
        let sym = op.symbol();
        let (column, digit, next) = match op {
            Op::Add => {
                let s = a + b + carry;
                (format!("{a}+{b}+{carry}={s}"), s % 10, s / 10)
            }
            Op::Sub => {
                let r = a - b - carry;
                if r < 0 {
                    (format!("{a}-{b}-{carry}={r}+10={}", r + 10), r + 10, 1)
                } else {
                    (format!("{a}-{b}-{carry}={r}"), r, 0)
                }
            }
        };
        partial.insert(0, char::from(b'0' + digit as u8));
        out.push_str(&format!("{rx}{sym}{ry}: {column}, {partial}\n"));
        carry = next;
        if xs.is_empty() && ys.is_empty() && carry == 0 {
            return out;
        }
    }
}

/// An operand as it stood before its last digit `d` was taken off (`rest` is what remains); an
/// exhausted operand shows as 0.
fn restore(rest: &[u8], d: i32) -> String {
    if rest.is_empty() {
        return d.to_string();
    }
    let mut s: String = rest.iter().map(|&v| char::from(b'0' + v)).collect();
    s.push(char::from(b'0' + d as u8));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::task::{grade_answer, Task};
    use rand::SeedableRng;

    #[test]
    fn addition_trace_by_hand() {
        assert_eq!(
            teacher(Op::Add, 4821, 397),
            "4821+397: 1+7+0=8, 8\n\
             482+39: 2+9+0=11, 18\n\
             48+3: 8+3+1=12, 218\n\
             4+0: 4+0+1=5, 5218\n"
        );
    }

    #[test]
    fn carry_out_of_the_top_digit_gets_its_own_column() {
        assert_eq!(
            teacher(Op::Add, 999, 1),
            "999+1: 9+1+0=10, 0\n\
             99+0: 9+0+1=10, 00\n\
             9+0: 9+0+1=10, 000\n\
             0+0: 0+0+1=1, 1000\n"
        );
        assert_eq!(
            teacher(Op::Add, 5, 7),
            "5+7: 5+7+0=12, 2\n0+0: 0+0+1=1, 12\n"
        );
        assert_eq!(teacher(Op::Add, 0, 0), "0+0: 0+0+0=0, 0\n");
    }

    #[test]
    fn subtraction_borrows_by_hand() {
        assert_eq!(
            teacher(Op::Sub, 4821, 397),
            "4821-397: 1-7-0=-6+10=4, 4\n\
             482-39: 2-9-1=-8+10=2, 24\n\
             48-3: 8-3-1=4, 424\n\
             4-0: 4-0-0=4, 4424\n"
        );
        assert_eq!(
            teacher(Op::Sub, 1000, 999),
            "1000-999: 0-9-0=-9+10=1, 1\n\
             100-99: 0-9-1=-10+10=0, 01\n\
             10-9: 0-9-1=-10+10=0, 001\n\
             1-0: 1-0-1=0, 0001\n"
        );
        assert_eq!(teacher(Op::Sub, 7, 7), "7-7: 7-7-0=0, 0\n");
    }

    /// Re-derives every line of a trace from its own text, with Rust's integer arithmetic as the
    /// reference: the restated operands, each column's equation, the carry chain and the result.
    fn check_trace(op: Op, x: u64, y: u64, trace: &str) {
        let sym = op.symbol();
        let (mut rx, mut ry) = (x, y);
        let mut carry = 0i64;
        let mut lines = trace.lines().peekable();
        let mut last_partial = String::new();
        let mut place = 0u32;
        while let Some(line) = lines.next() {
            let (operands, rest) = line.split_once(": ").expect("operands: column");
            assert_eq!(operands, format!("{rx}{sym}{ry}"), "{line}");
            let (column, partial) = rest.split_once(", ").expect("column, partial");
            let (a, b) = ((rx % 10) as i64, (ry % 10) as i64);
            let (lhs, rhs) = column.split_once('=').expect("equation");
            assert_eq!(lhs, format!("{a}{sym}{b}{sym}{carry}"), "{line}");
            let value = match op {
                Op::Add => a + b + carry,
                Op::Sub => a - b - carry,
            };
            let digit = if value < 0 {
                assert_eq!(rhs, format!("{value}+10={}", value + 10), "{line}");
                carry = 1;
                value + 10
            } else {
                assert_eq!(rhs, value.to_string(), "{line}");
                carry = if op == Op::Add { value / 10 } else { 0 };
                value % 10
            };
            assert_eq!(partial, format!("{digit}{last_partial}"), "{line}");
            last_partial = partial.to_string();
            rx /= 10;
            ry /= 10;
            place += 1;
            if lines.peek().is_none() {
                assert_eq!((rx, ry, carry), (0, 0, 0), "ended early: {trace}");
            }
        }
        let expected = match op {
            Op::Add => x + y,
            Op::Sub => x - y,
        };
        assert_eq!(last_partial.parse::<u64>().unwrap(), expected, "{trace}");
        assert!(place as usize >= expected.to_string().len());
    }

    #[test]
    fn every_trace_is_correct_arithmetic() {
        let mut rng = StdRng::seed_from_u64(7);
        for level in 1..=MAX_LEVEL {
            for _ in 0..300 {
                for split in [Split::Train, Split::HeldOut] {
                    let ex = Arithmetic.sample(&mut rng, level, split);
                    // Parse the prompt back: "<lead><x> <op> <y><tail>".
                    let body: String = ex
                        .prompt
                        .chars()
                        .filter(|c| c.is_ascii_digit() || " +-".contains(*c))
                        .collect();
                    let parts: Vec<&str> = body.split_whitespace().collect();
                    let (x, sym, y): (u64, &str, u64) = match parts.as_slice() {
                        [x, s, y] => (x.parse().unwrap(), s, y.parse().unwrap()),
                        _ => panic!("prompt {}", ex.prompt),
                    };
                    let op = if sym == "+" { Op::Add } else { Op::Sub };
                    check_trace(op, x, y, &ex.reasoning);
                    assert_eq!(x.max(y).to_string().len() as u32, level, "{}", ex.prompt);
                    assert_eq!(split_of_problem(op, x, y), split);
                    // The teacher's own completion grades as correct and well-formed.
                    let g = grade_answer(&ex.answer, &ex.completion(), true);
                    assert!(g.correct && g.format_ok, "{:?}", ex);
                }
            }
        }
    }

    #[test]
    fn held_out_problems_exist_at_every_level_and_are_about_a_tenth() {
        let mut held = 0;
        let mut total = 0;
        for x in 0..100u64 {
            for y in 0..100u64 {
                total += 1;
                held += usize::from(split_of_problem(Op::Add, x, y) == Split::HeldOut);
            }
        }
        let share = held as f64 / total as f64;
        assert!((0.08..0.12).contains(&share), "{share}");
        let mut rng = StdRng::seed_from_u64(1);
        let ex = Arithmetic.sample(&mut rng, 1, Split::HeldOut);
        assert_eq!(ex.level, 1);
    }

    #[test]
    fn same_seed_same_problems() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|i| Arithmetic.sample(&mut rng, 1 + i % 6, Split::Train))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn completion_ends_with_the_answer() {
        let ex = Example {
            level: 4,
            prompt: "What is 4821 + 397?".into(),
            answer: "5218".into(),
            reasoning: teacher(Op::Add, 4821, 397),
        };
        assert!(ex
            .completion()
            .ends_with("4+0: 4+0+1=5, 5218\n</think>\n\nThe answer is 5218."));
    }
}
