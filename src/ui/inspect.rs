//! The inspectors, which follow the token cursor:
//! - routing: the selected token's layer × expert map with the weights of the chosen experts, or
//!   the expert load per layer over the whole message split by phase (thinking vs answer);
//! - tokens: the selected token's top alternatives with probabilities, its entropy, and an
//!   entropy strip over the message that shows where the model hesitated.
//!
//! Many experts (DeepSeek-V3 has 256) are grouped so a row fits the pane: each cell then stands
//! for a run of consecutive experts, and the exact ids and weights are listed beside the map.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::theme;
use crate::app::{App, RoutingView};
use crate::session::Message;
use crate::trace::{LayerRouting, Phase, TokenRecord};

/// A dim note, wrapped to the pane (why something is not there).
fn note(text: &str, width: usize) -> Vec<Line<'static>> {
    let mut w = super::wrap::Wrapper::new(width.max(8), Vec::new());
    w.push(text, theme::dim());
    w.finish()
}

fn pane(title: String, focus: bool) -> Block<'static> {
    Block::new()
        .borders(Borders::ALL)
        .border_style(if focus {
            theme::border_focus()
        } else {
            theme::border()
        })
        .title(Span::styled(title, theme::bold()))
}

/// A token's text made visible: quotes around it, newlines and tabs as symbols.
pub fn show_token(text: &str) -> String {
    if text.is_empty() {
        // A byte of a character that the following token(s) complete.
        return "‹partial character›".into();
    }
    let t = text.replace('\n', "⏎").replace('\t', "⇥");
    format!("‘{t}’")
}

/// How experts map to cells: `group` experts per cell, each cell `cell_w` columns wide.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Grid {
    group: usize,
    cell_w: usize,
    cells: usize,
}

fn grid(n_experts: usize, width: usize) -> Grid {
    let n = n_experts.max(1);
    let width = width.max(1);
    if n <= width {
        let cell_w = (width / n).clamp(1, 3);
        Grid {
            group: 1,
            cell_w,
            cells: n,
        }
    } else {
        let group = n.div_ceil(width);
        Grid {
            group,
            cell_w: 1,
            cells: n.div_ceil(group),
        }
    }
}

fn cells(values: &[f32], g: Grid) -> Vec<Span<'static>> {
    let max = values.iter().copied().fold(0.0f32, f32::max);
    (0..g.cells)
        .map(|c| {
            let v: f32 = values[c * g.group..((c + 1) * g.group).min(values.len())]
                .iter()
                .sum();
            let (ch, style) = theme::heat(if max > 0.0 { v / max } else { 0.0 });
            Span::styled(ch.repeat(g.cell_w), style)
        })
        .collect()
}

/// The window of `n` rows that shows `sel` (rows scroll with the chosen layer).
fn window(n: usize, rows: usize, sel: usize) -> std::ops::Range<usize> {
    if n <= rows {
        return 0..n;
    }
    let start = sel.saturating_sub(rows / 2).min(n - rows);
    start..start + rows
}

fn axis(label_w: usize, g: Grid, n_experts: usize) -> Line<'static> {
    // Expert ids at regular steps under the map's columns.
    let mut s = " ".repeat(label_w);
    let step_cells = (8 / g.cell_w).max(1);
    let mut c = 0;
    while c < g.cells {
        let label = (c * g.group).to_string();
        let room = step_cells * g.cell_w;
        if c * g.group < n_experts && label.len() <= room {
            s.push_str(&format!("{label:<room$}"));
        }
        c += step_cells;
    }
    Line::from(Span::styled(s, theme::dim()))
}

