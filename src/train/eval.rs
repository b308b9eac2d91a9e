//! Evaluation on a task's held-out problems through the one decode loop (`runtime::generate_batch`):
//! accuracy, format-correct rate, reasoning length, all by difficulty level, and for MoE models
//! the expert load (share of routed slots per expert per layer) read from the routing trace.
//!
//! With `turns` N > 1 every problem is also asked as the 2nd … N-th question of a conversation
//! whose earlier turns are other problems of the same split with their correct answers (as the
//! workbench would send them: the answer, no reasoning), and the report gives accuracy by turn.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::balance::{layer_loads, LayerLoad, LoadCounter};
use super::conversation::{self, EarlierTurn};
use super::shape_stats::{shape_stats, ShapeStats};
use super::task::{content_hash, Example, Shape, Split, Task};
use crate::model::Model;
use crate::runtime::{generate_batch, GenerateRequest, Generation, SamplingParams};
use crate::text::TextCodec;
use crate::trace::FinishReason;

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub n: usize,
    pub seed: u64,
    /// Levels cycled through (problem i has level `levels[i % len]`).
    pub levels: Vec<u32>,
    pub max_new_tokens: usize,
    /// 0: greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub split: Split,
    /// Problems decoding together (continuous batching); 1 runs them one by one.
    pub batch: usize,
    /// Each problem is asked as the `first_turn`-th, …, `turns`-th question of a conversation
    /// (1: alone).
    pub first_turn: usize,
    pub turns: usize,
    /// Completions per question (k): accuracy is then pass@1 (the mean over the k) and each
    /// level also reports pass@k (any of the k right). Sampled: k > 1 needs a temperature.
    pub samples: usize,
}

/// One graded completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    pub level: u32,
    /// Which problem of the evaluation, and which of its `samples` completions.
    pub problem: usize,
    pub sample: usize,
    /// The problem was the `turn`-th question of its conversation (1: asked alone).
    pub turn: usize,
    /// The turns before it: each question and the reply the model was shown (its answer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<EarlierTurn>,
    pub prompt: String,
    pub answer: String,
    pub completion: String,
    pub extracted: Option<String>,
    pub correct: bool,
    pub format_ok: bool,
    /// Generated tokens before `</think>` (all of them if it never closed).
    pub reasoning_tokens: usize,
    pub generated_tokens: usize,
    /// Ran out of tokens before end-of-sentence.
    pub truncated: bool,
    /// How it reasoned, for tasks that analyse it (`Task::shape`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<Shape>,
    /// The token ids the model read and wrote, for re-reading the sequence with another model
    /// (`eval --kl`); empty where the completion did not come from the decode loop.
    #[serde(skip)]
    pub prompt_ids: Vec<u32>,
    #[serde(skip)]
    pub completion_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelReport {
    pub level: u32,
    pub n: usize,
    pub accuracy: f64,
    pub format_rate: f64,
    pub mean_reasoning_tokens: f64,
    /// Mean reasoning tokens of the right and of the wrong completions (None: there were none).
    pub mean_reasoning_tokens_right: Option<f64>,
    pub mean_reasoning_tokens_wrong: Option<f64>,
    /// With k > 1 samples per question: the share of questions with at least one right.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_at_k: Option<f64>,
    /// The reasoning's form, for tasks that analyse it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<ShapeStats>,
}

/// The problems asked as the `turn`-th question of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TurnReport {
    pub turn: usize,
    pub n: usize,
    pub accuracy: f64,
    pub format_rate: f64,
    pub by_level: Vec<LevelReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub task: String,
    pub split: &'static str,
    pub n: usize,
    pub seed: u64,
    pub temperature: f32,
    pub accuracy: f64,
    pub format_rate: f64,
    pub mean_reasoning_tokens: f64,
    pub mean_generated_tokens: f64,
    pub truncated_rate: f64,
    pub by_level: Vec<LevelReport>,
    /// Turn 1 (asked alone) to `turns`; the fields above are over all of them.
    pub by_turn: Vec<TurnReport>,
    /// Empty for dense models.
    pub expert_load: Vec<LayerLoad>,
    /// The smallest expert load over the mean, across layers (1: even; 0: an unused expert).
    pub min_expert_load_over_mean: Option<f64>,
    pub seconds: f64,
}

