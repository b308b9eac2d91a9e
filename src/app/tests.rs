//! `App::update` on scripted actions: what it asks the runner to do and what state it leaves.

use super::*;
use crate::app::sample;
use crate::trace::{FinishReason, GenStats, LayerRouting};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

fn key(code: KeyCode) -> Action {
    Action::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        app.update(key(KeyCode::Char(c)));
    }
}

fn ready_app() -> App {
    let mut app = App::new(
        Session::new(1_796_000_000),
        EngineState::Loading("m".into()),
        Overrides::default(),
    );
    let mut m = sample::model(2, 8, 2);
    m.sampling.temperature = 0.7;
    app.update(Action::Engine(EngineEvent::Ready(Box::new(m))));
    app
}

fn the_spec(cmds: &[Command]) -> GenSpec {
    cmds.iter()
        .find_map(|c| match c {
            Command::Generate(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Generate in {cmds:?}"))
}

fn tok(id: u32, text: &str, phase: Phase) -> TokenRecord {
    TokenRecord {
        id,
        text: text.into(),
        logprob: -0.5,
        top: vec![(id, -0.5), (id + 1, -1.5)],
        entropy: 1.0,
        phase,
        routing: vec![LayerRouting {
            layer: 1,
            experts: vec![id % 8, (id + 3) % 8],
            weights: vec![0.7, 0.3],
        }],
        forced: false,
    }
}

/// Streams a reply for `job`: `think` tokens, `</think>`, then `answer` tokens and EOS.
fn stream(app: &mut App, job: u64, think: &[&str], answer: &[&str]) -> Vec<Command> {
    app.update(Action::Clock(10.0));
    app.update(Action::Engine(EngineEvent::Prompt {
        job,
        tokens: vec![],
        reused: 0,
    }));
    let mut id = 10;
    for t in think {
        id += 1;
        app.update(Action::Engine(EngineEvent::Token {
            job,
            token: tok(id, t, Phase::Think),
            top_text: vec![t.to_string(), "alt".into()],
        }));
    }
    app.update(Action::Clock(12.5));
    app.update(Action::Engine(EngineEvent::Token {
        job,
        token: tok(sample::END_THINK, "</think>", Phase::Think),
        top_text: vec![],
    }));
    for t in answer {
        id += 1;
        app.update(Action::Engine(EngineEvent::Token {
            job,
            token: tok(id, t, Phase::Answer),
            top_text: vec![],
        }));
    }
    app.update(Action::Engine(EngineEvent::Token {
        job,
        token: tok(sample::EOS, "<eos>", Phase::Answer),
        top_text: vec![],
    }));
    app.update(Action::Clock(13.0));
    app.update(Action::Engine(EngineEvent::Finished {
        job,
        reason: FinishReason::Stop,
        stats: GenStats::default(),
    }))
}

#[test]
fn typing_and_enter_send_the_question_with_model_defaults() {
    let mut app = ready_app();
    assert_eq!(
        app.session.settings.sampling.temperature, 0.7,
        "generation_config defaults"
    );
    typed(&mut app, "hi there");
    let cmds = app.update(key(KeyCode::Enter));
    let spec = the_spec(&cmds);
    assert_eq!(
        spec.messages,
        vec![crate::text::ChatMessage::user("hi there")]
    );
    assert_eq!(spec.sampling.temperature, 0.7);
    assert!(spec.continue_from.is_empty());
    assert_eq!(app.input.text, "");
    assert_eq!(app.input.history(), ["hi there"]);
    let g = app.generating.clone().expect("generating");
    assert_eq!(g.job, spec.job);
    assert_eq!(app.message(g.node).role, Role::Assistant);
}

#[test]
fn nothing_is_sent_before_the_model_is_ready() {
    let mut app = App::new(
        Session::new(0),
        EngineState::Loading("m".into()),
        Overrides::default(),
    );
    typed(&mut app, "hello");
    assert!(app.update(Action::Send).is_empty());
    assert_eq!(app.input.text, "hello", "the text stays in the box");
    assert!(app.notice.as_ref().unwrap().text.contains("loading"));
    assert!(app.session.conversation.thread().is_empty());
}

#[test]
fn a_reply_whose_oldest_turns_were_left_out_says_so() {
    let mut app = ready_app();
    typed(&mut app, "q");
    let job = the_spec(&app.update(Action::Send)).job;
    let node = *app.session.conversation.thread().last().unwrap();
    app.update(Action::Engine(EngineEvent::Trimmed {
        job,
        dropped_turns: 2,
        prompt_tokens: 230,
    }));
    assert_eq!(app.message(node).dropped_turns, 2);
    let notice = &app.notice.as_ref().unwrap().text;
    assert!(notice.contains("context full"), "{notice}");
    assert!(notice.contains("the 2 oldest turns"), "{notice}");
    // Saved with the session, and read back.
    let back = Session::from_json(std::path::Path::new("s.json"), &app.session.to_json()).unwrap();
    assert_eq!(back.conversation.nodes[node].message.dropped_turns, 2);
    // Another job's trim does not touch this reply.
    app.update(Action::Engine(EngineEvent::Trimmed {
        job: job + 7,
        dropped_turns: 5,
        prompt_tokens: 100,
    }));
    assert_eq!(app.message(node).dropped_turns, 2);
}

#[test]
fn a_streamed_reply_folds_its_thought_and_is_saved() {
    let mut app = ready_app();
    typed(&mut app, "q");
    let job = the_spec(&app.update(Action::Send)).job;
    let cmds = stream(&mut app, job, &["a", " b"], &["The", " answer"]);
    let node = *app.session.conversation.thread().last().unwrap();
    assert_eq!(cmds, vec![Command::Save, Command::Transcribe(node)]);
    assert!(app.generating.is_none());
    let m = app.message(node);
    assert_eq!(m.thought_text(app.model_info()), "a b");
    assert_eq!(m.answer_text(app.model_info()), "The answer");
    assert_eq!(m.thought_tokens(), 3, "two thought tokens and </think>");
    // Thought time: from the prompt (t=10) to the first answer token (t=12.5).
    assert_eq!(m.think_secs, Some(2.5));
    assert_eq!(
        app.cursor,
        m.tokens.len() - 1,
        "the cursor followed the stream"
    );
    assert_eq!(
        app.session.token_texts.get(&11).map(String::as_str),
        Some("a")
    );
    // Folded by default; `t` unfolds and folds again.
    assert!(!app.expanded.contains(&node));
    app.update(Action::ToggleThought);
    assert!(app.expanded.contains(&node));
    app.update(Action::ToggleThought);
    assert!(!app.expanded.contains(&node));
}

#[test]
fn earlier_reasoning_is_not_sent_back() {
    let mut app = ready_app();
    typed(&mut app, "first");
    let job = the_spec(&app.update(Action::Send)).job;
    stream(&mut app, job, &["secret", " musing"], &["Four"]);
    typed(&mut app, "second");
    let spec = the_spec(&app.update(Action::Send));
    assert_eq!(
        spec.messages,
        vec![
            crate::text::ChatMessage::user("first"),
            crate::text::ChatMessage::assistant("Four"),
            crate::text::ChatMessage::user("second"),
        ]
    );
}

#[test]
fn esc_stops_and_stale_events_are_ignored_after_regenerate() {
    let mut app = ready_app();
    typed(&mut app, "q");
    let first = the_spec(&app.update(Action::Send)).job;
    assert_eq!(app.update(key(KeyCode::Esc)), vec![Command::Cancel(first)]);
    // Regenerating while the first job still runs cancels it and starts a sibling.
    let cmds = app.update(Action::RegenerateLast);
    assert!(cmds.contains(&Command::Cancel(first)));
    let second = the_spec(&cmds).job;
    assert_ne!(first, second);
    let before = app.session.clone();
    app.update(Action::Engine(EngineEvent::Token {
        job: first,
        token: tok(5, "late", Phase::Think),
        top_text: vec![],
    }));
    assert_eq!(app.session, before, "a cancelled job's tokens land nowhere");
    let user = app.session.conversation.thread()[0];
    assert_eq!(app.session.conversation.nodes[user].children.len(), 2);
    let old = app.session.conversation.nodes[user].children[0];
    assert_eq!(app.message(old).finish, Some(FinishReason::Cancelled));
}

#[test]
fn regenerate_keeps_the_old_branch_and_siblings_switch() {
    let mut app = ready_app();
    typed(&mut app, "q");
    let job = the_spec(&app.update(Action::Send)).job;
    stream(&mut app, job, &["x"], &["One"]);
    app.update(Action::FocusTranscript);
    let first = app.selected.unwrap();
    let spec = the_spec(&app.update(key(KeyCode::Char('R'))));
    assert_eq!(spec.messages, vec![crate::text::ChatMessage::user("q")]);
    stream(&mut app, spec.job, &["y"], &["Two"]);
    let second = *app.session.conversation.thread().last().unwrap();
    assert_ne!(first, second);
    assert_eq!(app.session.conversation.sibling_pos(second), (2, 2));
    app.update(key(KeyCode::Char('[')));
    assert_eq!(app.session.conversation.thread().last(), Some(&first));
    assert_eq!(app.selected, Some(first));
    app.update(key(KeyCode::Char(']')));
    assert_eq!(app.session.conversation.thread().last(), Some(&second));
}

#[test]
fn editing_a_question_resends_it_as_a_new_branch() {
    let mut app = ready_app();
    typed(&mut app, "draft-free");
    let job = the_spec(&app.update(Action::Send)).job;
    stream(&mut app, job, &["x"], &["One"]);
    typed(&mut app, "half-typed");
    app.update(Action::FocusTranscript);
    app.update(Action::SelectMessage(-1));
    let original = app.selected.unwrap();
    assert_eq!(app.message(original).role, Role::User);
    app.update(key(KeyCode::Char('e')));
    assert_eq!(app.focus, Focus::Input);
    assert_eq!(app.input.text, "draft-free");
    app.update(key(KeyCode::Backspace));
    typed(&mut app, "E");
    let spec = the_spec(&app.update(key(KeyCode::Enter)));
    assert_eq!(
        spec.messages,
        vec![crate::text::ChatMessage::user("draft-freE")]
    );
    assert_eq!(app.input.text, "half-typed", "the draft comes back");
    let thread = app.session.conversation.thread();
    assert_ne!(thread[0], original);
    assert_eq!(app.session.conversation.sibling_pos(thread[0]), (2, 2));
    // The old question and its reply are still there.
    app.session.conversation.switch_sibling(thread[0], -1);
    let old = app.session.conversation.thread();
    assert_eq!(old[0], original);
    assert_eq!(app.message(old[1]).answer_text(app.model_info()), "One");
}

#[test]
fn esc_cancels_an_edit() {
    let mut app = sample::chat();
    app.input.set("mine");
    app.update(Action::FocusTranscript);
    app.update(Action::SelectMessage(-1));
    app.update(Action::Edit);
    assert_eq!(app.input.text, sample::QUESTION_2);
    app.update(key(KeyCode::Esc));
    assert_eq!(app.editing, None);
    assert_eq!(app.input.text, "mine");
}

#[test]
fn cursor_moves_within_the_reply_and_clamps() {
    let mut app = sample::chat();
    app.update(key(KeyCode::Tab));
    assert_eq!(app.focus, Focus::Transcript);
    let (_, m) = app.inspected().expect("the last reply is selected");
    let n = m.tokens.len();
    app.update(key(KeyCode::Home));
    assert_eq!(app.cursor, 0);
    app.update(key(KeyCode::Left));
    assert_eq!(app.cursor, 0);
    app.update(key(KeyCode::Right));
    app.update(key(KeyCode::Char('L')));
    assert_eq!(app.cursor, 11);
    app.update(key(KeyCode::End));
    assert_eq!(app.cursor, n - 1);
    app.update(key(KeyCode::Right));
    assert_eq!(app.cursor, n - 1);
    // Up selects the question (not a reply: nothing to inspect), up again the earlier reply.
    app.update(key(KeyCode::Up));
    assert!(app.inspected().is_none());
    app.update(key(KeyCode::Up));
    assert!(app.inspected().is_some());
    assert_eq!(app.cursor, 0, "a finished reply opens at its first token");
}

#[test]
fn budget_goes_to_the_engine_and_keep_thinking_continues_the_thought() {
    let mut app = ready_app();
    app.session.settings.think_budget = Some(2);
    typed(&mut app, "q");
    let spec = the_spec(&app.update(Action::Send));
    assert_eq!(spec.think_budget, Some(2));
    let job = spec.job;
    app.update(Action::Engine(EngineEvent::Prompt {
        job,
        tokens: vec![],
        reused: 0,
    }));
    for (i, t) in ["a", "b"].iter().enumerate() {
        app.update(Action::Engine(EngineEvent::Token {
            job,
            token: tok(20 + i as u32, t, Phase::Think),
            top_text: vec![],
        }));
    }
    let mut forced = tok(sample::END_THINK, "</think>", Phase::Think);
    forced.forced = true;
    app.update(Action::Engine(EngineEvent::Token {
        job,
        token: forced,
        top_text: vec![],
    }));
    app.update(Action::Engine(EngineEvent::Token {
        job,
        token: tok(30, "Hm", Phase::Answer),
        top_text: vec![],
    }));
    app.update(Action::Engine(EngineEvent::Finished {
        job,
        reason: FinishReason::Stop,
        stats: GenStats::default(),
    }));
    let cut = *app.session.conversation.thread().last().unwrap();
    app.update(Action::FocusTranscript);
    let spec = the_spec(&app.update(key(KeyCode::Char('c'))));
    assert_eq!(
        spec.continue_from,
        vec![20, 21],
        "the reply so far minus </think>"
    );
    assert_eq!(spec.think_budget, Some(2));
    assert_eq!(spec.messages, vec![crate::text::ChatMessage::user("q")]);
    let node = app.generating.as_ref().unwrap().node;
    assert_ne!(node, cut, "a new branch; the cut reply stays");
    assert_eq!(app.message(node).tokens.len(), 2);
    // The engine's prompt for the continuation ends with the kept tokens: not stored twice.
    app.update(Action::Engine(EngineEvent::Prompt {
        job: spec.job,
        tokens: (0..7u32)
            .map(|id| crate::trace::PromptToken {
                id,
                routing: vec![],
            })
            .collect(),
        reused: 6,
    }));
    assert_eq!(app.message(node).prompt.len(), 5);
}

#[test]
fn keep_thinking_needs_a_cut_thought() {
    let mut app = sample::chat();
    app.update(Action::FocusTranscript);
    assert!(app.update(Action::KeepThinking).is_empty());
    assert!(app.notice.as_ref().unwrap().text.contains("not cut"));
}

#[test]
fn settings_panel_changes_a_field_and_typed_values() {
    let mut app = ready_app();
    app.update(key(KeyCode::F(4)));
    assert!(matches!(app.popup, Some(Popup::Settings(_))));
    app.update(key(KeyCode::Down)); // top-p
    app.update(key(KeyCode::Left));
    assert!((app.session.settings.sampling.top_p - 0.9).abs() < 1e-6);
    app.update(key(KeyCode::Char('d')));
    assert_eq!(
        app.session.settings.sampling.top_p, 0.95,
        "back to the default"
    );
    for _ in 0..5 {
        app.update(key(KeyCode::Down));
    }
    app.update(key(KeyCode::Enter)); // thinking budget: type a value
    for _ in 0..3 {
        app.update(key(KeyCode::Backspace));
    }
    typed(&mut app, "64");
    app.update(key(KeyCode::Enter));
    assert_eq!(app.session.settings.think_budget, Some(64));
    app.update(key(KeyCode::Esc));
    assert!(app.popup.is_none());
}

#[test]
fn help_and_inspector_keys() {
    let mut app = sample::chat();
    app.update(key(KeyCode::Tab));
    app.update(key(KeyCode::Char('?')));
    assert_eq!(app.popup, Some(Popup::Help));
    app.update(key(KeyCode::Esc));
    assert_eq!(app.popup, None);
    app.update(key(KeyCode::Char('r')));
    app.update(key(KeyCode::Char('p')));
    assert!(app.inspector.routing && app.inspector.tokens);
    app.update(key(KeyCode::Char('.')));
    app.update(key(KeyCode::Char('.')));
    assert_eq!(app.inspector.layer, 1, "clamped to the last MoE layer");
    app.update(key(KeyCode::Char('v')));
    assert_eq!(app.inspector.view, RoutingView::Load);
    // In the input box the same letters are text.
    app.update(key(KeyCode::Tab));
    typed(&mut app, "rp?");
    assert_eq!(app.input.text, "rp?");
    assert!(app.inspector.routing);
}

#[test]
fn ctrl_c_saves_and_quits_even_while_generating() {
    let mut app = streaming_app();
    let job = app.generating.as_ref().unwrap().job;
    let cmds = app.update(Action::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL,
    )));
    assert_eq!(
        cmds,
        vec![Command::Cancel(job), Command::Save, Command::Quit]
    );
    assert!(app.quit);
}

fn streaming_app() -> App {
    sample::streaming()
}

#[test]
fn session_round_trip_keeps_the_trace_for_the_inspectors() {
    let app = sample::chat();
    let dir = tempfile::tempdir().unwrap();
    let path = app.session.save(dir.path()).unwrap();
    let back = Session::load(&path).unwrap();
    assert_eq!(back, app.session);
    // Reopened without a model: the inspectors read the stored trace.
    let mut reopened = App::new(back, EngineState::Absent, Overrides::default());
    reopened.update(Action::FocusTranscript);
    reopened.update(Action::ToggleRouting);
    let t = reopened.cursor_token().expect("a token under the cursor");
    assert_eq!(t.routing.len(), 2);
    assert_eq!(reopened.model_info().n_experts, 8);
    // And no generation is attempted.
    assert!(reopened.update(Action::RegenerateLast).is_empty());
    let listed = crate::session::list(dir.path());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].title, sample::QUESTION_1);
    assert_eq!(listed[0].messages, 4);
}