pub fn draw_routing(frame: &mut Frame, area: Rect, app: &App) {
    let model = app.model_info();
    let layer_name = model
        .moe_layers
        .get(app.inspector.layer)
        .map_or(String::new(), |l| format!(" · layer {l}"));
    let title = match app.inspector.view {
        RoutingView::Token => format!(" Routing: selected token{layer_name} "),
        RoutingView::Load => format!(" Routing: expert load over the reply{layer_name} "),
    };
    let block = pane(title, true);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    let no_routing = model.capabilities.no_routing.as_deref();
    let width = inner.width as usize;
    let lines = match (app.inspected(), model.moe_layers.is_empty()) {
        (_, true) => note(
            no_routing.unwrap_or("this model has no routed experts (dense): nothing to route"),
            width,
        ),
        (Some((_, m)), _)
            if no_routing.is_some() && m.tokens.iter().all(|t| t.routing.is_empty()) =>
        {
            note(no_routing.unwrap_or_default(), width)
        }
        (None, _) => vec![Line::from(Span::styled(
            "select a reply (Tab, then ↑ ↓) to see its routing",
            theme::dim(),
        ))],
        (Some((_, m)), _) if m.tokens.is_empty() => {
            vec![Line::from(Span::styled("no tokens yet", theme::dim()))]
        }
        (Some((_, m)), _) => {
            let both = app.inspector.view == RoutingView::Token
                && inner.height as usize > 2 * (model.moe_layers.len() + 4);
            match app.inspector.view {
                RoutingView::Token if both => {
                    let mut l =
                        token_routing(app, m, inner.width as usize, inner.height as usize / 2);
                    l.push(Line::from(""));
                    let rest = inner.height as usize - l.len();
                    l.extend(load_map(app, m, inner.width as usize, rest));
                    l
                }
                RoutingView::Token => {
                    token_routing(app, m, inner.width as usize, inner.height as usize)
                }
                RoutingView::Load => load_map(app, m, inner.width as usize, inner.height as usize),
            }
        }
    };
    frame.render_widget(Paragraph::new(lines), inner);
}

fn token_routing(app: &App, m: &Message, width: usize, height: usize) -> Vec<Line<'static>> {
    let model = app.model_info();
    let idx = app.cursor.min(m.tokens.len() - 1);
    let t = &m.tokens[idx];
    let mut out = vec![Line::from(vec![
        Span::styled(show_token(&t.text), theme::bold()),
        Span::styled(
            format!("  #{}/{} · {}", idx + 1, m.tokens.len(), t.phase),
            theme::dim(),
        ),
    ])];
    let k = model.top_k.max(1);
    let label_w = 4;
    let list_w = k * 9;
    let avail = width.saturating_sub(label_w + 1);
    let with_list = avail > model.n_experts + list_w;
    let g = grid(
        model.n_experts,
        if with_list { avail - list_w - 1 } else { avail },
    );
    out.push(axis(label_w, g, model.n_experts));
    // Room under the map for the legend, and for the chosen layer's list when it is not beside.
    let rows = height.saturating_sub(out.len() + 1 + usize::from(!with_list));
    let layers = &model.moe_layers;
    for li in window(layers.len(), rows, app.inspector.layer) {
        let layer = layers[li];
        let mut values = vec![0.0f32; model.n_experts.max(1)];
        let r = t.routing.iter().find(|r| r.layer == layer);
        if let Some(r) = r {
            for (e, w) in chosen(r, k) {
                if let Some(v) = values.get_mut(e as usize) {
                    *v += w.unwrap_or(1.0);
                }
            }
        }
        let sel = li == app.inspector.layer;
        let mut spans = vec![Span::styled(
            format!("{}{:<3}", if sel { "▶" } else { " " }, format!("L{layer}")),
            if sel { theme::hint_key() } else { theme::dim() },
        )];
        spans.extend(cells(&values, g));
        if with_list {
            spans.push(Span::raw(" "));
            if let Some(r) = r {
                spans.extend(expert_list(r, k));
            } else {
                // A server sends no row for the last token: it never went through the model.
                let why = if model.remote.is_some() && idx + 1 == m.tokens.len() {
                    "(none for the last token)"
                } else {
                    "(not traced)"
                };
                spans.push(Span::styled(why, theme::dim()));
            }
        }
        out.push(Line::from(spans));
    }
    if out.len() < height {
        let group = if g.group > 1 {
            format!(" · {} experts per cell", g.group)
        } else {
            String::new()
        };
        let legend = if model.capabilities.routing_weights {
            format!("░▒▓█ weight{group} · , . layer · v load")
        } else {
            format!("█ chosen{group} · the server sends no gate weights · , . layer · v load")
        };
        out.push(Line::from(Span::styled(legend, theme::dim())));
    }
    if !with_list {
        // Too narrow for the lists: the chosen layer's experts on one line.
        if let Some(r) = layers
            .get(app.inspector.layer)
            .and_then(|&l| t.routing.iter().find(|r| r.layer == l))
        {
            let mut spans = vec![Span::styled(format!("L{} ", r.layer), theme::hint_key())];
            spans.extend(expert_list(r, k));
            out.push(Line::from(spans));
        }
    }
    out.truncate(height);
    out
}

