//! The Train tab's state and its part of `update`: which run is watched and what has been read of
//! it, the launch/attach list, the rollout viewer's position, and the checkpoint A/B. Plain data
//! only; the runner reads files and starts processes and engines when asked by a
//! [`TrainCommand`], and its results come back as [`TrainAction::Event`] / [`TrainAction::Compare`]
//! / [`TrainAction::RolloutOpened`] / [`TrainAction::Scorer`]. Opening a rollout in the chat and
//! scoring it is in `rollout_chat`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyModifiers};

use super::{Action, App, Command, Input, Key, View};
use crate::runtime::engine::{EngineEvent, GenSpec, ModelInfo, ScoreSpec};
use crate::runtime::SamplingParams;
use crate::session::Session;
use crate::text::ChatMessage;
use crate::trace::{FinishReason, Phase};
use crate::train_view::policy::Policy;
use crate::train_view::run::checkpoint_dir;
use crate::train_view::{
    Choice, ChoiceKind, EvalPoint, ProcessState, Record, RolloutGroup, RolloutStep, RunInfo,
    StepRow, TrainEvent,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainPane {
    Charts,
    Rollouts,
    Compare,
}

impl TrainPane {
    pub const ALL: [TrainPane; 3] = [TrainPane::Charts, TrainPane::Rollouts, TrainPane::Compare];

    pub fn title(self) -> &'static str {
        match self {
            TrainPane::Charts => "Charts",
            TrainPane::Rollouts => "Rollouts",
            TrainPane::Compare => "A/B",
        }
    }
}

/// The watched run: everything read of its folder so far.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub dir: PathBuf,
    pub info: RunInfo,
    pub process: ProcessState,
    /// One per logged step, in log order.
    pub rows: Vec<StepRow>,
    pub evals: Vec<EvalPoint>,
    /// Completed checkpoints on disk, by step.
    pub checkpoints: Vec<u64>,
    /// The steps of rollouts.jsonl, by step.
    pub rollout_steps: Vec<RolloutStep>,
    /// Lines of the run's files that could not be read (skipped; the first was shown).
    pub bad_lines: usize,
}

impl RunView {
    pub fn new(dir: PathBuf, process: ProcessState) -> Self {
        Self {
            dir,
            info: RunInfo::default(),
            process,
            rows: Vec::new(),
            evals: Vec::new(),
            checkpoints: Vec::new(),
            rollout_steps: Vec::new(),
            bad_lines: 0,
        }
    }

    pub fn name(&self) -> String {
        if self.info.name.is_empty() {
            self.dir.display().to_string()
        } else {
            self.info.name.clone()
        }
    }

    pub fn last(&self) -> Option<&StepRow> {
        self.rows.last()
    }

    /// The reward functions the log has means for (`rewards/<name>/mean`), in log order.
    pub fn reward_names(&self) -> Vec<String> {
        self.names_between("rewards/", "/mean")
    }

    /// The MoE layers the run reports `router/mismatch/layer_N` for (none: a dense model).
    pub fn mismatch_layers(&self) -> Vec<String> {
        self.names_between("router/mismatch/", "")
    }

    /// The run logs the reasoning's form (`shape/*`: a task whose teacher has two forms).
    pub fn logs_shape(&self) -> bool {
        !self.names_between("shape/", "").is_empty()
    }

    /// The `X` of the metrics named `{prefix}X{suffix}` in the newest step that logs any (a
    /// step may leave some out: one with no update logs no router mismatch). Called every frame,
    /// so only the last steps are looked at: a run that logged none of them lately has none.
    fn names_between(&self, prefix: &str, suffix: &str) -> Vec<String> {
        const RECENT: usize = 64;
        for row in self.rows.iter().rev().take(RECENT) {
            let names: Vec<String> = row
                .values
                .keys()
                .filter_map(|k| k.strip_prefix(prefix)?.strip_suffix(suffix))
                .map(str::to_string)
                .collect();
            if !names.is_empty() {
                return names;
            }
        }
        Vec::new()
    }

