//! `thinkbench record`: asks a model a list of questions without the interface and saves the
//! conversation as a session, through the same engine thread and app state the workbench uses.
//! `scripts/record-sessions.sh` rebuilds the example sessions in `sessions/` with it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::app::{Action, App, Command, EngineState, Overrides};
use crate::backend::chat::{EngineConfig, EngineEvent, EngineSource, Job};
use crate::session::{self, Session};

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Model directory; default: the built-in model.
    #[arg(long, conflicts_with = "remote")]
    pub model: Option<PathBuf>,
    /// Where to write the session (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// The session's name.
    #[arg(long, default_value = "")]
    pub name: String,
    #[arg(long)]
    pub think_budget: Option<usize>,
    #[arg(long)]
    pub max_tokens: Option<usize>,
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Regenerate the first reply this many extra times (each a branch), to show branches.
    #[arg(long, default_value_t = 0)]
    pub branches: usize,
    #[command(flatten)]
    pub remote: super::remote_args::RemoteArgs,
    /// The user messages, asked in order.
    #[arg(required = true)]
    pub questions: Vec<String>,
}

pub fn run(args: &RecordArgs) -> Result<()> {
    let model = args
        .model
        .clone()
        .unwrap_or_else(super::demo::default_model);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let source = match args.remote.config() {
        Some(remote) => EngineSource::Remote(remote),
        None => EngineSource::Local(EngineConfig {
            model_dir: model.clone(),
            device: "cpu".into(),
            dtype: "f32".into(),
            threads: None,
            quant: None,
        }),
    };
    let engine = crate::engines::spawn(source, tx);
    let mut session = Session::new(session::now_secs());
    session.name = args.name.clone();
    if let Some(stem) = args.out.file_stem() {
        session.id = stem.to_string_lossy().into_owned();
    }
    let mut app = App::new(
        session,
        EngineState::Loading(
            args.remote
                .remote
                .clone()
                .unwrap_or(model.display().to_string()),
        ),
        Overrides {
            temperature: args.temperature,
            max_tokens: args.max_tokens,
            think_budget: args.think_budget,
            seed: Some(args.seed),
        },
    );
    let t0 = Instant::now();
    let mut pump = |app: &mut App, cmds: Vec<Command>| -> Result<()> {
        for c in cmds {
            if let Command::Generate(spec) = c {
                let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                if !engine.submit(Job::Generate { spec, cancel }) {
                    bail!("the engine stopped");
                }
            }
        }
        loop {
            let done = matches!(app.engine, EngineState::Ready | EngineState::Failed(_))
                && app.generating.is_none();
            if done {
                return Ok(());
            }
            let ev = rx.blocking_recv().context("the engine stopped")?;
            app.update(Action::Clock(t0.elapsed().as_secs_f64()));
            match &ev {
                EngineEvent::LoadFailed(e) => bail!("{e}"),
                EngineEvent::Note { text } => eprintln!("{text}"),
                EngineEvent::Trimmed { dropped_turns, .. } => eprintln!(
                    "the context is full: this reply's prompt leaves out the {}",
                    crate::app::turns(*dropped_turns, "oldest")
                ),
                EngineEvent::Failed { error, .. } => bail!("{error}"),
                _ => {}
            }
            app.update(Action::Engine(ev));
        }
    };
    pump(&mut app, Vec::new())?;
    for (i, q) in args.questions.iter().enumerate() {
        app.input.set(q);
        let cmds = app.update(Action::Send);
        pump(&mut app, cmds)?;
        if i == 0 {
            for _ in 0..args.branches {
                let cmds = app.update(Action::RegenerateLast);
                pump(&mut app, cmds)?;
            }
        }
    }
    app.session.updated = session::timestamp(session::now_secs());
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    session::write_atomic(&args.out, app.session.to_json().as_bytes())?;
    eprintln!(
        "{}: {} messages, {} generated tokens",
        args.out.display(),
        app.session.conversation.thread().len(),
        app.session.conversation.token_count()
    );
    Ok(())
}