/// A layer's chosen experts with their gate weights, or without (`None`) when a server sent
/// the experts alone. Fewer than `top_k` means the server padded some out: those are missing,
/// never expert 0.
fn chosen(r: &LayerRouting, _top_k: usize) -> Vec<(u32, Option<f32>)> {
    if r.weights.len() == r.experts.len() {
        r.experts
            .iter()
            .zip(&r.weights)
            .map(|(&e, &w)| (e, Some(w)))
            .collect()
    } else {
        r.experts.iter().map(|&e| (e, None)).collect()
    }
}

/// The chosen experts as spans, heaviest first; missing (padded) slots as `–`.
fn expert_list(r: &LayerRouting, top_k: usize) -> Vec<Span<'static>> {
    let mut pairs = chosen(r, top_k);
    pairs.sort_by(|a, b| b.1.unwrap_or(0.0).total_cmp(&a.1.unwrap_or(0.0)));
    let mut spans = Vec::new();
    for (e, w) in &pairs {
        spans.push(Span::styled(format!("e{e}"), theme::expert(*e)));
        spans.push(Span::styled(
            w.map_or("  ".into(), |w| format!(" {w:.2} ")),
            theme::dim(),
        ));
    }
    for _ in pairs.len()..top_k {
        spans.push(Span::styled("–  ", theme::dim()));
    }
    spans
}

/// Expert choices per layer over a reply, counted separately for its two phases.
pub fn load_counts(m: &Message, layers: &[usize], n_experts: usize) -> [Vec<Vec<f32>>; 2] {
    let mut think = vec![vec![0.0f32; n_experts.max(1)]; layers.len()];
    let mut answer = think.clone();
    for t in &m.tokens {
        let table = match t.phase {
            Phase::Think => &mut think,
            Phase::Answer => &mut answer,
        };
        for r in &t.routing {
            if let Some(li) = layers.iter().position(|&l| l == r.layer) {
                for &e in &r.experts {
                    if let Some(v) = table[li].get_mut(e as usize) {
                        *v += 1.0;
                    }
                }
            }
        }
    }
    [think, answer]
}

fn load_map(app: &App, m: &Message, width: usize, height: usize) -> Vec<Line<'static>> {
    let model = app.model_info();
    let layers = &model.moe_layers;
    let [think, answer] = load_counts(m, layers, model.n_experts);
    let n_think = m.tokens.iter().filter(|t| t.phase == Phase::Think).count();
    let n_answer = m.tokens.len() - n_think;
    let label_w = 4;
    let half = width.saturating_sub(label_w + 3) / 2;
    let g = grid(model.n_experts, half);
    let grid_w = g.cells * g.cell_w;
    let mut out = vec![Line::from(vec![
        Span::raw(" ".repeat(label_w)),
        Span::styled(
            format!("{:<w$}", format!("think · {n_think} tok"), w = grid_w + 3),
            theme::thought_header(),
        ),
        Span::styled(format!("answer · {n_answer} tok"), theme::hint_key()),
    ])];
    let rows = height.saturating_sub(2);
    for li in window(layers.len(), rows, app.inspector.layer) {
        let sel = li == app.inspector.layer;
        let mut spans = vec![Span::styled(
            format!(
                "{}{:<3}",
                if sel { "▶" } else { " " },
                format!("L{}", layers[li])
            ),
            if sel { theme::hint_key() } else { theme::dim() },
        )];
        spans.extend(cells(&think[li], g));
        spans.push(Span::styled(" │ ", theme::dim()));
        spans.extend(cells(&answer[li], g));
        out.push(Line::from(spans));
    }
    if out.len() < height {
        // The chosen layer's busiest experts in each phase.
        if let Some(li) = (app.inspector.layer < layers.len()).then_some(app.inspector.layer) {
            let top = |v: &[f32]| -> String {
                let mut idx: Vec<usize> = (0..v.len()).filter(|&i| v[i] > 0.0).collect();
                idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
                idx.iter()
                    .take(3)
                    .map(|&i| format!("e{i}×{}", v[i] as u64))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            out.push(Line::from(Span::styled(
                format!(
                    "L{} busiest: think {} · answer {}",
                    layers[li],
                    top(&think[li]),
                    top(&answer[li])
                ),
                theme::dim(),
            )));
        }
    }
    out.truncate(height);
    out
}

