//! What the Train tab reads from disk and starts, kept out of `app` (which does no I/O) and out of
//! `train` (which owns the tensors): a training run's files turned into plain rows.
//!
//! - `records`  one metrics.jsonl line -> a step's metrics, an evaluation, a checkpoint
//! - `tail`     reads only what was appended to a file since the last look; tolerates a
//!   half-written last line and notices when the file was rewritten (a resumed run trims its log)
//! - `rollouts` rollouts.jsonl: an index by step (byte ranges), and one step's groups read on demand
//! - `run`      a run folder: its recipe, its checkpoints, the recipes and runs one can open
//! - `to_chat`  a logged rollout as a chat session (re-tokenised; the engine then re-scores it)
//! - `policy`   which weights drew a step's rollouts (the checkpoint that scores them)
//! - `watcher`  the thread that polls a run folder and owns a launched `thinkbench train` child
//!
//! Everything that leaves this module is plain data ([`TrainEvent`]); the app never sees a file.

pub mod policy;
pub mod records;
pub mod rollouts;
pub mod run;
pub mod tail;
pub mod to_chat;
pub mod watcher;

use std::path::PathBuf;

pub use records::{EvalPoint, Record, StepRow};
pub use rollouts::{RolloutCompletion, RolloutGroup, RolloutShape, RolloutStep, RolloutTurn};
pub use run::{Choice, ChoiceKind, RunInfo};

/// A line of a run file that could not be read, named for the one notice the user sees.
#[derive(Debug, Clone, PartialEq)]
pub struct BadLine {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    pub error: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.error)
    }
}

/// What changed in the watched run folder since the last poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunUpdate {
    /// The folder being watched (an update for a folder the app has left is dropped).
    pub dir: PathBuf,
    /// The metrics file was rewritten (a resumed run trims the steps after its checkpoint): drop
    /// what was read before and take `records` as the whole log.
    pub reset: bool,
    pub records: Vec<Record>,
    /// rollouts.jsonl was rewritten: forget its steps before taking `rollout_steps`.
    pub rollouts_reset: bool,
    /// Steps of rollouts.jsonl, new or grown since the last update (a reset resends them all).
    pub rollout_steps: Vec<RolloutStep>,
    /// The checkpoints on disk, by step, when they changed.
    pub checkpoints: Option<Vec<u64>>,
    /// The recipe the run was started with, once it is readable.
    pub info: Option<RunInfo>,
    pub bad_lines: Vec<BadLine>,
    /// Sent once per folder: metrics.jsonl is there but rollouts.jsonl is not (a run folder
    /// synced without it, or written by a program that logs no rollouts): charts only.
    pub no_rollouts: bool,
}

/// How the process of a run launched from the workbench is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessState {
    /// Attached to a folder: whatever writes it is not ours.
    Attached,
    Running {
        pid: u32,
        log: PathBuf,
    },
    Exited {
        success: bool,
        /// The exit code, or the signal that ended it, in words.
        status: String,
        /// The last line of the log (the error of a failed run).
        last_line: String,
        log: PathBuf,
    },
}

/// Everything the Train tab's background work reports; plain data.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// Recipes and runs that can be launched or attached (after a `ListChoices`).
    Choices(Vec<Choice>),
    /// Now watching `dir` (after a launch or an attach).
    Watching {
        dir: PathBuf,
        process: ProcessState,
    },
    Update(RunUpdate),
    /// The launched run's process changed (`dir` is the folder it writes).
    Process {
        dir: PathBuf,
        state: ProcessState,
    },
    /// One step's rollout groups (after a `LoadRollouts`).
    Rollouts {
        dir: PathBuf,
        step: u64,
        groups: Vec<RolloutGroup>,
    },
    /// Something went wrong in the background; one line naming the file.
    Failed(String),
}
