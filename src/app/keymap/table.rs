//! The key table: every key the workbench answers to, by context, in the order the help screen
//! lists them. `handle` dispatches from it, the help screen lists it and the hint bars are built
//! from it, so a key changed here changes all three.

use crossterm::event::KeyCode::{
    BackTab, Backspace, Char, Delete, Down, End, Enter, Esc, Home, Left, PageDown, PageUp, Right,
    Tab, Up, F,
};
use crossterm::event::KeyModifiers;

use super::binding::{Binding, Chord, Context, Does};
use super::hints::{Bar, Hint};
use crate::app::{Action, TrainAction, TrainPane};

const fn any(code: crossterm::event::KeyCode) -> Chord {
    Chord::any(code)
}

const fn plain(code: crossterm::event::KeyCode) -> Chord {
    Chord::plain(code)
}

const fn ctrl(c: char) -> Chord {
    Chord::ctrl(c)
}

const fn act(a: Action) -> Does {
    Does::Action(a)
}

const fn train(a: TrainAction) -> Does {
    Does::Action(Action::Train(a))
}

const HANDLED: Does = Does::Handled;

const NO_HINTS: &[Hint] = &[];

/// Enter sends; with Alt or Shift it starts a new line (terminals differ in which they pass).
const SEND: Chord = any(Enter).refusing(KeyModifiers::ALT.union(KeyModifiers::SHIFT));

