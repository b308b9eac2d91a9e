//! Live charts of a run's metrics: as many as fit in a grid (4 at 80×24, 12 at 160×48), the
//! rest a page away. Each chart's title carries its newest value, so a glance reads like the
//! headless log.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use super::super::theme;
use crate::app::train::RunView;

/// Charts need at least this much room to say anything.
const MIN_W: u16 = 38;
const MIN_H: u16 = 9;

const PALETTE: [Color; 5] = [
    Color::Cyan,
    Color::Yellow,
    Color::Magenta,
    Color::Green,
    Color::LightRed,
];

type Points = Vec<(f64, f64)>;

/// One line on a chart: a metric by its name in metrics.jsonl.
struct Series {
    label: String,
    key: String,
}

/// What one chart shows.
struct Spec {
    title: &'static str,
    series: Vec<Series>,
    /// Draw mean ± std of the first series from this key (the reward spread).
    band: Option<&'static str>,
    /// Overlay the held-out evaluations (accuracy).
    evals: bool,
    /// Bars instead of a line (shares).
    bars: bool,
    /// Shown when the run never logs this metric.
    absent: &'static str,
    /// Values are shares, shown as percentages.
    percent: bool,
}

fn series(pairs: &[(&str, &str)]) -> Vec<Series> {
    pairs
        .iter()
        .map(|(label, key)| Series {
            label: label.to_string(),
            key: key.to_string(),
        })
        .collect()
}

fn spec(title: &'static str, s: Vec<Series>) -> Spec {
    Spec {
        title,
        series: s,
        band: None,
        evals: false,
        bars: false,
        absent: "not logged by this run",
        percent: false,
    }
}

/// The charts, in the order a GRPO user reads them: is it learning, is it stable, is it fast.
fn specs(run: &RunView) -> Vec<Spec> {
    let mut reward = vec![Series {
        label: "mean".into(),
        key: "reward".into(),
    }];
    for n in run.reward_names() {
        reward.push(Series {
            label: n.clone(),
            key: format!("rewards/{n}/mean"),
        });
    }
    // An MoE policy's router drift: the share of completion tokens the update routed to other
    // experts than the rollout did (pooled, then per layer). Dense runs never log it.
    let layers = run.mismatch_layers();
    let mismatch = (!layers.is_empty()).then(|| {
        let mut s = series(&[("all", "router/mismatch")]);
        for l in layers {
            s.push(Series {
                label: l.replace("layer_", "L"),
                key: format!("router/mismatch/{l}"),
            });
        }
        // Rollouts sampled in another precision than the update: said in the title, since
        // that alone makes the routers disagree.
        let title = match run.info.rollout_dtype.as_deref() {
            Some("bf16") => "router mismatch, bf16 rollouts",
            Some("f16") => "router mismatch, f16 rollouts",
            _ => "router mismatch",
        };
        Spec {
            percent: true,
            ..spec(title, s)
        }
    });
    let mut out = vec![
        Spec {
            band: Some("reward_std"),
            ..spec("reward", reward)
        },
        Spec {
            evals: true,
            percent: true,
            ..spec("accuracy", series(&[("batch", "accuracy")]))
        },
        Spec {
            absent: "β = 0: no KL term (no reference model)",
            ..spec("KL", series(&[("k3", "kl")]))
        },
        spec("entropy", series(&[("nats", "entropy")])),
        spec("loss", series(&[("loss", "loss")])),
        Spec {
            percent: true,
            ..spec(
                "clip ratio",
                series(&[
                    ("low", "clip_ratio/low_mean"),
                    ("high", "clip_ratio/high_mean"),
                ]),
            )
        },
        spec(
            "length",
            series(&[
                ("mean", "completions/mean_length"),
                ("min", "completions/min_length"),
                ("max", "completions/max_length"),
            ]),
        ),
        Spec {
            bars: true,
            percent: true,
            ..spec(
                "zero-std groups",
                series(&[("share", "frac_reward_zero_std")]),
            )
        },
        spec("tokens/s", series(&[("gen", "tokens_per_s")])),
        spec(
            "s/step",
            series(&[
                ("step", "step_time"),
                ("rollout", "rollout_time"),
                ("update", "update_time"),
            ]),
        ),
        spec("grad norm", series(&[("norm", "grad_norm")])),
        spec("reflection words", series(&[("count", "reflection_words")])),
    ];
    if let Some(m) = mismatch {
        out.insert(3, m);
    }
    // A task whose teacher reasons in two forms: how the rollouts reasoned, right after
    // accuracy — what an experiment on *how* the model thinks watches first.
    if run.logs_shape() {
        let form = spec(
            "reasoning form",
            series(&[
                ("long", "shape/long"),
                ("checks", "shape/checks"),
                ("waits", "shape/waits"),
            ]),
        );
        let by_form = Spec {
            percent: true,
            ..spec(
                "accuracy by form",
                series(&[
                    ("long", "shape/accuracy_long"),
                    ("direct", "shape/accuracy_direct"),
                    ("wait|slip", "shape/waits_after_slip"),
                ]),
            )
        };
        out.insert(2, by_form);
        out.insert(2, form);
    }
    out
}

