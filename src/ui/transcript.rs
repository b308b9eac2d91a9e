//! The transcript: the visible thread of the conversation, newest at the bottom. Replies show
//! their thought folded to one line (streaming in a small pane while the model thinks), then the
//! answer in light Markdown. The selected reply, when the transcript has the focus, is drawn
//! token by token with the token cursor (and, on request, coloured by expert).
//!
//! Only the messages that reach the screen are laid out: a 10 000-token session costs what its
//! last screenful costs.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{markdown, theme, wrap::Wrapper};
use crate::app::{App, Focus};
use crate::runtime::engine::ModelInfo;
use crate::session::{Message, Role};
use crate::trace::{FinishReason, Phase, TokenRecord};

/// Lines of one message, and the line of the token cursor in it (if drawn there).
struct Block {
    lines: Vec<Line<'static>>,
    cursor_line: Option<usize>,
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let h = area.height as usize;
    if h == 0 || area.width < 8 {
        return;
    }
    let width = area.width as usize;
    let thread = app.session.conversation.thread();
    if thread.is_empty() {
        frame.render_widget(Paragraph::new(welcome(app)), area);
        return;
    }
    // Build blocks from the end backwards until the window is covered.
    let mut blocks: Vec<Block> = Vec::new();
    let mut total = 0usize;
    let mut from_bottom: Option<usize> = None;
    let follow = app.view_follows_cursor && app.focus == Focus::Transcript;
    let sel_pos = app
        .selected
        .and_then(|s| thread.iter().position(|&n| n == s));
    let mut i = thread.len();
    while i > 0 {
        i -= 1;
        let node = thread[i];
        let b = block(app, node, width, h);
        total += b.lines.len();
        if follow && Some(i) == sel_pos {
            // Lines from the cursor (or the message's end) to the bottom of the transcript.
            let after = total - b.lines.len();
            from_bottom = Some(match b.cursor_line {
                // Keep the cursor's line in the middle once it is off the bottom screenful.
                Some(c) if after + b.lines.len() - c > h => after + b.lines.len() - c - h / 2 - 1,
                Some(_) => 0,
                // A question: show it from its first line.
                None => (after + b.lines.len()).saturating_sub(h),
            });
        }
        blocks.push(b);
        let need = from_bottom.unwrap_or(if follow && sel_pos.is_some_and(|p| p < i) {
            usize::MAX / 2
        } else {
            app.scroll
        }) + h;
        if total >= need {
            break;
        }
    }
    let from_bottom = from_bottom
        .unwrap_or(app.scroll)
        .min(total.saturating_sub(h));
    let end = total - from_bottom;
    let start = end.saturating_sub(h);
    let lines: Vec<Line<'static>> = blocks
        .into_iter()
        .rev()
        .flat_map(|b| b.lines)
        .skip(start)
        .take(end - start)
        .collect();
    frame.render_widget(Paragraph::new(lines), area);
}

fn welcome(app: &App) -> Vec<Line<'static>> {
    let m = app.model_info();
    let mut v = vec![
        Line::from(""),
        Line::from(Span::styled("  thinkbench", theme::heading())),
        Line::from(Span::styled(
            "  a workbench for studying how R1-style models reason",
            theme::dim(),
        )),
        Line::from(""),
    ];
    if !m.id.is_empty() {
        // A dense model (the R1 distills) has no experts to count.
        let experts = if m.moe_layers.is_empty() {
            "dense".to_string()
        } else {
            format!(
                "{} with {} routed experts (top-{})",
                m.moe_layers.len(),
                m.n_experts,
                m.top_k
            )
        };
        v.push(Line::from(format!(
            "  model {} · {} layers, {experts}",
            m.id, m.num_layers
        )));
    }
    for l in [
        "  Type a question and press Enter: the thought streams, then folds to one line.",
        "  Tab moves to the transcript, where ← → walk the tokens of a reply,",
        "  r shows where each token was routed and p what else the model considered.",
        "  F1 lists every key.",
    ] {
        v.push(Line::from(l));
    }
    v
}

fn gutter(app: &App, node: usize, role: Role) -> Span<'static> {
    let selected = app.selected == Some(node) && app.focus == Focus::Transcript;
    match (selected, role) {
        (true, _) => Span::styled("┃ ", theme::selected_gutter()),
        (false, Role::User) => Span::styled("▌ ", theme::gutter_user()),
        _ => Span::styled("▌ ", theme::gutter_assistant()),
    }
}

