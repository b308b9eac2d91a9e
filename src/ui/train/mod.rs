//! The Train tab: a title bar with the panes, a line summing up the run, the pane (charts,
//! rollouts or the checkpoint A/B), the status line and the key hints; the launch/attach list
//! as a popup. Like the rest of `ui`, it only reads `&App`.

pub mod charts;
pub mod compare;
pub mod rollouts;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::chrome::truncate;
use super::theme;
use crate::app::train::{Picker, RunView};
use crate::app::{App, TrainPane};
use crate::train_view::ProcessState;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let [title, summary, body, status, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_title(frame, title, app);
    let t = &app.train;
    match &t.run {
        None => draw_no_run(frame, summary.union(body)),
        Some(run) => {
            frame.render_widget(Paragraph::new(summary_line(run, summary.width)), summary);
            match t.pane {
                TrainPane::Charts => charts::draw(frame, body, run, t.chart_page),
                TrainPane::Rollouts => rollouts::draw(frame, body, app, run),
                TrainPane::Compare => compare::draw(frame, body, app, run),
            }
        }
    }
    draw_status(frame, status, app);
    super::chrome::draw_hints(frame, hints, app);
    if let Some(p) = &t.picker {
        draw_picker(frame, area, p);
    }
}

fn draw_title(frame: &mut Frame, area: Rect, app: &App) {
    let name = app
        .train
        .run
        .as_ref()
        .map_or("no run".into(), RunView::name);
    let left = format!(" thinkbench · Train · {name}");
    let mut tabs: Vec<Span> = Vec::new();
    let mut tabs_w = 0;
    for (i, p) in TrainPane::ALL.iter().enumerate() {
        let text = format!(" {} {} ", i + 1, p.title());
        tabs_w += text.width();
        let style = if *p == app.train.pane {
            theme::highlight()
        } else {
            theme::title()
        };
        tabs.push(Span::styled(text, style));
    }
    let w = area.width as usize;
    let left = truncate(&left, w.saturating_sub(tabs_w + 1));
    let pad = w.saturating_sub(left.width() + tabs_w);
    let mut spans = vec![Span::styled(left, theme::title())];
    spans.push(Span::styled(" ".repeat(pad), theme::title()));
    spans.extend(tabs);
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// One line: the process, the step, the headline numbers, the pace.
fn summary_line(run: &RunView, width: u16) -> Line<'static> {
    let (mark, state, style) = match &run.process {
        ProcessState::Attached => ("○", "attached".to_string(), theme::dim()),
        ProcessState::Running { pid, .. } => {
            ("●", format!("running (pid {pid})"), theme::status_busy())
        }
        ProcessState::Exited { success: true, .. } => ("■", "finished".into(), theme::dim()),
        ProcessState::Exited { status, .. } => ("✗", status.clone(), theme::error()),
    };
    let mut parts = Vec::new();
    if let Some(last) = run.last() {
        let total = run
            .info
            .total_steps
            .map_or(String::new(), |t| format!("/{t}"));
        parts.push(format!("step {}{total}", last.step));
        if let Some(r) = last.get("reward") {
            let sd = last
                .get("reward_std")
                .map_or(String::new(), |s| format!(" ±{s:.2}"));
            parts.push(format!("reward {r:.3}{sd}"));
        }
        if let Some(a) = last.get("accuracy") {
            parts.push(format!("acc {:.0}%", a * 100.0));
        }
    } else {
        parts.push("no steps logged yet".into());
    }
    if let Some(e) = run.evals.last() {
        parts.push(format!("held-out {:.1}% @{}", e.accuracy * 100.0, e.step));
    }
    if let Some(t) = run.last().and_then(|l| l.get("step_time")) {
        parts.push(format!("{t:.2} s/step"));
    }
    if run.running() {
        if let Some(eta) = run.eta_secs() {
            parts.push(format!("ETA {}", duration(eta)));
        }
    }
    let head = format!(" {mark} {state}");
    let rest = format!(" · {}", parts.join(" · "));
    let room = (width as usize).saturating_sub(head.width());
    Line::from(vec![
        Span::styled(head, style),
        Span::raw(truncate(&rest, room)),
    ])
}