#[test]
fn sessions_panel_opens_renames_and_protects_the_open_session() {
    let mut app = sample::chat();
    let cmds = app.update(key(KeyCode::F(5)));
    assert_eq!(cmds, vec![Command::Save, Command::ListSessions]);
    let here = PathBuf::from(format!("/s/{}.json", app.session.id));
    let other = PathBuf::from("/s/other.json");
    let summary = |path: &PathBuf, id: &str| SessionSummary {
        path: path.clone(),
        id: id.into(),
        title: "t".into(),
        updated: String::new(),
        messages: 2,
        model: String::new(),
    };
    app.update(Action::Sessions(vec![
        summary(&here, &app.session.id.clone()),
        summary(&other, "other"),
    ]));
    // d twice on the open session: refused.
    app.update(key(KeyCode::Char('d')));
    assert!(app.update(key(KeyCode::Char('d'))).is_empty());
    // d twice on another: deleted.
    app.update(key(KeyCode::Down));
    app.update(key(KeyCode::Char('d')));
    assert_eq!(
        app.update(key(KeyCode::Char('d'))),
        vec![Command::DeleteSession(other.clone()), Command::ListSessions]
    );
    // Rename the open one: in memory, then saved.
    app.update(key(KeyCode::Up));
    app.update(key(KeyCode::Char('r')));
    app.update(key(KeyCode::Backspace));
    typed(&mut app, "sum");
    let cmds = app.update(key(KeyCode::Enter));
    assert_eq!(cmds, vec![Command::Save, Command::ListSessions]);
    assert_eq!(app.session.name, "sum");
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Command::Save, Command::OpenSession(here)]
    );
}

