//! Keys to actions, per focus and popup. Editing keys (typing in the input box or a settings
//! field) change the state directly; everything else becomes an [`Action`]. [`HELP`] is what `?`
//! shows; keep the two in step.

use crossterm::event::{KeyCode, KeyEventKind, KeyModifiers};

use super::{Action, App, Focus, Input, Popup, View};

/// A key press.
pub type Key = crossterm::event::KeyEvent;

/// The key map as `?` shows it: (section, keys, what they do).
pub const HELP: &[(&str, &str, &str)] = &[
    ("anywhere", "Ctrl-C  Ctrl-Q", "save and quit"),
    (
        "anywhere",
        "Esc",
        "stop generating · cancel an edit · leave the input",
    ),
    ("anywhere", "Tab", "switch between input and transcript"),
    ("anywhere", "F1", "this help"),
    ("anywhere", "F2  F3", "routing · token inspector"),
    ("anywhere", "F4  F5", "settings · sessions"),
    ("anywhere", "F6", "chat ⇄ Train tab (GRPO runs)"),
    ("anywhere", "Ctrl-R", "regenerate the last reply"),
    ("anywhere", "PgUp  PgDn", "scroll the transcript"),
    ("input", "Enter", "send"),
    ("input", "Alt-Enter  Ctrl-J", "new line"),
    ("input", "↑  ↓", "move between lines · history"),
    (
        "input",
        "Ctrl-A/E  Ctrl-U/K/W",
        "line start/end · delete to start/end · word",
    ),
    ("transcript", "↑ ↓  k j", "previous / next message"),
    (
        "transcript",
        "← →  h l",
        "move the token cursor (H L: 10 tokens)",
    ),
    ("transcript", "Home End  g G", "first / last token"),
    ("transcript", "t", "fold / unfold the thought"),
    ("transcript", "r  p", "routing · token inspector"),
    (
        "transcript",
        "v",
        "routing: selected token ⇄ load over the message",
    ),
    ("transcript", ", .", "previous / next MoE layer"),
    (
        "transcript",
        "x",
        "colour the text by the layer's top expert",
    ),
    (
        "transcript",
        "R",
        "regenerate the selected reply (new branch)",
    ),
    ("transcript", "e", "edit the selected question (new branch)"),
    ("transcript", "[  ]", "previous / next branch"),
    (
        "transcript",
        "c",
        "keep thinking (after the budget closed the thought)",
    ),
    ("transcript", "y", "copy the reply (OSC 52)"),
    ("transcript", "m", "export the conversation to Markdown"),
    ("transcript", "n", "new session"),
    ("transcript", "s  o", "settings · sessions"),
    ("transcript", "i  q", "back to the input · quit"),
    ("help", "↑ ↓  PgUp PgDn", "scroll this list"),
    ("settings", "↑ ↓  ← →", "choose a field · change it"),
    ("settings", "Enter  d", "type a value · model default"),
    ("sessions", "Enter  r  d", "open · rename · delete"),
    ("train", "1 2 3  Tab", "charts · rollouts · checkpoint A/B"),
    ("train", "o", "launch a recipe or attach to a run"),
    ("train", "x x", "stop the run launched from here"),
    ("train", "Esc", "back to the chat"),
    ("charts", "← →", "more charts (small terminals)"),
    (
        "rollouts",
        "← →  Home End",
        "step (End: newest, follows the run)",
    ),
    ("rollouts", "[ ]  ↑ ↓", "prompt of the step · completion"),
    ("rollouts", "J K", "scroll the completion"),
    (
        "rollouts",
        "Enter  c",
        "open in the chat · compare its prompt",
    ),
    (
        "A/B",
        "← →  e  Enter",
        "checkpoint · edit the prompt · run both",
    ),
    ("A/B", "p", "take the prompt from the rollout viewer"),
];

/// Handles one key: edits in place, or returns the action it means.
pub fn handle(app: &mut App, key: Key) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let alt = key.modifiers.contains(KeyModifiers::ALT);
    // Keys that mean the same everywhere.
    match key.code {
        KeyCode::Char('c') | KeyCode::Char('q') if ctrl => return Some(Action::Quit),
        KeyCode::F(1) => return Some(Action::ToggleHelp),
        KeyCode::F(2) => return Some(Action::ToggleRouting),
        KeyCode::F(3) => return Some(Action::ToggleTokens),
        KeyCode::F(4) => return Some(Action::ToggleSettings),
        KeyCode::F(5) => return Some(Action::ToggleSessions),
        KeyCode::F(6) => return Some(Action::ToggleView),
        _ => {}
    }
    match &mut app.popup {
        Some(Popup::Help) => {
            match key.code {
                KeyCode::Up | KeyCode::Char('k') => {
                    app.help_scroll = app.help_scroll.saturating_sub(1)
                }
                KeyCode::Down | KeyCode::Char('j') => {
                    app.help_scroll = (app.help_scroll + 1).min(HELP.len())
                }
                KeyCode::PageUp => app.help_scroll = app.help_scroll.saturating_sub(10),
                KeyCode::PageDown => app.help_scroll = (app.help_scroll + 10).min(HELP.len()),
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q') | KeyCode::Enter => {
                    return Some(Action::ToggleHelp)
                }
                _ => {}
            }
            return None;
        }
        Some(Popup::Settings(_)) => return super::settings::handle_key(app, key),
        Some(Popup::Sessions(_)) => return sessions_key(app, key),
        None => {}
    }
    if app.view == View::Train {
        return super::train::key_action(app, key);
    }
    match key.code {
        KeyCode::Char('r') if ctrl => return Some(Action::RegenerateLast),
        KeyCode::Tab | KeyCode::BackTab => return Some(Action::ToggleFocus),
        KeyCode::Esc => return Some(Action::Stop),
        KeyCode::PageUp => return Some(Action::Scroll(10)),
        KeyCode::PageDown => return Some(Action::Scroll(-10)),
        _ => {}
    }
    match app.focus {
        Focus::Input => input_key(app, key, ctrl, alt),
        Focus::Transcript => transcript_key(key, ctrl),
    }
}

