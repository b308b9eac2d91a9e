//! The Train tab's update: what it asks the runner for and what state it keeps, driven with the
//! fixture run's real rows and scripted background events (no files written, no processes).

use std::path::PathBuf;

use super::*;
use crate::app::sample;
use crate::trace::{LayerRouting, TokenRecord};
use crate::train_view::{BadLine, RolloutTurn, RunUpdate};
use crossterm::event::KeyEvent;

fn key(code: KeyCode) -> Action {
    Action::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ev(e: TrainEvent) -> Action {
    Action::Train(TrainAction::Event(e))
}

fn fixture_dir() -> PathBuf {
    PathBuf::from("tests/fixtures/train_run")
}

fn train_cmds(cmds: &[Command]) -> Vec<TrainCommand> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Train(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// The fields of the one `OpenInChat` command in `cmds`: tokenizer, title, earlier turns,
/// prompt, completion.
fn open_in_chat(cmds: &[Command]) -> (PathBuf, String, Vec<RolloutTurn>, String, String) {
    match &train_cmds(cmds)[..] {
        [TrainCommand::OpenInChat {
            tokenizer,
            title,
            earlier,
            prompt,
            completion,
        }] => (
            tokenizer.clone(),
            title.clone(),
            earlier.clone(),
            prompt.clone(),
            completion.clone(),
        ),
        _ => panic!("{cmds:?}"),
    }
}

#[test]
fn chat_is_the_default_and_f6_switches() {
    let mut app = sample::chat();
    assert_eq!(app.view, View::Chat);
    app.update(key(KeyCode::F(6)));
    assert_eq!(app.view, View::Train);
    // Keys mean Train things here: Tab switches panes, not the chat focus.
    app.update(key(KeyCode::Tab));
    assert_eq!(app.train.pane, TrainPane::Rollouts);
    app.update(key(KeyCode::Char('3')));
    assert_eq!(app.train.pane, TrainPane::Compare);
    app.update(key(KeyCode::Esc));
    assert_eq!(app.view, View::Chat);
}

#[test]
fn the_fixture_run_fills_the_view() {
    let app = sample::train_run(TrainPane::Charts);
    let run = app.train.run.as_ref().unwrap();
    assert_eq!(run.rows.len(), 6);
    assert_eq!(
        run.evals.iter().map(|e| e.step).collect::<Vec<_>>(),
        [0, 3, 6]
    );
    assert_eq!(run.rollout_steps.len(), 6);
    assert_eq!(run.reward_names(), ["accuracy", "format"]);
    assert_eq!(run.info.total_steps, Some(6));
    assert!(
        run.last().unwrap().get("kl").is_some(),
        "the fixture has β > 0"
    );
}

#[test]
fn the_rollout_viewer_follows_the_newest_step_and_asks_for_steps_it_lacks() {
    let mut app = sample::train_run(TrainPane::Rollouts);
    assert_eq!(app.current_rollout_step(), Some(6));
    assert!(app.loaded_groups().is_some());
    // A new step arrives while following: it is asked for.
    let mut u = RunUpdate {
        dir: fixture_dir(),
        ..Default::default()
    };
    u.rollout_steps = vec![crate::train_view::RolloutStep {
        step: 7,
        groups: 2,
        zero_std: 0,
    }];
    let cmds = app.update(ev(TrainEvent::Update(u)));
    assert_eq!(train_cmds(&cmds), [TrainCommand::LoadRollouts(7)]);
    // Asked once, not again on the next update.
    let again = app.update(ev(TrainEvent::Update(RunUpdate {
        dir: fixture_dir(),
        checkpoints: Some(vec![3, 6]),
        ..Default::default()
    })));
    assert!(train_cmds(&again).is_empty());
    // Going back a step stops following; step 6 is still loaded, so nothing is read.
    app.train.rollouts.requested = None;
    let cmds = app.update(Action::Train(TrainAction::Step(-1)));
    assert!(train_cmds(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(app.train.rollouts.step, Some(6));
    assert!(app.loaded_groups().is_some());
    let cmds = app.update(Action::Train(TrainAction::StepFirst));
    assert_eq!(app.current_rollout_step(), Some(1));
    assert_eq!(train_cmds(&cmds), [TrainCommand::LoadRollouts(1)]);
    assert!(
        app.loaded_groups().is_none(),
        "step 6's groups are not shown as step 1's"
    );
}

#[test]
fn navigation_stays_inside_the_group() {
    let mut app = sample::train_run(TrainPane::Rollouts);
    for _ in 0..10 {
        app.update(Action::Train(TrainAction::Completion(1)));
    }
    assert_eq!(app.train.rollouts.completion, 3, "G = 4");
    app.update(Action::Train(TrainAction::Group(5)));
    assert_eq!(app.train.rollouts.group, 1, "two prompts per step");
    app.update(Action::Train(TrainAction::Completion(-9)));
    assert_eq!(app.train.rollouts.completion, 0);
}

#[test]
fn a_rewritten_log_starts_the_charts_over() {
    let mut app = sample::train_run(TrainPane::Charts);
    let row = crate::train_view::StepRow {
        step: 1,
        values: [("reward".to_string(), 0.25)].into(),
    };
    app.update(ev(TrainEvent::Update(RunUpdate {
        dir: fixture_dir(),
        reset: true,
        records: vec![Record::Step(row)],
        ..Default::default()
    })));
    let run = app.train.run.as_ref().unwrap();
    assert_eq!(run.rows.len(), 1);
    assert!(run.evals.is_empty());
}

#[test]
fn updates_for_another_folder_are_dropped() {
    let mut app = sample::train_run(TrainPane::Charts);
    app.update(ev(TrainEvent::Update(RunUpdate {
        dir: "runs/elsewhere".into(),
        reset: true,
        ..Default::default()
    })));
    assert_eq!(app.train.run.as_ref().unwrap().rows.len(), 6);
}

#[test]
fn bad_lines_make_one_notice_naming_the_file_and_line() {
    let mut app = sample::train_run(TrainPane::Charts);
    let bad = |line| BadLine {
        file: fixture_dir().join("metrics.jsonl"),
        line,
        error: "not JSON (expected value at line 1 column 1)".into(),
    };
    app.update(ev(TrainEvent::Update(RunUpdate {
        dir: fixture_dir(),
        bad_lines: vec![bad(12), bad(13)],
        ..Default::default()
    })));
    let n = app.notice.as_ref().unwrap().text.clone();
    assert!(
        n.starts_with("tests/fixtures/train_run/metrics.jsonl:12: not JSON"),
        "{n}"
    );
    assert!(n.contains("1 more bad line"), "{n}");
    assert_eq!(app.train.run.as_ref().unwrap().bad_lines, 2);
}

#[test]
fn a_bad_line_of_a_trl_run_names_its_producer() {
    let mut app = sample::train_run(TrainPane::Charts);
    app.update(ev(TrainEvent::Update(RunUpdate {
        dir: fixture_dir(),
        bad_lines: vec![BadLine {
            file: fixture_dir().join("metrics.jsonl"),
            line: 4,
            error: "no \"step\" (a whole number); written by trl 1.16.0 (thinkbench_callback.py)"
                .into(),
        }],
        ..Default::default()
    })));
    let n = &app.notice.as_ref().unwrap().text;
    assert_eq!(
        n,
        "tests/fixtures/train_run/metrics.jsonl:4: no \"step\" (a whole number); written by \
         trl 1.16.0 (thinkbench_callback.py) (skipped)"
    );
}

#[test]
fn a_run_without_rollouts_is_said_to_be_charts_only_once() {
    let mut app = sample::train_run(TrainPane::Charts);
    app.notice = None;
    app.update(ev(TrainEvent::Update(RunUpdate {
        dir: fixture_dir(),
        no_rollouts: true,
        ..Default::default()
    })));
    assert_eq!(
        app.notice.as_ref().unwrap().text,
        "charts only: tests/fixtures/train_run has no rollouts.jsonl"
    );
    // The next update (a new checkpoint, no flag) says nothing more.
    app.notice = None;
    app.update(ev(TrainEvent::Update(RunUpdate {
        dir: fixture_dir(),
        checkpoints: Some(vec![3, 6]),
        ..Default::default()
    })));
    assert!(
        app.notice.is_none(),
        "{:?}",
        app.notice.as_ref().map(|n| &n.text)
    );
    // With a bad line in the same update, neither hides the other.
    app.update(ev(TrainEvent::Update(RunUpdate {
        dir: fixture_dir(),
        no_rollouts: true,
        bad_lines: vec![BadLine {
            file: fixture_dir().join("metrics.jsonl"),
            line: 2,
            error: "not JSON".into(),
        }],
        ..Default::default()
    })));
    let n = &app.notice.as_ref().unwrap().text;
    assert!(
        n.starts_with("tests/fixtures/train_run/metrics.jsonl:2: not JSON (skipped)"),
        "{n}"
    );
    assert!(
        n.ends_with("; charts only: tests/fixtures/train_run has no rollouts.jsonl"),
        "{n}"
    );
}

#[test]
fn a_failed_run_says_why() {
    let mut app = sample::train_run(TrainPane::Charts);
    app.update(ev(TrainEvent::Process {
        dir: fixture_dir(),
        state: ProcessState::Exited {
            success: false,
            status: "exit code 1".into(),
            last_line: "error: model.init x: no model there".into(),
            log: fixture_dir().join("train.log"),
        },
    }));
    let n = &app.notice.as_ref().unwrap().text;
    assert!(
        n.contains("training failed (exit code 1): error: model.init x"),
        "{n}"
    );
    assert!(n.contains("train.log"), "{n}");
}

#[test]
fn the_picker_launches_recipes_attaches_runs_and_refuses_bad_recipes() {
    let mut app = sample::chat();
    app.update(Action::ToggleView);
    let cmds = app.update(key(KeyCode::Char('o')));
    assert_eq!(train_cmds(&cmds), [TrainCommand::ListChoices]);
    let bad = Choice {
        kind: ChoiceKind::Recipe {
            path: "recipes/broken.toml".into(),
            output_dir: PathBuf::new(),
        },
        label: "broken".into(),
        detail: String::new(),
        problem: Some("recipes/broken.toml: key name: invalid type".into()),
    };
    let good = Choice {
        kind: ChoiceKind::Recipe {
            path: "recipes/tiny-grpo.toml".into(),
            output_dir: "runs/tiny-grpo".into(),
        },
        label: "tiny-grpo".into(),
        detail: String::new(),
        problem: None,
    };
    let run = Choice {
        kind: ChoiceKind::Run {
            dir: "runs/tiny-grpo".into(),
        },
        label: "runs/tiny-grpo".into(),
        detail: String::new(),
        problem: None,
    };
    app.update(ev(TrainEvent::Choices(vec![bad, good, run])));
    let cmds = app.update(key(KeyCode::Enter));
    assert!(cmds.is_empty());
    assert!(app.notice.as_ref().unwrap().text.contains("key name"));
    assert!(app.train.picker.is_some(), "stays open to choose another");
    app.update(key(KeyCode::Down));
    let cmds = app.update(key(KeyCode::Enter));
    assert_eq!(
        train_cmds(&cmds),
        [TrainCommand::Launch("recipes/tiny-grpo.toml".into())]
    );
    assert!(app.train.picker.is_none());
    app.update(key(KeyCode::Char('o')));
    app.update(ev(TrainEvent::Choices(vec![])));
    assert_eq!(app.train.picker.as_ref().unwrap().selected, 0);
}

#[test]
fn stopping_a_launched_run_takes_two_presses() {
    let mut app = sample::train_run(TrainPane::Charts);
    let cmds = app.update(key(KeyCode::Char('x')));
    assert!(cmds.is_empty(), "an attached run is not ours to stop");
    app.train.run.as_mut().unwrap().process = ProcessState::Running {
        pid: 42,
        log: "train.log".into(),
    };
    assert!(app.update(key(KeyCode::Char('x'))).is_empty());
    assert!(app.train.confirm_stop);
    assert_eq!(
        train_cmds(&app.update(key(KeyCode::Char('x')))),
        [TrainCommand::StopRun]
    );
    // Another key in between cancels the confirmation.
    app.update(key(KeyCode::Char('x')));
    app.update(key(KeyCode::Char('1')));
    assert!(app.update(key(KeyCode::Char('x'))).is_empty());
}

#[test]
fn the_ab_runs_the_same_prompt_greedily_through_base_and_checkpoint() {
    let mut app = sample::train_run(TrainPane::Rollouts);
    app.train.run.as_mut().unwrap().checkpoints = vec![3, 6];
    // No prompt yet: it asks for one.
    app.update(Action::Train(TrainAction::Show(TrainPane::Compare)));
    assert!(train_cmds(&app.update(key(KeyCode::Enter))).is_empty());
    assert!(app.train.compare.editing);
    app.update(key(KeyCode::Esc));
    // The rollout viewer's prompt, the older checkpoint.
    app.update(Action::Train(TrainAction::PromptFromRollout));
    let prompt = app.shown_group().unwrap().prompt.clone();
    assert_eq!(app.train.compare.prompt.text, prompt);
    app.update(key(KeyCode::Left));
    assert_eq!(app.compare_checkpoint(), Some(3));
    let cmds = app.update(key(KeyCode::Enter));
    let [TrainCommand::Compare { dirs, specs }] = &train_cmds(&cmds)[..] else {
        panic!("{cmds:?}")
    };
    assert!(dirs[0].ends_with("models/thinkbench-tiny"));
    assert_eq!(dirs[1], fixture_dir().join("checkpoints/step-00000003"));
    assert_eq!(specs[0].messages, specs[1].messages);
    assert_eq!(specs[0].sampling.temperature, 0.0);
    assert_eq!(specs[0].max_new_tokens, 200, "the recipe's max_new_tokens");
    assert_ne!(specs[0].job, specs[1].job);

    // The checkpoint side streams: thought, </think>, answer, end-of-sentence.
    let model = sample::model(2, 8, 2);
    let job = specs[1].job;
    let side = |event| Action::Train(TrainAction::Compare { side: 1, event });
    app.update(side(EngineEvent::Ready(Box::new(model))));
    let tok = |id: u32, text: &str, phase: Phase, expert: u32| TokenRecord {
        id,
        text: text.into(),
        logprob: -0.1,
        top: Vec::new(),
        entropy: 0.1,
        phase,
        routing: vec![LayerRouting {
            layer: 1,
            experts: vec![expert, 7],
            weights: vec![0.5, 0.5],
        }],
        forced: false,
    };
    for t in [
        tok(10, "1+1", Phase::Think, 0),
        tok(sample::END_THINK, "</think>", Phase::Think, 0),
        tok(11, "The answer is 2.", Phase::Answer, 3),
        tok(sample::EOS, "", Phase::Answer, 3),
    ] {
        app.update(side(EngineEvent::Token {
            job,
            token: t,
            top_text: Vec::new(),
        }));
    }
    app.update(side(EngineEvent::Finished {
        job,
        reason: FinishReason::Stop,
        stats: Default::default(),
    }));
    let s = &app.train.compare.sides[1];
    assert_eq!(s.think_tokens, 2);
    assert_eq!(s.answer, "The answer is 2.");
    assert_eq!(s.thought, "1+1");
    assert_eq!(s.load[&1], vec![2, 0, 0, 2, 0, 0, 0, 4]);
    assert_eq!(s.status, CompareStatus::Done(FinishReason::Stop));
    // Events of another job (an earlier A/B) change nothing.
    app.update(side(EngineEvent::Failed {
        job: job + 100,
        error: "old".into(),
    }));
    assert_eq!(
        app.train.compare.sides[1].status,
        CompareStatus::Done(FinishReason::Stop)
    );
    // Running the same pair again keeps what the engines said when they loaded.
    app.update(key(KeyCode::Enter));
    assert!(app.train.compare.sides[1].model.is_some());
}

#[test]
fn a_rollout_opens_in_the_chat() {
    let mut app = sample::train_run(TrainPane::Rollouts);
    app.update(Action::Train(TrainAction::Completion(2)));
    let cmds = app.update(key(KeyCode::Enter));
    let (tokenizer, title, _, prompt, completion) = open_in_chat(&cmds);
    assert!(tokenizer.ends_with("models/thinkbench-tiny"));
    assert_eq!(title, "rollout · step 6 · prompt 1 · #3");
    assert_eq!(prompt, app.shown_group().unwrap().prompt);
    assert!(completion.contains("</think>"));
}

#[test]
fn open_from_the_command_line_attaches_or_launches() {
    let mut app = sample::chat();
    let cmds = app.update(Action::Train(TrainAction::Open(
        "runs/x/metrics.jsonl".into(),
    )));
    assert_eq!(app.view, View::Train);
    assert_eq!(
        train_cmds(&cmds),
        [TrainCommand::Attach("runs/x/metrics.jsonl".into())]
    );
    let cmds = app.update(Action::Train(TrainAction::Open(
        "recipes/tiny-grpo.toml".into(),
    )));
    assert_eq!(
        train_cmds(&cmds),
        [TrainCommand::Launch("recipes/tiny-grpo.toml".into())]
    );
}

/// The fixture's shown rollout opened as the runner would (tokenised with the run's tokenizer).
fn opened_rollout(app: &mut App) -> Vec<Command> {
    let cmds = app.update(key(KeyCode::Enter));
    let (tokenizer, title, earlier, prompt, completion) = open_in_chat(&cmds);
    let session = crate::train_view::to_chat::rollout_session(
        &tokenizer,
        app.model.clone(),
        &title,
        &earlier,
        &prompt,
        &completion,
        1_796_000_000,
    )
    .unwrap();
    app.update(Action::Train(TrainAction::RolloutOpened(Box::new(session))))
}

/// What an engine would say after scoring `spec`: made-up but recognisable numbers.
fn scored(spec: &ScoreSpec, label: &str) -> EngineEvent {
    use crate::runtime::ScoredTrace;
    use crate::trace::PromptToken;
    let routing = |i: usize| {
        vec![LayerRouting {
            layer: 1,
            experts: vec![i as u32 % 8, 7],
            weights: vec![0.6, 0.4],
        }]
    };
    EngineEvent::Scored {
        job: spec.job,
        model: Box::new(ModelInfo {
            id: label.into(),
            ..Default::default()
        }),
        trace: ScoredTrace {
            prompt: spec
                .prompt_ids
                .iter()
                .enumerate()
                .map(|(i, &id)| PromptToken {
                    id,
                    routing: routing(i),
                })
                .collect(),
            tokens: spec
                .completion_ids
                .iter()
                .enumerate()
                .map(|(i, &id)| TokenRecord {
                    id,
                    text: String::new(),
                    logprob: -0.5,
                    top: vec![(id, -0.5), (3, -1.5)],
                    entropy: 1.25,
                    phase: Phase::Think,
                    routing: routing(i),
                    forced: false,
                })
                .collect(),
        },
        top_text: vec![(3, "three".into())],
    }
}

#[test]
fn an_opened_rollout_is_scored_by_the_policy_that_drew_it() {
    let mut app = sample::train_run(TrainPane::Rollouts);
    // Checkpoints after steps 2 and 5: step 6's rollouts were drawn by the weights of step 5.
    app.train.run.as_mut().unwrap().checkpoints = vec![2, 5];
    let cmds = opened_rollout(&mut app);
    assert_eq!(app.view, View::Chat);
    let [TrainCommand::ScoreRollout { model_dir, spec }] = &train_cmds(&cmds)[..] else {
        panic!("opening asks for scores: {cmds:?}")
    };
    assert_eq!(
        model_dir,
        &fixture_dir().join("checkpoints").join("step-00000005")
    );
    let (node, m) = app.inspected().expect("the reply is selected");
    assert_eq!(
        spec.completion_ids,
        m.tokens.iter().map(|t| t.id).collect::<Vec<_>>()
    );
    assert_eq!(
        spec.prompt_ids,
        m.prompt.iter().map(|t| t.id).collect::<Vec<_>>()
    );
    assert!(!spec.prompt_ids.is_empty());
    // Meanwhile: no probabilities, and the notice and inspector say scoring is under way.
    assert!(app.cursor_token().unwrap().logprob.is_nan());
    assert_eq!(app.scoring_with(node), Some("step-00000005"));
    assert!(app
        .notice
        .as_ref()
        .unwrap()
        .text
        .contains("scoring rollout with step-00000005"));
    // An answer to another job changes nothing.
    let mut stale = scored(spec, "step-00000005");
    if let EngineEvent::Scored { job, .. } = &mut stale {
        *job += 99;
    }
    app.update(Action::Engine(stale));
    assert!(app.cursor_token().unwrap().logprob.is_nan());
    // The scores arrive (here from the chat engine): the inspectors have what they show.
    let cmds = app.update(Action::Engine(scored(spec, "step-00000005")));
    assert!(cmds.is_empty());
    assert_eq!(app.scoring_with(node), None);
    let t = app.cursor_token().unwrap();
    assert_eq!((t.logprob, t.entropy), (-0.5, 1.25));
    assert_eq!(t.top[1], (3, -1.5));
    assert_eq!(t.routing[0].experts, [app.cursor as u32 % 8, 7]);
    assert_eq!(t.phase, Phase::Answer, "the opened phases are kept");
    let m = app.message(node);
    assert!(
        m.prompt.iter().all(|p| p.routing.len() == 1),
        "prompt routing"
    );
    assert!(m.tokens.iter().all(|t| !t.logprob.is_nan()));
    assert_eq!(app.session.token_texts[&3], "three");
    assert_eq!(app.session.model.as_ref().unwrap().id, "step-00000005");
    assert!(app.session.name.ends_with("· scored by step-00000005"));
    let notice = &app.notice.as_ref().unwrap().text;
    assert!(
        notice.contains("scored by step-00000005 (step 6's own policy)"),
        "{notice}"
    );
}

#[test]
fn scoring_falls_back_to_the_starting_model_and_reports_failures() {
    let mut app = sample::train_run(TrainPane::Rollouts);
    // The fixture run kept no checkpoints: its starting model scores, and says it is not exact.
    let cmds = opened_rollout(&mut app);
    let [TrainCommand::ScoreRollout { model_dir, spec }] = &train_cmds(&cmds)[..] else {
        panic!("{cmds:?}")
    };
    assert!(model_dir.ends_with("models/thinkbench-tiny"));
    // A scoring engine that could not load its model: said once, and nothing waits any more.
    app.update(Action::Train(TrainAction::Scorer(EngineEvent::LoadFailed(
        "no weights".into(),
    ))));
    assert!(app.train.scoring.is_none());
    let notice = &app.notice.as_ref().unwrap().text;
    assert!(
        notice.contains("thinkbench-tiny") && notice.contains("no weights"),
        "{notice}"
    );
    // Open again; this time the scorer answers, though not with the exact policy of step 6.
    app.update(Action::ToggleView);
    let cmds = opened_rollout(&mut app);
    let [TrainCommand::ScoreRollout { spec: again, .. }] = &train_cmds(&cmds)[..] else {
        panic!("{cmds:?}")
    };
    assert_ne!(again.job, spec.job);
    app.update(Action::Train(TrainAction::Scorer(scored(
        again,
        "thinkbench-tiny",
    ))));
    let notice = &app.notice.as_ref().unwrap().text;
    assert!(
        notice.contains("scored by thinkbench-tiny") && notice.contains("step-00000005"),
        "{notice}"
    );
    assert!(!app.cursor_token().unwrap().logprob.is_nan());
    // A failed job is reported the same way.
    app.update(Action::ToggleView);
    let cmds = opened_rollout(&mut app);
    let [TrainCommand::ScoreRollout { spec: third, .. }] = &train_cmds(&cmds)[..] else {
        panic!("{cmds:?}")
    };
    app.update(Action::Engine(EngineEvent::Failed {
        job: third.job,
        error: "out of memory".into(),
    }));
    assert!(app.notice.as_ref().unwrap().text.contains("out of memory"));
    assert!(app.train.scoring.is_none());
}