fn block(app: &App, node: usize, width: usize, height: usize) -> Block {
    let m = app.message(node);
    let g = gutter(app, node, m.role);
    let mut lines = vec![header(app, node, m, &g)];
    let mut cursor_line = None;
    match m.role {
        Role::User => {
            let mut w = Wrapper::new(width, vec![g.clone()]);
            w.push(&m.content, Style::new());
            lines.extend(w.finish());
        }
        Role::Assistant => {
            let model = app.model_info();
            let token_mode = (app.selected == Some(node) && app.focus == Focus::Transcript)
                || app.inspector.colour;
            if token_mode {
                let (l, c) = token_view(app, node, m, model, width, &g);
                cursor_line = c.map(|c| c + lines.len());
                lines.extend(l);
            } else {
                lines.extend(thought_lines(app, node, m, model, width, height, &g));
                let answer = m.answer_text(model);
                if !answer.is_empty() {
                    lines.extend(markdown::render(&answer, width, &g, Style::new()));
                }
            }
            if let Some(e) = &m.error {
                let mut w = Wrapper::new(width, vec![g.clone()]);
                w.push(&format!("✗ {e}"), theme::error());
                lines.extend(w.finish());
            }
            match m.finish {
                Some(FinishReason::Cancelled) => lines.push(Line::from(vec![
                    g.clone(),
                    Span::styled("⏹ stopped", theme::dim()),
                ])),
                Some(FinishReason::Length) => lines.push(Line::from(vec![
                    g.clone(),
                    Span::styled("… cut at the token limit", theme::dim()),
                ])),
                _ => {}
            }
        }
        Role::Root => {}
    }
    lines.push(Line::from(""));
    Block { lines, cursor_line }
}

fn header(app: &App, node: usize, m: &Message, g: &Span<'static>) -> Line<'static> {
    let mut spans = vec![g.clone()];
    match m.role {
        Role::User => spans.push(Span::styled("You", theme::user_label())),
        _ => {
            let name = app.model_info().id.clone();
            spans.push(Span::styled(
                if name.is_empty() {
                    "model".into()
                } else {
                    name
                },
                theme::assistant_label(),
            ));
        }
    }
    let (pos, count) = app.session.conversation.sibling_pos(node);
    if count > 1 {
        spans.push(Span::styled(
            format!("  ‹{pos}/{count}›"),
            theme::hint_key(),
        ));
    }
    if m.role == Role::Assistant && !m.tokens.is_empty() {
        spans.push(Span::styled(
            format!("  {} tok", m.tokens.len()),
            theme::dim(),
        ));
    }
    if m.dropped_turns > 0 {
        // The reply was written without the thread's oldest turns (the context was full).
        spans.push(Span::styled(
            format!(
                "  · context full: saw all but the {}",
                crate::app::turns(m.dropped_turns, "oldest")
            ),
            theme::dim(),
        ));
    }
    if app.editing == Some(node) {
        spans.push(Span::styled("  (editing)", theme::thought_header()));
    }
    Line::from(spans)
}

fn secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// The thought: streaming pane, folded line, or unfolded text.
fn thought_lines(
    app: &App,
    node: usize,
    m: &Message,
    model: &ModelInfo,
    width: usize,
    height: usize,
    g: &Span<'static>,
) -> Vec<Line<'static>> {
    let n = m.thought_tokens();
    let live = app.generating.as_ref().filter(|gen| gen.node == node);
    let thinking = live.is_some()
        && m.tokens.last().is_none_or(|t| t.phase == Phase::Think)
        && m.think_secs.is_none();
    let cut = if m.thought_cut().is_some() {
        " · cut by the budget (c: keep thinking)"
    } else {
        ""
    };
    if thinking {
        let gen = live.expect("live");
        let elapsed = app.now - gen.prompt_done.unwrap_or(gen.started) + gen.think_base;
        let mut out = vec![Line::from(vec![
            g.clone(),
            Span::styled(
                format!("◆ thinking… {n} tokens · {}", secs(elapsed.max(0.0))),
                theme::thought_header(),
            ),
        ])];
        let text = m.thought_text(model);
        let mut w = Wrapper::new(width, vec![g.clone(), Span::styled("┊ ", theme::thought())]);
        w.push(&text, theme::thought());
        let lines = w.finish();
        // The pane shows the newest lines only; the whole thought unfolds with `t` later.
        let keep = (height / 3).clamp(3, 12);
        let skip = lines.len().saturating_sub(keep);
        if skip > 0 {
            out.push(Line::from(vec![
                g.clone(),
                Span::styled(format!("┊ … {skip} earlier lines"), theme::dim()),
            ]));
        }
        out.extend(lines.into_iter().skip(skip));
        return out;
    }
    if n == 0 {
        // A closed model reasons where nobody can read it; the count is all its API admits to.
        return match m.stats.as_ref().and_then(|s| s.reasoning_tokens) {
            Some(hidden) if hidden > 0 => vec![Line::from(vec![
                g.clone(),
                Span::styled(
                    format!("▸ reasoned for {hidden} tokens · the server does not show them"),
                    theme::thought_header(),
                ),
            ])],
            _ => Vec::new(),
        };
    }
    let dur = m
        .think_secs
        .map(|s| format!(", {}", secs(s)))
        .unwrap_or_default();
    if app.expanded.contains(&node) {
        let mut out = vec![Line::from(vec![
            g.clone(),
            Span::styled(
                format!("▾ thought for {n} tokens{dur}{cut}"),
                theme::thought_header(),
            ),
        ])];
        let mut w = Wrapper::new(width, vec![g.clone(), Span::styled("┊ ", theme::thought())]);
        w.push(&m.thought_text(model), theme::thought());
        out.extend(w.finish());
        out
    } else {
        let mut w = Wrapper::new(width, vec![g.clone()]);
        w.push(
            &format!("▸ thought for {n} tokens{dur}{cut}"),
            theme::thought_header(),
        );
        w.push("  (t unfolds)", theme::dim());
        w.finish()
    }
}

