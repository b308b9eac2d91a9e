//! The keys the table marks [`Does::Handled`](super::Does::Handled) in the message box, the help
//! popup and the session list: they edit text or state in place, or what they mean depends on
//! state. (The settings popup's are in `settings`, the A/B prompt's in `train`.)

use crossterm::event::{KeyCode, KeyModifiers};

use super::Key;
use crate::app::{Action, App, Input, Popup};

/// The message box: new lines, history, and the line editing every text field shares. Enter
/// alone is in the table (it sends).
pub(super) fn input_key(app: &mut App, key: Key) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let new_line = key
        .modifiers
        .intersects(KeyModifiers::ALT.union(KeyModifiers::SHIFT));
    let i = &mut app.input;
    match key.code {
        KeyCode::Enter if new_line => i.insert('\n'),
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

/// The help popup scrolls by rows of the list.
pub(super) fn help_key(app: &mut App, key: Key) -> Option<Action> {
    let rows = super::listed().count();
    let s = &mut app.help_scroll;
    match key.code {
        KeyCode::Up | KeyCode::Char('k') => *s = s.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => *s = (*s + 1).min(rows),
        KeyCode::PageUp => *s = s.saturating_sub(10),
        KeyCode::PageDown => *s = (*s + 10).min(rows),
        _ => {}
    }
    None
}

/// The session list: moving, opening, renaming (typed in place) and deleting (asked twice).
pub(super) fn sessions_key(app: &mut App, key: Key) -> Option<Action> {
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
    // Any other key than a second d calls the deletion off.
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
            let mut i = Input::default();
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
