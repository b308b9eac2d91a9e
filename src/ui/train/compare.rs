//! Checkpoint A/B: one prompt through the run's starting model and one of its checkpoints
//! (greedy, so the difference is the weights'): each side's answer, how long it reasoned, and how
//! its tokens spread over the experts of each MoE layer.

use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::super::chrome::truncate;
use super::super::theme;
use super::super::wrap::Wrapper;
use crate::app::train::{CompareSide, CompareStatus, RunView};
use crate::app::App;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, run: &RunView) {
    let c = &app.train.compare;
    let [head, prompt, sides] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Min(4),
    ])
    .areas(area);
    let base = run
        .info
        .base_model
        .as_ref()
        .map_or("? (no recipe.json)".into(), |p| p.display().to_string());
    let ck = match app.compare_checkpoint() {
        Some(s) => {
            let i = run.checkpoints.iter().position(|&x| x == s).unwrap_or(0);
            format!(
                "step {s} ({}/{} on disk, ← →)",
                i + 1,
                run.checkpoints.len()
            )
        }
        None => "none yet".into(),
    };
    let text = format!(" base {base}  vs  checkpoint {ck}");
    frame.render_widget(Paragraph::new(truncate(&text, head.width as usize)), head);

    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(if c.editing {
            theme::border_focus()
        } else {
            theme::border()
        })
        .title(Span::styled(
            " Prompt (e edit · Enter run both, greedy · p from the rollout viewer) ",
            if c.editing {
                theme::hint_key()
            } else {
                theme::dim()
            },
        ));
    let inner = block.inner(prompt);
    frame.render_widget(block, prompt);
    let (_, col) = c.prompt.cursor_pos();
    let w = inner.width as usize;
    let xoff = col.saturating_sub(w.saturating_sub(1));
    let shown: String = c
        .prompt
        .text
        .replace('\n', " ")
        .chars()
        .skip(xoff)
        .collect();
    frame.render_widget(Paragraph::new(shown), inner);
    if c.editing && inner.width > 0 {
        frame.set_cursor_position(Position::new(
            inner.x + (col - xoff).min(w.saturating_sub(1)) as u16,
            inner.y,
        ));
    }

    let cols = Layout::horizontal([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).split(sides);
    if c.sides.is_empty() {
        let hint = " Enter runs the prompt through both models; their answers, reasoning length and expert load appear here side by side.";
        let lines = Wrapper::new(sides.width as usize, Vec::new());
        let mut lines = lines;
        lines.push(hint, theme::dim());
        frame.render_widget(Paragraph::new(lines.finish()), sides);
        return;
    }
    for (s, r) in c.sides.iter().zip(cols.iter()) {
        draw_side(frame, *r, s);
    }
}

fn draw_side(frame: &mut Frame, area: Rect, s: &CompareSide) {
    let (status, style) = match &s.status {
        CompareStatus::Idle => ("idle".to_string(), theme::dim()),
        CompareStatus::Running if s.model.is_none() => ("loading…".into(), theme::status_busy()),
        CompareStatus::Running => ("generating…".into(), theme::status_busy()),
        CompareStatus::Done(r) => (format!("{r:?}").to_lowercase(), theme::dim()),
        CompareStatus::Failed(_) => ("failed".into(), theme::error()),
    };
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(theme::border())
        .title(Line::from(vec![
            Span::styled(format!(" {} ", s.label), theme::bold()),
            Span::styled(format!("{status} "), style),
        ]));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let w = inner.width as usize;
    if w == 0 {
        return;
    }
    let mut lines: Vec<Line> = Vec::new();
    if let CompareStatus::Failed(e) = &s.status {
        let mut wr = Wrapper::new(w, Vec::new());
        wr.push(e, theme::error());
        lines.extend(wr.finish());
    }
    lines.push(Line::from(vec![
        Span::styled("reasoning ", theme::dim()),
        Span::styled(format!("{} tok", s.think_tokens), theme::bold()),
        Span::styled(" · answer ", theme::dim()),
        Span::raw(format!("{} tok", s.answer_tokens)),
    ]));
    let mut wr = Wrapper::new(w, Vec::new());
    wr.push("answer ", theme::dim());
    wr.push(
        if s.answer.trim().is_empty() {
            "(no answer yet)"
        } else {
            s.answer.trim()
        },
        Style::new(),
    );
    lines.extend(wr.finish().into_iter().take(3));
    lines.push(Line::from(Span::styled(
        "expert load (× the even share)",
        theme::heading(),
    )));
    lines.extend(load_lines(s, w));
    let room = (inner.height as usize).saturating_sub(lines.len());
    if room > 1 && !s.thought.is_empty() {
        let mut wr = Wrapper::new(w, Vec::new());
        wr.push(&format!("thought: {}", s.thought.trim()), theme::thought());
        lines.extend(wr.finish().into_iter().take(room));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// One line per MoE layer: each expert's share of the layer's choices as a bar (full height:
/// twice the even share or more), then the busiest expert's load over the even share.
fn load_lines(s: &CompareSide, w: usize) -> Vec<Line<'static>> {
    if s.load.is_empty() {
        let msg = match (&s.model, s.status == CompareStatus::Running) {
            (Some(m), _) if m.moe_layers.is_empty() => "a dense model: no experts",
            (_, true) => "…",
            _ => "no routing recorded",
        };
        return vec![Line::from(Span::styled(msg, theme::dim()))];
    }
    let mut out = Vec::new();
    for (layer, counts) in &s.load {
        let total: u32 = counts.iter().sum();
        if total == 0 || counts.is_empty() {
            continue;
        }
        let even = total as f64 / counts.len() as f64;
        let label = format!("L{layer:<2} ");
        let tail_w = 8;
        let bar_room = w.saturating_sub(label.len() + tail_w).max(1);
        // Many experts: one cell per run of experts (their busiest).
        let per = counts.len().div_ceil(bar_room);
        let cells: Vec<f64> = counts
            .chunks(per)
            .map(|c| c.iter().copied().max().unwrap_or(0) as f64 / even)
            .collect();
        let bar: Vec<Span> = cells
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let level = ((x / 2.0) * 8.0).round().clamp(0.0, 7.0) as usize;
                let style = if x == 0.0 {
                    theme::dim()
                } else {
                    theme::expert((i * per) as u32)
                };
                Span::styled(if x == 0.0 { "·" } else { theme::BARS[level] }, style)
            })
            .collect();
        let max = counts.iter().copied().max().unwrap_or(0) as f64 / even;
        let mut spans = vec![Span::styled(label, theme::dim())];
        spans.extend(bar);
        spans.push(Span::styled(format!("  {max:.1}×"), theme::dim()));
        out.push(Line::from(spans));
    }
    out
}
