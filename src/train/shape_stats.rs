//! The reasoning's form, counted over many completions: how often the model worked a problem out
//! rather than answering at once, how often it checked and said "wait", whether its waits
//! followed real slips, and how each form fared. Evaluation reports it by level; GRPO logs it
//! every step (`shape/*`), so the Train tab can chart a change in *how* the model reasons.
//! Only tasks whose teacher has more than one form analyse their completions
//! (`Task::shape`); for the others there is nothing to count.

use serde::Serialize;
use serde_json::{json, Value};

use super::task::Shape;

/// The counts over a set of completions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapeStats {
    /// Completions whose form could be read (their first line chose one).
    pub n: usize,
    /// Share of them in the long form.
    pub long_share: f64,
    /// Check lines and "wait"s per completion.
    pub checks_per_answer: f64,
    pub waits_per_answer: f64,
    /// Of the checks that ended in "wait", the share whose result really was wrong (None: no
    /// wait at all).
    pub waits_after_slip: Option<f64>,
    /// Of the checked results that really were wrong, the share caught by a "wait".
    pub slips_caught: Option<f64>,
    /// Accuracy of the long and of the direct completions (None: none of that form).
    pub accuracy_long: Option<f64>,
    pub accuracy_direct: Option<f64>,
}

/// Aggregates (shape, correct) pairs; None when no completion's form could be read.
pub fn shape_stats<'a>(items: impl IntoIterator<Item = (&'a Shape, bool)>) -> Option<ShapeStats> {
    let (mut n, mut long, mut checks, mut waits, mut after_slip, mut slips) = (0, 0, 0, 0, 0, 0);
    let (mut long_right, mut direct_right) = (0, 0);
    for (s, correct) in items {
        n += 1;
        long += usize::from(s.long);
        checks += s.checks as usize;
        waits += s.waits as usize;
        after_slip += s.waits_after_slip as usize;
        slips += s.slips as usize;
        if s.long {
            long_right += usize::from(correct);
        } else {
            direct_right += usize::from(correct);
        }
    }
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    (n > 0).then(|| ShapeStats {
        n,
        long_share: long as f64 / n as f64,
        checks_per_answer: checks as f64 / n as f64,
        waits_per_answer: waits as f64 / n as f64,
        waits_after_slip: ratio(after_slip, waits),
        slips_caught: ratio(after_slip, slips),
        accuracy_long: ratio(long_right, long),
        accuracy_direct: ratio(direct_right, n - long),
    })
}

impl ShapeStats {
    /// The step-log fields (`shape/...`; the ones with nothing to measure are left out, so a
    /// chart shows a gap rather than a zero).
    pub fn log_fields(&self, record: &mut Value) {
        record["shape/long"] = json!(self.long_share);
        record["shape/checks"] = json!(self.checks_per_answer);
        record["shape/waits"] = json!(self.waits_per_answer);
        for (key, v) in [
            ("shape/waits_after_slip", self.waits_after_slip),
            ("shape/accuracy_long", self.accuracy_long),
            ("shape/accuracy_direct", self.accuracy_direct),
        ] {
            if let Some(v) = v {
                record[key] = json!(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(long: bool, checks: u32, waits: u32, slips: u32, after: u32) -> Shape {
        Shape {
            long,
            checks,
            waits,
            slips,
            waits_after_slip: after,
            marks: Vec::new(),
        }
    }

    #[test]
    fn counts_by_hand() {
        let items = [
            (shape(false, 0, 0, 0, 0), true),
            (shape(false, 0, 0, 0, 0), false),
            (shape(false, 0, 0, 0, 0), false),
            // A slip caught and redone, right in the end.
            (shape(true, 2, 1, 1, 1), true),
            // A false alarm: the result was right, the model waited anyway.
            (shape(true, 2, 1, 0, 0), true),
            // A slip not caught: wrong.
            (shape(true, 1, 0, 1, 0), false),
        ];
        let s = shape_stats(items.iter().map(|(s, c)| (s, *c))).unwrap();
        assert_eq!(s.n, 6);
        assert_eq!(s.long_share, 0.5);
        assert_eq!(s.checks_per_answer, 5.0 / 6.0);
        assert_eq!(s.waits_per_answer, 2.0 / 6.0);
        assert_eq!(s.waits_after_slip, Some(0.5));
        assert_eq!(s.slips_caught, Some(0.5));
        assert_eq!(s.accuracy_long, Some(2.0 / 3.0));
        assert_eq!(s.accuracy_direct, Some(1.0 / 3.0));
        let mut rec = json!({});
        s.log_fields(&mut rec);
        assert_eq!(rec["shape/long"], 0.5);
        assert_eq!(rec["shape/waits_after_slip"], 0.5);
    }

    #[test]
    fn nothing_to_count_is_none_and_missing_forms_are_gaps() {
        assert_eq!(shape_stats([]), None);
        let direct = [(shape(false, 0, 0, 0, 0), true)];
        let s = shape_stats(direct.iter().map(|(s, c)| (s, *c))).unwrap();
        assert_eq!((s.accuracy_long, s.waits_after_slip), (None, None));
        let mut rec = json!({});
        s.log_fields(&mut rec);
        assert!(rec.get("shape/accuracy_long").is_none());
        assert_eq!(rec["shape/accuracy_direct"], 1.0);
    }
}
