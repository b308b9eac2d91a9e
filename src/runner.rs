//! The event loop that joins the terminal, the engine thread and the app:
//! `tokio::select!` over key presses, engine events, signals and a frame tick. Every input
//! becomes an `Action` for `App::update`; the `Command`s it returns are carried out here (the only
//! place with I/O besides the engine). Redraws are driven by changes and rate-limited: a key press
//! is drawn at once, streamed tokens at most once per frame.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::app::{Action, App, Command, EngineState, Overrides, TrainAction, TrainCommand};
use crate::backend::chat::{
    Engine, EngineConfig, EngineEvent, EngineSource, GenSpec, Job, RemoteConfig, ScoreSpec,
};
use crate::session::{self, Session};
use crate::train_view::watcher::{WatchRequest, Watcher};
use crate::train_view::{run as train_run, ProcessState};
use crate::tui;

/// Streamed tokens redraw at most this often.
const FRAME: Duration = Duration::from_millis(33);
/// Unsaved changes are written at least this often.
const AUTOSAVE: Duration = Duration::from_secs(15);

pub struct RunOptions {
    /// The model to load (none: read-only, for `open`).
    pub model: Option<PathBuf>,
    pub device: String,
    pub dtype: String,
    pub threads: Option<i32>,
    /// `--quant`: q8_0 or q4_0 linear layers.
    pub quant: Option<String>,
    /// `--remote`: chat with a model behind a server instead of `model`.
    pub remote: Option<RemoteConfig>,
    pub sessions_dir: PathBuf,
    pub inline: bool,
    /// A session file to open.
    pub open: Option<PathBuf>,
    pub overrides: Overrides,
    /// Open the Train tab on this run folder (or metrics.jsonl), or launch this recipe (.toml).
    pub train: Option<PathBuf>,
}

pub fn run(opts: RunOptions) -> Result<()> {
    let session = match &opts.open {
        Some(p) => Session::load(p)?,
        None => Session::new(session::now_secs()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the event loop")?;
    rt.block_on(run_loop(opts, session))
}

struct Runner {
    engine: Option<Engine>,
    cancels: HashMap<u64, Arc<AtomicBool>>,
    sessions_dir: PathBuf,
    term: tui::Term,
    inline: bool,
    started: Instant,
    last_save: Instant,
    device: String,
    dtype: String,
    threads: Option<i32>,
    quant: Option<String>,
    /// The Train tab's file watcher and process owner (results come back on `background`).
    watcher: Watcher,
    /// Results of background work for the app (the watcher, the A/B engines, rollout loading).
    background: mpsc::UnboundedSender<Action>,
    /// The A/B's two engines (base, checkpoint), kept while the same pair is compared.
    compare: Option<CompareEngines>,
    /// The chat engine's model folder (rollouts of that model are scored there).
    chat_model: Option<PathBuf>,
    /// The engine scoring rollouts with a checkpoint, kept while rollouts of the same policy are
    /// opened.
    scorer: Option<ScorerEngine>,
}

struct ScorerEngine {
    dir: PathBuf,
    engine: Engine,
}

struct CompareEngines {
    dirs: [PathBuf; 2],
    engines: [Engine; 2],
}

async fn run_loop(opts: RunOptions, session: Session) -> Result<()> {
    let state = match (&opts.remote, &opts.model) {
        (Some(r), _) => EngineState::Loading(r.url.clone()),
        (None, Some(dir)) => {
            EngineState::Loading(dir.file_name().map_or(dir.display().to_string(), |n| {
                n.to_string_lossy().into_owned()
            }))
        }
        (None, None) => EngineState::Absent,
    };
    let opened = opts.open.is_some();
    let mut app = App::new(session, state, opts.overrides.clone());
    if opened {
        // A reopened session starts on its last reply, ready for the inspectors.
        app.update(Action::FocusTranscript);
    }
    let (background, mut background_rx) = mpsc::unbounded_channel::<Action>();
    let watcher = {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let to_app = background.clone();
        // The watcher speaks train_view's plain events; they reach the app as Train actions.
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if to_app.send(Action::Train(TrainAction::Event(ev))).is_err() {
                    break;
                }
            }
        });
        Watcher::spawn(tx)
    };
    let term = tui::init(opts.inline).context("set up the terminal")?;
    let mut r = Runner {
        engine: None,
        cancels: HashMap::new(),
        sessions_dir: opts.sessions_dir.clone(),
        term,
        inline: opts.inline,
        started: Instant::now(),
        last_save: Instant::now(),
        device: opts.device.clone(),
        dtype: opts.dtype.clone(),
        threads: opts.threads,
        quant: opts.quant.clone(),
        watcher,
        background,
        compare: None,
        chat_model: opts.remote.is_none().then(|| opts.model.clone()).flatten(),
        scorer: None,
    };
    let chat = match (&opts.remote, &opts.model) {
        (Some(remote), _) => Some(EngineSource::Remote(remote.clone())),
        (None, Some(dir)) => Some(EngineSource::Local(r.local(dir))),
        (None, None) => None,
    };
    r.engine = chat.map(|source| r.spawn_engine(source, Action::Engine));
    if let Some(path) = &opts.train {
        let cmds = app.update(Action::Train(TrainAction::Open(path.clone())));
        r.execute(&mut app, cmds)?;
    }
    let result = r.event_loop(&mut app, &mut background_rx).await;
    // Whatever happened, the session is saved and the terminal given back.
    r.save(&mut app);
    tui::restore();
    for c in r.cancels.values() {
        c.store(true, Ordering::Relaxed);
    }
    if let Some(e) = r.engine.take() {
        e.shutdown_within(Duration::from_secs(3));
    }
    // A run launched from the Train tab is not stopped by quitting (it has its own process
    // group); say where it is.
    if let Some(run) = &app.train.run {
        if let ProcessState::Running { pid, log } = &run.process {
            eprintln!(
                "training continues in the background (pid {pid}, log {}); watch it with `thinkbench --train {}`",
                log.display(),
                run.dir.display()
            );
        }
    }
    result
}

