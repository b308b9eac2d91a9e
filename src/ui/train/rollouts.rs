//! The rollout viewer: one prompt's G completions at one step — a table with each completion's
//! reward (and each reward function's score), advantage, length and ending — and the chosen
//! completion's text, its thought dimmed. Wide terminals show several completions side by side.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::super::chrome::truncate;
use super::super::theme;
use super::super::wrap::Wrapper;
use crate::app::train::RunView;
use crate::app::App;
use crate::train_view::{RolloutCompletion, RolloutGroup, RolloutShape};

/// Each completion column is at least this wide when several are side by side.
const COLUMN_W: u16 = 44;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, run: &RunView) {
    let Some(step) = app.current_rollout_step() else {
        let msg = if run.rows.is_empty() {
            "no rollouts yet: they appear after the first step"
        } else {
            "charts only: this run has no rollouts.jsonl"
        };
        frame.render_widget(
            Paragraph::new(Span::styled(format!(" {msg}"), theme::dim())),
            area,
        );
        return;
    };
    let Some(groups) = app.loaded_groups() else {
        frame.render_widget(
            Paragraph::new(Span::styled(format!(" reading step {step}…"), theme::dim())),
            area,
        );
        return;
    };
    let v = &app.train.rollouts;
    let Some(g) = groups.get(v.group) else {
        frame.render_widget(
            Paragraph::new(Span::styled(
                format!(" step {step} logged no groups"),
                theme::dim(),
            )),
            area,
        );
        return;
    };
    let pos = run
        .rollout_steps
        .iter()
        .position(|s| s.step == step)
        .map_or(String::new(), |i| {
            format!(" ({}/{})", i + 1, run.rollout_steps.len())
        });
    let follow = if v.step.is_none() {
        " · following"
    } else {
        ""
    };
    let w = area.width as usize;
    let mut head = vec![Line::from(vec![
        Span::styled(format!(" step {step}{pos}{follow}"), theme::bold()),
        Span::raw(format!(
            " · prompt {}/{}{}{}",
            v.group + 1,
            groups.len(),
            g.level.map_or(String::new(), |l| format!(" · level {l}")),
            if g.round > 0 {
                format!(" · redrawn (round {})", g.round)
            } else {
                String::new()
            }
        )),
        Span::styled(
            if g.zero_std {
                " · zero std"
            } else if g.used {
                " · trained"
            } else {
                " · not trained"
            },
            if g.zero_std {
                theme::error()
            } else {
                theme::dim()
            },
        ),
    ])];
    // A question asked late in a conversation says how late: the earlier turns are in its prompt.
    let asked_after = match g.earlier.len() {
        0 => String::new(),
        1 => " (after 1 earlier turn)".to_string(),
        n => format!(" (after {n} earlier turns)"),
    };
    head.push(Line::from(vec![
        Span::styled(" Q ", theme::hint_key()),
        Span::raw(truncate(
            &one_line(&g.prompt),
            w.saturating_sub(20 + asked_after.chars().count()),
        )),
        Span::styled(format!("  = {}", g.answer), theme::dim()),
        Span::styled(asked_after, theme::dim()),
    ]));
    if g.zero_std {
        head.push(Line::from(Span::styled(
            truncate(
                " all rewards equal: advantage 0, so no gradient from this group",
                w,
            ),
            theme::dim(),
        )));
    }
    let table_h = g.completions.len() as u16 + 1;
    let [head_area, table_area, text_area] = Layout::vertical([
        Constraint::Length(head.len() as u16),
        Constraint::Length(table_h),
        Constraint::Min(3),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(head), head_area);
    draw_table(frame, table_area, g, v.completion);
    draw_texts(frame, text_area, g, v.completion, v.scroll);
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The reward functions of a group, in a stable order.
fn reward_names(g: &RolloutGroup) -> Vec<String> {
    g.completions
        .first()
        .map(|c| c.rewards.keys().cloned().collect())
        .unwrap_or_default()
}

fn draw_table(frame: &mut Frame, area: Rect, g: &RolloutGroup, selected: usize) {
    let names = reward_names(g);
    let short = |n: &str| -> String { n.chars().take(4).collect() };
    let mut header = String::from("    #  reward");
    for n in &names {
        header.push_str(&format!(" {:>5}", short(n)));
    }
    header.push_str("     adv   len  end    answer");
    let mut lines = vec![Line::from(Span::styled(
        truncate(&header, area.width as usize),
        theme::dim(),
    ))];
    for (k, c) in g.completions.iter().enumerate() {
        let sel = k == selected;
        let mut row = format!(
            "{} {:>2}  {:>6.3}",
            if sel { " ▸" } else { "  " },
            k + 1,
            c.reward
        );
        for n in &names {
            row.push_str(&format!(
                " {:>5.2}",
                c.rewards.get(n).copied().unwrap_or(0.0)
            ));
        }
        let adv = c
            .advantage
            .map_or("     —".to_string(), |a| format!("{a:>+6.2}"));
        row.push_str(&format!(
            "  {adv} {:>5}  {:<5}  ",
            c.tokens,
            if c.truncated { "trunc" } else { "eos" }
        ));
        let answer = c.extracted.clone().unwrap_or_else(|| "—".into());
        let mark = if c.correct { "✓" } else { "✗" };
        let style = if sel {
            theme::highlight()
        } else {
            Style::new()
        };
        let room = (area.width as usize).saturating_sub(row.width() + 2);
        lines.push(Line::from(vec![
            Span::styled(row, style),
            Span::styled(
                format!("{} {mark}", truncate(&answer, room)),
                if c.correct {
                    theme::assistant_label()
                } else {
                    theme::error()
                },
            ),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

/// The chosen completion's text; on wide terminals its neighbours beside it.
fn draw_texts(frame: &mut Frame, area: Rect, g: &RolloutGroup, selected: usize, scroll: usize) {
    let n = g.completions.len();
    if n == 0 {
        return;
    }
    let cols = ((area.width / COLUMN_W) as usize).clamp(1, n);
    // A window of `cols` completions that holds the selected one.
    let first = selected.saturating_sub(cols - 1).min(n - cols);
    let cells = Layout::horizontal(vec![Constraint::Ratio(1, cols as u32); cols]).split(area);
    for (i, cell) in cells.iter().enumerate() {
        let k = first + i;
        draw_text(
            frame,
            *cell,
            k,
            &g.completions[k],
            k == selected,
            if k == selected { scroll } else { 0 },
        );
    }
}

fn draw_text(
    frame: &mut Frame,
    area: Rect,
    k: usize,
    c: &RolloutCompletion,
    selected: bool,
    scroll: usize,
) {
    // The sub-rewards are in the table above; the title keeps what tells completions apart.
    let title = format!(
        " #{} · reward {:.3} · adv {} · {} tok{}{} ",
        k + 1,
        c.reward,
        c.advantage.map_or("—".to_string(), |a| format!("{a:+.2}")),
        c.tokens,
        if c.truncated { " · truncated" } else { "" },
        c.shape.as_ref().map_or(String::new(), shape_words),
    );
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(if selected {
            theme::border_focus()
        } else {
            theme::border()
        })
        .title(Span::styled(
            truncate(&title, area.width.saturating_sub(2) as usize),
            if selected {
                theme::bold()
            } else {
                theme::dim()
            },
        ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.width == 0 {
        return;
    }
    // The completion starts inside the thought (R1's template opens it in the prompt).
    let (thought, answer) = match c.text.split_once("</think>") {
        Some((t, a)) => (t, a),
        None => (c.text.as_str(), ""),
    };
    let mut w = Wrapper::new(inner.width as usize, Vec::new());
    let marks = c.shape.as_ref().map_or(&[][..], |s| s.marks.as_slice());
    for (piece, style) in marked(thought.trim_end(), marks) {
        w.push(piece, style);
    }
    if !answer.is_empty() || c.text.contains("</think>") {
        w.push("\n</think>\n", theme::dim());
        w.push(answer.trim(), Style::new());
    }
    let lines = w.finish();
    let max = lines.len().saturating_sub(inner.height as usize);
    let lines: Vec<Line> = lines.into_iter().skip(scroll.min(max)).collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The form of a completion's reasoning, for its title: " · long · 2 checks · 1 wait".
fn shape_words(s: &RolloutShape) -> String {
    let plural = |n: u32, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut out = String::from(if s.long { " · long" } else { " · direct" });
    if s.checks > 0 {
        out.push_str(&format!(" · {}", plural(s.checks, "check")));
    }
    if s.waits > 0 {
        out.push_str(&format!(" · {}", plural(s.waits, "wait")));
    }
    out
}

/// `thought` cut into pieces styled as a thought, with its check lines and "wait"s (byte ranges
/// of the completion, which the thought begins) marked; a wait inside a check line is marked as
/// a wait. Ranges past the text (a line from another producer) mark only what is there.
fn marked<'t>(
    thought: &'t str,
    marks: &[(std::ops::Range<usize>, String)],
) -> Vec<(&'t str, Style)> {
    let style_at = |i: usize| {
        let inside = |kind: &str| marks.iter().any(|(r, k)| k == kind && r.contains(&i));
        if inside("wait") {
            theme::wait_mark()
        } else if inside("check") {
            theme::check_mark()
        } else {
            theme::thought()
        }
    };
    let mut out: Vec<(&'t str, Style)> = Vec::new();
    let mut start = 0;
    let mut current = None;
    for (i, _) in thought.char_indices() {
        let style = style_at(i);
        if current.is_some_and(|c| c != style) {
            out.push((&thought[start..i], current.unwrap()));
            start = i;
        }
        current = Some(style);
    }
    if let Some(style) = current {
        out.push((&thought[start..], style));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check line with a "wait" inside it: the check is marked up to the wait, the wait on its
    /// own, and the rest stays thought; a range past the text marks nothing.
    #[test]
    fn checks_and_waits_are_cut_out_of_the_thought() {
        let text = "7*8 by parts\ncheck: 2 != 3, wait\nagain";
        let check = text.find("check").unwrap();
        let wait = text.find("wait").unwrap();
        let marks = vec![
            (
                check..check + "check: 2 != 3, wait".len(),
                "check".to_string(),
            ),
            (wait..wait + 4, "wait".to_string()),
            (100..104, "wait".to_string()),
        ];
        assert_eq!(
            marked(text, &marks),
            [
                ("7*8 by parts\n", theme::thought()),
                ("check: 2 != 3, ", theme::check_mark()),
                ("wait", theme::wait_mark()),
                ("\nagain", theme::thought()),
            ]
        );
        // Marks in order, not overlapping: check line, then a wait after it.
        let text = "check: ok\nwait, again";
        let marks = vec![(0..9, "check".to_string()), (10..14, "wait".to_string())];
        let styles: Vec<Style> = marked(text, &marks).into_iter().map(|(_, s)| s).collect();
        assert_eq!(
            styles,
            [
                theme::check_mark(),
                theme::thought(),
                theme::wait_mark(),
                theme::thought()
            ]
        );
        let shape = RolloutShape {
            long: true,
            checks: 2,
            waits: 1,
            ..Default::default()
        };
        assert_eq!(shape_words(&shape), " · long · 2 checks · 1 wait");
    }
}