pub fn draw_tokens(frame: &mut Frame, area: Rect, app: &App) {
    let block = pane(" Tokens: alternatives and entropy ".into(), true);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let (w, h) = (inner.width as usize, inner.height as usize);
    if h == 0 {
        return;
    }
    let lines = match app.inspected() {
        None => vec![Line::from(Span::styled(
            "select a reply (Tab, then ↑ ↓) to see its tokens",
            theme::dim(),
        ))],
        Some((_, m)) if m.tokens.is_empty() => {
            vec![Line::from(Span::styled("no tokens yet", theme::dim()))]
        }
        Some((_, m)) => token_lines(app, m, w, h),
    };
    frame.render_widget(Paragraph::new(lines), inner);
}

fn token_lines(app: &App, m: &Message, w: usize, h: usize) -> Vec<Line<'static>> {
    let idx = app.cursor.min(m.tokens.len() - 1);
    let t = &m.tokens[idx];
    let caps = &app.model_info().capabilities;
    if t.logprob.is_nan() {
        // From a server that gives none; or a reply opened from a GRPO rollout log: its text
        // was tokenised again, and the log keeps no probabilities; a scoring pass brings them
        // (or could not).
        let scoring = app.inspected().and_then(|(node, _)| app.scoring_with(node));
        let why = match (scoring, &app.model_info().remote) {
            (Some(label), _) => format!("scoring with {label}: probabilities and routing follow…"),
            (None, Some(_)) => caps
                .no_logprobs
                .clone()
                .unwrap_or_else(|| "the server sent no log-probabilities for this token".into()),
            (None, None) => {
                "not scored (a rollout log has no probabilities); R regenerates a full trace".into()
            }
        };
        return vec![Line::from(vec![
            Span::styled(show_token(&t.text), theme::bold()),
            Span::styled(
                format!("  {} · {}", token_id(t.id, caps.token_ids), t.phase),
                theme::dim(),
            ),
        ])]
        .into_iter()
        .chain(note(&why, w))
        .collect();
    }
    let mut out = vec![Line::from(vec![
        Span::styled(show_token(&t.text), theme::bold()),
        Span::styled(
            format!(
                "  {} · p {:.3} · {} · {}{}",
                token_id(t.id, caps.token_ids),
                t.logprob.exp(),
                entropy_label(t, caps.full_entropy),
                t.phase,
                if t.forced {
                    " · forced by the budget"
                } else {
                    ""
                }
            ),
            theme::dim(),
        ),
    ])];
    let strip_rows = if h >= 5 { 2 } else { 0 };
    let rows = h.saturating_sub(out.len() + strip_rows);
    let bar_w = (w / 4).clamp(4, 20);
    let mut shown_chosen = false;
    for &(id, lp) in t.top.iter().take(rows) {
        let p = lp.exp();
        let chosen = id == t.id;
        shown_chosen |= chosen;
        out.push(alt_line(app, id, p, chosen, bar_w));
    }
    if !shown_chosen && rows > t.top.len().min(rows) {
        out.push(alt_line(app, t.id, t.logprob.exp(), true, bar_w));
    }
    while out.len() + strip_rows < h {
        out.push(Line::from(""));
    }
    if strip_rows > 0 {
        out.extend(entropy_strip(m, idx, w));
    }
    out
}

/// A token's id, or that the server named it only by its text.
fn token_id(id: u32, known: bool) -> String {
    if known {
        format!("id {id}")
    } else {
        "id not sent".into()
    }
}

