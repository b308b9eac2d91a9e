//! The key table against what it drives: each row's keys reach it through `handle` where it
//! applies, each hint names a key that works under its bar, no key is claimed twice in one
//! context, and the help screen keeps its groups.

use std::collections::HashMap;
use std::ptr;

use crossterm::event::KeyCode;

use super::*;
use crate::app::{sample, SessionsPanel, SettingsPanel};

/// An app in a state where `context` is in force (the innermost one, but for `Anywhere` and
/// `Chat`).
fn app_in(context: Context) -> App {
    use Context::*;
    let mut app = match context {
        Train | Charts | Picker => sample::train_run(TrainPane::Charts),
        Rollouts => sample::train_run(TrainPane::Rollouts),
        Compare | ComparePrompt => sample::train_run(TrainPane::Compare),
        Anywhere | Chat | Input | Transcript | Help | Settings | Sessions => sample::chat(),
    };
    match context {
        Anywhere | Chat | Input => app.focus = Focus::Input,
        Transcript => app.focus = Focus::Transcript,
        Help => app.popup = Some(Popup::Help),
        Settings => app.popup = Some(Popup::Settings(SettingsPanel::default())),
        Sessions => {
            app.popup = Some(Popup::Sessions(SessionsPanel {
                selected: 0,
                rename: None,
                confirm_delete: false,
            }))
        }
        Picker => app.train.picker = Some(Default::default()),
        ComparePrompt => app.train.compare.editing = true,
        Train | Charts | Rollouts | Compare => {}
    }
    assert!(
        contexts_in_force(&app).contains(&context),
        "{context:?} is not in force in the app made for it"
    );
    app
}

/// An app showing `bar`.
fn app_showing(bar: Bar) -> App {
    let mut app = match bar {
        Bar::InputIdle | Bar::Transcript | Bar::TrainNoRun => sample::chat(),
        Bar::InputGenerating => sample::streaming(),
        Bar::Charts | Bar::Picker => sample::train_run(TrainPane::Charts),
        Bar::Rollouts => sample::train_run(TrainPane::Rollouts),
        Bar::Compare | Bar::ComparePrompt => sample::train_run(TrainPane::Compare),
    };
    match bar {
        Bar::InputIdle | Bar::InputGenerating => app.focus = Focus::Input,
        Bar::Transcript => app.focus = Focus::Transcript,
        Bar::TrainNoRun => app.view = View::Train,
        Bar::Picker => app.train.picker = Some(Default::default()),
        Bar::ComparePrompt => app.train.compare.editing = true,
        Bar::Charts | Bar::Rollouts | Bar::Compare => {}
    }
    assert_eq!(Bar::of(&app), bar);
    app
}

/// The keys a hint names: `F6`, `Enter`, or one key per character (`←→`, `[]`, `JK`).
fn hint_keys(hint: &str) -> Vec<KeyCode> {
    match hint {
        "Enter" => vec![KeyCode::Enter],
        "Esc" => vec![KeyCode::Esc],
        "Tab" => vec![KeyCode::Tab],
        _ if hint.len() > 1 && hint.starts_with('F') => {
            vec![KeyCode::F(hint[1..].parse().expect("F and a number"))]
        }
        _ => hint
            .chars()
            .map(|c| match c {
                '←' => KeyCode::Left,
                '→' => KeyCode::Right,
                '↑' => KeyCode::Up,
                '↓' => KeyCode::Down,
                c => KeyCode::Char(c),
            })
            .collect(),
    }
}

fn name(b: &Binding) -> String {
    format!("{:?} \"{}\"", b.context, b.label)
}

#[test]
fn every_key_of_the_table_reaches_its_row_and_does_what_it_says() {
    let mut apps = HashMap::new();
    for b in KEYMAP {
        let app = apps
            .entry(format!("{:?}", b.context))
            .or_insert_with(|| app_in(b.context));
        for (chords, does) in b.keys {
            for chord in *chords {
                let key = chord.press();
                let found = lookup(contexts_in_force(app), &key);
                let (row, _) =
                    found.unwrap_or_else(|| panic!("{:?} of {} finds no row", chord, name(b)));
                assert!(
                    ptr::eq(row, b),
                    "{:?} of {} is taken first by {}",
                    chord.code,
                    name(b),
                    name(row)
                );
                if let Does::Action(action) = does {
                    assert_eq!(
                        handle(&mut app.clone(), key),
                        Some(action.clone()),
                        "{:?} of {}",
                        chord.code,
                        name(b)
                    );
                }
            }
        }
    }
}

