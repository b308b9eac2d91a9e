//! The workbench end to end: the real binary in a pseudo-terminal with the stand-in model, read
//! through a terminal emulator. Ask a question, see the reply stream and finish, open the routing
//! view, quit, reopen the saved session and see the same routing.
//!
//! Every wait is for a condition on the screen, with a generous limit (the machine may be busy);
//! nothing here measures time.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};

const ROWS: u16 = 30;
const COLS: u16 = 100;
const LIMIT: Duration = Duration::from_secs(120);

struct Tui {
    screen: Arc<Mutex<vt100::Parser>>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    _master: Box<dyn MasterPty + Send>,
}

impl Tui {
    fn spawn(args: &[&str]) -> Self {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pty");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_thinkbench"));
        cmd.args(args);
        cmd.env("TERM", "xterm-256color");
        cmd.cwd(crate::common::repo());
        let child = pty.slave.spawn_command(cmd).expect("spawn thinkbench");
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().expect("pty reader");
        let writer = pty.master.take_writer().expect("pty writer");
        let screen = Arc::new(Mutex::new(vt100::Parser::new(ROWS, COLS, 0)));
        let s = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().process(&buf[..n]);
            }
        });
        Self {
            screen,
            writer,
            child,
            _master: pty.master,
        }
    }

    fn text(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    fn send(&mut self, bytes: &str) {
        self.writer.write_all(bytes.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    /// Waits until `cond` holds for the screen text; panics with the screen after `LIMIT`.
    fn wait_for(&mut self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let t = self.text();
            if cond(&t) {
                return t;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("thinkbench exited ({status:?}) while waiting for {what}; screen:\n{t}");
            }
            assert!(
                start.elapsed() < LIMIT,
                "timed out waiting for {what}; screen:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self) -> portable_pty::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < LIMIT,
                "thinkbench did not exit; screen:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The routing map's rows (`L1 …`, `L2 …`) as shown on screen.
fn routing_rows(screen: &str) -> Vec<String> {
    screen
        .lines()
        .filter_map(|l| {
            // A map row starts at the pane's border: "│▶L1 " (the chosen layer) or "│ L2 ".
            let i = ["│▶L1 ", "│ L1 ", "│▶L2 ", "│ L2 ", "│▶L3 ", "│ L3 "]
                .iter()
                .find_map(|p| l.find(p))?;
            let row = &l[i + '│'.len_utf8()..];
            Some(row.trim_end().trim_end_matches('│').trim_end().to_string())
        })
        .collect()
}

/// The routing pane's first line: the selected token, its index and phase.
fn token_header(screen: &str) -> String {
    let line = screen
        .lines()
        .skip_while(|l| !l.contains("Routing: selected token"))
        .nth(1)
        .unwrap_or_else(|| panic!("no routing pane:\n{screen}"));
    let inner = line
        .trim_start_matches('│')
        .trim_end()
        .trim_end_matches('│')
        .trim();
    assert!(inner.contains('#'), "a token header: {inner:?}");
    inner.to_string()
}

fn only_session(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "one session saved: {files:?}");
    files[0].clone()
}

#[test]
fn chat_routing_quit_and_reopen() {
    // The built-in model, as `make run` opens it.
    let model = crate::common::repo().join("models/thinkbench-tiny");
    let dir = tempfile::tempdir().unwrap();
    let sessions = dir.path().to_str().unwrap();
    let mut tui = Tui::spawn(&[
        "--model",
        model.to_str().unwrap(),
        "--sessions-dir",
        sessions,
        "--think-budget",
        "12",
        "--max-tokens",
        "40",
        "--seed",
        "3",
        "--threads",
        "1",
    ]);
    // Ready when the status line shows the model's context.
    tui.wait_for("the model to load", |s| s.contains("ctx 0/512"));
    tui.send("What is 17 + 25?");
    tui.wait_for("the typed question", |s| s.contains("│What is 17 + 25?"));
    tui.send("\r");
    // The reply arrives token by token: its header counts them; it ends folded.
    tui.wait_for("tokens to stream", |s| {
        s.contains(" tok") && s.contains("▌ thinkbench-tiny")
    });
    let done = tui.wait_for("the reply to finish", |s| {
        s.contains("▸ thought for") && s.contains("decode")
    });
    assert!(
        done.contains("cut by the budget"),
        "budget of 12 closes the thought:\n{done}"
    );
    // The routing view of the selected token.
    tui.send("\t");
    tui.send("r");
    let live = tui.wait_for("the routing view", |s| {
        s.contains("Routing: selected token") && routing_rows(s).len() == 3
    });
    let rows = routing_rows(&live);
    let token_line = token_header(&live);
    // Quit (Ctrl-Q): the session is saved on the way out.
    tui.send("\x11");
    assert!(tui.wait_exit().success());
    let file = only_session(dir.path());
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["format"], "thinkbench-session/1");
    drop(tui);

    // Reopen it: the same token, the same routing, from the stored trace.
    let mut tui = Tui::spawn(&["open", file.to_str().unwrap(), "--sessions-dir", sessions]);
    tui.wait_for("the reopened transcript", |s| {
        s.contains("What is 17 + 25?")
    });
    tui.send("r");
    let again = tui.wait_for("the routing view", |s| {
        s.contains("Routing: selected token") && routing_rows(s).len() == 3
    });
    assert_eq!(routing_rows(&again), rows, "screen:\n{again}");
    assert_eq!(token_header(&again), token_line, "screen:\n{again}");
    tui.send("q");
    assert!(tui.wait_exit().success());
}

mod engine {
    //! The engine thread on the stand-in model: streaming, the thinking budget, prefix reuse
    //! across turns, "keep thinking", cancellation and a context that is too long.

    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use thinkbench::runtime::engine::{Engine, EngineConfig, EngineEvent, GenSpec, Job, ScoreSpec};
    use thinkbench::runtime::SamplingParams;
    use thinkbench::text::ChatMessage;
    use thinkbench::trace::{FinishReason, PromptToken, TokenRecord};
    use tokio::sync::mpsc::UnboundedReceiver;

    struct Run {
        prompt: Vec<PromptToken>,
        reused: usize,
        tokens: Vec<TokenRecord>,
        end: Result<FinishReason, String>,
    }

    fn run(
        engine: &Engine,
        rx: &mut UnboundedReceiver<EngineEvent>,
        spec: GenSpec,
        cancel: bool,
    ) -> Run {
        let job = spec.job;
        let flag = Arc::new(AtomicBool::new(cancel));
        assert!(engine.submit(Job::Generate { spec, cancel: flag }));
        let mut r = Run {
            prompt: vec![],
            reused: 0,
            tokens: vec![],
            end: Err(String::new()),
        };
        loop {
            match rx.blocking_recv().expect("engine alive") {
                EngineEvent::Prompt {
                    job: j,
                    tokens,
                    reused,
                } if j == job => {
                    r.prompt = tokens;
                    r.reused = reused;
                }
                EngineEvent::Token {
                    job: j,
                    token,
                    top_text,
                } if j == job => {
                    assert_eq!(top_text.len(), token.top.len());
                    r.tokens.push(token);
                }
                EngineEvent::Finished {
                    job: j,
                    reason,
                    stats,
                } if j == job => {
                    assert_eq!(stats.generated_tokens, r.tokens.len());
                    r.end = Ok(reason);
                    return r;
                }
                EngineEvent::Failed { job: j, error } if j == job => {
                    r.end = Err(error);
                    return r;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn spec(job: u64, messages: Vec<ChatMessage>, budget: Option<usize>) -> GenSpec {
        GenSpec {
            job,
            messages,
            continue_from: vec![],
            sampling: SamplingParams {
                seed: 5,
                ..SamplingParams::default()
            },
            max_new_tokens: 16,
            think_budget: budget,
            top_logprobs: 3,
        }
    }

    #[test]
    fn turns_budget_keep_thinking_cancel_and_overflow() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let engine = thinkbench::runtime::engine::spawn(
            EngineConfig {
                model_dir: crate::common::models_dir().join("deepseek_v3_qlora"),
                device: "cpu".into(),
                dtype: "f32".into(),
                threads: Some(1),
                quant: None,
            },
            tx,
        );
        let info = match rx.blocking_recv() {
            Some(EngineEvent::Ready(i)) => i,
            other => panic!("expected Ready, got {other:?}"),
        };
        assert_eq!(info.moe_layers, vec![1, 2]);
        assert_eq!((info.n_experts, info.top_k, info.context), (8, 2, 256));
        let (open, close) = info.think_ids.expect("the fixture has <think> ids");
        assert!(info.checkpoint_hash.starts_with("fnv1a64:"));

        // Turn 1 with a budget of 4: four reasoning tokens, then the injected </think>.
        let q = ChatMessage::user("What is 17 + 25?");
        let first = run(&engine, &mut rx, spec(1, vec![q.clone()], Some(4)), false);
        assert!(first.end.is_ok(), "{:?}", first.end);
        assert_eq!(first.reused, 0);
        let cut = first
            .tokens
            .iter()
            .position(|t| t.forced)
            .expect("the budget closed the thought");
        assert_eq!(first.tokens[cut].id, close);
        assert!(first.tokens[..cut]
            .iter()
            .all(|t| !t.forced && t.id != close));
        assert!(
            first.tokens.iter().all(|t| t.routing.len() == 2),
            "every token is routed"
        );

        // Turn 2 shares the first turn's prefix: it is not recomputed.
        let answer = ChatMessage::assistant("42");
        let second = run(
            &engine,
            &mut rx,
            spec(2, vec![q.clone(), answer, ChatMessage::user("Why?")], None),
            false,
        );
        assert!(second.reused > 3, "reused {}", second.reused);
        assert_eq!(
            second.prompt[..second.reused]
                .iter()
                .map(|t| t.id)
                .collect::<Vec<_>>(),
            first.prompt[..second.reused]
                .iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        );

        // Keep thinking: the reply so far minus </think> is fed after the prompt.
        let kept: Vec<u32> = first.tokens[..cut].iter().map(|t| t.id).collect();
        let mut s = spec(3, vec![q.clone()], Some(4));
        s.continue_from = kept.clone();
        let more = run(&engine, &mut rx, s, false);
        assert_eq!(more.prompt.len(), first.prompt.len() + kept.len());
        assert!(more
            .prompt
            .last()
            .is_some_and(|t| t.id == *kept.last().unwrap()));
        assert_ne!(more.tokens.first().map(|t| t.id), Some(open));
        assert!(more
            .tokens
            .first()
            .is_some_and(|t| t.phase == thinkbench::trace::Phase::Think));

        // Cancelled before the first step: no tokens, reason cancelled.
        let stopped = run(&engine, &mut rx, spec(4, vec![q.clone()], None), true);
        assert_eq!(stopped.end, Ok(FinishReason::Cancelled));
        assert!(stopped.tokens.is_empty());

        // Longer than the context: a one-line error, and the engine keeps serving.
        let long = ChatMessage::user("word ".repeat(400));
        let failed = run(&engine, &mut rx, spec(5, vec![long], None), false);
        let e = failed.end.unwrap_err();
        assert!(e.contains("context of 256 tokens"), "{e}");
        assert!(run(&engine, &mut rx, spec(6, vec![q.clone()], None), false)
            .end
            .is_ok());

        // Scoring a sampled reply on the same engine gives back what sampling recorded, with
        // the text of every alternative and the model that scored it.
        let drawn = run(&engine, &mut rx, spec(7, vec![q], None), false);
        let ids: Vec<u32> = drawn.tokens.iter().map(|t| t.id).collect();
        assert!(engine.submit(Job::Score(ScoreSpec {
            job: 8,
            prompt_ids: drawn.prompt.iter().map(|t| t.id).collect(),
            completion_ids: ids.clone(),
            top_logprobs: 3,
        })));
        match rx.blocking_recv().expect("engine alive") {
            EngineEvent::Scored {
                job: 8,
                model,
                trace,
                top_text,
            } => {
                assert_eq!(model.id, "deepseek_v3_qlora");
                assert_eq!(trace.prompt.len(), drawn.prompt.len());
                for (a, b) in trace.tokens.iter().zip(&drawn.tokens) {
                    assert_eq!(a.id, b.id);
                    assert!((a.logprob - b.logprob).abs() < 1e-4, "{a:?} vs {b:?}");
                    assert_eq!(a.routing.len(), 2, "both MoE layers");
                    for (id, _) in &a.top {
                        assert!(top_text.iter().any(|(t, _)| t == id), "text of {id}");
                    }
                }
                assert_eq!(trace.tokens.len(), ids.len());
            }
            other => panic!("expected Scored, got {other:?}"),
        }
        engine.shutdown();
    }
}

/// Every example in `sessions/` opens without a model and its routing and token views draw.
#[test]
fn example_sessions_open_without_the_model() {
    use ratatui::{backend::TestBackend, Terminal};
    use thinkbench::app::{Action, App, EngineState, Overrides};
    let dir = crate::common::repo().join("sessions");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("sessions/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        seen += 1;
        let s = thinkbench::session::Session::load(&path).unwrap();
        assert!(s.conversation.token_count() > 0, "{}", path.display());
        let mut app = App::new(s, EngineState::Absent, Overrides::default());
        app.update(Action::FocusTranscript);
        app.update(Action::ToggleRouting);
        app.update(Action::ToggleTokens);
        let mut t = Terminal::new(TestBackend::new(100, 30)).unwrap();
        t.draw(|f| thinkbench::ui::draw(f, &app)).unwrap();
        let buf = t.backend().buffer();
        let screen: String = (0..30)
            .map(|y| (0..100).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n")
            .collect();
        assert!(
            screen.contains("(read-only)"),
            "{}:\n{screen}",
            path.display()
        );
        assert!(screen.contains("▶L1 "), "{}:\n{screen}", path.display());
        assert!(
            screen.contains("H "),
            "entropy strip: {}:\n{screen}",
            path.display()
        );
    }
    assert!(seen >= 3, "example sessions in {}", dir.display());
}

/// `--train DIR` opens the Train tab on a finished run (the committed fixture); the rollout
/// viewer reads a step, and Enter opens a completion in the chat as a session.
#[test]
fn train_tab_attaches_views_rollouts_and_opens_one_in_the_chat() {
    let dir = tempfile::tempdir().unwrap();
    let mut tui = Tui::spawn(&[
        "--train",
        "tests/fixtures/train_run",
        "--sessions-dir",
        dir.path().to_str().unwrap(),
        "--threads",
        "1",
    ]);
    tui.wait_for("the run's charts", |s| {
        s.contains("fixture-grpo") && s.contains("step 6/6") && s.contains(" reward ")
    });
    tui.send("2");
    tui.wait_for("step 6's rollouts", |s| {
        s.contains("step 6 (6/6) · following") && s.contains("reward 1.100")
    });
    tui.send("\r");
    tui.wait_for("the rollout in the chat", |s| {
        s.contains("rollout · step 6 · prompt 1 · #1") && s.contains("The answer is")
    });
    // The engine re-scores it with the run's starting model (the fixture kept no checkpoints),
    // and the token inspector then has probabilities.
    tui.wait_for("the rollout scored", |s| {
        s.contains("scored by thinkbench-tiny")
    });
    tui.send("\t");
    tui.send("\x1bOR"); // F3
    tui.wait_for("the token inspector with probabilities", |s| {
        s.contains("Tokens: alternatives") && s.contains(" nats · ")
    });
    tui.send("\x11"); // Ctrl-Q
    assert!(tui.wait_exit().success());
}
