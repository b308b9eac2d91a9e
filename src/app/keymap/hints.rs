//! The key hints at the bottom of the screen, built from the key table: each binding names the
//! bars it appears in, and where.

use super::KEYMAP;
use crate::app::{App, Focus, TrainPane, View};

/// Which hint bar shows: one per state of the screen that has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bar {
    /// Typing a message.
    InputIdle,
    /// The message box has the focus while a reply streams: stopping it comes first.
    InputGenerating,
    Transcript,
    /// The Train tab before a run is watched.
    TrainNoRun,
    Charts,
    Rollouts,
    Compare,
    /// The Train tab's launch/attach list.
    Picker,
    /// Typing the A/B prompt.
    ComparePrompt,
}

impl Bar {
    pub const ALL: [Bar; 9] = [
        Bar::InputIdle,
        Bar::InputGenerating,
        Bar::Transcript,
        Bar::TrainNoRun,
        Bar::Charts,
        Bar::Rollouts,
        Bar::Compare,
        Bar::Picker,
        Bar::ComparePrompt,
    ];

    /// The bar for what the screen shows now. Popups cover the screen but not the bar, which
    /// keeps showing the keys of what is under them.
    pub fn of(app: &App) -> Bar {
        let t = &app.train;
        match app.view {
            View::Chat => match (app.focus, app.generating.is_some()) {
                (Focus::Input, false) => Bar::InputIdle,
                (Focus::Input, true) => Bar::InputGenerating,
                (Focus::Transcript, _) => Bar::Transcript,
            },
            View::Train if t.picker.is_some() => Bar::Picker,
            View::Train if t.compare.editing => Bar::ComparePrompt,
            View::Train if t.run.is_none() => Bar::TrainNoRun,
            View::Train => match t.pane {
                TrainPane::Charts => Bar::Charts,
                TrainPane::Rollouts => Bar::Rollouts,
                TrainPane::Compare => Bar::Compare,
            },
        }
    }
}

/// A binding's place in one hint bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    pub bar: Bar,
    /// Position in the bar, from 0. A narrow screen cuts the bar from the end, so the keys one
    /// needs first come first; that order is not the help screen's, hence a number.
    pub place: u8,
    /// The key(s) as the bar shows them, shorter than the help screen's label: `←→`, `[]`.
    pub key: &'static str,
    pub what: &'static str,
}

impl Hint {
    pub const fn new(bar: Bar, place: u8, key: &'static str, what: &'static str) -> Hint {
        Hint {
            bar,
            place,
            key,
            what,
        }
    }
}

/// The hints of `bar`, in order, as `(key, what)` pairs.
pub fn hints(bar: Bar) -> Vec<(&'static str, &'static str)> {
    let mut found: Vec<&Hint> = KEYMAP
        .iter()
        .flat_map(|b| b.hints)
        .filter(|h| h.bar == bar)
        .collect();
    found.sort_by_key(|h| h.place);
    found.into_iter().map(|h| (h.key, h.what)).collect()
}

/// The hints for what the screen shows now.
pub fn hint_bar(app: &App) -> Vec<(&'static str, &'static str)> {
    hints(Bar::of(app))
}
