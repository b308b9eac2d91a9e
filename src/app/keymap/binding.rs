//! The shape of a row of the key table: where it applies, which keys it answers to, what each
//! does, how the help screen shows it and which hint bars name it.

use crossterm::event::{KeyCode, KeyModifiers};

use super::hints::Hint;
use super::Key;
use crate::app::Action;

/// Where a binding applies. Each is a group of the help screen, except that `Anywhere` and
/// `Chat` share one heading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Every screen, popups and the Train tab included; looked up before anything else.
    Anywhere,
    /// The chat, whichever pane has the focus.
    Chat,
    /// The message box has the focus.
    Input,
    /// The transcript has the focus.
    Transcript,
    /// The key map popup.
    Help,
    /// The settings popup.
    Settings,
    /// The session list popup.
    Sessions,
    /// The Train tab, whichever pane shows.
    Train,
    /// The Train tab's charts.
    Charts,
    /// The Train tab's rollout viewer.
    Rollouts,
    /// The Train tab's checkpoint A/B.
    Compare,
    /// The Train tab's launch/attach list.
    Picker,
    /// Typing the A/B prompt.
    ComparePrompt,
}

impl Context {
    /// Every context, in the order the help screen groups them.
    pub const ALL: [Context; 13] = [
        Context::Anywhere,
        Context::Chat,
        Context::Input,
        Context::Transcript,
        Context::Help,
        Context::Settings,
        Context::Sessions,
        Context::Train,
        Context::Charts,
        Context::Rollouts,
        Context::Compare,
        Context::Picker,
        Context::ComparePrompt,
    ];

    /// The group the help screen lists this context's bindings under.
    pub fn heading(self) -> &'static str {
        match self {
            // The help screen has always put the chat-wide keys with the truly global ones; one
            // group reads better than two that differ only in where F-keys also work.
            Context::Anywhere | Context::Chat => "anywhere",
            Context::Input => "input",
            Context::Transcript => "transcript",
            Context::Help => "help",
            Context::Settings => "settings",
            Context::Sessions => "sessions",
            Context::Train => "train",
            Context::Charts => "charts",
            Context::Rollouts => "rollouts",
            Context::Compare => "A/B",
            Context::Picker => "launch list",
            Context::ComparePrompt => "A/B prompt",
        }
    }
}

/// A key and the modifiers it cares about. Modifiers in neither set are ignored, so `Shift-H`
/// and `H` are one key however the terminal reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chord {
    pub code: KeyCode,
    /// Held for this chord to match.
    pub needs: KeyModifiers,
    /// Not held for this chord to match.
    pub refuses: KeyModifiers,
}

impl Chord {
    /// `code` with whatever modifiers.
    pub const fn any(code: KeyCode) -> Chord {
        Chord {
            code,
            needs: KeyModifiers::NONE,
            refuses: KeyModifiers::NONE,
        }
    }

    /// `code` without Ctrl: the single-letter commands, which must not fire on Ctrl-letter.
    pub const fn plain(code: KeyCode) -> Chord {
        Chord::any(code).refusing(KeyModifiers::CONTROL)
    }

    /// Ctrl with `c`.
    pub const fn ctrl(c: char) -> Chord {
        Chord::any(KeyCode::Char(c)).needing(KeyModifiers::CONTROL)
    }

    pub const fn needing(self, m: KeyModifiers) -> Chord {
        Chord {
            needs: self.needs.union(m),
            ..self
        }
    }

    pub const fn refusing(self, m: KeyModifiers) -> Chord {
        Chord {
            refuses: self.refuses.union(m),
            ..self
        }
    }

    pub fn matches(&self, key: &Key) -> bool {
        key.code == self.code
            && key.modifiers.contains(self.needs)
            && !key.modifiers.intersects(self.refuses)
    }

    /// Some key press matches both.
    pub fn overlaps(&self, other: &Chord) -> bool {
        let needs = self.needs.union(other.needs);
        let refuses = self.refuses.union(other.refuses);
        self.code == other.code && !needs.intersects(refuses)
    }

    /// The plainest key press that matches.
    pub fn press(&self) -> Key {
        Key::new(self.code, self.needs)
    }
}

/// What a key of a binding does.
// `Handled` is far smaller than an `Action`, but these live only in the static table and are
// never moved, so boxing the action would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Does {
    /// This action, whatever the state: `handle` finds it in the table.
    Action(Action),
    /// The context's own code answers it, because it edits text or state in place or because
    /// what it means depends on state (the selected session, a field being typed). The row is
    /// here so that the help screen and the overlap check see the key.
    Handled,
}

/// One row of the key table, which is one line of the help screen (if listed).
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub context: Context,
    /// The keys as the help screen shows them; keys that only repeat another (`BackTab` for
    /// `Tab`, `<` for `,`) may be left out.
    pub label: &'static str,
    pub what: &'static str,
    /// Each group of keys and what they do: `↑`/`k` share one action, `↓`/`j` another.
    pub keys: &'static [(&'static [Chord], Does)],
    /// Whether the help screen lists it. Off for rows it has never listed: keys named on screen
    /// where they work (the launch list's and the A/B prompt's hint bars, a popup's title) and
    /// second keys for a listed meaning (`?` for F1). Turning one on adds a line to the screen.
    pub listed: bool,
    /// Where the hint bars name it.
    pub hints: &'static [Hint],
}

impl Binding {
    /// What `key` does under this binding, if it is one of its keys.
    pub fn find(&self, key: &Key) -> Option<&Does> {
        self.keys
            .iter()
            .find(|(chords, _)| chords.iter().any(|c| c.matches(key)))
            .map(|(_, does)| does)
    }

    pub fn chords(&self) -> impl Iterator<Item = &'static Chord> {
        self.keys.iter().flat_map(|(chords, _)| chords.iter())
    }
}