/// Problems decoding together by default. A step of many rows costs little more than a step of
/// one for a small model on a CPU (64: 3× faster than one by one on the built-in model).
pub const EVAL_BATCH: usize = 64;

/// The problems of an evaluation: problem `i` is drawn at `levels[i % len]` from its own seeded
/// stream, so the first k problems are the same whatever n is.
pub fn problems(task: &dyn Task, opts: &EvalOptions) -> Vec<Example> {
    (0..opts.n)
        .map(|i| {
            let mut rng = StdRng::seed_from_u64(content_hash(&[opts.seed, 0xE7A1, i as u64]));
            let level = opts.levels[i % opts.levels.len()];
            task.sample(&mut rng, level, opts.split)
        })
        .collect()
}

/// One generation of an evaluation: problem `index` asked after `earlier` turns.
struct Ask<'a> {
    index: usize,
    ex: &'a Example,
    earlier: Vec<Example>,
}

/// Every conversation an evaluation asks: the problem and the earlier problems before it (what
/// `thinkbench export trl` writes out as the held-out set).
pub fn conversations(task: &dyn Task, opts: &EvalOptions) -> Vec<(Example, Vec<Example>)> {
    let list = problems(task, opts);
    asks(task, &list, opts)
        .into_iter()
        .map(|a| (a.ex.clone(), a.earlier))
        .collect()
}

/// Every (problem, turn) of the evaluation, turn-major within a problem.
fn asks<'a>(task: &dyn Task, list: &'a [Example], opts: &EvalOptions) -> Vec<Ask<'a>> {
    let mut out = Vec::with_capacity(list.len() * opts.turns.max(1));
    for (index, ex) in list.iter().enumerate() {
        let history = if opts.turns > 1 {
            conversation::eval_turns(
                task,
                opts.seed,
                index,
                opts.turns - 1,
                &opts.levels,
                opts.split,
                ex,
            )
        } else {
            Vec::new()
        };
        for turn in opts.first_turn.max(1)..=opts.turns.max(1) {
            out.push(Ask {
                index,
                ex,
                earlier: history[..turn - 1].to_vec(),
            });
        }
    }
    out
}

/// The request for one problem: the conversation through the chat template, seeded by
/// `sample_seed`.
fn request_for(
    model: &Model,
    codec: &TextCodec,
    ask: &Ask,
    opts: &EvalOptions,
    sample_seed: u64,
) -> Result<GenerateRequest, String> {
    let prompt = codec
        .encode_chat(
            &conversation::messages(&conversation::answered(&ask.earlier), &ask.ex.prompt),
            true,
        )
        .map_err(|e| e.to_string())?;
    Ok(GenerateRequest {
        max_new_tokens: opts.max_new_tokens,
        sampling: SamplingParams {
            temperature: opts.temperature,
            top_p: opts.top_p,
            seed: sample_seed,
            ..SamplingParams::greedy()
        },
        eos_ids: super::rollout::eos_ids(model, codec),
        top_logprobs: 0,
        trace_routing: !model.moe_layers().is_empty(),
        ..GenerateRequest::new(prompt.ids)
    })
}

/// Grades one problem's generation; routing of the prompt and every generated token is added
/// to `load`.
fn grade(
    codec: &TextCodec,
    task: &dyn Task,
    ask: &Ask,
    gen: &Generation,
    sample: usize,
    load: &mut LoadCounter,
) -> Scored {
    if sample == 0 {
        for t in &gen.prompt {
            for r in &t.routing {
                load.add(r.layer, &r.experts);
            }
        }
    }
    let c = &gen.completions[sample];
    for t in &c.tokens {
        for r in &t.routing {
            load.add(r.layer, &r.experts);
        }
    }
    let close = codec.think_ids().map(|(_, close)| close);
    let reasoning_tokens = c
        .tokens
        .iter()
        .position(|t| Some(t.id) == close)
        .unwrap_or(c.tokens.len());
    let finished = c.finish_reason == FinishReason::Stop;
    Scored {
        problem: ask.index,
        sample,
        turn: ask.earlier.len() + 1,
        earlier: conversation::answered(&ask.earlier),
        prompt_ids: gen.prompt.iter().map(|t| t.id).collect(),
        completion_ids: c.ids(),
        ..score(
            task,
            ask.ex,
            &c.text,
            finished,
            reasoning_tokens,
            c.tokens.len(),
        )
    }
}