/// How many charts fit across and down.
pub fn grid(area: Rect) -> (usize, usize) {
    let cols = (area.width / MIN_W).clamp(1, 4) as usize;
    let rows = (area.height / MIN_H).clamp(1, 3) as usize;
    (cols, rows)
}

pub fn draw(frame: &mut Frame, area: Rect, run: &RunView, page: usize) {
    let all = specs(run);
    let (cols, rows) = grid(Rect {
        height: area.height.saturating_sub(1),
        ..area
    });
    let per_page = cols * rows;
    let pages = all.len().div_ceil(per_page);
    let page = page % pages;
    let [grid_area, footer] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(area);
    let row_areas =
        Layout::vertical(vec![Constraint::Ratio(1, rows as u32); rows]).split(grid_area);
    let shown = &all[page * per_page..((page + 1) * per_page).min(all.len())];
    for (i, s) in shown.iter().enumerate() {
        let cells = Layout::horizontal(vec![Constraint::Ratio(1, cols as u32); cols])
            .split(row_areas[i / cols]);
        draw_chart(frame, cells[i % cols], run, s);
    }
    let names: Vec<&str> = shown.iter().map(|s| s.title).collect();
    let footer_text = if pages > 1 {
        format!(
            " page {}/{pages} ({}) · ← → for more",
            page + 1,
            names.join(", ")
        )
    } else {
        format!(" {} steps logged", run.rows.len())
    };
    frame.render_widget(
        Paragraph::new(Span::styled(footer_text, theme::dim())),
        footer,
    );
}

