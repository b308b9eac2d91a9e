//! The frame around the transcript: title bar, input box, status line and key hints.

use ratatui::layout::{Position, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::theme;
use crate::app::{keymap, App, EngineState, Focus};

pub fn draw_title(frame: &mut Frame, area: Rect, app: &App) {
    let left = format!(" thinkbench · {}", app.session.title());
    let (pos, count) = branch_summary(app);
    let right = if count > 1 {
        format!("branch {pos}/{count} ")
    } else {
        String::new()
    };
    let w = area.width as usize;
    let mut text = truncate(&left, w.saturating_sub(right.width() + 1));
    let pad = w.saturating_sub(text.width() + right.width());
    text.push_str(&" ".repeat(pad));
    text.push_str(&right);
    frame.render_widget(Paragraph::new(Line::from(text)).style(theme::title()), area);
}

/// Which of the alternatives of the selected (or last) message is shown.
fn branch_summary(app: &App) -> (usize, usize) {
    let node = app
        .selected
        .or_else(|| app.session.conversation.thread().last().copied());
    node.map_or((1, 1), |n| app.session.conversation.sibling_pos(n))
}

/// Height the input box wants (borders included).
pub fn input_height(app: &App, max: u16) -> u16 {
    (app.input.line_count() as u16)
        .clamp(1, 6)
        .min(max.saturating_sub(2))
        + 2
}

pub fn draw_input(frame: &mut Frame, area: Rect, app: &App) {
    let focused = app.focus == Focus::Input && app.popup.is_none();
    let title = match (app.editing.is_some(), &app.generating) {
        (true, _) => " Edit (Enter: send as a new branch · Esc: cancel) ",
        (false, Some(_)) => " Message (Esc stops the reply) ",
        _ => " Message (Enter send · Alt-Enter new line) ",
    };
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(if focused {
            theme::border_focus()
        } else {
            theme::border()
        })
        .title(Span::styled(
            title,
            if focused {
                theme::hint_key()
            } else {
                theme::dim()
            },
        ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let (line, col) = app.input.cursor_pos();
    let h = inner.height as usize;
    let first = line.saturating_sub(h - 1);
    // Long lines scroll sideways to keep the cursor in view.
    let w = inner.width as usize;
    let xoff = col.saturating_sub(w.saturating_sub(1));
    let lines: Vec<Line> = app
        .input
        .text
        .split('\n')
        .skip(first)
        .take(h)
        .map(|l| Line::from(l.chars().skip(xoff).collect::<String>()))
        .collect();
    if app.input.text.is_empty() && !focused {
        frame.render_widget(
            Paragraph::new(Span::styled("Tab to type a message", theme::dim())),
            inner,
        );
    } else {
        frame.render_widget(Paragraph::new(lines), inner);
    }
    if focused {
        let x = inner.x + (col - xoff).min(w - 1) as u16;
        let y = inner.y + (line - first) as u16;
        frame.set_cursor_position(Position::new(x, y));
    }
}

fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub fn draw_status(frame: &mut Frame, area: Rect, app: &App) {
    let m = app.model_info();
    let mut parts: Vec<String> = Vec::new();
    match &app.engine {
        EngineState::Loading(what) => parts.push(format!("loading {what}…")),
        EngineState::Failed(_) => parts.push("model failed to load".into()),
        EngineState::Absent => parts.push(format!(
            "{} (read-only)",
            if m.id.is_empty() { "no model" } else { &m.id }
        )),
        EngineState::Ready => parts.push(m.id.clone()),
    }
    if let Some(r) = &m.remote {
        // The server, without its scheme and /v1: where the model runs.
        let host = r.url.split("://").last().unwrap_or(&r.url);
        parts.push(format!("remote {}", host.trim_end_matches("/v1")));
    } else if !m.device.is_empty() {
        parts.push(m.device.clone());
        parts.push(m.dtype.clone());
        if let Some(q) = &m.quant {
            parts.push(q.clone());
        }
    }
    if m.context > 0 {
        parts.push(format!("ctx {}/{}", app.context_used(), m.context));
    }
    let stats = app
        .session
        .conversation
        .thread()
        .iter()
        .rev()
        .find_map(|&n| app.message(n).stats.clone());
    if let Some(s) = stats {
        parts.push(format!(
            "prefill {} · decode {} tok/s",
            rate(s.prefill_tokens_per_s),
            rate(s.decode_tokens_per_s)
        ));
        // A server's prefix cache, as its usage reports it.
        if let Some(n) = s.cached_tokens.filter(|&n| n > 0) {
            parts.push(format!("{n} cached"));
        }
    }
    let left = format!(" {}", parts.join(" · "));
    let (right, busy) = match (&app.notice, &app.generating) {
        (Some(n), _) => (format!("{} ", n.text), false),
        (None, Some(g)) => {
            let msg = app.message(g.node);
            let phase = match msg.tokens.last() {
                Some(t) if t.phase == crate::trace::Phase::Answer => "answering",
                _ => "thinking",
            };
            let reused = if g.reused > 0 {
                format!(" · {} cached", g.reused)
            } else {
                String::new()
            };
            (format!("● {phase} {} tok{reused} ", msg.tokens.len()), true)
        }
        (None, None) if app.unsaved => ("unsaved ".into(), false),
        _ => (String::new(), false),
    };
    let w = area.width as usize;
    let right = truncate(&right, w.saturating_sub(10));
    let left = truncate(&left, w.saturating_sub(right.width() + 1));
    let pad = w.saturating_sub(left.width() + right.width());
    let line = Line::from(vec![
        Span::raw(left),
        Span::raw(" ".repeat(pad)),
        Span::styled(
            right,
            if busy {
                theme::status_busy()
            } else {
                theme::status()
            },
        ),
    ]);
    frame.render_widget(Paragraph::new(line).style(theme::status()), area);
}

/// The key hints for what the screen shows (the chat's or the Train tab's), from the key table.
pub fn draw_hints(frame: &mut Frame, area: Rect, app: &App) {
    draw_key_hints(frame, area, &keymap::hint_bar(app));
}

/// One line of `key what` pairs, as many as fit the width (the first ones matter most).
pub fn draw_key_hints(frame: &mut Frame, area: Rect, hints: &[(&str, &str)]) {
    let mut spans = vec![Span::raw(" ")];
    let mut used = 1;
    for (k, what) in hints {
        let w = k.width() + what.width() + 3;
        if used + w > area.width as usize {
            break;
        }
        used += w;
        spans.push(Span::styled(*k, theme::hint_key()));
        spans.push(Span::styled(format!(" {what}  "), theme::hints()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Cuts `s` to `max` columns, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.width() <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if w + cw + 1 > max {
            break;
        }
        out.push(c);
        w += cw;
    }
    if max > 0 {
        out.push('…');
    }
    out
}