fn input_key(app: &mut App, key: Key, ctrl: bool, alt: bool) -> Option<Action> {
    let i = &mut app.input;
    match key.code {
        KeyCode::Enter if alt || key.modifiers.contains(KeyModifiers::SHIFT) => i.insert('\n'),
        KeyCode::Enter => return Some(Action::Send),
        KeyCode::Char('j') if ctrl => i.insert('\n'),
        KeyCode::Char('k') if ctrl => i.kill_to_end(),
        KeyCode::Char('w') if ctrl => i.delete_word(),
        KeyCode::Up => {
            i.up();
        }
        KeyCode::Down => {
            i.down();
        }
        _ => edit_line(i, key, ctrl),
    }
    None
}

/// The line-editing keys every text field shares (the message box, the Train tab's A/B prompt):
/// typing, deleting, moving, Ctrl-A/E/U.
pub fn edit_line(i: &mut Input, key: Key, ctrl: bool) {
    match key.code {
        KeyCode::Char('a') if ctrl => i.home(),
        KeyCode::Char('e') if ctrl => i.end(),
        KeyCode::Char('u') if ctrl => i.kill_to_start(),
        KeyCode::Char(c) if !ctrl => i.insert(c),
        KeyCode::Backspace => i.backspace(),
        KeyCode::Delete => i.delete(),
        KeyCode::Left => i.left(),
        KeyCode::Right => i.right(),
        KeyCode::Home => i.home(),
        KeyCode::End => i.end(),
        _ => {}
    }
}

fn transcript_key(key: Key, ctrl: bool) -> Option<Action> {
    if ctrl {
        return None;
    }
    Some(match key.code {
        KeyCode::Up | KeyCode::Char('k') => Action::SelectMessage(-1),
        KeyCode::Down | KeyCode::Char('j') => Action::SelectMessage(1),
        KeyCode::Left | KeyCode::Char('h') => Action::Cursor(-1),
        KeyCode::Right | KeyCode::Char('l') => Action::Cursor(1),
        KeyCode::Char('H') => Action::Cursor(-10),
        KeyCode::Char('L') => Action::Cursor(10),
        KeyCode::Home | KeyCode::Char('g') => Action::CursorStart,
        KeyCode::End | KeyCode::Char('G') => Action::CursorEnd,
        KeyCode::Char('t') | KeyCode::Enter => Action::ToggleThought,
        KeyCode::Char('r') => Action::ToggleRouting,
        KeyCode::Char('p') => Action::ToggleTokens,
        KeyCode::Char('v') => Action::CycleRoutingView,
        KeyCode::Char(',') | KeyCode::Char('<') => Action::Layer(-1),
        KeyCode::Char('.') | KeyCode::Char('>') => Action::Layer(1),
        KeyCode::Char('x') => Action::ToggleExpertColour,
        KeyCode::Char('R') => Action::Regenerate,
        KeyCode::Char('e') => Action::Edit,
        KeyCode::Char('[') => Action::Sibling(-1),
        KeyCode::Char(']') => Action::Sibling(1),
        KeyCode::Char('c') => Action::KeepThinking,
        KeyCode::Char('y') => Action::Copy,
        KeyCode::Char('m') => Action::Export,
        KeyCode::Char('n') => Action::NewSession,
        KeyCode::Char('s') => Action::ToggleSettings,
        KeyCode::Char('o') => Action::ToggleSessions,
        KeyCode::Char('?') => Action::ToggleHelp,
        KeyCode::Char('i') | KeyCode::Char('/') => Action::FocusInput,
        KeyCode::Char('q') => Action::Quit,
        _ => return None,
    })
}

fn sessions_key(app: &mut App, key: Key) -> Option<Action> {
    let n = app.sessions.len();
    let Some(Popup::Sessions(p)) = &mut app.popup else {
        return None;
    };
    if let Some(name) = &mut p.rename {
        match key.code {
            KeyCode::Esc => p.rename = None,
            KeyCode::Enter => {
                let name = name.text.trim().to_string();
                p.rename = None;
                let path = app.sessions.get(p.selected).map(|s| s.path.clone());
                return path.map(|path| Action::RenameSession(path, name));
            }
            KeyCode::Backspace => name.backspace(),
            KeyCode::Left => name.left(),
            KeyCode::Right => name.right(),
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => name.insert(c),
            _ => {}
        }
        return None;
    }
    let confirm = std::mem::take(&mut p.confirm_delete);
    match key.code {
        KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('o') => {
            return Some(Action::ToggleSessions)
        }
        KeyCode::Up | KeyCode::Char('k') => p.selected = p.selected.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => {
            p.selected = (p.selected + 1).min(n.saturating_sub(1))
        }
        KeyCode::Enter => {
            let path = app.sessions.get(p.selected)?.path.clone();
            return Some(Action::OpenSession(path));
        }
        KeyCode::Char('r') => {
            let title = app.sessions.get(p.selected)?.title.clone();
            let mut i = super::Input::default();
            i.set(&title);
            p.rename = Some(i);
        }
        KeyCode::Char('d') | KeyCode::Delete => {
            let path = app.sessions.get(p.selected)?.path.clone();
            if confirm {
                return Some(Action::DeleteSession(path));
            }
            p.confirm_delete = true;
        }
        KeyCode::Char('n') => return Some(Action::NewSession),
        _ => {}
    }
    None
}