/// The entropy, said to be over the returned alternatives when that is all a server gave.
fn entropy_label(t: &TokenRecord, full: bool) -> String {
    match (t.entropy.is_nan(), full) {
        (true, _) => "H not known (no alternatives sent)".into(),
        (false, true) => format!("H {:.2} nats", t.entropy),
        (false, false) => format!("H≥{:.2} nats over {} returned", t.entropy, t.top.len()),
    }
}

fn alt_line(app: &App, id: u32, p: f32, chosen: bool, bar_w: usize) -> Line<'static> {
    let text = app
        .session
        .token_texts
        .get(&id)
        .map_or(format!("#{id}"), |s| show_token(s));
    let eighths = (p.clamp(0.0, 1.0) * (bar_w * 8) as f32).round() as usize;
    let mut bar = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        bar.push_str(["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"][eighths % 8]);
    }
    let pad = bar_w + 1 - bar.chars().count().min(bar_w + 1);
    Line::from(vec![
        Span::styled(if chosen { "▶ " } else { "  " }, theme::hint_key()),
        Span::styled(
            format!("{:>5.1}% ", p * 100.0),
            if chosen { theme::bold() } else { Style::new() },
        ),
        Span::styled(
            bar,
            if chosen {
                theme::hint_key()
            } else {
                theme::dim()
            },
        ),
        Span::raw(" ".repeat(pad)),
        Span::styled(text, if chosen { theme::bold() } else { Style::new() }),
    ])
}

/// Entropy over the whole reply, one cell per run of tokens (the run's highest entropy), and a
/// marker under the cursor's cell.
pub fn entropy_strip(m: &Message, cursor: usize, w: usize) -> Vec<Line<'static>> {
    let label = "H ";
    let cells = w.saturating_sub(label.len()).max(1);
    let n = m.tokens.len();
    let per = n.div_ceil(cells).max(1);
    // Scaled from the reply's calmest to its most hesitant token, so variation shows even when
    // every token is uncertain.
    let max = m.tokens.iter().map(|t| t.entropy).fold(0.0f32, f32::max);
    let min = m
        .tokens
        .iter()
        .map(|t| t.entropy)
        .fold(f32::INFINITY, f32::min);
    let span = (max - min).max(1e-6);
    let mut spans = vec![Span::styled(label, theme::dim())];
    let chunks: Vec<&[TokenRecord]> = m.tokens.chunks(per).collect();
    for chunk in &chunks {
        let e = (chunk.iter().map(|t| t.entropy).fold(0.0f32, f32::max) - min) / span;
        let level = ((e * 7.0).round() as usize).min(7);
        let style = if chunk[0].phase == Phase::Think {
            theme::thought_header()
        } else {
            theme::hint_key()
        };
        spans.push(Span::styled(theme::BARS[level], style));
    }
    let at = cursor / per;
    let count = format!("{}/{}", cursor + 1, n);
    let marker = if at + count.len() + 2 < cells {
        format!("{}{}▲ {count}", " ".repeat(label.len()), " ".repeat(at))
    } else {
        let pad = (label.len() + at).saturating_sub(count.len() + 1);
        format!("{}{count} ▲", " ".repeat(pad))
    };
    vec![
        Line::from(spans),
        Line::from(Span::styled(marker, theme::dim())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_fit_the_width() {
        assert_eq!(
            grid(8, 40),
            Grid {
                group: 1,
                cell_w: 3,
                cells: 8
            }
        );
        assert_eq!(
            grid(64, 40),
            Grid {
                group: 2,
                cell_w: 1,
                cells: 32
            }
        );
        let g = grid(256, 60);
        assert_eq!((g.group, g.cells), (5, 52));
        assert!(g.cells * g.cell_w <= 60);
    }

    #[test]
    fn window_keeps_the_selection_visible() {
        assert_eq!(window(5, 10, 3), 0..5);
        assert_eq!(window(58, 10, 0), 0..10);
        assert_eq!(window(58, 10, 30), 25..35);
        assert_eq!(window(58, 10, 57), 48..58);
    }
}