/// 95 s -> "1m35s"; 4000 s -> "1h06m".
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn draw_no_run(frame: &mut Frame, area: Rect) {
    let key = |k: &'static str| Span::styled(k, theme::hint_key());
    let lines = vec![
        Line::from(""),
        Line::from(Span::styled("  No training run yet.", theme::heading())),
        Line::from(""),
        Line::from(vec![
            Span::raw("  "),
            key("o"),
            Span::raw("  launch a GRPO recipe (recipes/*.toml) or attach to a run folder"),
        ]),
        Line::from(vec![
            Span::raw("  "),
            key("F6"),
            Span::raw(" back to the chat"),
        ]),
        Line::from(""),
        Line::from(Span::styled(
            "  From the shell: thinkbench --train runs/tiny-grpo  (a run folder, or a recipe to launch)",
            theme::dim(),
        )),
    ];
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_status(frame: &mut Frame, area: Rect, app: &App) {
    let text = match (&app.notice, &app.train.run) {
        (Some(n), _) => format!(" {}", n.text),
        (None, Some(run)) => match &run.process {
            ProcessState::Running { log, .. } | ProcessState::Exited { log, .. } => {
                format!(" {} · log {}", run.dir.display(), log.display())
            }
            ProcessState::Attached => format!(" {}", run.dir.display()),
        },
        (None, None) => String::new(),
    };
    let text = truncate(&text, area.width as usize);
    frame.render_widget(Paragraph::new(text).style(theme::status()), area);
}

fn draw_picker(frame: &mut Frame, area: Rect, p: &Picker) {
    let h = (p.choices.len() as u16 + 4).clamp(6, area.height.saturating_sub(2));
    let w = area.width.saturating_sub(4).min(100);
    let rect = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height.saturating_sub(h)) / 2,
        w,
        h,
    );
    frame.render_widget(Clear, rect);
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(theme::border_focus())
        .title(Span::styled(
            " Launch a recipe · attach to a run ",
            theme::bold(),
        ));
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let width = inner.width as usize;
    let mut lines: Vec<Line> = Vec::new();
    if p.loading {
        lines.push(Line::from(Span::styled(
            "reading recipes/ and runs/…",
            theme::dim(),
        )));
    } else if p.choices.is_empty() {
        lines.push(Line::from(Span::styled(
            "no recipes/*.toml or runs/*/metrics.jsonl under the working directory",
            theme::dim(),
        )));
    }
    let rows = inner.height as usize;
    let first = p.selected.saturating_sub(rows.saturating_sub(2));
    let label_w = p
        .choices
        .iter()
        .map(|c| c.label.width())
        .max()
        .unwrap_or(0)
        .min(width / 2);
    for (i, c) in p.choices.iter().enumerate().skip(first).take(rows) {
        let verb = match c.kind {
            crate::train_view::ChoiceKind::Recipe { .. } => "launch",
            crate::train_view::ChoiceKind::Run { .. } => "attach",
        };
        let sel = i == p.selected;
        let label = truncate(&c.label, label_w);
        let pad = " ".repeat(label_w.saturating_sub(label.width()));
        let (detail, dstyle) = match &c.problem {
            Some(pr) => (format!("✗ {pr}"), theme::error()),
            None => (c.detail.clone(), theme::dim()),
        };
        let head = format!("{} {verb}  {label}{pad}  ", if sel { "▸" } else { " " });
        let detail = truncate(&detail, width.saturating_sub(head.width()));
        let style = if sel {
            theme::highlight()
        } else {
            ratatui::style::Style::new()
        };
        lines.push(Line::from(vec![
            Span::styled(head, style),
            Span::styled(detail, dstyle),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}