pub static KEYMAP: &[Binding] = &[
    // ── anywhere ────────────────────────────────────────────────────────────────────────────
    Binding {
        context: Context::Anywhere,
        label: "Ctrl-C  Ctrl-Q",
        what: "save and quit",
        keys: &[(&[ctrl('c'), ctrl('q')], act(Action::Quit))],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Chat,
        label: "Esc",
        what: "stop generating · cancel an edit · leave the input",
        keys: &[(&[any(Esc)], act(Action::Stop))],
        listed: true,
        hints: &[Hint::new(Bar::InputGenerating, 0, "Esc", "stop")],
    },
    Binding {
        context: Context::Chat,
        label: "Tab",
        what: "switch between input and transcript",
        keys: &[(&[any(Tab), any(BackTab)], act(Action::ToggleFocus))],
        listed: true,
        hints: &[
            Hint::new(Bar::InputIdle, 1, "Tab", "transcript"),
            Hint::new(Bar::InputGenerating, 1, "Tab", "transcript"),
        ],
    },
    Binding {
        context: Context::Anywhere,
        label: "F1",
        what: "this help",
        keys: &[(&[any(F(1))], act(Action::ToggleHelp))],
        listed: true,
        hints: &[
            Hint::new(Bar::InputIdle, 2, "F1", "keys"),
            Hint::new(Bar::InputGenerating, 4, "F1", "keys"),
            Hint::new(Bar::TrainNoRun, 2, "F1", "keys"),
            Hint::new(Bar::Charts, 5, "F1", "keys"),
        ],
    },
    Binding {
        context: Context::Anywhere,
        label: "F2  F3",
        what: "routing · token inspector",
        keys: &[
            (&[any(F(2))], act(Action::ToggleRouting)),
            (&[any(F(3))], act(Action::ToggleTokens)),
        ],
        listed: true,
        hints: &[
            Hint::new(Bar::InputIdle, 4, "F2", "routing"),
            Hint::new(Bar::InputIdle, 5, "F3", "tokens"),
            Hint::new(Bar::InputGenerating, 2, "F2", "routing"),
            Hint::new(Bar::InputGenerating, 3, "F3", "tokens"),
        ],
    },
    Binding {
        context: Context::Anywhere,
        label: "F4  F5",
        what: "settings · sessions",
        keys: &[
            (&[any(F(4))], act(Action::ToggleSettings)),
            (&[any(F(5))], act(Action::ToggleSessions)),
        ],
        listed: true,
        hints: &[
            Hint::new(Bar::InputIdle, 6, "F4", "settings"),
            Hint::new(Bar::InputIdle, 7, "F5", "sessions"),
        ],
    },
    Binding {
        context: Context::Anywhere,
        label: "F6",
        what: "chat ⇄ Train tab (GRPO runs)",
        keys: &[(&[any(F(6))], act(Action::ToggleView))],
        listed: true,
        hints: &[
            Hint::new(Bar::InputIdle, 3, "F6", "train"),
            Hint::new(Bar::TrainNoRun, 1, "F6", "chat"),
            Hint::new(Bar::Charts, 4, "F6", "chat"),
            Hint::new(Bar::Rollouts, 6, "F6", "chat"),
            Hint::new(Bar::Compare, 5, "F6", "chat"),
        ],
    },
    Binding {
        context: Context::Chat,
        label: "Ctrl-R",
        what: "regenerate the last reply",
        keys: &[(&[ctrl('r')], act(Action::RegenerateLast))],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Chat,
        label: "PgUp  PgDn",
        what: "scroll the transcript",
        keys: &[
            (&[any(PageUp)], act(Action::Scroll(10))),
            (&[any(PageDown)], act(Action::Scroll(-10))),
        ],
        listed: true,
        hints: NO_HINTS,
    },
    // ── input ───────────────────────────────────────────────────────────────────────────────
    Binding {
        context: Context::Input,
        label: "Enter",
        what: "send",
        keys: &[(&[SEND], act(Action::Send))],
        listed: true,
        hints: &[Hint::new(Bar::InputIdle, 0, "Enter", "send")],
    },
    Binding {
        context: Context::Input,
        label: "Alt-Enter  Ctrl-J",
        what: "new line",
        keys: &[(
            &[
                any(Enter).needing(KeyModifiers::ALT),
                any(Enter).needing(KeyModifiers::SHIFT),
                ctrl('j'),
            ],
            HANDLED,
        )],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Input,
        label: "↑  ↓",
        what: "move between lines · history",
        keys: &[(&[any(Up), any(Down)], HANDLED)],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Input,
        label: "Ctrl-A/E  Ctrl-U/K/W",
        what: "line start/end · delete to start/end · word",
        keys: &[(
            &[ctrl('a'), ctrl('e'), ctrl('u'), ctrl('k'), ctrl('w')],
            HANDLED,
        )],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Input,
        label: "← →  Home End  Backspace Delete",
        what: "move in the line · delete (typing inserts)",
        keys: &[(
            &[
                any(Left),
                any(Right),
                any(Home),
                any(End),
                any(Backspace),
                any(Delete),
            ],
            HANDLED,
        )],
        // Every text box works this way; the help screen spends its lines on the rest.
        listed: false,
        hints: NO_HINTS,
    },
    // ── transcript ──────────────────────────────────────────────────────────────────────────
    Binding {
        context: Context::Transcript,
        label: "↑ ↓  k j",
        what: "previous / next message",
        keys: &[
            (
                &[plain(Up), plain(Char('k'))],
                act(Action::SelectMessage(-1)),
            ),
            (
                &[plain(Down), plain(Char('j'))],
                act(Action::SelectMessage(1)),
            ),
        ],
        listed: true,
        hints: &[Hint::new(Bar::Transcript, 1, "↑↓", "message")],
    },
    Binding {
        context: Context::Transcript,
        label: "← →  h l",
        what: "move the token cursor (H L: 10 tokens)",
        keys: &[
            (&[plain(Left), plain(Char('h'))], act(Action::Cursor(-1))),
            (&[plain(Right), plain(Char('l'))], act(Action::Cursor(1))),
            (&[plain(Char('H'))], act(Action::Cursor(-10))),
            (&[plain(Char('L'))], act(Action::Cursor(10))),
        ],
        listed: true,
        hints: &[Hint::new(Bar::Transcript, 0, "←→", "token")],
    },
    Binding {
        context: Context::Transcript,
        label: "Home End  g G",
        what: "first / last token",
        keys: &[
            (&[plain(Home), plain(Char('g'))], act(Action::CursorStart)),
            (&[plain(End), plain(Char('G'))], act(Action::CursorEnd)),
        ],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Transcript,
        label: "t",
        what: "fold / unfold the thought",
        keys: &[(
            &[plain(Char('t')), plain(Enter)],
            act(Action::ToggleThought),
        )],
        listed: true,
        hints: &[Hint::new(Bar::Transcript, 2, "t", "thought")],
    },
    Binding {
        context: Context::Transcript,
        label: "r  p",
        what: "routing · token inspector",
        keys: &[
            (&[plain(Char('r'))], act(Action::ToggleRouting)),
            (&[plain(Char('p'))], act(Action::ToggleTokens)),
        ],
        listed: true,
        hints: &[
            Hint::new(Bar::Transcript, 3, "r", "routing"),
            Hint::new(Bar::Transcript, 4, "p", "tokens"),
        ],
    },
    Binding {
        context: Context::Transcript,
        label: "v",
        what: "routing: selected token ⇄ load over the message",
        keys: &[(&[plain(Char('v'))], act(Action::CycleRoutingView))],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Transcript,
        label: ", .",
        what: "previous / next MoE layer",
        keys: &[
            (
                &[plain(Char(',')), plain(Char('<'))],
                act(Action::Layer(-1)),
            ),
            (&[plain(Char('.')), plain(Char('>'))], act(Action::Layer(1))),
        ],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Transcript,
        label: "x",
        what: "colour the text by the layer's top expert",
        keys: &[(&[plain(Char('x'))], act(Action::ToggleExpertColour))],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Transcript,
        label: "R",
        what: "regenerate the selected reply (new branch)",
        keys: &[(&[plain(Char('R'))], act(Action::Regenerate))],
        listed: true,
        hints: &[Hint::new(Bar::Transcript, 5, "R", "regen")],
    },
    Binding {
        context: Context::Transcript,
        label: "e",
        what: "edit the selected question (new branch)",
        keys: &[(&[plain(Char('e'))], act(Action::Edit))],
        listed: true,
        hints: &[Hint::new(Bar::Transcript, 6, "e", "edit")],
    },
    Binding {
        context: Context::Transcript,
        label: "[  ]",
        what: "previous / next branch",
        keys: &[
            (&[plain(Char('['))], act(Action::Sibling(-1))),
            (&[plain(Char(']'))], act(Action::Sibling(1))),
        ],
        listed: true,
        hints: &[Hint::new(Bar::Transcript, 8, "[]", "branch")],
    },
    Binding {
        context: Context::Transcript,
        label: "c",
        what: "keep thinking (after the budget closed the thought)",
        keys: &[(&[plain(Char('c'))], act(Action::KeepThinking))],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Transcript,
        label: "y",
        what: "copy the reply (OSC 52)",
        keys: &[(&[plain(Char('y'))], act(Action::Copy))],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Transcript,
        label: "m",
        what: "export the conversation to Markdown",
        keys: &[(&[plain(Char('m'))], act(Action::Export))],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Transcript,
        label: "n",
        what: "new session",
        keys: &[(&[plain(Char('n'))], act(Action::NewSession))],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Transcript,
        label: "s  o",
        what: "settings · sessions",
        keys: &[
            (&[plain(Char('s'))], act(Action::ToggleSettings)),
            (&[plain(Char('o'))], act(Action::ToggleSessions)),
        ],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Transcript,
        label: "i  q",
        what: "back to the input · quit",
        keys: &[
            (
                &[plain(Char('i')), plain(Char('/'))],
                act(Action::FocusInput),
            ),
            (&[plain(Char('q'))], act(Action::Quit)),
        ],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Transcript,
        label: "?",
        what: "this help",
        keys: &[(&[plain(Char('?'))], act(Action::ToggleHelp))],
        // F1 is listed for it.
        listed: false,
        hints: &[Hint::new(Bar::Transcript, 7, "?", "keys")],
    },
    // ── help ────────────────────────────────────────────────────────────────────────────────
    Binding {
        context: Context::Help,
        label: "↑ ↓  PgUp PgDn",
        what: "scroll this list",
        keys: &[(
            &[
                any(Up),
                any(Char('k')),
                any(Down),
                any(Char('j')),
                any(PageUp),
                any(PageDown),
            ],
            HANDLED,
        )],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Help,
        label: "Esc  ?  q  Enter",
        what: "close this list",
        keys: &[(
            &[any(Esc), any(Char('?')), any(Char('q')), any(Enter)],
            act(Action::ToggleHelp),
        )],
        // The popup's title says so.
        listed: false,
        hints: NO_HINTS,
    },
    // ── settings (the popup's code: fields are chosen, stepped and typed in place) ─────────
    Binding {
        context: Context::Settings,
        label: "↑ ↓  ← →",
        what: "choose a field · change it",
        keys: &[(
            &[
                any(Up),
                any(Char('k')),
                any(Down),
                any(Char('j')),
                any(Tab),
                any(Left),
                any(Char('h')),
                any(Char('-')),
                any(Right),
                any(Char('l')),
                any(Char('+')),
            ],
            HANDLED,
        )],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Settings,
        label: "Enter  d",
        what: "type a value · model default",
        keys: &[(&[any(Enter), any(Char('d'))], HANDLED)],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Settings,
        label: "Esc  q  s",
        what: "close",
        // In the popup's code too: while a value is typed, Esc ends the typing and q is a letter.
        keys: &[(&[any(Esc), any(Char('q')), any(Char('s'))], HANDLED)],
        // The popup's footer says so.
        listed: false,
        hints: NO_HINTS,
    },
    // ── sessions (the popup's code: the selection, renaming and the delete confirmation) ───
    Binding {
        context: Context::Sessions,
        label: "Enter  r  d",
        what: "open · rename · delete",
        keys: &[(
            &[any(Enter), any(Char('r')), any(Char('d')), any(Delete)],
            HANDLED,
        )],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Sessions,
        label: "↑ ↓  k j  n  Esc q o",
        what: "choose · new session · close",
        // In the popup's code too: while a name is typed, these are letters.
        keys: &[(
            &[
                any(Up),
                any(Char('k')),
                any(Down),
                any(Char('j')),
                any(Char('n')),
                any(Esc),
                any(Char('q')),
                any(Char('o')),
            ],
            HANDLED,
        )],
        // The popup's title says so.
        listed: false,
        hints: NO_HINTS,
    },
    // ── train ───────────────────────────────────────────────────────────────────────────────
    Binding {
        context: Context::Train,
        label: "1 2 3  Tab",
        what: "charts · rollouts · checkpoint A/B",
        keys: &[
            (
                &[plain(Char('1'))],
                train(TrainAction::Show(TrainPane::Charts)),
            ),
            (
                &[plain(Char('2'))],
                train(TrainAction::Show(TrainPane::Rollouts)),
            ),
            (
                &[plain(Char('3'))],
                train(TrainAction::Show(TrainPane::Compare)),
            ),
            (&[plain(Tab), plain(BackTab)], train(TrainAction::NextPane)),
        ],
        listed: true,
        hints: &[
            Hint::new(Bar::Charts, 1, "Tab", "pane"),
            Hint::new(Bar::Compare, 4, "Tab", "pane"),
        ],
    },
    Binding {
        context: Context::Train,
        label: "o",
        what: "launch a recipe or attach to a run",
        keys: &[(&[plain(Char('o'))], train(TrainAction::OpenPicker))],
        listed: true,
        hints: &[
            Hint::new(Bar::TrainNoRun, 0, "o", "launch / attach"),
            Hint::new(Bar::Charts, 2, "o", "launch/attach"),
        ],
    },
    Binding {
        context: Context::Train,
        label: "x x",
        what: "stop the run launched from here",
        // The first x only asks; `update` counts the presses.
        keys: &[(&[plain(Char('x'))], train(TrainAction::Stop))],
        listed: true,
        hints: &[Hint::new(Bar::Charts, 3, "x", "stop")],
    },
    Binding {
        context: Context::Train,
        label: "Esc",
        what: "back to the chat",
        keys: &[(&[plain(Esc)], act(Action::ToggleView))],
        listed: true,
        hints: NO_HINTS,
    },
    Binding {
        context: Context::Train,
        label: "?  q",
        what: "this help · quit",
        keys: &[
            (&[plain(Char('?'))], act(Action::ToggleHelp)),
            (&[plain(Char('q'))], act(Action::Quit)),
        ],
        // F1 and Ctrl-Q are listed for them.
        listed: false,
        hints: NO_HINTS,
    },
    // ── charts ──────────────────────────────────────────────────────────────────────────────
    Binding {
        context: Context::Charts,
        label: "← →",
        what: "more charts (small terminals)",
        keys: &[
            (
                &[plain(Left), plain(Char('h')), plain(PageUp)],
                train(TrainAction::Page(-1)),
            ),
            (
                &[plain(Right), plain(Char('l')), plain(PageDown)],
                train(TrainAction::Page(1)),
            ),
        ],
        listed: true,
        hints: &[Hint::new(Bar::Charts, 0, "←→", "more charts")],
    },
    // ── rollouts ────────────────────────────────────────────────────────────────────────────
    Binding {
        context: Context::Rollouts,
        label: "← →  Home End",
        what: "step (End: newest, follows the run)",
        keys: &[
            (
                &[plain(Left), plain(Char('h'))],
                train(TrainAction::Step(-1)),
            ),
            (
                &[plain(Right), plain(Char('l'))],
                train(TrainAction::Step(1)),
            ),
            (&[plain(Char('H'))], train(TrainAction::Step(-10))),
            (&[plain(Char('L'))], train(TrainAction::Step(10))),
            (
                &[plain(Home), plain(Char('g'))],
                train(TrainAction::StepFirst),
            ),
            (
                &[plain(End), plain(Char('G'))],
                train(TrainAction::StepLast),
            ),
        ],
        listed: true,
        hints: &[Hint::new(Bar::Rollouts, 0, "←→", "step")],
    },
    Binding {
        context: Context::Rollouts,
        label: "[ ]  ↑ ↓",
        what: "prompt of the step · completion",
        keys: &[
            (
                &[plain(Char('[')), plain(PageUp)],
                train(TrainAction::Group(-1)),
            ),
            (
                &[plain(Char(']')), plain(PageDown)],
                train(TrainAction::Group(1)),
            ),
            (
                &[plain(Up), plain(Char('k'))],
                train(TrainAction::Completion(-1)),
            ),
            (
                &[plain(Down), plain(Char('j'))],
                train(TrainAction::Completion(1)),
            ),
        ],
        listed: true,
        hints: &[
            Hint::new(Bar::Rollouts, 1, "[]", "prompt"),
            Hint::new(Bar::Rollouts, 2, "↑↓", "completion"),
        ],
    },
    Binding {
        context: Context::Rollouts,
        label: "J K",
        what: "scroll the completion",
        keys: &[
            (&[plain(Char('K'))], train(TrainAction::ScrollText(-3))),
            (&[plain(Char('J'))], train(TrainAction::ScrollText(3))),
        ],
        listed: true,
        hints: &[Hint::new(Bar::Rollouts, 3, "JK", "scroll")],
    },
    Binding {
        context: Context::Rollouts,
        label: "Enter  c",
        what: "open in the chat · compare its prompt",
        keys: &[
            (&[plain(Enter)], train(TrainAction::OpenInChat)),
            (&[plain(Char('c'))], train(TrainAction::PromptFromRollout)),
        ],
        listed: true,
        hints: &[
            Hint::new(Bar::Rollouts, 4, "Enter", "chat"),
            Hint::new(Bar::Rollouts, 5, "c", "A/B it"),
        ],
    },
    // ── A/B ─────────────────────────────────────────────────────────────────────────────────
    Binding {
        context: Context::Compare,
        label: "← →  e  Enter",
        what: "checkpoint · edit the prompt · run both",
        keys: &[
            (
                &[plain(Left), plain(Char('h'))],
                train(TrainAction::Checkpoint(-1)),
            ),
            (
                &[plain(Right), plain(Char('l'))],
                train(TrainAction::Checkpoint(1)),
            ),
            (
                &[plain(Char('e')), plain(Char('i')), plain(Char('/'))],
                train(TrainAction::EditPrompt),
            ),
            (&[plain(Enter)], train(TrainAction::RunCompare)),
        ],
        listed: true,
        hints: &[
            Hint::new(Bar::Compare, 0, "←→", "checkpoint"),
            Hint::new(Bar::Compare, 1, "e", "prompt"),
            Hint::new(Bar::Compare, 3, "Enter", "run"),
        ],
    },
    Binding {
        context: Context::Compare,
        label: "p",
        what: "take the prompt from the rollout viewer",
        keys: &[(&[plain(Char('p'))], train(TrainAction::PromptFromRollout))],
        listed: true,
        hints: &[Hint::new(Bar::Compare, 2, "p", "from rollout")],
    },
    // ── the launch/attach list (its hint bar names its keys) ────────────────────────────────
    Binding {
        context: Context::Picker,
        label: "↑ ↓  k j",
        what: "choose a recipe or run",
        keys: &[
            (
                &[any(Up), any(Char('k'))],
                train(TrainAction::PickerMove(-1)),
            ),
            (
                &[any(Down), any(Char('j'))],
                train(TrainAction::PickerMove(1)),
            ),
        ],
        listed: false,
        hints: &[Hint::new(Bar::Picker, 0, "↑↓", "choose")],
    },
    Binding {
        context: Context::Picker,
        label: "Enter",
        what: "launch the recipe or attach to the run",
        keys: &[(&[any(Enter)], train(TrainAction::PickerChoose))],
        listed: false,
        hints: &[Hint::new(Bar::Picker, 1, "Enter", "launch / attach")],
    },
    Binding {
        context: Context::Picker,
        label: "Esc  o  q",
        what: "close the list",
        keys: &[(
            &[any(Esc), any(Char('o')), any(Char('q'))],
            train(TrainAction::ClosePicker),
        )],
        listed: false,
        hints: &[Hint::new(Bar::Picker, 2, "Esc", "close")],
    },
    // ── typing the A/B prompt (the Train tab's code: the prompt is edited in place) ─────────
    Binding {
        context: Context::ComparePrompt,
        label: "Enter",
        what: "stop typing and run both",
        keys: &[(&[any(Enter)], HANDLED)],
        listed: false,
        hints: &[Hint::new(Bar::ComparePrompt, 0, "Enter", "run both")],
    },
    Binding {
        context: Context::ComparePrompt,
        label: "Esc",
        what: "stop typing",
        keys: &[(&[any(Esc)], HANDLED)],
        listed: false,
        hints: &[Hint::new(Bar::ComparePrompt, 1, "Esc", "done editing")],
    },
    Binding {
        context: Context::ComparePrompt,
        label: "← →  Home End  Backspace Delete  Ctrl-A/E/U",
        what: "move in the line · delete (typing inserts)",
        keys: &[(
            &[
                any(Left),
                any(Right),
                any(Home),
                any(End),
                any(Backspace),
                any(Delete),
                ctrl('a'),
                ctrl('e'),
                ctrl('u'),
            ],
            HANDLED,
        )],
        listed: false,
        hints: NO_HINTS,
    },
];