fn fmt(v: f64, percent: bool) -> String {
    if percent {
        return format!("{:.0}%", v * 100.0);
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.001 {
        format!("{v:.3}")
    } else {
        format!("{v:.1e}")
    }
}

fn draw_chart(frame: &mut Frame, area: Rect, run: &RunView, s: &Spec) {
    let points: Vec<Vec<(f64, f64)>> = s
        .series
        .iter()
        .map(|se| {
            run.rows
                .iter()
                .filter_map(|r| Some((r.step as f64, r.get(&se.key)?)))
                .filter(|(_, y)| y.is_finite())
                .collect()
        })
        .collect();
    // Mean + std above, mean - std below.
    let band: Option<(Points, Points)> = s.band.map(|k| {
        run.rows
            .iter()
            .filter_map(|r| Some((r.step as f64, r.get(&s.series[0].key)?, r.get(k)?)))
            .map(|(x, m, sd)| ((x, m + sd), (x, m - sd)))
            .unzip()
    });
    let evals: Vec<(f64, f64)> = if s.evals {
        run.evals
            .iter()
            .map(|e| (e.step as f64, e.accuracy))
            .collect()
    } else {
        Vec::new()
    };
    // Title: the chart's name and the newest value of each series.
    let mut title = vec![Span::styled(format!(" {} ", s.title), theme::bold())];
    for (i, (se, p)) in s.series.iter().zip(&points).enumerate() {
        if let Some(&(_, y)) = p.last() {
            let mut v = fmt(y, s.percent);
            if i == 0 {
                if let Some((hi, _)) = &band {
                    if let Some(&(_, top)) = hi.last() {
                        v.push_str(&format!(" ±{}", fmt(top - y, false)));
                    }
                }
            }
            // The first series is what the title names; the others say what they are, briefly.
            let label = if i > 0 {
                format!("{} ", se.label.chars().take(4).collect::<String>())
            } else {
                String::new()
            };
            title.push(Span::styled(
                format!("{label}{v} "),
                Style::new().fg(PALETTE[i % PALETTE.len()]),
            ));
        }
    }
    if let Some(e) = run.evals.last().filter(|_| s.evals) {
        title.push(Span::styled(
            format!("held-out {} ", fmt(e.accuracy, true)),
            Style::new().fg(Color::White),
        ));
    }
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(theme::border())
        .title(Line::from(title));
    if points.iter().all(Vec::is_empty) && evals.is_empty() {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let msg = if run.rows.is_empty() {
            "waiting for the first step"
        } else {
            s.absent
        };
        frame.render_widget(Paragraph::new(Span::styled(msg, theme::dim())), inner);
        return;
    }
    let all_x = points.iter().flatten().chain(&evals).map(|p| p.0);
    let (x0, x1) = bounds(all_x, false);
    let band_ys = band
        .iter()
        .flat_map(|(a, b)| a.iter().chain(b.iter()).map(|p| p.1));
    let all_y = points
        .iter()
        .flatten()
        .chain(&evals)
        .map(|p| p.1)
        .chain(band_ys);
    let (y0, y1) = bounds(all_y, s.bars);
    let mut sets = Vec::new();
    if let Some((hi, lo)) = &band {
        for b in [hi, lo] {
            sets.push(
                Dataset::default()
                    .marker(Marker::Braille)
                    .graph_type(GraphType::Line)
                    .style(theme::dim())
                    .data(b),
            );
        }
    }
    for (i, p) in points.iter().enumerate().rev() {
        sets.push(
            Dataset::default()
                .marker(if s.bars {
                    Marker::HalfBlock
                } else {
                    Marker::Braille
                })
                .graph_type(if s.bars {
                    GraphType::Bar
                } else {
                    GraphType::Line
                })
                .style(Style::new().fg(PALETTE[i % PALETTE.len()]))
                .data(p),
        );
    }
    if !evals.is_empty() {
        sets.push(
            Dataset::default()
                .marker(Marker::Dot)
                .graph_type(GraphType::Scatter)
                .style(Style::new().fg(Color::White))
                .data(&evals),
        );
    }
    let chart = Chart::new(sets)
        .block(block)
        .x_axis(
            Axis::default()
                .bounds([x0, x1])
                .style(theme::dim())
                .labels([format!("{x0:.0}"), format!("{x1:.0}")]),
        )
        .y_axis(
            Axis::default()
                .bounds([y0, y1])
                .style(theme::dim())
                .labels([fmt(y0, s.percent), fmt(y1, s.percent)]),
        );
    frame.render_widget(chart, area);
}

/// The range of `vals`, widened when flat so a constant still draws as a line mid-chart.
fn bounds(vals: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    // Shares, counts and lengths never go below zero: neither does their axis.
    let non_negative = lo >= 0.0;
    if from_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-12 {
        let pad = if hi.abs() > 1e-12 {
            hi.abs() * 0.1
        } else {
            1.0
        };
        lo -= pad;
        hi += pad;
    }
    if non_negative {
        lo = lo.max(0.0);
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train_view::{ProcessState, StepRow};

    fn run_logging(keys: &[&str]) -> RunView {
        let mut run = RunView::new("runs/x".into(), ProcessState::Attached);
        run.rows.push(StepRow {
            step: 1,
            values: keys.iter().map(|k| (k.to_string(), 0.01)).collect(),
        });
        run
    }

    /// An MoE run's router mismatch is charted right after KL, pooled and per layer; a dense
    /// run (which never logs it) gets no empty chart for it.
    #[test]
    fn router_mismatch_is_charted_only_when_logged() {
        let moe = run_logging(&[
            "reward",
            "router/mismatch",
            "router/mismatch/layer_1",
            "router/mismatch/layer_3",
        ]);
        let charts = specs(&moe);
        assert_eq!(charts[3].title, "router mismatch");
        let labels: Vec<&str> = charts[3].series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["all", "L1", "L3"]);
        assert_eq!(charts[3].series[2].key, "router/mismatch/layer_3");
        // A last step with no update (every group skipped) logs no mismatch: still charted.
        let mut idle_end = moe;
        idle_end.rows.push(StepRow {
            step: 2,
            values: [("reward".to_string(), 0.1)].into(),
        });
        assert_eq!(specs(&idle_end)[3].title, "router mismatch");
        let dense = specs(&run_logging(&["reward"]));
        assert!(dense.iter().all(|c| c.title != "router mismatch"));
        // Rollouts in bf16 (generation.dtype in recipe.json): the title says so.
        let mut bf16 = run_logging(&["reward", "router/mismatch", "router/mismatch/layer_1"]);
        bf16.info = crate::train_view::run::RunInfo::from_recipe_json(
            &serde_json::json!({"generation": {"dtype": "bf16"}}),
        );
        assert_eq!(specs(&bf16)[3].title, "router mismatch, bf16 rollouts");
        assert_eq!(dense.len() + 1, charts.len());
        // A run logging the reasoning's form gets its two charts right after accuracy.
        let shaped = specs(&run_logging(&["reward", "shape/long", "shape/waits"]));
        assert_eq!(shaped[2].title, "reasoning form");
        assert_eq!(shaped[3].title, "accuracy by form");
        assert_eq!(shaped.len(), dense.len() + 2);
    }
}
