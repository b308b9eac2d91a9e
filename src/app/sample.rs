//! Scripted app states built from plain data, with no model: the snapshot tests, the update
//! tests and the render benchmark draw these.

use crate::app::{App, EngineState, Overrides};
use crate::runtime::engine::ModelInfo;
use crate::runtime::SamplingParams;
use crate::session::{Message, Role, Session};
use crate::trace::{FinishReason, GenStats, LayerRouting, Phase, PromptToken, TokenRecord};

pub const THINK: u32 = 300;
pub const END_THINK: u32 = 301;
pub const EOS: u32 = 1;

/// A DeepSeek-like model description: `moe_layers` routed layers after one dense layer.
pub fn model(moe_layers: usize, n_experts: usize, top_k: usize) -> ModelInfo {
    ModelInfo {
        id: "sample-moe".into(),
        dir: "/models/sample-moe".into(),
        model_type: "deepseek_v3".into(),
        checkpoint_hash: "fnv1a64:0123456789abcdef".into(),
        device: "cpu".into(),
        dtype: "f32".into(),
        quant: None,
        num_layers: moe_layers + 1,
        moe_layers: (1..=moe_layers).collect(),
        n_experts,
        top_k,
        context: 4096,
        eos_ids: vec![EOS],
        think_ids: Some((THINK, END_THINK)),
        sampling: SamplingParams::default(),
        max_new_tokens: None,
        remote: None,
        capabilities: Default::default(),
    }
}

/// A small deterministic generator (the same states on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn unit(&mut self) -> f32 {
        (self.next() % 10_000) as f32 / 10_000.0
    }
}

fn routing(m: &ModelInfo, rng: &mut Lcg, phase: Phase) -> Vec<LayerRouting> {
    m.moe_layers
        .iter()
        .map(|&layer| {
            let mut experts: Vec<u32> = Vec::new();
            while experts.len() < m.top_k.min(m.n_experts) {
                // Thinking leans on the low half of the experts, answering on the high half, so
                // the load view has something to show.
                let half = (m.n_experts / 2).max(1) as u64;
                let e = match (phase, rng.next() % 3) {
                    (Phase::Think, 0 | 1) => rng.next() % half,
                    (Phase::Answer, 0 | 1) => {
                        half + rng.next() % (m.n_experts as u64 - half).max(1)
                    }
                    _ => rng.next() % m.n_experts as u64,
                } as u32;
                if !experts.contains(&e) {
                    experts.push(e);
                }
            }
            let weights = experts.iter().map(|_| 0.2 + rng.unit() * 2.0).collect();
            LayerRouting {
                layer,
                experts,
                weights,
            }
        })
        .collect()
}

/// Splits text into word-sized tokens (a space starts a token, as in BPE vocabularies).
fn pieces(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, part) in text.split(' ').enumerate() {
        let p = if i == 0 {
            part.to_string()
        } else {
            format!(" {part}")
        };
        // Newlines become their own tokens.
        let mut rest = p.as_str();
        while let Some(j) = rest.find('\n') {
            if j > 0 {
                out.push(rest[..j].to_string());
            }
            out.push("\n".into());
            rest = &rest[j + 1..];
        }
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    out
}

fn token(
    m: &ModelInfo,
    rng: &mut Lcg,
    id: u32,
    text: &str,
    phase: Phase,
    session: &mut Session,
) -> TokenRecord {
    let p = 0.3 + rng.unit() * 0.65;
    let mut top = vec![(id, p.ln())];
    let mut rest = 1.0 - p;
    for k in 0..4u32 {
        let alt = 2 + (id * 7 + k * 13 + rng.next() as u32 % 5) % 280;
        let q = rest * (0.3 + rng.unit() * 0.4);
        rest -= q;
        top.push((alt, q.max(1e-6).ln()));
        session
            .token_texts
            .entry(alt)
            .or_insert_with(|| format!("alt{alt}"));
    }
    session.token_texts.insert(id, text.to_string());
    let entropy = 0.2 + (1.0 - p) * 3.0 + if text.contains("Wait") { 1.5 } else { 0.0 };
    TokenRecord {
        id,
        text: text.to_string(),
        logprob: p.ln(),
        top,
        entropy,
        phase,
        routing: routing(m, rng, phase),
        forced: false,
    }
}

