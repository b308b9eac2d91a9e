//! Popups over the main screen: the key map, the settings panel and the session list.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::{chrome::truncate, theme};
use crate::app::keymap;
use crate::app::settings::FIELDS;
use crate::app::{App, SessionsPanel, SettingsPanel};

/// A centred rectangle of at most `w` × `h` inside `area`.
fn centred(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn frame_block(title: &str) -> Block<'static> {
    Block::new()
        .borders(Borders::ALL)
        .border_style(theme::border_focus())
        .title(Span::styled(format!(" {title} "), theme::bold()))
}

pub fn draw_help(frame: &mut Frame, area: Rect, scroll: usize) {
    let key_w = keymap::listed()
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(10)
        + 2;
    let mut lines = Vec::new();
    let mut section = "";
    for b in keymap::listed() {
        let heading = b.context.heading();
        if heading != section {
            section = heading;
            lines.push(Line::from(Span::styled(heading, theme::heading())));
        }
        lines.push(Line::from(vec![
            Span::styled(format!("  {:<key_w$}", b.label), theme::hint_key()),
            Span::raw(b.what),
        ]));
    }
    let two_cols = area.width >= 150;
    let rect = if two_cols {
        centred(area, 150, (lines.len().div_ceil(2) + 2) as u16)
    } else {
        centred(area, 78, (lines.len() + 2) as u16)
    };
    frame.render_widget(Clear, rect);
    let inner_h = rect.height.saturating_sub(2) as usize;
    let more = !two_cols && lines.len() > inner_h;
    let title = if more {
        "Keys (↑↓ scroll · Esc closes)"
    } else {
        "Keys (Esc closes)"
    };
    let block = frame_block(title);
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    if two_cols {
        let half = lines.len().div_ceil(2);
        let right = lines.split_off(half);
        let w = inner.width / 2;
        frame.render_widget(Paragraph::new(lines), Rect { width: w, ..inner });
        frame.render_widget(
            Paragraph::new(right),
            Rect {
                x: inner.x + w,
                width: inner.width - w,
                ..inner
            },
        );
    } else {
        let top = scroll.min(lines.len().saturating_sub(inner_h));
        let lines: Vec<Line> = lines.into_iter().skip(top).take(inner_h).collect();
        frame.render_widget(Paragraph::new(lines), inner);
    }
}

pub fn draw_settings(frame: &mut Frame, area: Rect, app: &App, p: &SettingsPanel) {
    let rect = centred(area, 60, FIELDS.len() as u16 + 6);
    frame.render_widget(Clear, rect);
    let block = frame_block("Settings");
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let s = &app.session.settings;
    let mut lines = Vec::new();
    for (i, f) in FIELDS.iter().enumerate() {
        let sel = i == p.field;
        let value = match (&p.editing, sel) {
            (Some(input), true) => format!("{}▏", input.text),
            _ => f.value(s),
        };
        let style = if sel {
            theme::highlight()
        } else {
            ratatui::style::Style::new()
        };
        lines.push(Line::from(vec![
            Span::styled(format!(" {:<19}", f.label()), style),
            Span::styled(
                format!(" {value:<10}"),
                if sel {
                    theme::highlight()
                } else {
                    theme::bold()
                },
            ),
        ]));
    }
    lines.push(Line::from(""));
    let field = FIELDS[p.field.min(FIELDS.len() - 1)];
    match &p.error {
        Some(e) => lines.push(Line::from(Span::styled(format!(" {e}"), theme::error()))),
        None => lines.push(Line::from(Span::styled(
            format!(" {}", field.hint()),
            theme::dim(),
        ))),
    }
    lines.push(Line::from(Span::styled(
        " ↑↓ field · ←→ change · Enter type · d default · Esc",
        theme::dim(),
    )));
    frame.render_widget(Paragraph::new(lines), inner);
}

pub fn draw_sessions(frame: &mut Frame, area: Rect, app: &App, p: &SessionsPanel) {
    let rect = centred(
        area,
        area.width.saturating_sub(4).min(110),
        area.height.saturating_sub(2).min(24),
    );
    frame.render_widget(Clear, rect);
    let block = frame_block("Sessions (Enter open · r rename · d delete · n new · Esc)");
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let w = inner.width as usize;
    let mut lines = Vec::new();
    if app.sessions.is_empty() {
        lines.push(Line::from(Span::styled(
            "no saved sessions yet",
            theme::dim(),
        )));
    }
    let rows = (inner.height as usize).saturating_sub(2);
    let start = p.selected.saturating_sub(rows.saturating_sub(1));
    for (i, s) in app.sessions.iter().enumerate().skip(start).take(rows) {
        let sel = i == p.selected;
        let current = s.id == app.session.id;
        let title = match (&p.rename, sel) {
            (Some(input), true) => format!("{}▏", input.text),
            _ => s.title.clone(),
        };
        let date = s
            .updated
            .replace('T', " ")
            .trim_end_matches('Z')
            .to_string();
        let meta = format!(" {:>3} msg  {:<19}  {}", s.messages, date, s.model);
        let title_w = w.saturating_sub(meta.chars().count() + 3);
        let text = format!(
            "{}{:<title_w$}{meta}",
            if current { "● " } else { "  " },
            truncate(&title, title_w)
        );
        lines.push(Line::from(Span::styled(
            truncate(&text, w),
            if sel {
                theme::highlight()
            } else {
                ratatui::style::Style::new()
            },
        )));
    }
    let footer = if p.confirm_delete {
        Span::styled(
            "press d again to delete this session for good",
            theme::error(),
        )
    } else {
        Span::styled("● is the open session", theme::dim())
    };
    while lines.len() + 1 < inner.height as usize {
        lines.push(Line::from(""));
    }
    lines.push(Line::from(footer));
    frame.render_widget(Paragraph::new(lines), inner);
}
