//! The Train tab's update: what it asks the runner for and what state it keeps, driven with the
//! fixture run's real rows and scripted background events (no files written, no processes).

use std::path::PathBuf;

use super::*;
use crate::app::sample;
use crate::trace::{LayerRouting, TokenRecord};
use crate::train_view::{BadLine, RunUpdate};
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
    let [TrainCommand::OpenInChat {
        tokenizer,
        title,
        prompt,
        completion,
    }] = &train_cmds(&cmds)[..]
    else {
        panic!("{cmds:?}")
    };
    assert!(tokenizer.ends_with("models/thinkbench-tiny"));
    assert_eq!(title, "rollout · step 6 · prompt 1 · #3");
    assert_eq!(prompt, &app.shown_group().unwrap().prompt);
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