#[test]
fn the_anywhere_keys_work_in_every_context() {
    use Context::*;
    for context in Context::ALL {
        let app = app_in(context);
        for b in KEYMAP.iter().filter(|b| b.context == Anywhere) {
            for (chords, does) in b.keys {
                let Does::Action(action) = does else {
                    panic!("{} is left to code, but Anywhere has none", name(b))
                };
                for chord in *chords {
                    assert_eq!(
                        handle(&mut app.clone(), chord.press()),
                        Some(action.clone()),
                        "{:?} of {} in {context:?}",
                        chord.code,
                        name(b)
                    );
                }
            }
        }
    }
}

#[test]
fn keys_left_to_code_are_only_where_there_is_code() {
    for b in KEYMAP {
        if b.keys.iter().any(|(_, does)| *does == Does::Handled) {
            assert!(
                own_code(b.context).is_some(),
                "{} is left to code, but {:?} has none",
                name(b),
                b.context
            );
        }
    }
}

#[test]
fn no_two_rows_of_a_context_claim_the_same_key() {
    // Every (row, group of keys, key), so that keys of one group may repeat a key with other
    // modifiers (Alt-Enter, Shift-Enter) but nothing else may.
    let keys: Vec<(&Binding, usize, &Chord)> = KEYMAP
        .iter()
        .flat_map(|b| {
            b.keys
                .iter()
                .enumerate()
                .flat_map(move |(g, (chords, _))| chords.iter().map(move |chord| (b, g, chord)))
        })
        .collect();
    for (i, (b1, g1, c1)) in keys.iter().enumerate() {
        for (b2, g2, c2) in &keys[i + 1..] {
            let same_group = ptr::eq(*b1, *b2) && g1 == g2;
            if b1.context == b2.context && !same_group {
                assert!(
                    !c1.overlaps(c2),
                    "{:?} is claimed by {} and by {}",
                    c1.code,
                    name(b1),
                    name(b2)
                );
            }
        }
    }
}

#[test]
fn every_hint_names_keys_of_its_row_that_work_under_its_bar() {
    for bar in Bar::ALL {
        let app = app_showing(bar);
        let contexts = contexts_in_force(&app);
        for b in KEYMAP {
            for hint in b.hints.iter().filter(|h| h.bar == bar) {
                for code in hint_keys(hint.key) {
                    let chord = b.chords().find(|c| c.code == code).unwrap_or_else(|| {
                        panic!(
                            "{bar:?}'s hint {:?} names {code:?}, not a key of {}",
                            hint.key,
                            name(b)
                        )
                    });
                    let found = lookup(contexts, &chord.press()).map(|(row, _)| row);
                    assert!(
                        found.is_some_and(|row| ptr::eq(row, b)),
                        "{bar:?}'s hint {:?}: {code:?} does not reach {} there",
                        hint.key,
                        name(b)
                    );
                }
            }
        }
    }
}

#[test]
fn each_hint_bar_is_numbered_from_0_without_gaps() {
    for bar in Bar::ALL {
        let mut places: Vec<u8> = KEYMAP
            .iter()
            .flat_map(|b| b.hints)
            .filter(|h| h.bar == bar)
            .map(|h| h.place)
            .collect();
        places.sort();
        let want: Vec<u8> = (0..places.len() as u8).collect();
        assert_eq!(places, want, "{bar:?}");
    }
}

#[test]
fn the_hint_bars_read_as_before() {
    assert_eq!(
        hints(Bar::InputIdle),
        [
            ("Enter", "send"),
            ("Tab", "transcript"),
            ("F1", "keys"),
            ("F6", "train"),
            ("F2", "routing"),
            ("F3", "tokens"),
            ("F4", "settings"),
            ("F5", "sessions"),
        ]
    );
    assert_eq!(
        hints(Bar::InputGenerating),
        [
            ("Esc", "stop"),
            ("Tab", "transcript"),
            ("F2", "routing"),
            ("F3", "tokens"),
            ("F1", "keys"),
        ]
    );
    assert_eq!(
        hints(Bar::Transcript),
        [
            ("←→", "token"),
            ("↑↓", "message"),
            ("t", "thought"),
            ("r", "routing"),
            ("p", "tokens"),
            ("R", "regen"),
            ("e", "edit"),
            ("?", "keys"),
            ("[]", "branch"),
        ]
    );
    assert_eq!(
        hints(Bar::ComparePrompt),
        [("Enter", "run both"), ("Esc", "done editing")]
    );
}

#[test]
fn the_help_screen_keeps_its_groups_in_order() {
    let mut headings: Vec<&str> = Vec::new();
    for b in listed() {
        assert!(!b.label.is_empty() && !b.what.is_empty(), "{}", name(b));
        let h = b.context.heading();
        if headings.last() != Some(&h) {
            assert!(!headings.contains(&h), "{h} is split by another group");
            headings.push(h);
        }
    }
    assert_eq!(
        headings,
        [
            "anywhere",
            "input",
            "transcript",
            "help",
            "settings",
            "sessions",
            "train",
            "charts",
            "rollouts",
            "A/B"
        ]
    );
}
