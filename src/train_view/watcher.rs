//! The Train tab's background thread: it polls the watched run folder (only the bytes appended
//! since the last poll), reads a step's rollouts when the viewer asks, lists recipes, and owns the
//! `thinkbench train` child of a run launched from the workbench. Nothing here blocks the UI: the
//! runner sends [`WatchRequest`]s and receives [`TrainEvent`]s.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::records::parse_line;
use super::rollouts::RolloutIndex;
use super::run::{checkpoint_steps, last_log_line, list_choices, Launched, RunInfo};
use super::tail::LineTail;
use super::{BadLine, ProcessState, RolloutGroup, RunUpdate, TrainEvent};

/// How often the run folder is looked at. The trainer writes a line per step (seconds apart), so
/// half a second feels live and costs nothing.
const POLL: Duration = Duration::from_millis(500);

pub enum WatchRequest {
    /// Follow `dir` from its start; with `launched`, also own the process writing it.
    Attach {
        dir: PathBuf,
        launched: Option<Launched>,
    },
    LoadRollouts {
        step: u64,
    },
    /// Stop the launched run (its checkpoints are atomic; re-running the recipe resumes).
    StopProcess,
    ListChoices {
        recipes: PathBuf,
        runs: PathBuf,
    },
}

pub struct Watcher {
    requests: mpsc::Sender<WatchRequest>,
    _thread: JoinHandle<()>,
}

impl Watcher {
    pub fn spawn(events: UnboundedSender<TrainEvent>) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("thinkbench-train-watch".into())
            .spawn(move || State::default().run(rx, events))
            .expect("spawn the train watcher");
        Self {
            requests: tx,
            _thread: thread,
        }
    }

    pub fn send(&self, r: WatchRequest) {
        let _ = self.requests.send(r);
    }
}

/// A run folder being read: the tails of its two logs, the rollout index, what was last seen of
/// its checkpoints and recipe.
#[derive(Debug)]
pub struct RunReader {
    dir: PathBuf,
    metrics: LineTail,
    rollouts: LineTail,
    index: RolloutIndex,
    checkpoints: Vec<u64>,
    info_sent: bool,
    /// "charts only" was said for this folder.
    no_rollouts_sent: bool,
}

impl RunReader {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            metrics: LineTail::new(dir.join("metrics.jsonl")),
            rollouts: LineTail::new(dir.join("rollouts.jsonl")),
            dir,
            index: RolloutIndex::default(),
            checkpoints: Vec::new(),
            info_sent: false,
            no_rollouts_sent: false,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What changed in the folder since the last call, if anything.
    pub fn poll(&mut self) -> Result<Option<RunUpdate>, String> {
        let mut u = RunUpdate {
            dir: self.dir.clone(),
            ..Default::default()
        };
        let chunk = self
            .metrics
            .read()
            .map_err(|e| format!("{}: {e}", self.metrics.path().display()))?;
        u.reset = chunk.reset;
        for line in chunk.lines {
            match parse_line(&line.text) {
                Ok(r) => u.records.push(r),
                Err(error) => u.bad_lines.push(BadLine {
                    file: self.metrics.path().to_path_buf(),
                    line: line.number,
                    // Who wrote it: a line of another program's log needs that program fixed.
                    error: format!(
                        "{error}; written by {}",
                        super::run::RunInfo::producer_of(&self.dir)
                    ),
                }),
            }
        }
        let chunk = self
            .rollouts
            .read()
            .map_err(|e| format!("{}: {e}", self.rollouts.path().display()))?;
        if chunk.reset {
            self.index.clear();
            u.rollouts_reset = true;
        }
        let (steps, bad) = self.index.add(&chunk.lines);
        u.rollout_steps = steps;
        if let Some((line, error)) = bad {
            u.bad_lines.push(BadLine {
                file: self.rollouts.path().to_path_buf(),
                line,
                error,
            });
        }
        let ckpts = checkpoint_steps(&self.dir);
        if ckpts != self.checkpoints {
            self.checkpoints = ckpts.clone();
            u.checkpoints = Some(ckpts);
        }
        if !self.info_sent {
            if let Some(info) = RunInfo::read(&self.dir) {
                self.info_sent = true;
                u.info = Some(info);
            }
        }
        // Both trainers create rollouts.jsonl before their first metrics line, so a metrics log
        // without it means the folder has none (said once, not at every poll).
        if !self.no_rollouts_sent && self.metrics.path().exists() && !self.rollouts.path().exists()
        {
            self.no_rollouts_sent = true;
            u.no_rollouts = true;
        }
        let changed = u.no_rollouts
            || u.reset
            || u.rollouts_reset
            || !u.records.is_empty()
            || !u.rollout_steps.is_empty()
            || u.checkpoints.is_some()
            || u.info.is_some()
            || !u.bad_lines.is_empty();
        Ok(changed.then_some(u))
    }

