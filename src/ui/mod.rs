//! Drawing, and nothing else: every function here reads `&App` and writes into a ratatui frame.
//!
//! Layout: a title bar, the transcript (with the inspectors beside it on wide terminals, below it
//! on narrow ones), the input box, the status line and the key hints. 80×24 is the smallest size
//! it is designed for.

pub mod chrome;
pub mod inspect;
pub mod markdown;
pub mod popup;
pub mod theme;
pub mod train;
pub mod transcript;
pub mod wrap;

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::Frame;

use crate::app::{App, Popup};

/// Terminals at least this wide put the inspectors to the right of the transcript.
const SIDE_BY_SIDE: u16 = 120;

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < 20 || area.height < 6 {
        frame.render_widget(
            ratatui::widgets::Paragraph::new("thinkbench: enlarge the terminal"),
            area,
        );
        return;
    }
    if app.view == crate::app::View::Train {
        train::draw(frame, area, app);
        if let Some(Popup::Help) = &app.popup {
            popup::draw_help(frame, area, app.help_scroll);
        }
        return;
    }
    let input_h = chrome::input_height(app, area.height / 3);
    let [title, body, input, status, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(input_h),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    chrome::draw_title(frame, title, app);
    draw_body(frame, body, app);
    chrome::draw_input(frame, input, app);
    chrome::draw_status(frame, status, app);
    chrome::draw_hints(frame, hints, app);
    match &app.popup {
        Some(Popup::Help) => popup::draw_help(frame, area, app.help_scroll),
        Some(Popup::Settings(p)) => popup::draw_settings(frame, area, app, p),
        Some(Popup::Sessions(p)) => popup::draw_sessions(frame, area, app, p),
        None => {}
    }
}

fn draw_body(frame: &mut Frame, area: Rect, app: &App) {
    let panes: Vec<fn(&mut Frame, Rect, &App)> = [
        (
            app.inspector.routing,
            inspect::draw_routing as fn(&mut Frame, Rect, &App),
        ),
        (app.inspector.tokens, inspect::draw_tokens),
    ]
    .into_iter()
    .filter_map(|(on, f)| on.then_some(f))
    .collect();
    if panes.is_empty() {
        transcript::draw(frame, area, app);
        return;
    }
    let wide = area.width >= SIDE_BY_SIDE;
    let (main, side) = if wide {
        let side_w = (area.width * 45 / 100).clamp(50, 80);
        let [m, s] =
            Layout::horizontal([Constraint::Min(40), Constraint::Length(side_w)]).areas(area);
        (m, s)
    } else {
        let side_h = (area.height * 55 / 100)
            .max(6)
            .min(area.height.saturating_sub(4));
        let [m, s] = Layout::vertical([Constraint::Min(4), Constraint::Length(side_h)]).areas(area);
        (m, s)
    };
    transcript::draw(frame, main, app);
    // Two inspectors share the side: stacked when it is a column, side by side when it is a row.
    let dir = if wide {
        Direction::Vertical
    } else {
        Direction::Horizontal
    };
    let parts = Layout::default()
        .direction(dir)
        .constraints(vec![Constraint::Ratio(1, panes.len() as u32); panes.len()])
        .split(side);
    for (f, r) in panes.iter().zip(parts.iter()) {
        f(frame, *r, app);
    }
}

#[cfg(test)]
mod tests;
