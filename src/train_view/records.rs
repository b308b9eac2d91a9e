//! One line of a run's metrics.jsonl as the Train tab uses it. The trainer writes one object per
//! step (TRL's metric names: `reward`, `rewards/<name>/mean`, `kl`, `clip_ratio/low_mean`, …) and
//! `"event"` lines for held-out evaluations and checkpoints.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// A step's metrics: every numeric (or boolean) field by its name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepRow {
    pub step: u64,
    pub values: BTreeMap<String, f64>,
}

impl StepRow {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }
}

/// A held-out evaluation (greedy accuracy on the task's held-out problems).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPoint {
    pub step: u64,
    pub accuracy: f64,
    pub format_rate: Option<f64>,
    pub n: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Step(StepRow),
    Eval(EvalPoint),
    Checkpoint {
        step: u64,
        path: PathBuf,
    },
    /// An event this view does not draw (kept so that a newer trainer's lines are not errors).
    Other,
}

/// Parses one line; the error says what is wrong in words a user can act on.
pub fn parse_line(line: &str) -> Result<Record, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let step = || {
        obj.get("step")
            .and_then(Value::as_u64)
            .ok_or_else(|| "no \"step\" (a whole number)".to_string())
    };
    match obj.get("event").and_then(Value::as_str) {
        Some("eval") => Ok(Record::Eval(EvalPoint {
            step: step()?,
            accuracy: obj
                .get("accuracy")
                .and_then(Value::as_f64)
                .ok_or("eval line without \"accuracy\"")?,
            format_rate: obj.get("format_rate").and_then(Value::as_f64),
            n: obj.get("n").and_then(Value::as_u64).unwrap_or(0),
        })),
        Some("checkpoint") => Ok(Record::Checkpoint {
            step: step()?,
            path: obj
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
        }),
        Some(_) => Ok(Record::Other),
        None => {
            let step = step()?;
            let values = obj
                .iter()
                .filter(|(k, _)| k.as_str() != "step")
                .filter_map(|(k, v)| {
                    let x = match v {
                        Value::Number(n) => n.as_f64()?,
                        Value::Bool(b) => f64::from(u8::from(*b)),
                        _ => return None,
                    };
                    Some((k.clone(), x))
                })
                .collect();
            Ok(Record::Step(StepRow { step, values }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_lines_keep_every_number_by_name() {
        let r = parse_line(
            r#"{"step":3,"reward":0.5,"rewards/accuracy/mean":0.25,"skipped":false,"note":"x"}"#,
        )
        .unwrap();
        let Record::Step(row) = r else {
            panic!("{r:?}")
        };
        assert_eq!(row.step, 3);
        assert_eq!(row.get("reward"), Some(0.5));
        assert_eq!(row.get("rewards/accuracy/mean"), Some(0.25));
        assert_eq!(row.get("skipped"), Some(0.0));
        assert_eq!(row.get("note"), None);
    }

    #[test]
    fn events_are_told_apart() {
        assert_eq!(
            parse_line(r#"{"event":"eval","step":0,"accuracy":0.82,"format_rate":1.0,"n":200}"#),
            Ok(Record::Eval(EvalPoint {
                step: 0,
                accuracy: 0.82,
                format_rate: Some(1.0),
                n: 200
            }))
        );
        assert_eq!(
            parse_line(
                r#"{"event":"checkpoint","step":25,"path":"runs/x/checkpoints/step-00000025"}"#
            ),
            Ok(Record::Checkpoint {
                step: 25,
                path: "runs/x/checkpoints/step-00000025".into()
            })
        );
        assert_eq!(
            parse_line(r#"{"event":"lr_drop","step":2}"#),
            Ok(Record::Other)
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert!(parse_line("{\"step\": 1, \"rew")
            .unwrap_err()
            .starts_with("not JSON"));
        assert_eq!(parse_line("[1,2]").unwrap_err(), "not a JSON object");
        assert_eq!(
            parse_line(r#"{"reward":1}"#).unwrap_err(),
            "no \"step\" (a whole number)"
        );
    }
}