/// A reply: the thought, `</think>`, the answer and an end-of-sequence token.
pub fn reply(
    session: &mut Session,
    m: &ModelInfo,
    thought: &str,
    answer: &str,
    seed: u64,
) -> Vec<TokenRecord> {
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    let next_id = |t: &str| 2 + (t.bytes().map(u32::from).sum::<u32>() % 290);
    for p in pieces(thought) {
        let id = next_id(&p);
        out.push(token(m, &mut rng, id, &p, Phase::Think, session));
    }
    out.push(token(
        m,
        &mut rng,
        END_THINK,
        "</think>",
        Phase::Think,
        session,
    ));
    for p in pieces(answer) {
        let id = next_id(&p);
        out.push(token(m, &mut rng, id, &p, Phase::Answer, session));
    }
    out.push(token(
        m,
        &mut rng,
        EOS,
        "<｜end▁of▁sentence｜>",
        Phase::Answer,
        session,
    ));
    out
}

fn prompt(m: &ModelInfo, n: usize) -> Vec<PromptToken> {
    let mut rng = Lcg(7);
    (0..n)
        .map(|i| PromptToken {
            id: i as u32 % 290 + 2,
            routing: routing(m, &mut rng, Phase::Answer),
        })
        .collect()
}

fn finished(
    tokens: Vec<TokenRecord>,
    think_secs: f64,
    prompt_len: usize,
    m: &ModelInfo,
) -> Message {
    let mut msg = Message::new(Role::Assistant, "");
    let n = tokens.len();
    msg.tokens = tokens;
    msg.prompt = prompt(m, prompt_len);
    msg.finish = Some(FinishReason::Stop);
    msg.think_secs = Some(think_secs);
    msg.gen_secs = Some(think_secs + 1.2);
    msg.stats = Some(GenStats {
        prompt_tokens: prompt_len,
        generated_tokens: n,
        prefill_tokens_per_s: 812.0,
        decode_tokens_per_s: 41.5,
        ..GenStats::default()
    });
    msg
}

pub const QUESTION_1: &str = "What is 17 + 25?";
pub const THOUGHT_1: &str = "The user asks for 17 + 25. Add the tens: 10 + 20 = 30. Add the ones: 7 + 5 = 12. Then 30 + 12 = 42. Wait, let me double-check: 25 + 17 = 42. Yes.";
pub const ANSWER_1: &str =
    "**17 + 25 = 42.**\n\n- tens: 10 + 20 = 30\n- ones: 7 + 5 = 12\n\nSo the sum is *42*.";
pub const QUESTION_2: &str = "Now write it in Python.";
pub const THOUGHT_2: &str = "A one-line function is enough. I should show a call too.";
pub const ANSWER_2: &str = "## In Python\n\n```python\ndef add(a, b):\n    return a + b\n\nprint(add(17, 25))  # 42\n```\n\nRun it with `python3 add.py`.";

/// A finished two-turn chat whose first reply has two branches, with a loaded model.
pub fn chat() -> App {
    let m = model(2, 8, 2);
    let mut s = Session::new(1_796_000_000);
    s.model = Some(m.clone());
    let old = reply(&mut s, &m, "Count up from 17 by 25.", "It is 42.", 3);
    let r1 = reply(&mut s, &m, THOUGHT_1, ANSWER_1, 11);
    let r2 = reply(&mut s, &m, THOUGHT_2, ANSWER_2, 5);
    let c = &mut s.conversation;
    let u1 = c.push(0, Message::new(Role::User, QUESTION_1));
    c.push(u1, finished(old, 0.9, 14, &m));
    let a1 = c.push(u1, finished(r1, 3.1, 14, &m));
    let u2 = c.push(a1, Message::new(Role::User, QUESTION_2));
    c.push(u2, finished(r2, 1.4, 120, &m));
    let mut app = App::new(s, EngineState::Ready, Overrides::default());
    app.model = Some(m);
    app.now = 100.0;
    app
}

