//! The metrics log: one JSON object per line, one line per step (plus `"event"` lines for
//! evaluations and checkpoints). A resumed run first drops the lines of steps after its
//! checkpoint, so the log reads as if the run had never stopped.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `path` for appending, keeping only the lines of steps `<= keep_through` (a fresh run
    /// passes 0 and starts an empty log).
    pub fn open(path: &Path, keep_through: u64) -> std::io::Result<Self> {
        let kept: Vec<String> = match File::open(path) {
            Ok(f) if keep_through > 0 => BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter(|line| {
                    serde_json::from_str::<Value>(line)
                        .ok()
                        .and_then(|v| v.get("step").and_then(Value::as_u64))
                        .is_some_and(|s| s <= keep_through)
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut file = File::create(path)?;
        for line in &kept {
            writeln!(file, "{line}")?;
        }
        file.flush()?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (flushed at once, so a live view can tail the file).
    pub fn write(&mut self, record: &Value) -> std::io::Result<()> {
        writeln!(self.file, "{record}")?;
        self.file.flush()
    }
}

/// Reads every record of a metrics file (lines that do not parse are skipped).
pub fn read(path: &Path) -> std::io::Result<Vec<Value>> {
    let f = File::open(path)?;
    Ok(BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resume_drops_the_steps_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&p, 0).unwrap();
        for step in 1..=5 {
            log.write(&json!({"step": step, "loss": 1.0})).unwrap();
        }
        drop(log);
        let mut log = MetricsLog::open(&p, 3).unwrap();
        log.write(&json!({"step": 4, "loss": 0.5})).unwrap();
        let steps: Vec<u64> = read(&p)
            .unwrap()
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        // A fresh run starts empty.
        drop(log);
        MetricsLog::open(&p, 0).unwrap();
        assert!(read(&p).unwrap().is_empty());
    }
}