/// The top expert of `layer` for a token (highest weight; the first listed when a server sent
/// the experts without weights, as SGLang and vLLM list them by score).
pub fn top_expert(t: &TokenRecord, layer: usize) -> Option<u32> {
    let r = t.routing.iter().find(|r| r.layer == layer)?;
    if r.weights.is_empty() {
        return r.experts.first().copied();
    }
    r.experts
        .iter()
        .zip(&r.weights)
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(&e, _)| e)
}

/// Every token as its own span: thought dim, the cursor reversed, colours by expert if asked.
fn token_view(
    app: &App,
    node: usize,
    m: &Message,
    model: &ModelInfo,
    width: usize,
    g: &Span<'static>,
) -> (Vec<Line<'static>>, Option<usize>) {
    let selected = app.selected == Some(node) && app.focus == Focus::Transcript;
    let cursor = selected.then(|| app.cursor.min(m.tokens.len().saturating_sub(1)));
    let layer = app
        .inspector
        .colour
        .then(|| model.moe_layers.get(app.inspector.layer).copied())
        .flatten();
    let mut w = Wrapper::new(width, vec![g.clone()]);
    let mut phase = None;
    for (i, t) in m.tokens.iter().enumerate() {
        if phase != Some(t.phase) {
            if phase.is_some() {
                w.push("\n", Style::new());
            }
            let label = match t.phase {
                Phase::Think => "┊ thought ",
                Phase::Answer => "┊ answer ",
            };
            w.push(label, theme::thought_header());
            w.push("\n", Style::new());
            phase = Some(t.phase);
        }
        let mut style = match t.phase {
            Phase::Think => theme::thought(),
            Phase::Answer => Style::new(),
        };
        if let Some(e) = layer.and_then(|l| top_expert(t, l)) {
            style = style.patch(theme::expert(e));
        }
        let special = model.eos_ids.contains(&t.id)
            || model.think_ids.is_some_and(|(o, c)| t.id == o || t.id == c);
        if special {
            style = if t.forced {
                theme::forced()
            } else {
                theme::dim()
            };
        }
        let is_cursor = cursor == Some(i);
        if is_cursor {
            style = style.patch(theme::cursor());
            w.mark();
        }
        // The end-of-sequence marker is not prose: a small sign keeps it selectable, and the
        // token inspector names it.
        let text = if model.eos_ids.contains(&t.id) {
            "∎"
        } else {
            t.text.as_str()
        };
        if is_cursor && text.trim().is_empty() {
            // Make an invisible token visible under the cursor.
            let shown = if text.contains('\n') { "⏎" } else { "␣" };
            w.push(shown, style);
            if text.contains('\n') {
                w.push("\n", Style::new());
            }
        } else {
            w.push(text, style);
        }
        if t.forced {
            w.push(" ⟂budget ", theme::forced());
        }
    }
    let (lines, marks) = w.finish_marked();
    (lines, marks.first().copied())
}

/// A message as plain lines without the token cursor (inline mode prints these into the
/// terminal's scrollback once the message is final).
pub fn plain_lines(app: &App, node: usize, width: usize) -> Vec<Line<'static>> {
    let m = app.message(node);
    let g = match m.role {
        Role::User => Span::styled("▌ ", theme::gutter_user()),
        _ => Span::styled("▌ ", theme::gutter_assistant()),
    };
    let mut lines = vec![header(app, node, m, &g)];
    match m.role {
        Role::User => lines.extend(super::wrap::wrap_text(
            &m.content,
            width,
            Style::new(),
            vec![g.clone()],
        )),
        _ => {
            let model = app.model_info();
            let n = m.thought_tokens();
            if n > 0 {
                let dur = m
                    .think_secs
                    .map(|s| format!(", {}", secs(s)))
                    .unwrap_or_default();
                lines.push(Line::from(vec![
                    g.clone(),
                    Span::styled(
                        format!("▸ thought for {n} tokens{dur}"),
                        theme::thought_header(),
                    ),
                ]));
            }
            lines.extend(markdown::render(
                &m.answer_text(model),
                width,
                &g,
                Style::new(),
            ));
            if let Some(e) = &m.error {
                lines.push(Line::from(vec![
                    g.clone(),
                    Span::styled(format!("✗ {e}"), theme::error()),
                ]));
            }
        }
    }
    lines.push(Line::from(""));
    lines
}