    /// The groups of one step of rollouts.jsonl.
    pub fn read_step(&self, step: u64) -> Result<Vec<RolloutGroup>, String> {
        self.index.read_step(self.rollouts.path(), step)
    }
}

#[derive(Default)]
struct State {
    reader: Option<RunReader>,
    /// The launched run: its folder, process and log.
    child: Option<(PathBuf, Child, PathBuf)>,
}

impl State {
    fn run(mut self, rx: mpsc::Receiver<WatchRequest>, events: UnboundedSender<TrainEvent>) {
        loop {
            match rx.recv_timeout(POLL) {
                Ok(req) => {
                    for ev in self.handle(req) {
                        if events.send(ev).is_err() {
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The workbench is gone; a launched run keeps going on its own.
                Err(RecvTimeoutError::Disconnected) => return,
            }
            for ev in self.poll() {
                if events.send(ev).is_err() {
                    return;
                }
            }
        }
    }

    fn handle(&mut self, req: WatchRequest) -> Vec<TrainEvent> {
        match req {
            WatchRequest::Attach { dir, launched } => {
                let mut process = ProcessState::Attached;
                if let Some(l) = launched {
                    process = ProcessState::Running {
                        pid: l.child.id(),
                        log: l.log.clone(),
                    };
                    self.child = Some((l.dir, l.child, l.log));
                } else if let Some((d, c, log)) = &self.child {
                    if *d == dir {
                        process = ProcessState::Running {
                            pid: c.id(),
                            log: log.clone(),
                        };
                    }
                }
                self.reader = Some(RunReader::new(dir.clone()));
                vec![TrainEvent::Watching { dir, process }]
            }
            WatchRequest::LoadRollouts { step } => {
                let Some(r) = &self.reader else {
                    return Vec::new();
                };
                vec![match r.read_step(step) {
                    Ok(groups) => TrainEvent::Rollouts {
                        dir: r.dir().to_path_buf(),
                        step,
                        groups,
                    },
                    Err(e) => TrainEvent::Failed(e),
                }]
            }
            WatchRequest::StopProcess => {
                if let Some((_, c, _)) = &mut self.child {
                    let _ = c.kill();
                }
                Vec::new()
            }
            WatchRequest::ListChoices { recipes, runs } => {
                vec![TrainEvent::Choices(list_choices(&recipes, &runs))]
            }
        }
    }

    fn poll(&mut self) -> Vec<TrainEvent> {
        let mut out = Vec::new();
        if let Some(r) = &mut self.reader {
            match r.poll() {
                Ok(Some(u)) => out.push(TrainEvent::Update(u)),
                Ok(None) => {}
                Err(e) => out.push(TrainEvent::Failed(e)),
            }
        }
        // After the folder's last lines, so a finished run's final step is shown before "finished".
        if let Some((dir, child, log)) = &mut self.child {
            if let Ok(Some(status)) = child.try_wait() {
                let state = ProcessState::Exited {
                    success: status.success(),
                    status: describe_exit(status),
                    last_line: last_log_line(log),
                    log: log.clone(),
                };
                out.push(TrainEvent::Process {
                    dir: dir.clone(),
                    state,
                });
                self.child = None;
            }
        }
        out
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(9)) => "stopped".into(),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train_view::Record;
    use std::io::Write;

    #[test]
    fn a_bad_line_is_named_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        std::fs::write(
            &p,
            "{\"step\":1,\"reward\":0.5}\nnot json\n{\"step\":2,\"reward\":0.7}\n{\"step\":3,",
        )
        .unwrap();
        let mut r = RunReader::new(dir.path().to_path_buf());
        let u = r.poll().unwrap().unwrap();
        assert_eq!(u.records.len(), 2, "the half-written step 3 waits");
        assert_eq!(u.bad_lines.len(), 1);
        let bad = u.bad_lines[0].to_string();
        assert!(bad.contains("metrics.jsonl:2: not JSON"), "{bad}");
        assert_eq!(r.poll().unwrap(), None, "nothing new");
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"\"reward\":0.9}\n").unwrap();
        let u = r.poll().unwrap().unwrap();
        assert!(matches!(&u.records[..], [Record::Step(s)] if s.step == 3));
        assert!(u.bad_lines.is_empty());
    }

    #[test]
    fn a_bad_metrics_line_names_who_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let tail = |r: &mut RunReader| r.poll().unwrap().unwrap().bad_lines[0].to_string();
        // An exported TRL script's callback says so in recipe.json.
        std::fs::write(
            dir.path().join("recipe.json"),
            r#"{"kind": "grpo", "name": "t", "producer": "trl 1.16.0 (thinkbench_callback.py)"}"#,
        )
        .unwrap();
        std::fs::write(&p, "{\"step\":1,\"reward\":0.5}\n{\"step\": \"two\"}\n").unwrap();
        let bad = tail(&mut RunReader::new(dir.path().to_path_buf()));
        let want = format!("{}:2: ", p.display());
        assert!(bad.starts_with(&want), "{bad}");
        assert!(
            bad.ends_with("; written by trl 1.16.0 (thinkbench_callback.py)"),
            "{bad}"
        );
        // thinkbench's own trainer writes no producer.
        std::fs::write(
            dir.path().join("recipe.json"),
            r#"{"kind": "grpo", "name": "t"}"#,
        )
        .unwrap();
        let bad = tail(&mut RunReader::new(dir.path().to_path_buf()));
        assert!(bad.starts_with(&want), "{bad}");
        assert!(bad.ends_with("; written by thinkbench train"), "{bad}");
        // No recipe.json at all: an unknown producer.
        std::fs::remove_file(dir.path().join("recipe.json")).unwrap();
        let bad = tail(&mut RunReader::new(dir.path().to_path_buf()));
        assert!(
            bad.contains("; written by an unknown producer (no recipe.json"),
            "{bad}"
        );
    }