impl Runner {
    /// How a model folder loads on this machine: the command line's device, precision, threads
    /// and quantization.
    fn local(&self, dir: &Path) -> EngineConfig {
        EngineConfig {
            model_dir: dir.to_path_buf(),
            device: self.device.clone(),
            dtype: self.dtype.clone(),
            threads: self.threads,
            quant: self.quant.clone(),
        }
    }

    /// Starts a backend whose events reach the app as the actions `tag` makes of them (the chat
    /// engine's as `Engine`, the A/B's tagged with their side, the scorer's as `Scorer`).
    fn spawn_engine(
        &self,
        source: EngineSource,
        tag: impl Fn(EngineEvent) -> Action + Send + 'static,
    ) -> Engine {
        let (tx, mut rx) = mpsc::unbounded_channel::<EngineEvent>();
        let to_app = self.background.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if to_app.send(tag(event)).is_err() {
                    break;
                }
            }
        });
        crate::engines::spawn(source, tx)
    }
}

impl Runner {
    async fn event_loop(
        &mut self,
        app: &mut App,
        background_rx: &mut mpsc::UnboundedReceiver<Action>,
    ) -> Result<()> {
        let mut input = EventStream::new();
        let mut tick = tokio::time::interval(FRAME);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sighup = signal(SignalKind::hangup())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut dirty = true;
        let mut last_draw = Instant::now() - FRAME;
        self.draw(app)?;
        loop {
            let mut draw_now = false;
            tokio::select! {
                biased;
                ev = input.next() => match ev {
                    Some(Ok(ev)) => {
                        self.clock(app);
                        if let Some(a) = terminal_action(ev) {
                            let cmds = app.update(a);
                            self.execute(app, cmds)?;
                        }
                        draw_now = true;
                    }
                    Some(Err(e)) => return Err(e).context("read the terminal"),
                    None => break,
                },
                _ = sigterm.recv() => break,
                _ = sighup.recv() => break,
                _ = sigint.recv() => break,
                // Engines' events and background results: everything already waiting is
                // taken before drawing once.
                Some(a) = background_rx.recv() => {
                    self.clock(app);
                    let mut cmds = app.update(a);
                    for _ in 0..512 {
                        match background_rx.try_recv() {
                            Ok(a) => cmds.extend(app.update(a)),
                            Err(_) => break,
                        }
                    }
                    self.execute(app, cmds)?;
                    dirty = true;
                }
                _ = tick.tick() => {
                    self.clock(app);
                    // Elapsed-time counters move while generating; notices expire.
                    if app.generating.is_some() || app.notice.is_some() {
                        dirty = true;
                    }
                    if app.unsaved && self.last_save.elapsed() >= AUTOSAVE {
                        self.save(app);
                    }
                }
            }
            if app.quit {
                break;
            }
            if draw_now || (dirty && last_draw.elapsed() >= FRAME) {
                self.draw(app)?;
                last_draw = Instant::now();
                dirty = false;
            }
        }
        Ok(())
    }

    fn clock(&self, app: &mut App) {
        app.update(Action::Clock(self.started.elapsed().as_secs_f64()));
    }

    fn draw(&mut self, app: &App) -> Result<()> {
        self.term
            .draw(|f| crate::ui::draw(f, app))
            .context("draw")?;
        Ok(())
    }