#[test]
fn markdown_export_has_the_thread_without_other_branches() {
    let app = sample::chat();
    let md = app.session.to_markdown();
    assert!(md.starts_with(&format!("# {}\n", sample::QUESTION_1)));
    assert!(md.contains("## User\n\nWhat is 17 + 25?"));
    assert!(md.contains("<details><summary>Thought for"));
    assert!(md.contains("print(add(17, 25))"));
    assert!(
        !md.contains("It is 42."),
        "the other branch is not exported"
    );
    assert!(!md.contains("end▁of▁sentence"));
}

/// A model behind a server that returns routing without weights and refused log-probabilities.
fn remote_model() -> ModelInfo {
    let mut m = sample::model(2, 8, 2);
    m.remote = Some(crate::backend::RemoteSource {
        url: "http://gpu-box:30000/v1".into(),
        model: "deepseek-r1".into(),
        server: "sglang".into(),
    });
    m.capabilities = crate::backend::Capabilities {
        token_ids: false,
        full_entropy: false,
        routing_weights: false,
        scoring: false,
        think_budget: false,
        ..Default::default()
    };
    m
}

#[test]
fn a_revision_replaces_the_streamed_tokens_and_the_prompt() {
    let mut app = ready_app();
    typed(&mut app, "q");
    let job = the_spec(&app.update(Action::Send)).job;
    for (i, t) in ["Two", " plus", "4"].iter().enumerate() {
        app.update(Action::Engine(EngineEvent::Token {
            job,
            token: tok(20 + i as u32, t, Phase::Answer),
            top_text: vec![],
        }));
    }
    // The server's routing came at the end, and the reply began inside a thought.
    let mut revised: Vec<TokenRecord> = ["Two", " plus", "4"]
        .iter()
        .enumerate()
        .map(|(i, t)| tok(20 + i as u32, t, Phase::Think))
        .collect();
    revised[2].phase = Phase::Answer;
    revised[0].routing[0].experts = vec![5, 6];
    let prompt = vec![
        crate::trace::PromptToken {
            id: u32::MAX,
            routing: vec![]
        };
        4
    ];
    app.update(Action::Engine(EngineEvent::Revised {
        job,
        prompt: Some(prompt),
        tokens: revised.clone(),
    }));
    let node = app.generating.as_ref().unwrap().node;
    let m = app.message(node);
    assert_eq!(m.tokens, revised);
    assert_eq!(m.prompt.len(), 4);
    assert_eq!(app.context_used(), 4 + 3);
    // A revision for a job that is not running changes nothing.
    app.update(Action::Engine(EngineEvent::Revised {
        job: job + 1,
        prompt: None,
        tokens: vec![],
    }));
    assert_eq!(app.message(node).tokens.len(), 3);
}