    #[test]
    fn a_folder_without_rollouts_is_charts_only_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        std::fs::write(&p, "{\"step\":1,\"reward\":0.5}\n").unwrap();
        let mut r = RunReader::new(dir.path().to_path_buf());
        let u = r.poll().unwrap().unwrap();
        assert!(u.no_rollouts);
        assert_eq!(u.records.len(), 1);
        // Not again: neither on an idle poll nor with the next step.
        assert_eq!(r.poll().unwrap(), None);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"step\":2,\"reward\":0.7}\n").unwrap();
        let u = r.poll().unwrap().unwrap();
        assert!(!u.no_rollouts);
        assert_eq!(u.records.len(), 1);

        // A folder with rollouts.jsonl (empty: nothing logged yet) is not charts only.
        let d2 = tempfile::tempdir().unwrap();
        std::fs::write(
            d2.path().join("metrics.jsonl"),
            "{\"step\":1,\"reward\":0.5}\n",
        )
        .unwrap();
        std::fs::write(d2.path().join("rollouts.jsonl"), "").unwrap();
        let u = RunReader::new(d2.path().to_path_buf())
            .poll()
            .unwrap()
            .unwrap();
        assert!(!u.no_rollouts);
        // Nor is an empty folder (nothing written yet).
        let d3 = tempfile::tempdir().unwrap();
        assert_eq!(
            RunReader::new(d3.path().to_path_buf()).poll().unwrap(),
            None
        );
    }
}