    /// Seconds left at the pace of the last few steps, when the length of the run is known.
    pub fn eta_secs(&self) -> Option<f64> {
        let total = self.info.total_steps?;
        let done = self.last()?.step;
        let recent: Vec<f64> = self
            .rows
            .iter()
            .rev()
            .take(5)
            .filter_map(|r| r.get("step_time"))
            .collect();
        if recent.is_empty() {
            return None;
        }
        let per = recent.iter().sum::<f64>() / recent.len() as f64;
        Some(per * total.saturating_sub(done) as f64)
    }

    pub fn running(&self) -> bool {
        matches!(self.process, ProcessState::Running { .. })
    }
}

/// The launch/attach list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Picker {
    pub choices: Vec<Choice>,
    pub selected: usize,
    /// Waiting for the list.
    pub loading: bool,
}

/// Where the rollout viewer is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RolloutViewer {
    /// The chosen step; `None` follows the newest.
    pub step: Option<u64>,
    /// The prompt group within the step.
    pub group: usize,
    /// The completion within the group.
    pub completion: usize,
    /// Lines the completion's text is scrolled by.
    pub scroll: usize,
    /// The step whose groups are here.
    pub loaded: Option<(u64, Vec<RolloutGroup>)>,
    /// Asked for and not yet here.
    pub requested: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CompareStatus {
    Idle,
    /// Loading the model or generating.
    Running,
    Done(FinishReason),
    Failed(String),
}

/// One side of the A/B: a model's answer to the prompt, summarised as it streams.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareSide {
    pub label: String,
    pub dir: PathBuf,
    pub job: u64,
    pub status: CompareStatus,
    pub model: Option<ModelInfo>,
    /// Tokens inside the thought (its tags included, as the thinking budget counts them).
    pub think_tokens: usize,
    pub answer_tokens: usize,
    pub thought: String,
    pub answer: String,
    /// Per MoE layer, how many tokens each expert took.
    pub load: BTreeMap<usize, Vec<u32>>,
}