    fn save(&mut self, app: &mut App) {
        self.last_save = Instant::now();
        if app.session.conversation.thread().is_empty() {
            return;
        }
        app.session.updated = session::timestamp(session::now_secs());
        match app.session.save(&self.sessions_dir) {
            Ok(_) => app.unsaved = false,
            Err(e) => app.notice(format!("autosave failed: {e}")),
        }
    }

    /// Carries out commands; results come back to the app as actions (which may ask for more).
    fn execute(&mut self, app: &mut App, cmds: Vec<Command>) -> Result<()> {
        let mut queue: std::collections::VecDeque<Command> = cmds.into();
        while let Some(cmd) = queue.pop_front() {
            let follow_up = match cmd {
                Command::Generate(spec) => {
                    let job = spec.job;
                    let cancel = Arc::new(AtomicBool::new(false));
                    self.cancels.retain(|_, c| !c.load(Ordering::Relaxed));
                    self.cancels.insert(job, cancel.clone());
                    let sent = self
                        .engine
                        .as_ref()
                        .is_some_and(|e| e.submit(Job::Generate { spec, cancel }));
                    (!sent).then(|| {
                        Action::Engine(EngineEvent::Failed {
                            job,
                            error: "the engine is not running".into(),
                        })
                    })
                }
                Command::Cancel(job) => {
                    if let Some(c) = self.cancels.get(&job) {
                        c.store(true, Ordering::Relaxed);
                    }
                    None
                }
                Command::Save => {
                    self.save(app);
                    None
                }
                Command::ListSessions => Some(Action::Sessions(session::list(&self.sessions_dir))),
                Command::OpenSession(path) => Some(match Session::load(&path) {
                    Ok(s) => Action::Opened(Box::new(s)),
                    Err(e) => Action::Notice(e.to_string()),
                }),
                Command::DeleteSession(path) => {
                    Some(Action::Notice(match std::fs::remove_file(&path) {
                        Ok(()) => format!("deleted {}", path.display()),
                        Err(e) => format!("{}: {e}", path.display()),
                    }))
                }
                Command::RenameSession { path, name } => {
                    Some(Action::Notice(match rename_file(&path, &name) {
                        Ok(()) => format!("renamed to “{name}”"),
                        Err(e) => e.to_string(),
                    }))
                }
                Command::Export => Some(Action::Notice(match self.export(app) {
                    Ok(p) => format!("exported to {}", p.display()),
                    Err(e) => format!("export failed: {e:#}"),
                })),
                Command::Copy(text) => {
                    if let Err(e) = tui::copy_to_clipboard(&text) {
                        app.notice(format!("copy failed: {e}"));
                    }
                    None
                }
                Command::Transcribe(node) => {
                    if self.inline {
                        self.transcribe(app, node)?;
                    }
                    None
                }
                Command::Quit => {
                    app.quit = true;
                    None
                }
                Command::Train(c) => self.train_command(app, c),
            };
            if let Some(a) = follow_up {
                queue.extend(app.update(a));
            }
        }
        Ok(())
    }

    fn export(&self, app: &App) -> Result<PathBuf> {
        let path = self.sessions_dir.join(format!("{}.md", app.session.id));
        std::fs::create_dir_all(&self.sessions_dir)?;
        session::write_atomic(&path, app.session.to_markdown().as_bytes())?;
        Ok(path)
    }

    /// Inline mode: a finished message goes into the terminal's own scrollback.
    fn transcribe(&mut self, app: &App, node: usize) -> Result<()> {
        let width = self.term.size()?.width as usize;
        let lines = crate::ui::transcript::plain_lines(app, node, width);
        let n = lines.len() as u16;
        self.term.insert_before(n, |buf| {
            use ratatui::widgets::Widget;
            ratatui::widgets::Paragraph::new(lines).render(buf.area, buf);
        })?;
        Ok(())
    }
}