#[test]
fn what_a_server_refuses_reaches_the_interface_and_the_session() {
    let mut app = App::new(
        Session::new(1_796_000_000),
        EngineState::Loading("http://gpu-box:30000/v1".into()),
        Overrides::default(),
    );
    app.update(Action::Engine(EngineEvent::Ready(Box::new(remote_model()))));
    assert!(app.session.model.as_ref().unwrap().remote.is_some());
    let mut refused = remote_model();
    refused.capabilities.no_logprobs = Some("this server refuses log-probabilities".into());
    app.update(Action::Engine(EngineEvent::Info(Box::new(refused.clone()))));
    assert_eq!(app.model_info().capabilities, refused.capabilities);
    assert_eq!(app.session.model.as_ref(), Some(&refused));
    app.update(Action::Engine(EngineEvent::Note {
        text: "the server refused `logprobs`".into(),
    }));
    assert!(app.notice.as_ref().unwrap().text.contains("refused"));
    // "Keep thinking" needs token ids the server does not give: said, not sent.
    typed(&mut app, "q");
    let job = the_spec(&app.update(Action::Send)).job;
    let mut cut = tok(30, "Hmm", Phase::Think);
    cut.forced = true;
    app.update(Action::Engine(EngineEvent::Token {
        job,
        token: cut,
        top_text: vec![],
    }));
    app.update(Action::Engine(EngineEvent::Finished {
        job,
        reason: FinishReason::Stop,
        stats: GenStats::default(),
    }));
    app.update(Action::FocusTranscript);
    let cmds = app.update(Action::KeepThinking);
    assert!(cmds.iter().all(|c| !matches!(c, Command::Generate(_))));
    assert!(app
        .notice
        .as_ref()
        .unwrap()
        .text
        .contains("cannot continue a thought"));
}