impl CompareSide {
    fn new(label: String, dir: PathBuf, job: u64) -> Self {
        Self {
            label,
            dir,
            job,
            status: CompareStatus::Running,
            model: None,
            think_tokens: 0,
            answer_tokens: 0,
            thought: String::new(),
            answer: String::new(),
            load: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Compare {
    /// The checkpoint to compare; `None`: the newest.
    pub checkpoint: Option<u64>,
    pub prompt: Input,
    pub editing: bool,
    /// Base, then checkpoint (empty before the first run).
    pub sides: Vec<CompareSide>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainTab {
    pub pane: TrainPane,
    pub run: Option<RunView>,
    pub picker: Option<Picker>,
    /// The page of charts shown when they do not all fit (wraps around).
    pub chart_page: usize,
    pub rollouts: RolloutViewer,
    pub compare: Compare,
    /// `x` was pressed once; the second press stops the run.
    pub confirm_stop: bool,
    /// A rollout being tokenised for the chat, and the policy that will score it.
    pub opening: Option<Policy>,
    /// The opened rollout waiting for its scores.
    pub scoring: Option<PendingScore>,
    next_job: u64,
}

impl Default for TrainTab {
    fn default() -> Self {
        Self {
            pane: TrainPane::Charts,
            run: None,
            picker: None,
            chart_page: 0,
            rollouts: RolloutViewer::default(),
            compare: Compare::default(),
            confirm_stop: false,
            opening: None,
            scoring: None,
            // Well apart from the chat's job ids (they are never mixed, but logs read better).
            next_job: 1 << 32,
        }
    }
}

/// Intents of the Train tab's keys, and results of its background work.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainAction {
    /// Attach to a run folder (or metrics.jsonl), or launch a recipe (.toml); from `--train`.
    Open(PathBuf),
    Show(TrainPane),
    NextPane,
    OpenPicker,
    ClosePicker,
    PickerMove(isize),
    PickerChoose,
    Stop,
    Page(isize),
    Step(isize),
    StepFirst,
    StepLast,
    Group(isize),
    Completion(isize),
    ScrollText(isize),
    OpenInChat,
    Checkpoint(isize),
    EditPrompt,
    PromptFromRollout,
    RunCompare,
    Event(TrainEvent),
    /// An event of one A/B engine (0: base, 1: checkpoint).
    Compare {
        side: usize,
        event: EngineEvent,
    },
    /// The rollout asked for with `OpenInChat`, tokenised into a session (not yet scored).
    RolloutOpened(Box<Session>),
    /// An event of the engine the runner started to score a rollout with a checkpoint.
    Scorer(EngineEvent),
}

/// What the runner must do for the Train tab.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainCommand {
    ListChoices,
    Launch(PathBuf),
    Attach(PathBuf),
    LoadRollouts(u64),
    StopRun,
    /// The same prompt through two models, each on its own engine.
    Compare {
        dirs: [PathBuf; 2],
        specs: [GenSpec; 2],
    },
    /// Open a rollout as a chat session (tokenised with `tokenizer`'s tokenizer); answered with
    /// `TrainAction::RolloutOpened`.
    OpenInChat {
        tokenizer: PathBuf,
        title: String,
        earlier: Vec<crate::train_view::RolloutTurn>,
        prompt: String,
        completion: String,
    },
    /// Score an opened rollout with the model in `model_dir` (the chat engine's, if it holds
    /// that model; else a scoring engine's); answered with `EngineEvent::Scored` or `Failed`.
    ScoreRollout {
        model_dir: PathBuf,
        spec: ScoreSpec,
    },
}

fn cmd(c: TrainCommand) -> Vec<Command> {
    vec![Command::Train(c)]
}

/// Typing the A/B prompt: Enter runs it, Esc stops typing, the rest edits the line. (The Train
/// tab's other keys are plain actions, dispatched from the key table.)
pub(crate) fn prompt_key(app: &mut App, key: Key) -> Option<Action> {
    let c = &mut app.train.compare;
    match key.code {
        KeyCode::Enter => {
            c.editing = false;
            return Some(Action::Train(TrainAction::RunCompare));
        }
        KeyCode::Esc => c.editing = false,
        _ => {
            let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
            super::keymap::edit_line(&mut c.prompt, key, ctrl)
        }
    }
    None
}

impl App {
    pub(super) fn on_train(&mut self, action: TrainAction) -> Vec<Command> {
        let background = matches!(
            action,
            TrainAction::Event(_) | TrainAction::RolloutOpened(_) | TrainAction::Scorer(_)
        );
        if !matches!(action, TrainAction::Stop) && !background {
            self.train.confirm_stop = false;
        }
        match action {
            TrainAction::Open(path) => {
                self.view = View::Train;
                if path.extension().is_some_and(|e| e == "toml") {
                    cmd(TrainCommand::Launch(path))
                } else {
                    cmd(TrainCommand::Attach(path))
                }
            }
            TrainAction::Show(p) => {
                self.train.pane = p;
                self.want_rollouts()
            }
            TrainAction::NextPane => {
                let i = TrainPane::ALL.iter().position(|&p| p == self.train.pane);
                let next = TrainPane::ALL[(i.unwrap_or(0) + 1) % TrainPane::ALL.len()];
                self.on_train(TrainAction::Show(next))
            }
            TrainAction::OpenPicker => {
                self.train.picker = Some(Picker {
                    loading: true,
                    ..Default::default()
                });
                cmd(TrainCommand::ListChoices)
            }
            TrainAction::ClosePicker => {
                self.train.picker = None;
                Vec::new()
            }
            TrainAction::PickerMove(d) => {
                if let Some(p) = &mut self.train.picker {
                    let n = p.choices.len();
                    p.selected = step_index(p.selected, d, n);
                }
                Vec::new()
            }
            TrainAction::PickerChoose => {
                let Some(p) = &self.train.picker else {
                    return Vec::new();
                };
                let Some(c) = p.choices.get(p.selected).cloned() else {
                    return Vec::new();
                };
                if let Some(problem) = &c.problem {
                    self.notice(problem.clone());
                    return Vec::new();
                }
                self.train.picker = None;
                match c.kind {
                    ChoiceKind::Recipe { path, .. } => {
                        if self.train.run.as_ref().is_some_and(RunView::running) {
                            self.notice(
                                "a run launched from here is still going: stop it (x x) first",
                            );
                            return Vec::new();
                        }
                        self.notice(format!("launching {}…", path.display()));
                        cmd(TrainCommand::Launch(path))
                    }
                    ChoiceKind::Run { dir } => cmd(TrainCommand::Attach(dir)),
                }
            }
            TrainAction::Stop => {
                let running = self.train.run.as_ref().is_some_and(RunView::running);
                if !running {
                    self.notice("no run launched from here is running (an attached run is stopped where it was started)");
                    return Vec::new();
                }
                if self.train.confirm_stop {
                    self.train.confirm_stop = false;
                    self.notice("stopping the run (re-launch the recipe to resume from its last checkpoint)");
                    cmd(TrainCommand::StopRun)
                } else {
                    self.train.confirm_stop = true;
                    self.notice("press x again to stop the training run");
                    Vec::new()
                }
            }
            TrainAction::Page(d) => {
                self.train.chart_page = (self.train.chart_page as isize + d).max(0) as usize;
                Vec::new()
            }
            TrainAction::Step(d) => {
                let steps = self.rollout_step_list();
                if let Some(cur) = self.current_rollout_step() {
                    let i = steps.iter().position(|&s| s == cur).unwrap_or(0);
                    let j = (i as isize + d).clamp(0, steps.len() as isize - 1) as usize;
                    self.train.rollouts.step = Some(steps[j]);
                    self.train.rollouts.scroll = 0;
                }
                self.want_rollouts()
            }
            TrainAction::StepFirst => {
                let first = self.rollout_step_list().first().copied();
                self.train.rollouts.step = first;
                self.train.rollouts.scroll = 0;
                self.want_rollouts()
            }
            TrainAction::StepLast => {
                // The newest step, and follow the run from there.
                self.train.rollouts.step = None;
                self.train.rollouts.scroll = 0;
                self.want_rollouts()
            }
            TrainAction::Group(d) => {
                let n = self.loaded_groups().map_or(0, |g| g.len());
                let r = &mut self.train.rollouts;
                r.group = step_index(r.group, d, n);
                r.scroll = 0;
                Vec::new()
            }
            TrainAction::Completion(d) => {
                let n = self.shown_group().map_or(0, |g| g.completions.len());
                let r = &mut self.train.rollouts;
                r.completion = step_index(r.completion, d, n);
                r.scroll = 0;
                Vec::new()
            }
            TrainAction::ScrollText(d) => {
                let r = &mut self.train.rollouts;
                r.scroll = (r.scroll as isize + d).max(0) as usize;
                Vec::new()
            }
            TrainAction::OpenInChat => self.open_rollout_in_chat(),
            TrainAction::Checkpoint(d) => {
                let Some(run) = &self.train.run else {
                    return Vec::new();
                };
                let ck = &run.checkpoints;
                if ck.is_empty() {
                    self.notice(
                        "no checkpoint yet: the run writes one every train.checkpoint_every steps",
                    );
                    return Vec::new();
                }
                let cur = self.compare_checkpoint().unwrap_or(ck[ck.len() - 1]);
                let i = ck.iter().position(|&s| s == cur).unwrap_or(ck.len() - 1);
                let j = step_index(i, d, ck.len());
                self.train.compare.checkpoint = Some(ck[j]);
                Vec::new()
            }
            TrainAction::EditPrompt => {
                self.train.compare.editing = true;
                Vec::new()
            }
            TrainAction::PromptFromRollout => {
                let Some(g) = self.shown_group() else {
                    self.notice("no rollout loaded: pick a step in the rollout viewer (2)");
                    return Vec::new();
                };
                let prompt = g.prompt.clone();
                self.train.compare.prompt.set(&prompt);
                self.train.pane = TrainPane::Compare;
                Vec::new()
            }
            TrainAction::RunCompare => self.run_compare(),
            TrainAction::Event(ev) => self.on_train_event(ev),
            TrainAction::Compare { side, event } => {
                self.on_compare_event(side, event);
                Vec::new()
            }
            TrainAction::RolloutOpened(session) => self.on_rollout_opened(*session),
            TrainAction::Scorer(event) => self.on_score_event(event),
        }
    }

    fn on_train_event(&mut self, ev: TrainEvent) -> Vec<Command> {
        match ev {
            TrainEvent::Choices(list) => {
                if let Some(p) = &mut self.train.picker {
                    p.loading = false;
                    p.selected = p.selected.min(list.len().saturating_sub(1));
                    p.choices = list;
                }
                Vec::new()
            }
            TrainEvent::Watching { dir, process } => {
                let launched = matches!(process, ProcessState::Running { .. });
                self.notice(if launched {
                    format!(
                        "training: {} (log in {})",
                        dir.display(),
                        dir.join("train.log").display()
                    )
                } else {
                    format!("watching {}", dir.display())
                });
                self.train.run = Some(RunView::new(dir, process));
                self.train.rollouts = RolloutViewer::default();
                self.train.compare.checkpoint = None;
                self.train.compare.sides.clear();
                self.view = View::Train;
                Vec::new()
            }
            TrainEvent::Update(u) => {
                let Some(run) = self.train.run.as_mut().filter(|r| r.dir == u.dir) else {
                    return Vec::new();
                };
                if u.reset {
                    run.rows.clear();
                    run.evals.clear();
                }
                for r in u.records {
                    match r {
                        Record::Step(row) => {
                            // A step logged again (a resume the reset did not catch) replaces it.
                            run.rows.retain(|x| x.step < row.step);
                            run.rows.push(row);
                        }
                        Record::Eval(e) => {
                            run.evals.retain(|x| x.step != e.step);
                            run.evals.push(e);
                        }
                        Record::Checkpoint { .. } | Record::Other => {}
                    }
                }
                if u.rollouts_reset {
                    run.rollout_steps.clear();
                    self.train.rollouts.loaded = None;
                }
                for s in u.rollout_steps {
                    match run.rollout_steps.binary_search_by_key(&s.step, |x| x.step) {
                        Ok(i) => run.rollout_steps[i] = s,
                        Err(i) => run.rollout_steps.insert(i, s),
                    }
                }
                if let Some(c) = u.checkpoints {
                    run.checkpoints = c;
                }
                if let Some(info) = u.info {
                    run.info = info;
                }
                // The watcher says it once per folder; the rollouts pane keeps saying it.
                let charts_only = u
                    .no_rollouts
                    .then(|| format!("charts only: {} has no rollouts.jsonl", run.dir.display()));
                if let Some(first) = u.bad_lines.first() {
                    run.bad_lines += u.bad_lines.len();
                    let more = run.bad_lines - 1;
                    let mut text = if more > 0 {
                        format!("{first} (skipped; {more} more bad lines)")
                    } else {
                        format!("{first} (skipped)")
                    };
                    if let Some(c) = &charts_only {
                        text = format!("{text}; {c}");
                    }
                    self.notice(text);
                } else if let Some(c) = charts_only {
                    self.notice(c);
                }
                self.want_rollouts()
            }
            TrainEvent::Process { dir, state } => {
                if let Some(run) = self.train.run.as_mut().filter(|r| r.dir == dir) {
                    run.process = state.clone();
                }
                if let ProcessState::Exited {
                    success,
                    status,
                    last_line,
                    log,
                } = state
                {
                    self.notice(if success {
                        format!("training finished ({})", dir.display())
                    } else if status == "stopped" {
                        format!("training stopped ({})", dir.display())
                    } else {
                        format!(
                            "training failed ({status}): {last_line} — log: {}",
                            log.display()
                        )
                    });
                }
                Vec::new()
            }
            TrainEvent::Rollouts { dir, step, groups } => {
                if self.train.run.as_ref().is_none_or(|r| r.dir != dir) {
                    return Vec::new();
                }
                let r = &mut self.train.rollouts;
                if r.requested == Some(step) {
                    r.requested = None;
                }
                r.group = r.group.min(groups.len().saturating_sub(1));
                let g = groups.get(r.group).map_or(0, |g| g.completions.len());
                r.completion = r.completion.min(g.saturating_sub(1));
                r.loaded = Some((step, groups));
                // The newest step may have moved on while this one was read.
                self.want_rollouts()
            }
            TrainEvent::Failed(e) => {
                self.notice(e);
                Vec::new()
            }
        }
    }

    /// The rollout steps known, oldest first.
    fn rollout_step_list(&self) -> Vec<u64> {
        self.train
            .run
            .as_ref()
            .map(|r| r.rollout_steps.iter().map(|s| s.step).collect())
            .unwrap_or_default()
    }

    /// The step the rollout viewer shows (the chosen one, else the newest).
    pub fn current_rollout_step(&self) -> Option<u64> {
        let run = self.train.run.as_ref()?;
        match self.train.rollouts.step {
            Some(s) => Some(s),
            None => run.rollout_steps.last().map(|s| s.step),
        }
    }

    /// The groups loaded for the current step, if they are the current step's.
    pub fn loaded_groups(&self) -> Option<&[RolloutGroup]> {
        let (step, groups) = self.train.rollouts.loaded.as_ref()?;
        (Some(*step) == self.current_rollout_step()).then_some(groups.as_slice())
    }

    pub fn shown_group(&self) -> Option<&RolloutGroup> {
        self.loaded_groups()?.get(self.train.rollouts.group)
    }

    /// Asks for the current step's rollouts if the viewer is open and they are not here yet
    /// (and not already asked for).
    fn want_rollouts(&mut self) -> Vec<Command> {
        if self.view != View::Train || self.train.pane != TrainPane::Rollouts {
            return Vec::new();
        }
        let Some(step) = self.current_rollout_step() else {
            return Vec::new();
        };
        let r = &mut self.train.rollouts;
        let here = r.loaded.as_ref().is_some_and(|(s, _)| *s == step);
        if here || r.requested.is_some() {
            return Vec::new();
        }
        r.requested = Some(step);
        cmd(TrainCommand::LoadRollouts(step))
    }

    /// The checkpoint the A/B compares (the chosen one if it still exists, else the newest).
    pub fn compare_checkpoint(&self) -> Option<u64> {
        let ck = &self.train.run.as_ref()?.checkpoints;
        match self.train.compare.checkpoint {
            Some(s) if ck.contains(&s) => Some(s),
            _ => ck.last().copied(),
        }
    }

    fn run_compare(&mut self) -> Vec<Command> {
        let Some(run) = &self.train.run else {
            self.notice("attach to a run first (o)");
            return Vec::new();
        };
        let Some(base) = run.info.base_model.clone() else {
            self.notice(format!(
                "{}: no recipe.json naming the base model yet",
                run.dir.display()
            ));
            return Vec::new();
        };
        let Some(step) = self.compare_checkpoint() else {
            self.notice("no checkpoint yet: the run writes one every train.checkpoint_every steps");
            return Vec::new();
        };
        let prompt = self.train.compare.prompt.text.trim().to_string();
        if prompt.is_empty() {
            self.train.compare.editing = true;
            self.notice("type a prompt (Enter runs it), or take one from the rollout viewer (p)");
            return Vec::new();
        }
        let ckpt = checkpoint_dir(&run.dir, step);
        let max_new_tokens = run.info.max_new_tokens.unwrap_or(256);
        let dirs = [base.clone(), ckpt.clone()];
        let labels = [
            format!(
                "base · {}",
                base.file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned())
            ),
            format!("step {step}"),
        ];
        let mut specs = Vec::new();
        // The runner keeps a pair's engines loaded, so a second run of the same pair gets no
        // Ready event: keep what the first one said about the models.
        let before = std::mem::take(&mut self.train.compare.sides);
        for (dir, label) in dirs.iter().zip(labels) {
            let job = self.train.next_job;
            self.train.next_job += 1;
            let mut side = CompareSide::new(label, dir.clone(), job);
            side.model = before
                .iter()
                .find(|s| s.dir == *dir)
                .and_then(|s| s.model.clone());
            self.train.compare.sides.push(side);
            specs.push(GenSpec {
                job,
                messages: vec![ChatMessage::user(prompt.clone())],
                continue_from: Vec::new(),
                // Greedy: the difference is the weights', not the dice's.
                sampling: SamplingParams {
                    temperature: 0.0,
                    ..SamplingParams::default()
                },
                max_new_tokens,
                think_budget: None,
                top_logprobs: 0,
            });
        }
        let specs: [GenSpec; 2] = specs.try_into().expect("two sides");
        cmd(TrainCommand::Compare { dirs, specs })
    }

    fn on_compare_event(&mut self, side: usize, ev: EngineEvent) {
        let Some(s) = self.train.compare.sides.get_mut(side) else {
            return;
        };
        match ev {
            EngineEvent::Ready(info) => s.model = Some(*info),
            EngineEvent::LoadFailed(e) => {
                s.status = CompareStatus::Failed(format!("{}: {e}", s.dir.display()))
            }
            EngineEvent::Prompt { .. } => {}
            EngineEvent::Token { job, token, .. } if job == s.job => {
                let (eos, think) = s
                    .model
                    .as_ref()
                    .map_or((Vec::new(), None), |m| (m.eos_ids.clone(), m.think_ids));
                let tag = think.is_some_and(|(o, c)| token.id == o || token.id == c);
                match token.phase {
                    Phase::Think => {
                        s.think_tokens += 1;
                        if !tag {
                            s.thought.push_str(&token.text);
                        }
                    }
                    Phase::Answer => {
                        s.answer_tokens += 1;
                        if !eos.contains(&token.id) && !tag {
                            s.answer.push_str(&token.text);
                        }
                    }
                }
                let n = s.model.as_ref().map_or(0, |m| m.n_experts);
                for r in &token.routing {
                    let counts = s.load.entry(r.layer).or_insert_with(|| vec![0; n]);
                    for &e in &r.experts {
                        let e = e as usize;
                        if e >= counts.len() {
                            counts.resize(e + 1, 0);
                        }
                        counts[e] += 1;
                    }
                }
            }
            EngineEvent::Finished { job, reason, .. } if job == s.job => {
                s.status = CompareStatus::Done(reason);
            }
            EngineEvent::Failed { job, error } if job == s.job => {
                s.status = CompareStatus::Failed(error);
            }
            _ => {}
        }
    }
}

/// `i` moved by `d` within `0..n` (clamped).
fn step_index(i: usize, d: isize, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    (i as isize + d).clamp(0, n as isize - 1) as usize
}

mod rollout_chat;
pub use rollout_chat::PendingScore;

#[cfg(test)]
mod tests;