/// The chat with a third question whose reply is still thinking (mid-stream).
pub fn streaming() -> App {
    let mut app = chat();
    let m = app.model_info().clone();
    let last = *app
        .session
        .conversation
        .thread()
        .last()
        .expect("chat has a thread");
    let user = app
        .session
        .conversation
        .push(last, Message::new(Role::User, "Is 42 prime?"));
    let mut tokens = reply(
        &mut app.session,
        &m,
        "42 is even, so it is divisible by 2. 42 = 2 × 3 × 7. So it is not prime. Wait, I should check that 2 × 3 × 7 is 42: 2 × 3 = 6, 6 × 7 = 42.",
        "",
        9,
    );
    tokens.truncate(30);
    let mut msg = Message::new(Role::Assistant, "");
    msg.tokens = tokens;
    let node = app.session.conversation.push(user, msg);
    app.generating = Some(crate::app::Generating {
        job: 7,
        node,
        started: 98.0,
        prompt_done: Some(98.2),
        think_base: 0.0,
        reused: 160,
    });
    app.selected = Some(node);
    app.cursor = 29;
    app.cursor_follow = true;
    app
}

/// One long reply of about `n` tokens (thought and answer), for the render benchmark.
pub fn long(n: usize, moe_layers: usize, n_experts: usize, top_k: usize) -> App {
    let m = model(moe_layers, n_experts, top_k);
    let mut s = Session::new(1_796_000_000);
    s.model = Some(m.clone());
    let u = s.conversation.push(
        0,
        Message::new(Role::User, "Prove that there are infinitely many primes."),
    );
    let sentence = "Suppose there are finitely many primes p1 … pn. Consider N = p1 × … × pn + 1. Wait, is N prime? Not necessarily, but any prime factor of N is not among them.";
    let words_per = sentence.split(' ').count() + 1;
    let think: Vec<&str> = std::iter::repeat_n(sentence, n * 3 / 4 / words_per + 1).collect();
    let answer: Vec<&str> = std::iter::repeat_n(sentence, n / 4 / words_per + 1).collect();
    let tokens = reply(&mut s, &m, &think.join("\n"), &answer.join("\n\n"), 42);
    s.conversation.push(u, finished(tokens, 95.0, 30, &m));
    let mut app = App::new(s, EngineState::Ready, Overrides::default());
    app.model = Some(m);
    app
}

/// The Train tab on the committed fixture run (tests/fixtures/train_run: a real 6-step GRPO run of
/// the built-in model, G = 4, two prompts per step, β = 0.04), showing `pane`, read the way the
/// workbench's watcher reads it. Paths are relative to the crate root (where tests run).
pub fn train_run(pane: crate::app::TrainPane) -> App {
    train_run_from("tests/fixtures/train_run", pane)
}

/// The Train tab watching the committed run in `dir`, showing `pane`.
pub fn train_run_from(dir: &str, pane: crate::app::TrainPane) -> App {
    use crate::app::{Action, Command, TrainAction, TrainCommand};
    use crate::train_view::watcher::RunReader;
    use crate::train_view::{ProcessState, TrainEvent};
    let mut app = chat();
    let dir = std::path::PathBuf::from(dir);
    let ev = |e: TrainEvent| Action::Train(TrainAction::Event(e));
    app.update(Action::ToggleView);
    app.update(ev(TrainEvent::Watching {
        dir: dir.clone(),
        process: ProcessState::Attached,
    }));
    let mut reader = RunReader::new(dir.clone());
    let update = reader
        .poll()
        .expect("the fixture run reads")
        .expect("it has lines");
    let mut cmds = app.update(ev(TrainEvent::Update(update)));
    cmds.extend(app.update(Action::Train(TrainAction::Show(pane))));
    while let Some(c) = cmds.pop() {
        if let Command::Train(TrainCommand::LoadRollouts(step)) = c {
            let groups = reader.read_step(step).expect("the fixture's rollouts read");
            cmds.extend(app.update(ev(TrainEvent::Rollouts {
                dir: dir.clone(),
                step,
                groups,
            })));
        }
    }
    app.notice = None;
    app
}
