//! Snapshots of every view at 80×24 and 160×48, drawn from scripted app states (no model).
//! Review a changed snapshot by reading it: `cargo insta review`, or the `.snap.new` file.

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::app::{sample, Action, App, RoutingView};

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

fn render(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| super::draw(f, app)).unwrap();
    t
}

fn snap(name: &str, app: &App) {
    for (w, h) in SIZES {
        let t = render(app, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), t.backend());
    }
}

fn screen(app: &App, w: u16, h: u16) -> String {
    let t = render(app, w, h);
    let buf = t.backend().buffer();
    (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn welcome() {
    let mut app = sample::chat();
    app.session = crate::session::Session::new(1_796_000_000);
    app.selected = None;
    snap("welcome", &app);
}

#[test]
fn the_welcome_line_of_a_dense_model_counts_no_experts() {
    let mut app = sample::chat();
    app.session = crate::session::Session::new(1_796_000_000);
    app.selected = None;
    let mut info = app.model_info().clone();
    info.moe_layers.clear();
    info.n_experts = 0;
    info.top_k = 0;
    app.model = Some(info);
    let s = screen(&app, 80, 24);
    assert!(s.contains("model sample-moe · 3 layers, dense"), "{s}");
    assert!(!s.contains("routed experts"), "{s}");
}

#[test]
fn chat_with_folded_thoughts() {
    let app = sample::chat();
    snap("chat", &app);
    let s = screen(&app, 80, 24);
    assert!(s.contains("▸ thought for"), "{s}");
    assert!(s.contains("In Python"), "markdown heading without its #");
    assert!(!s.contains("## In Python"));
}

#[test]
fn the_status_bar_names_quantized_weights() {
    let mut app = sample::chat();
    let plain = screen(&app, 80, 24);
    assert!(!plain.contains("q8_0"), "{plain}");
    let mut info = app.model_info().clone();
    info.quant = Some("q8_0".into());
    app.model = Some(info);
    let s = screen(&app, 80, 24);
    assert!(s.contains("cpu · f32 · q8_0"), "{s}");
}

#[test]
fn thought_streams_in_its_pane() {
    let app = sample::streaming();
    snap("streaming", &app);
    let s = screen(&app, 80, 24);
    assert!(s.contains("◆ thinking… 30 tokens · 1.8 s"), "{s}");
    assert!(s.contains("● thinking 30 tok · 160 cached"), "{s}");
}

#[test]
fn unfolded_thought() {
    let mut app = sample::chat();
    let last = app.selected.unwrap();
    app.expanded.insert(last);
    snap("unfolded", &app);
    assert!(screen(&app, 160, 48).contains("┊ A one-line function is enough."));
}

fn inspecting(routing: bool, tokens: bool) -> App {
    let mut app = sample::chat();
    app.update(Action::FocusTranscript);
    app.update(Action::CursorStart);
    app.update(Action::Cursor(4));
    app.inspector.routing = routing;
    app.inspector.tokens = tokens;
    app
}

#[test]
fn routing_of_the_selected_token() {
    let app = inspecting(true, false);
    snap("routing_token", &app);
    let s = screen(&app, 80, 24);
    // The cursor's token is " enough." (the 5th of the thought); its layer-1 experts are listed.
    assert!(s.contains("‘ enough.’  #5/47 · think"), "{s}");
    let t = app.cursor_token().unwrap();
    let r = &t.routing[0];
    assert!(
        s.contains(&format!("e{} {:.2}", r.experts[0], r.weights[0]))
            || s.contains(&format!("e{} {:.2}", r.experts[1], r.weights[1])),
        "{s}"
    );
}

#[test]
fn routing_load_by_phase() {
    let mut app = inspecting(true, false);
    app.inspector.view = RoutingView::Load;
    snap("routing_load", &app);
    assert!(screen(&app, 80, 24).contains("think · "));
}

#[test]
fn token_inspector() {
    let app = inspecting(false, true);
    snap("tokens", &app);
    let s = screen(&app, 80, 24);
    let t = app.cursor_token().unwrap();
    assert!(
        s.contains(&format!("{:.1}%", t.logprob.exp() * 100.0)),
        "{s}"
    );
    assert!(s.contains("▲ 5/"), "entropy strip marker: {s}");
}

#[test]
fn both_inspectors() {
    snap("both_inspectors", &inspecting(true, true));
}

#[test]
fn many_experts_are_grouped() {
    let mut app = sample::long(400, 6, 256, 8);
    app.update(Action::FocusTranscript);
    app.update(Action::ToggleRouting);
    snap("routing_256_experts", &app);
    let s = screen(&app, 80, 24);
    assert!(s.contains("experts per cell"), "{s}");
}

#[test]
fn help_popup() {
    let mut app = sample::chat();
    app.update(Action::ToggleHelp);
    snap("help", &app);
}

#[test]
fn settings_popup() {
    let mut app = sample::chat();
    app.session.settings.think_budget = Some(256);
    app.update(Action::ToggleSettings);
    snap("settings", &app);
    assert!(screen(&app, 80, 24).contains("thinking budget     256"));
}

#[test]
fn sessions_popup() {
    let mut app = sample::chat();
    app.update(Action::ToggleSessions);
    let here = crate::session::SessionSummary {
        path: format!("/s/{}.json", app.session.id).into(),
        id: app.session.id.clone(),
        title: app.session.title(),
        updated: "2026-11-28T13:18:00Z".into(),
        messages: 4,
        model: "sample-moe".into(),
    };
    let other = crate::session::SessionSummary {
        path: "/s/x.json".into(),
        id: "x".into(),
        title: "Why is the sky blue?".into(),
        updated: "2026-11-27T09:00:00Z".into(),
        messages: 2,
        model: "sample-moe".into(),
    };
    app.update(Action::Sessions(vec![here, other]));
    snap("sessions", &app);
}

#[test]
fn colour_by_expert_keeps_the_text() {
    let mut app = sample::chat();
    app.update(Action::ToggleExpertColour);
    assert!(app.inspector.colour);
    let t = render(&app, 80, 24);
    let buf = t.backend().buffer();
    // Some answer cell carries an expert colour from the palette.
    let coloured = buf
        .content()
        .iter()
        .filter(|c| super::theme::EXPERT_PALETTE.contains(&c.fg) && c.symbol() != " ")
        .count();
    assert!(coloured > 20, "{coloured}");
}

#[test]
fn read_only_session_says_so() {
    let mut app = sample::chat();
    app.model = None;
    app.engine = crate::app::EngineState::Absent;
    let s = screen(&app, 80, 24);
    assert!(s.contains("sample-moe (read-only)"), "{s}");
}

// The Train tab, drawn from the committed fixture run (tests/fixtures/train_run).

use crate::app::train::{CompareSide, CompareStatus};
use crate::app::{TrainAction, TrainPane};

#[test]
fn train_tab_without_a_run() {
    let mut app = sample::chat();
    app.update(Action::ToggleView);
    snap("train_no_run", &app);
    assert!(screen(&app, 80, 24).contains("No training run yet."));
}

#[test]
fn train_charts() {
    let app = sample::train_run(TrainPane::Charts);
    snap("train_charts", &app);
    let s = screen(&app, 80, 24);
    assert!(s.contains("step 6/6"), "{s}");
    assert!(s.contains("page 1/3"), "four charts a page at 80×24: {s}");
    let wide = screen(&app, 160, 48);
    for title in [
        "reward",
        "accuracy",
        "KL",
        "entropy",
        "clip ratio",
        "zero-std groups",
        "tokens/s",
        "s/step",
    ] {
        assert!(
            wide.contains(&format!(" {title} ")),
            "{title} missing at 160×48:\n{wide}"
        );
    }
    assert!(wide.contains("held-out 75%"), "{wide}");
}

#[test]
fn train_charts_second_page() {
    let mut app = sample::train_run(TrainPane::Charts);
    app.update(Action::Train(TrainAction::Page(1)));
    let s = screen(&app, 80, 24);
    assert!(s.contains("page 2/3"), "{s}");
    assert!(s.contains(" loss "), "{s}");
}

#[test]
fn train_rollouts() {
    let mut app = sample::train_run(TrainPane::Rollouts);
    // Step 3's second prompt is the group that was trained on (mixed rewards).
    app.update(Action::Train(TrainAction::StepFirst));
    app.update(Action::Train(TrainAction::Step(2)));
    let mut app = load_requested(app);
    let cmds = app.update(Action::Train(TrainAction::Group(1)));
    assert!(cmds.is_empty(), "{cmds:?}");
    snap("train_rollouts", &app);
    let s = screen(&app, 80, 24);
    assert!(s.contains("step 3 (3/6)"), "{s}");
    assert!(s.contains("+0.50"), "advantages shown: {s}");
    assert!(s.contains("-1.50"), "{s}");
}

#[test]
fn train_rollouts_zero_std_group_says_why_it_adds_nothing() {
    let app = sample::train_run(TrainPane::Rollouts);
    let s = screen(&app, 80, 24);
    assert!(s.contains("zero std"), "{s}");
    assert!(s.contains("no gradient from this group"), "{s}");
}

/// The aha experiment's run (tests/fixtures/aha_run: the first 4 steps of recipes/aha-grpo.toml,
/// seed 1): the reasoning's form is charted right after accuracy, and a worked-out rollout with a
/// wait has its form in the title and its check lines and "wait" styled apart from the thought.
#[test]
fn train_aha_run() {
    let app = sample::train_run_from("tests/fixtures/aha_run", TrainPane::Charts);
    snap("train_aha_charts", &app);
    let s = screen(&app, 80, 24);
    assert!(s.contains("reasoning form"), "{s}");
    assert!(s.contains("accuracy by form"), "{s}");
    // Step 1, second prompt, third completion: long, a check that fails, wait, the redo, a
    // check that passes, right.
    let mut app = sample::train_run_from("tests/fixtures/aha_run", TrainPane::Rollouts);
    app.update(Action::Train(TrainAction::StepFirst));
    let mut app = load_requested(app);
    app.update(Action::Train(TrainAction::Group(1)));
    app.update(Action::Train(TrainAction::Completion(2)));
    snap("train_aha_rollouts", &app);
    let text = screen(&app, 80, 24);
    assert!(text.contains("What is 78 * 7?"), "{text}");
    assert!(text.contains("· long · 2 checks · 1 wait"), "{text}");
    let t = render(&app, 80, 24);
    let buf = t.backend().buffer();
    // The colour of the first cell of `needle` in the completion's text (rows inside its box).
    let colour_of = |needle: &str| {
        let (y, line) = text
            .lines()
            .enumerate()
            .find(|(_, l)| l.starts_with('│') && l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in the text: {text}"));
        let x = line[..line.find(needle).unwrap()].chars().count() as u16;
        buf[(x, y as u16)].style().fg
    };
    assert_eq!(colour_of("wait"), crate::ui::theme::wait_mark().fg);
    assert_eq!(colour_of("check:"), crate::ui::theme::check_mark().fg);
    assert_eq!(colour_of("again"), crate::ui::theme::thought().fg);
}

/// Serves the rollout loads `app` asked for from the fixture (as the watcher would).
fn load_requested(mut app: App) -> App {
    use crate::app::{Command, TrainCommand};
    use crate::train_view::watcher::RunReader;
    use crate::train_view::TrainEvent;
    let dir = app.train.run.as_ref().unwrap().dir.clone();
    let mut reader = RunReader::new(dir.clone());
    reader.poll().unwrap();
    if let Some(step) = app.current_rollout_step() {
        app.train.rollouts.requested = None;
        let mut cmds = vec![Command::Train(TrainCommand::LoadRollouts(step))];
        while let Some(Command::Train(TrainCommand::LoadRollouts(step))) = cmds.pop() {
            let groups = reader.read_step(step).unwrap();
            cmds = app.update(Action::Train(TrainAction::Event(TrainEvent::Rollouts {
                dir: dir.clone(),
                step,
                groups,
            })));
        }
    }
    app
}

#[test]
fn train_compare() {
    let mut app = sample::train_run(TrainPane::Compare);
    app.train.run.as_mut().unwrap().checkpoints = vec![3, 6];
    app.train.compare.prompt.set("What is 61170+91?");
    let model = sample::model(3, 8, 2);
    let side =
        |label: &str, dir: &str, think: usize, answer: &str, load: [[u32; 8]; 3]| CompareSide {
            label: label.into(),
            dir: dir.into(),
            job: 1,
            status: CompareStatus::Done(crate::trace::FinishReason::Stop),
            model: Some(model.clone()),
            think_tokens: think,
            answer_tokens: 9,
            thought: "61170+91: 0+1+0=1, 1\n6117+9: 7+9+0=16, 61".into(),
            answer: answer.into(),
            load: load
                .iter()
                .enumerate()
                .map(|(i, l)| (i + 1, l.to_vec()))
                .collect(),
        };
    app.train.compare.sides = vec![
        side(
            "base · thinkbench-tiny",
            "models/thinkbench-tiny",
            120,
            "The answer is 61161.",
            [
                [40, 30, 20, 35, 25, 30, 28, 32],
                [60, 10, 30, 30, 20, 40, 25, 25],
                [30; 8],
            ],
        ),
        side(
            "step 6",
            "tests/fixtures/train_run/checkpoints/step-00000006",
            116,
            "The answer is 61261.",
            [
                [30; 8],
                [50, 20, 30, 30, 20, 40, 25, 25],
                [80, 0, 30, 30, 20, 40, 20, 20],
            ],
        ),
    ];
    snap("train_compare", &app);
    let s = screen(&app, 80, 24);
    assert!(s.contains("reasoning 116 tok"), "{s}");
    assert!(s.contains("The answer is 61261."), "{s}");
    assert!(s.contains("step 6 (2/2 on disk"), "{s}");
}

#[test]
fn train_picker() {
    let mut app = sample::train_run(TrainPane::Charts);
    app.update(Action::Train(TrainAction::OpenPicker));
    use crate::train_view::{Choice, ChoiceKind};
    let recipe = |name: &str, detail: &str, problem: Option<&str>| Choice {
        kind: ChoiceKind::Recipe {
            path: format!("recipes/{name}.toml").into(),
            output_dir: format!("runs/{name}").into(),
        },
        label: name.into(),
        detail: detail.into(),
        problem: problem.map(str::to_string),
    };
    let list = vec![
        recipe("tiny-grpo", "100 steps · 8×8 · → runs/tiny-grpo", None),
        recipe(
            "broken",
            "",
            Some("recipes/broken.toml: key generation.group_size: must be at least 2"),
        ),
        Choice {
            kind: ChoiceKind::Run {
                dir: "runs/tiny-grpo".into(),
            },
            label: "runs/tiny-grpo".into(),
            detail: "run of tiny-grpo".into(),
            problem: None,
        },
    ];
    app.update(Action::Train(TrainAction::Event(
        crate::train_view::TrainEvent::Choices(list),
    )));
    snap("train_picker", &app);
    let s = screen(&app, 80, 24);
    assert!(s.contains("launch  tiny-grpo"), "{s}");
}

#[test]
fn an_opened_rollout_says_it_is_being_scored() {
    use crate::app::{Command, TrainCommand};
    let mut app = sample::train_run(TrainPane::Rollouts);
    let cmds = app.update(Action::Train(TrainAction::OpenInChat));
    let Some(Command::Train(TrainCommand::OpenInChat {
        tokenizer,
        title,
        earlier,
        prompt,
        completion,
    })) = cmds.into_iter().next()
    else {
        panic!("opening asks the runner to tokenise")
    };
    let session = crate::train_view::to_chat::rollout_session(
        &tokenizer,
        None,
        &title,
        &earlier,
        &prompt,
        &completion,
        1_796_000_000,
    )
    .unwrap();
    app.update(Action::Train(TrainAction::RolloutOpened(Box::new(session))));
    app.update(Action::ToggleTokens);
    snap("rollout_scoring", &app);
    let s = screen(&app, 80, 24);
    assert!(s.contains("scoring with thinkbench-tiny"), "{s}");
}

#[test]
fn a_remote_model_says_what_its_server_does_not_give() {
    let mut app = inspecting(true, true);
    let mut info = app.model_info().clone();
    info.remote = Some(crate::backend::RemoteSource {
        url: "http://gpu-box:30000/v1".into(),
        model: "deepseek-r1".into(),
        server: "deepseek".into(),
    });
    info.capabilities.no_logprobs =
        Some("this server refuses log-probabilities (logprobs is not supported)".into());
    info.capabilities.no_routing = Some("the DeepSeek API returns no routing".into());
    info.capabilities.full_entropy = false;
    app.model = Some(info.clone());
    // What such a server's reply looks like: text pieces, no probabilities, no routing.
    let (node, _) = app.inspected().unwrap();
    for t in &mut app.session.conversation.nodes[node].message.tokens {
        t.logprob = f32::NAN;
        t.entropy = f32::NAN;
        t.top.clear();
        t.routing.clear();
    }
    let s = screen(&app, 160, 48);
    assert!(s.contains("remote gpu-box:30000"), "{s}");
    assert!(s.contains("the DeepSeek API returns no routing"), "{s}");
    assert!(s.contains("this server refuses log-probabilities"), "{s}");
    // Routing without weights: the experts are shown, and the legend says why no weights.
    let mut app = inspecting(true, true);
    let mut info = app.model_info().clone();
    info.remote = Some(crate::backend::RemoteSource::default());
    info.capabilities.routing_weights = false;
    app.model = Some(info);
    let (node, _) = app.inspected().unwrap();
    for t in &mut app.session.conversation.nodes[node].message.tokens {
        for r in &mut t.routing {
            r.weights.clear();
        }
    }
    let s = screen(&app, 160, 48);
    assert!(s.contains("the server sends no gate weights"), "{s}");
    assert!(s.contains(" e"), "expert ids listed: {s}");
}
