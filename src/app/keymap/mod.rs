//! Keys to actions. One table, [`KEYMAP`], says what every key does where: `handle` dispatches
//! from it, the help screen (`?`, F1) lists it and the hint bars are built from it, so they agree
//! by construction. Keys that edit text or state in place are answered by code, but have rows in
//! the table all the same (marked [`Does::Handled`]) so that help shows them and no other row can
//! claim them unnoticed; the tests check what construction cannot.

mod binding;
mod hints;
mod in_place;
mod table;
#[cfg(test)]
mod tests;

pub use binding::{Binding, Chord, Context, Does};
pub use hints::{hint_bar, hints, Bar, Hint};
pub use in_place::edit_line;
pub use table::KEYMAP;

use crossterm::event::KeyEventKind;

use super::{Action, App, Focus, Popup, TrainPane, View};

/// A key press.
pub type Key = crossterm::event::KeyEvent;

/// The rows the help screen lists, in its order.
pub fn listed() -> impl Iterator<Item = &'static Binding> {
    KEYMAP.iter().filter(|b| b.listed)
}

/// The contexts whose keys work now, in the order they are looked up. The last is the innermost:
/// its code gets the keys the table leaves to code, and the keys no row claims (typing).
pub fn contexts_in_force(app: &App) -> &'static [Context] {
    use Context::*;
    match &app.popup {
        Some(Popup::Help) => return &[Anywhere, Help],
        Some(Popup::Settings(_)) => return &[Anywhere, Settings],
        Some(Popup::Sessions(_)) => return &[Anywhere, Sessions],
        None => {}
    }
    let t = &app.train;
    match app.view {
        View::Train if t.picker.is_some() => &[Anywhere, Picker],
        View::Train if t.compare.editing => &[Anywhere, ComparePrompt],
        View::Train => match t.pane {
            TrainPane::Charts => &[Anywhere, Train, Charts],
            TrainPane::Rollouts => &[Anywhere, Train, Rollouts],
            TrainPane::Compare => &[Anywhere, Train, Compare],
        },
        View::Chat => match app.focus {
            Focus::Input => &[Anywhere, Chat, Input],
            Focus::Transcript => &[Anywhere, Chat, Transcript],
        },
    }
}

/// The first row (in `contexts` order, then table order) that claims `key`, and what it does.
pub fn lookup(contexts: &[Context], key: &Key) -> Option<(&'static Binding, &'static Does)> {
    contexts.iter().find_map(|&c| {
        KEYMAP
            .iter()
            .filter(|b| b.context == c)
            .find_map(|b| b.find(key).map(|does| (b, does)))
    })
}

/// Handles one key: returns the action it means, or edits in place.
pub fn handle(app: &mut App, key: Key) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let contexts = contexts_in_force(app);
    match lookup(contexts, &key) {
        Some((_, Does::Action(action))) => Some(action.clone()),
        Some((_, Does::Handled)) | None => {
            let innermost = *contexts.last().expect("at least Anywhere");
            own_code(innermost).and_then(|code| code(app, key))
        }
    }
}

/// The code `context` answers keys with: the keys its rows leave to code (`Handled`) and those no
/// row claims (typing). `None` where the table answers every key.
fn own_code(context: Context) -> Option<fn(&mut App, Key) -> Option<Action>> {
    use Context::*;
    match context {
        Input => Some(in_place::input_key),
        Help => Some(in_place::help_key),
        Settings => Some(super::settings::handle_key),
        Sessions => Some(in_place::sessions_key),
        ComparePrompt => Some(super::train::prompt_key),
        Anywhere | Chat | Transcript | Train | Charts | Rollouts | Compare | Picker => None,
    }
}