/// Grades one completion.
pub fn score(
    task: &dyn Task,
    ex: &Example,
    completion: &str,
    finished: bool,
    reasoning_tokens: usize,
    generated_tokens: usize,
) -> Scored {
    let g = task.grade(ex, completion, finished);
    Scored {
        level: ex.level,
        problem: 0,
        sample: 0,
        turn: 1,
        earlier: Vec::new(),
        prompt: ex.prompt.clone(),
        answer: ex.answer.clone(),
        completion: completion.to_string(),
        extracted: g.extracted,
        correct: g.correct,
        format_ok: g.format_ok,
        reasoning_tokens,
        generated_tokens,
        truncated: !finished,
        shape: task.shape(ex, completion),
        prompt_ids: Vec::new(),
        completion_ids: Vec::new(),
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

fn rate(items: &[&Scored], f: impl Fn(&Scored) -> bool) -> f64 {
    mean(items.iter().map(|s| f64::from(u8::from(f(s)))))
}

/// Accuracy, format rate and reasoning length of `items` by level.
fn level_reports(items: &[&Scored]) -> Vec<LevelReport> {
    let mut levels: Vec<u32> = items.iter().map(|s| s.level).collect();
    levels.sort_unstable();
    levels.dedup();
    levels
        .into_iter()
        .map(|level| {
            let these: Vec<&Scored> = items.iter().copied().filter(|s| s.level == level).collect();
            let tokens_when = |right: bool| {
                let xs: Vec<f64> = these
                    .iter()
                    .filter(|s| s.correct == right)
                    .map(|s| s.reasoning_tokens as f64)
                    .collect();
                (!xs.is_empty()).then(|| mean(xs.into_iter()))
            };
            LevelReport {
                level,
                n: these.len(),
                accuracy: rate(&these, |s| s.correct),
                format_rate: rate(&these, |s| s.format_ok),
                mean_reasoning_tokens: mean(these.iter().map(|s| s.reasoning_tokens as f64)),
                mean_reasoning_tokens_right: tokens_when(true),
                mean_reasoning_tokens_wrong: tokens_when(false),
                pass_at_k: pass_at_k(&these),
                shape: shape_stats(
                    these
                        .iter()
                        .filter_map(|s| s.shape.as_ref().map(|sh| (sh, s.correct))),
                ),
            }
        })
        .collect()
}

/// The share of questions (problem and turn) with at least one right completion; None when each
/// question has one.
fn pass_at_k(items: &[&Scored]) -> Option<f64> {
    let mut any: std::collections::BTreeMap<(usize, usize), bool> = Default::default();
    for s in items {
        *any.entry((s.problem, s.turn)).or_default() |= s.correct;
    }
    (any.len() < items.len()).then(|| rate_of(any.values().copied()))
}

fn rate_of(xs: impl Iterator<Item = bool>) -> f64 {
    mean(xs.map(|b| f64::from(u8::from(b))))
}

/// Aggregates graded completions (and the load counts) into the report.
pub fn summarize(
    task: &str,
    opts: &EvalOptions,
    items: &[Scored],
    load: &LoadCounter,
    seconds: f64,
) -> EvalReport {
    let all: Vec<&Scored> = items.iter().collect();
    let mut turns: Vec<usize> = items.iter().map(|s| s.turn).collect();
    turns.sort_unstable();
    turns.dedup();
    let by_turn = turns
        .into_iter()
        .map(|turn| {
            let these: Vec<&Scored> = items.iter().filter(|s| s.turn == turn).collect();
            TurnReport {
                turn,
                n: these.len(),
                accuracy: rate(&these, |s| s.correct),
                format_rate: rate(&these, |s| s.format_ok),
                by_level: level_reports(&these),
            }
        })
        .collect();
    let expert_load = layer_loads(&load.counts);
    let min_expert_load_over_mean = expert_load.iter().map(|l| l.min_over_mean).reduce(f64::min);
    EvalReport {
        task: task.to_string(),
        split: match opts.split {
            Split::HeldOut => "held_out",
            Split::Train => "train",
        },
        n: items.len(),
        seed: opts.seed,
        temperature: opts.temperature,
        accuracy: rate(&all, |s| s.correct),
        format_rate: rate(&all, |s| s.format_ok),
        mean_reasoning_tokens: mean(items.iter().map(|s| s.reasoning_tokens as f64)),
        mean_generated_tokens: mean(items.iter().map(|s| s.generated_tokens as f64)),
        truncated_rate: rate(&all, |s| s.truncated),
        by_level: level_reports(&all),
        by_turn,
        expert_load,
        min_expert_load_over_mean,
        seconds,
    }
}

/// Runs the whole evaluation; `progress(done, total)` is called after each problem.
pub fn evaluate(
    model: &Model,
    codec: &TextCodec,
    task: &dyn Task,
    opts: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize, &Scored),
) -> Result<(EvalReport, Vec<Scored>), String> {
    let t0 = Instant::now();
    let experts = model.config.moe.as_ref().map_or(0, |m| m.n_routed_experts);
    let mut load = LoadCounter::new(experts);
    let list = problems(task, opts);
    let asks = asks(task, &list, opts);
    let mut items = Vec::with_capacity(asks.len());
    // Problems decode together (continuous batching), a chunk at a time so progress shows.
    // A question's k samples decode together: keep about `batch` rows in flight.
    let batch = opts.batch.max(1);
    for chunk in asks.chunks((batch / opts.samples.max(1)).max(1)) {
        let reqs = chunk
            .iter()
            .map(|a| {
                // A lone question keeps the seed it always had; later turns get their own.
                let seed = match a.earlier.len() {
                    0 => content_hash(&[opts.seed, a.index as u64]),
                    k => content_hash(&[opts.seed, a.index as u64, k as u64]),
                };
                let mut req = request_for(model, codec, a, opts, seed)?;
                req.n = opts.samples.max(1);
                Ok(req)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let rows = batch.max(opts.samples);
        let gens = generate_batch(model, Some(codec), &reqs, rows).map_err(|e| e.to_string())?;
        for (a, gen) in chunk.iter().zip(&gens) {
            for sample in 0..gen.completions.len() {
                let s = grade(codec, task, a, gen, sample, &mut load);
                progress(items.len() + 1, asks.len() * opts.samples.max(1), &s);
                items.push(s);
            }
        }
    }
    let report = summarize(task.name(), opts, &items, &load, t0.elapsed().as_secs_f64());
    Ok((report, items))
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// Accuracy by level (rows) and by the problem's turn in its conversation (columns).
fn render_turns(report: &EvalReport) -> String {
    let mut out =
        String::from("\naccuracy by turn (the problem asked as the k-th question)\nlevel");
    for t in &report.by_turn {
        out.push_str(&format!(" {:>8}", format!("turn {}", t.turn)));
    }
    out.push('\n');
    for l in &report.by_level {
        out.push_str(&format!("{:>5}", l.level));
        for t in &report.by_turn {
            let cell = t
                .by_level
                .iter()
                .find(|x| x.level == l.level)
                .map_or("-".to_string(), |x| pct(x.accuracy));
            out.push_str(&format!(" {cell:>8}"));
        }
        out.push('\n');
    }
    out.push_str("  all");
    for t in &report.by_turn {
        out.push_str(&format!(" {:>8}", pct(t.accuracy)));
    }
    out.push('\n');
    out
}

/// pass@k and the reasoning's form by level: how often the model worked it out (long), how each
/// form fared, how long right and wrong reasoning ran, checks and waits per answer, and the
/// share of waits that followed a real slip.
fn render_shape(report: &EvalReport) -> String {
    let opt_pct = |x: Option<f64>| x.map_or("-".to_string(), pct);
    let opt_num = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.0}"));
    let mut out = String::from(
        "\nreasoning by level (tokens of right / wrong answers; acc of long / direct answers)\n\
         level  pass@k    long  acc long  acc dir  tok right  tok wrong  checks  waits  wait|slip\n",
    );
    for l in &report.by_level {
        let sh = l.shape.as_ref();
        out.push_str(&format!(
            "{:>5} {:>7} {:>7} {:>9} {:>8} {:>10} {:>10} {:>7} {:>6} {:>10}\n",
            l.level,
            opt_pct(l.pass_at_k),
            opt_pct(sh.map(|s| s.long_share)),
            opt_pct(sh.and_then(|s| s.accuracy_long)),
            opt_pct(sh.and_then(|s| s.accuracy_direct)),
            opt_num(l.mean_reasoning_tokens_right),
            opt_num(l.mean_reasoning_tokens_wrong),
            sh.map_or("-".into(), |s| format!("{:.2}", s.checks_per_answer)),
            sh.map_or("-".into(), |s| format!("{:.2}", s.waits_per_answer)),
            opt_pct(sh.and_then(|s| s.waits_after_slip)),
        ));
    }
    out
}

/// The report as a plain-text table.
pub fn render(report: &EvalReport, model: &str) -> String {
    let mut out = String::new();
    let mode = if report.temperature == 0.0 {
        "greedy".to_string()
    } else {
        format!("temperature {}", report.temperature)
    };
    // With turns, every problem is asked once per turn: say so rather than count questions.
    let problems = match report.by_turn.len() {
        0 | 1 => report.n.to_string(),
        t => format!("{} × {t} turns of", report.n / t),
    };
    out.push_str(&format!(
        "{model}: {problems} {} problems of {} (seed {}), {mode}, {:.1} s\n\n",
        report.split.replace('_', "-"),
        report.task,
        report.seed,
        report.seconds
    ));
    out.push_str(&format!(
        "accuracy {}   format {}   mean reasoning {:.1} tokens   truncated {}\n\n",
        pct(report.accuracy),
        pct(report.format_rate),
        report.mean_reasoning_tokens,
        pct(report.truncated_rate)
    ));
    out.push_str("level     n  accuracy    format  reasoning\n");
    for l in &report.by_level {
        out.push_str(&format!(
            "{:>5} {:>5} {:>9} {:>9} {:>10.1}\n",
            l.level,
            l.n,
            pct(l.accuracy),
            pct(l.format_rate),
            l.mean_reasoning_tokens
        ));
    }
    if report.by_turn.len() > 1 {
        out.push_str(&render_turns(report));
    }
    if report
        .by_level
        .iter()
        .any(|l| l.shape.is_some() || l.pass_at_k.is_some())
    {
        out.push_str(&render_shape(report));
    }
    if !report.expert_load.is_empty() {
        let e = report.expert_load[0].share.len();
        out.push_str(&format!(
            "\nexpert load: share of routed slots per expert (even = {:.1}%)\nlayer",
            100.0 / e as f64
        ));
        for i in 0..e {
            out.push_str(&format!(" {:>5}", format!("e{i}")));
        }
        out.push_str("  min/mean  max/mean\n");
        for l in &report.expert_load {
            out.push_str(&format!("{:>5}", l.layer));
            for s in &l.share {
                out.push_str(&format!(" {:>5.1}", 100.0 * s));
            }
            out.push_str(&format!(
                "  {:>8.2}  {:>8.2}\n",
                l.min_over_mean,
                l.max_violation + 1.0
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::task::arithmetic::Arithmetic;
    use std::collections::BTreeMap;

    fn opts() -> EvalOptions {
        EvalOptions {
            n: 4,
            seed: 0,
            levels: vec![1, 2],
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            split: Split::HeldOut,
            batch: EVAL_BATCH,
            first_turn: 1,
            turns: 1,
            samples: 1,
        }
    }

    #[test]
    fn report_from_hand_built_completions() {
        let eos = "<｜end▁of▁sentence｜>";
        let ex = |level: u32, answer: &str| Example {
            level,
            prompt: "p".into(),
            answer: answer.into(),
            reasoning: String::new(),
        };
        let items = vec![
            // right and well-formed
            score(
                &Arithmetic,
                &ex(1, "7"),
                &format!("r\n</think>\n\nThe answer is 7.{eos}"),
                true,
                10,
                20,
            ),
            // wrong answer, good format
            score(
                &Arithmetic,
                &ex(1, "8"),
                &format!("r\n</think>\n\nThe answer is 9.{eos}"),
                true,
                30,
                40,
            ),
            // right answer, chatter after it: correct but not well-formed
            score(
                &Arithmetic,
                &ex(2, "12"),
                &format!("r</think>The answer is 12. Sure?{eos}"),
                true,
                5,
                9,
            ),
            // never closed its thought: truncated, wrong, bad format
            score(&Arithmetic, &ex(2, "13"), "r r r r", false, 64, 64),
        ];
        let mut load = LoadCounter::new(4);
        load.counts = BTreeMap::from([(1, vec![3, 1, 0, 4])]);
        let r = summarize("arithmetic", &opts(), &items, &load, 1.0);
        assert_eq!(r.n, 4);
        assert_eq!(r.accuracy, 0.5);
        assert_eq!(r.format_rate, 0.5);
        assert_eq!(r.truncated_rate, 0.25);
        assert_eq!(r.mean_reasoning_tokens, (10 + 30 + 5 + 64) as f64 / 4.0);
        assert_eq!(r.by_level.len(), 2);
        assert_eq!(r.by_level[0].accuracy, 0.5);
        assert_eq!(r.by_level[0].format_rate, 1.0);
        assert_eq!(r.by_level[1].accuracy, 0.5);
        assert_eq!(r.by_level[1].format_rate, 0.0);
        assert_eq!(r.by_level[1].mean_reasoning_tokens, 34.5);
        assert_eq!(r.expert_load[0].share, vec![0.375, 0.125, 0.0, 0.5]);
        assert_eq!(r.min_expert_load_over_mean, Some(0.0));
        let table = render(&r, "m");
        assert!(table.contains("accuracy 50.0%   format 50.0%"), "{table}");
    }

    #[test]
    fn problems_are_held_out_and_cycle_levels() {
        let mut o = opts();
        o.n = 6;
        let p = problems(&Arithmetic, &o);
        let levels: Vec<u32> = p.iter().map(|e| e.level).collect();
        assert_eq!(levels, vec![1, 2, 1, 2, 1, 2]);
        // The first problems do not depend on n.
        o.n = 2;
        assert_eq!(problems(&Arithmetic, &o), p[..2].to_vec());
    }

    /// Two questions, two samples each: pass@2 counts a question once when either sample is
    /// right; reasoning tokens split by right and wrong; the multiplication task's completions
    /// carry their form (a direct and a long answer, counted by hand).
    #[test]
    fn samples_give_pass_at_k_and_the_reasoning_form() {
        use crate::train::task::multiplication::{teacher, Form, Multiplication};
        let eos = "<｜end▁of▁sentence｜>";
        let task = Multiplication::default();
        let ex = Example {
            level: 2,
            prompt: "What is 23 * 4?".into(),
            answer: "92".into(),
            reasoning: String::new(),
        };
        let reply = |reasoning: String, answer: &str| {
            format!("{reasoning}</think>\n\nThe answer is {answer}.{eos}")
        };
        let direct_wrong = reply("23*4 = 93.\n".into(), "93");
        let long_right = reply(teacher(23, 4, Form::Long), "92");
        let mut items = vec![
            score(&task, &ex, &direct_wrong, true, 5, 12),
            score(&task, &ex, &long_right, true, 60, 70),
            score(&task, &ex, &direct_wrong, true, 5, 12),
            score(&task, &ex, &direct_wrong, true, 7, 12),
        ];
        // Question 0 has samples 0 and 1 (one right), question 1 samples 0 and 1 (none).
        for (i, s) in items.iter_mut().enumerate() {
            s.problem = i / 2;
            s.sample = i % 2;
        }
        let mut o = opts();
        o.samples = 2;
        let r = summarize("multiplication", &o, &items, &LoadCounter::new(0), 1.0);
        let l = &r.by_level[0];
        assert_eq!(l.accuracy, 0.25);
        assert_eq!(l.pass_at_k, Some(0.5));
        assert_eq!(l.mean_reasoning_tokens_right, Some(60.0));
        assert_eq!(l.mean_reasoning_tokens_wrong, Some(17.0 / 3.0));
        let shape = l
            .shape
            .as_ref()
            .expect("multiplication analyses its completions");
        assert_eq!(shape.long_share, 0.25);
        assert_eq!(shape.checks_per_answer, 0.25);
        assert_eq!(shape.accuracy_long, Some(1.0));
        assert_eq!(shape.accuracy_direct, Some(0.0));
        let table = render(&r, "m");
        assert!(table.contains("pass@k"), "{table}");
        // One sample per question: no pass@k.
        let single = summarize(
            "arithmetic",
            &opts(),
            &items[..1],
            &LoadCounter::new(0),
            1.0,
        );
        assert_eq!(single.by_level[0].pass_at_k, None);
    }
}