impl Runner {
    /// Carries out a Train tab command: file work and processes go to the watcher thread,
    /// models to engine threads; nothing here waits on them.
    fn train_command(&mut self, app: &App, c: TrainCommand) -> Option<Action> {
        match c {
            TrainCommand::ListChoices => {
                self.watcher.send(WatchRequest::ListChoices {
                    recipes: PathBuf::from("recipes"),
                    runs: PathBuf::from("runs"),
                });
                None
            }
            TrainCommand::Launch(recipe) => match train_run::launch(&recipe) {
                Ok(l) => {
                    self.watcher.send(WatchRequest::Attach {
                        dir: l.dir.clone(),
                        launched: Some(l),
                    });
                    None
                }
                Err(e) => Some(Action::Notice(e)),
            },
            TrainCommand::Attach(path) => {
                let dir = train_run::run_dir_of(&path);
                if !dir.is_dir() {
                    return Some(Action::Notice(format!(
                        "{}: no such run folder",
                        dir.display()
                    )));
                }
                self.watcher.send(WatchRequest::Attach {
                    dir,
                    launched: None,
                });
                None
            }
            TrainCommand::LoadRollouts(step) => {
                self.watcher.send(WatchRequest::LoadRollouts { step });
                None
            }
            TrainCommand::StopRun => {
                self.watcher.send(WatchRequest::StopProcess);
                None
            }
            TrainCommand::Compare { dirs, specs } => {
                self.compare_on(dirs, specs);
                None
            }
            TrainCommand::OpenInChat {
                tokenizer,
                title,
                earlier,
                prompt,
                completion,
            } => {
                let tx = self.background.clone();
                let model = app.model.clone();
                // Loading a tokenizer can take a moment for a large model: off the UI thread.
                std::thread::spawn(move || {
                    let a = match crate::train_view::to_chat::rollout_session(
                        &tokenizer,
                        model,
                        &title,
                        &earlier,
                        &prompt,
                        &completion,
                        session::now_secs(),
                    ) {
                        Ok(s) => Action::Train(TrainAction::RolloutOpened(Box::new(s))),
                        Err(e) => Action::Notice(format!("open the rollout: {e:#}")),
                    };
                    let _ = tx.send(a);
                });
                None
            }
            TrainCommand::ScoreRollout { model_dir, spec } => {
                self.score_on(model_dir, spec);
                None
            }
        }
    }

    /// Scores a rollout on the chat engine when it holds `model_dir` (no second copy of the
    /// weights), else on a scoring engine loading it (kept for the next rollout of that policy).
    /// Either way the answer comes back as an event, so the UI thread never waits on the model.
    fn score_on(&mut self, model_dir: PathBuf, spec: ScoreSpec) {
        let job = spec.job;
        let same = |a: &Path, b: &Path| {
            let c = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            c(a) == c(b)
        };
        if let (Some(engine), Some(chat)) = (&self.engine, &self.chat_model) {
            // A chat engine that failed to load has ended its thread: submit says so.
            if same(chat, &model_dir) && engine.submit(Job::Score(spec.clone())) {
                return;
            }
        }
        if self
            .scorer
            .as_ref()
            .is_none_or(|s| !same(&s.dir, &model_dir))
        {
            // Dropping the old scorer ends its thread once its job is done.
            let engine = self.spawn_engine(EngineSource::Local(self.local(&model_dir)), |ev| {
                Action::Train(TrainAction::Scorer(ev))
            });
            self.scorer = Some(ScorerEngine {
                dir: model_dir,
                engine,
            });
        }
        let sent = self
            .scorer
            .as_ref()
            .is_some_and(|s| s.engine.submit(Job::Score(spec)));
        if !sent {
            // Its model failed to load: the next rollout opened tries again.
            self.scorer = None;
            let _ = self
                .background
                .send(Action::Train(TrainAction::Scorer(EngineEvent::Failed {
                    job,
                    error: "the scoring engine is not running".into(),
                })));
        }
    }

    /// Runs the A/B's two jobs, each on an engine holding its model (started, or kept from the
    /// last A/B of the same pair). An engine reports on its own channel; a small task tags its
    /// events with the side and hands them to the app.
    fn compare_on(&mut self, dirs: [PathBuf; 2], specs: [GenSpec; 2]) {
        if self.compare.as_ref().is_none_or(|c| c.dirs != dirs) {
            // Dropping the old pair ends their threads once their jobs stop.
            self.compare = None;
            let engines = [0, 1].map(|side| {
                let source = EngineSource::Local(self.local(&dirs[side]));
                self.spawn_engine(source, move |event| {
                    Action::Train(TrainAction::Compare { side, event })
                })
            });
            self.compare = Some(CompareEngines {
                dirs: dirs.clone(),
                engines,
            });
        }
        let Some(c) = &self.compare else { return };
        for (side, spec) in specs.into_iter().enumerate() {
            let job = spec.job;
            let cancel = Arc::new(AtomicBool::new(false));
            if !c.engines[side].submit(Job::Generate { spec, cancel }) {
                let _ = self.background.send(Action::Train(TrainAction::Compare {
                    side,
                    event: EngineEvent::Failed {
                        job,
                        error: "the engine is not running".into(),
                    },
                }));
            }
        }
    }
}

fn rename_file(path: &Path, name: &str) -> Result<(), session::SessionError> {
    let mut s = Session::load(path)?;
    s.name = name.to_string();
    session::write_atomic(path, s.to_json().as_bytes())
}

fn terminal_action(ev: Event) -> Option<Action> {
    match ev {
        Event::Key(k) => Some(Action::Key(k)),
        Event::Paste(s) => Some(Action::Paste(s)),
        // A resize needs no action: the draw that follows every input event adapts.
        _ => None,
    }
}
