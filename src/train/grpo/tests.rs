//! The GRPO loop's tests: gradients, resume, LoRA, workers, every architecture fixture.

use super::pass::{completion_hidden, completion_logprobs, Watch};
use super::*;
use crate::model::checkpoint::Checkpoint;
use crate::model::NoProbe;
use crate::train::loss::token_loss;
use crate::train::recipe::{parse, Recipe, TEST_GRPO_RECIPE};

/// The test recipe writing to `out`, with `edits` (from, to) applied to its text.
fn recipe(out: &Path, edits: &[(&str, &str)]) -> GrpoRecipe {
    let mut text = TEST_GRPO_RECIPE.replace(
        "output_dir = \"runs/g\"",
        &format!("output_dir = {:?}", out.display().to_string()),
    );
    for (from, to) in edits {
        assert!(text.contains(from), "{from}");
        text = text.replacen(from, to, 1);
    }
    match parse("test.toml", &text).unwrap() {
        Recipe::Grpo(r) => *r,
        Recipe::Sft(_) => panic!("a GRPO recipe"),
    }
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        skip_eval: true,
        ..Default::default()
    }
}

fn weights(dir: &Path) -> BTreeMap<String, Tensor> {
    Checkpoint::read_all_f32(dir)
}

/// Rows of one real rollout of the builtin model with the given advantages.
fn rows_with(trainer: &Trainer, advantages: &[f64]) -> Vec<Row> {
    let src = Source::from_recipe(&trainer.r.data, 1).unwrap();
    let p = &src.draw(0, 0, 1)[0];
    let g = rollouts(
        &trainer.model,
        &trainer.codec,
        &[p],
        &trainer.r.generation,
        &trainer.eos,
        &[5],
    )
    .unwrap()
    .remove(0);
    g.samples
        .iter()
        .zip(advantages)
        .map(|(s, &a)| {
            let mut ids: Vec<i64> = g.prompt_ids.iter().map(|&x| x as i64).collect();
            ids.extend(s.ids.iter().map(|&x| x as i64));
            Row {
                ids,
                prompt_len: g.prompt_ids.len(),
                completion_len: s.ids.len(),
                advantage: a,
                in_loss: true,
                prompt_routing: g.prompt_routing.clone(),
                routing: s.routing.clone(),
            }
        })
        .collect()
}

fn grad_norm_after_one_pass(trainer: &mut Trainer, rows: &[Row]) -> f64 {
    let norm = trainer.normaliser(rows);
    let mut mbs = trainer.prepare(rows);
    let t = trainer.r.generation.temperature as f64;
    if let Some(r) = &trainer.reference {
        reference_pass(r, &mut mbs, t, HEAD_CHUNK_ELEMENTS);
    }
    trainer.opt.zero_grad();
    let mut counter = LoadCounter::new(8);
    let objective = Objective {
        norm,
        loss: trainer.loss_config(),
        temperature: t,
        head_budget: HEAD_CHUNK_ELEMENTS,
    };
    accumulate(
        &trainer.model,
        &mut mbs,
        &objective,
        0,
        &mut counter,
        &mut Mismatch::default(),
    );
    trainer.opt.grad_norm()
}

/// Moves every weight of `model` by a little seeded noise (no gradient recorded).
fn nudge(model: &Model, seed: i64) {
    let _g = tch::no_grad_guard();
    tch::manual_seed(seed);
    for (_, t) in model.vars.variables() {
        if t.is_floating_point() {
            let noise = t.randn_like() * 0.02;
            let _ = t.shallow_clone().g_add_(&noise);
        }
    }
}

/// Every trainable weight's gradient, by name.
fn gradients(t: &Trainer) -> BTreeMap<String, Tensor> {
    t.opt
        .params
        .iter()
        .map(|p| {
            let g = p.tensor.grad();
            let g = if g.defined() {
                g.to_kind(Kind::Float).copy()
            } else {
                p.tensor.zeros_like().to_kind(Kind::Float)
            };
            (p.name.clone(), g)
        })
        .collect()
}

/// The logits that predict each completion token of `mb`, `[b,T,V]`, from the plain forward pass
/// over whole sequences (prompt then completion, every row its own prompt), no cache.
fn whole_sequence_logits(model: &Model, mb: &MicroBatch) -> Tensor {
    let (b, t) = mb.target.size2().unwrap();
    let p = mb.prompt.size()[1];
    let ids = Tensor::cat(
        &[mb.prompt.expand([b, p], false), mb.target.shallow_clone()],
        1,
    );
    model
        .forward(&ids, &mut model.new_cache(), &mut NoProbe, true)
        .narrow(1, p - 1, t)
}

/// The whole batch at once, as plainly as it can be written: all completion logits, log-softmax,
/// the per-token loss, its aggregate, one backward. Returns (loss, KL sum, entropy sum).
fn plain_pass(
    t: &Trainer,
    mbs: &mut [MicroBatch],
    norm: &Normaliser,
    it: usize,
) -> (f64, f64, f64) {
    let cfg = t.loss_config();
    let temperature = t.r.generation.temperature as f64;
    let (mut loss, mut kl_sum, mut entropy) = (0.0, 0.0, 0.0);
    for mb in mbs {
        let logits = whole_sequence_logits(&t.model, mb);
        let lsm = (logits.to_kind(Kind::Float) / temperature).log_softmax(-1, Kind::Float);
        let logp = lsm
            .gather(2, &mb.target.unsqueeze(-1), false)
            .squeeze_dim(-1);
        if it == 0 {
            mb.old = Some(logp.detach());
            let ent = -(lsm.exp() * &lsm).sum_dim_intlist(-1, false, Kind::Float);
            entropy += (ent * &mb.mask).sum(Kind::Double).double_value(&[]);
        }
        let tl = token_loss(
            &logp,
            mb.old.as_ref().unwrap(),
            mb.reference.as_ref(),
            &mb.adv,
            &cfg,
        );
        let share = crate::train::loss::aggregate(&tl.loss, &mb.mask, norm);
        share.backward();
        loss += share.double_value(&[]);
        kl_sum += (tl.kl.unwrap() * &mb.mask)
            .sum(Kind::Double)
            .double_value(&[]);
    }
    (loss, kl_sum, entropy)
}

#[test]
fn zero_advantage_groups_give_zero_gradient_without_kl() {
    let dir = tempfile::tempdir().unwrap();
    let r = recipe(dir.path(), &[("beta = 0.04", "beta = 0.0")]);
    let init = resolve_model_dir("builtin");
    let mut t = Trainer::new(&r, &init, &init, dir.path().join("c"), 0).unwrap();
    for aggregation in ["dapo", "grpo", "dr_grpo"] {
        let mut r2 = r.clone();
        r2.grpo.loss = serde_json::from_value(json!(aggregation)).unwrap();
        t.r = Box::leak(Box::new(r2));
        let rows = rows_with(&t, &[0.0; 4]);
        assert_eq!(
            grad_norm_after_one_pass(&mut t, &rows),
            0.0,
            "{aggregation}"
        );
        // Every gradient is exactly zero, not merely small overall.
        for p in &t.opt.params {
            let g = p.tensor.grad();
            assert!(
                !g.defined() || g.abs().max().double_value(&[]) == 0.0,
                "{}",
                p.name
            );
        }
        // The same rows with advantages give a gradient (the check can fail).
        let rows = rows_with(&t, &[1.0, -1.0, 0.5, -0.5]);
        assert!(
            grad_norm_after_one_pass(&mut t, &rows) > 0.0,
            "{aggregation}"
        );
    }
    // With β > 0 the KL term pulls even where advantages are zero, once the policy has moved
    // away from the reference; at the reference itself its gradient is zero too.
    let r = recipe(dir.path(), &[]);
    let mut t = Trainer::new(&r, &init, &init, dir.path().join("c"), 0).unwrap();
    let rows = rows_with(&t, &[0.0; 4]);
    assert!(grad_norm_after_one_pass(&mut t, &rows) < 1e-9);
}

#[test]
fn one_step_changes_every_trainable_weight_and_no_frozen_one() {
    let root = tempfile::tempdir().unwrap();
    let init = weights(&resolve_model_dir("builtin"));
    for train_router in [false, true] {
        let out = root.path().join(format!("r{train_router}"));
        let router = format!("train_router = {train_router}\n[data]");
        let r = recipe(
            &out,
            &[
                ("steps = 3", "steps = 1"),
                ("[data]", &router),
                ("iterations = 2", "iterations = 1"),
                // Hot sampling on 3-digit sums: every group's completions differ in reward (the
                // model trained on conversations is sure enough that 1.6 left a group uniform).
                ("levels = [1, 2]", "levels = [3]"),
                ("max_new_tokens = 48", "max_new_tokens = 96"),
                ("temperature = 1.0", "temperature = 2.0"),
            ],
        );
        assert!(
            r.balance.is_none(),
            "no bias nudges: the bias must not move"
        );
        let s = run(&r, &quiet()).unwrap();
        assert_eq!(s.steps_done, 1);
        let m = crate::train::metrics::read(&out.join("metrics.jsonl")).unwrap();
        assert_eq!(m[0]["frac_reward_zero_std"], 0.0, "{}", m[0]);
        let after = weights(&out.join("checkpoints").join(step_dir_name(1)));
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            init.keys().collect::<Vec<_>>()
        );
        let mut moved = 0;
        for (name, before) in &init {
            let frozen = name.ends_with("e_score_correction_bias")
                || (!train_router && name.ends_with(".mlp.gate.weight"));
            let changed = !before.equal(&after[name]);
            assert_eq!(changed, !frozen, "{name} (train_router = {train_router})");
            moved += usize::from(changed);
        }
        assert!(moved > 50, "{moved}");
    }
}

const LORA: &str = "[lora]\nrank = 4\nalpha = 8.0\ntarget_modules = [\"q_b_proj\", \"o_proj\", \"gate_proj\", \"up_proj\", \"down_proj\"]\n[train]";

#[test]
fn resume_after_a_kill_continues_exactly() {
    resume_case(false);
}

#[test]
fn resume_with_lora_continues_exactly() {
    resume_case(true);
}

fn resume_case(lora: bool) {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    // β > 0 (reference model), μ = 2 (ratios move, clipping can act), balancing on.
    let mut edits = vec![("[train]", "[balance]\nbias_update_rate = 0.01\n[train]")];
    if lora {
        edits.push(("[train]", LORA));
    }
    let (ra, rb) = (recipe(&a, &edits), recipe(&b, &edits));
    let straight = run(&ra, &quiet()).unwrap();
    assert_eq!(straight.steps_done, 3);
    let stopped = run(
        &rb,
        &RunOptions {
            stop_after: Some(1),
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(stopped.steps_done, 1);
    // Killed during step 2 after its metrics line was written: the resume drops that line.
    let partial = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    let line2 = partial.lines().find(|l| l.contains("\"step\":2,")).unwrap();
    let mut m = std::fs::OpenOptions::new()
        .append(true)
        .open(b.join("metrics.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut m, format!("{line2}\n").as_bytes()).unwrap();
    let resumed = run(
        &rb,
        &RunOptions {
            require_checkpoint: true,
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(resumed.resumed_from, Some(1));
    assert_eq!(resumed.steps_done, 3);
    let ca = a.join("checkpoints").join(step_dir_name(3));
    let cb = b.join("checkpoints").join(step_dir_name(3));
    let (wa, wb) = (weights(&ca), weights(&cb));
    for (name, t) in &wa {
        assert!(t.equal(&wb[name]), "{name} differs after resume");
    }
    assert!(
        std::fs::read(ca.join("optimizer.safetensors")).unwrap()
            == std::fs::read(cb.join("optimizer.safetensors")).unwrap(),
        "optimizer state differs after resume"
    );
    let steps = |dir: &Path| -> Vec<Value> {
        crate::train::metrics::read(&dir.join("metrics.jsonl"))
            .unwrap()
            .into_iter()
            .filter(|v| v.get("loss").is_some())
            .map(|mut v| {
                for k in [
                    "step_time",
                    "rollout_time",
                    "update_time",
                    "tokens_per_s",
                    "elapsed_s",
                ] {
                    v.as_object_mut().unwrap().remove(k);
                }
                v
            })
            .collect()
    };
    let (la, lb) = (steps(&a), steps(&b));
    assert_eq!(la.len(), 3);
    assert_eq!(la, lb, "the metrics agree step for step");
    // μ = 2 and β > 0: the second iteration's ratios differ from 1 and the KL is logged.
    assert!(la.iter().all(|v| v["kl"].as_f64().unwrap() >= 0.0));
    // The rollouts log too.
    let ra_log = std::fs::read_to_string(a.join("rollouts.jsonl")).unwrap();
    let rb_log = std::fs::read_to_string(b.join("rollouts.jsonl")).unwrap();
    assert_eq!(ra_log, rb_log);
    if lora {
        assert!(
            std::fs::read(ca.join("adapter_model.safetensors")).unwrap()
                == std::fs::read(cb.join("adapter_model.safetensors")).unwrap()
        );
        return;
    }
    // A different recipe in the same folder is refused, naming the key.
    let mut other = ra.clone();
    other.grpo.beta = 0.1;
    let e = run(&other, &quiet()).unwrap_err().to_string();
    assert!(e.contains("key grpo.beta differs"), "{e}");
    // --resume on a fresh folder is refused.
    let c = recipe(&root.path().join("c"), &[]);
    let e = run(
        &c,
        &RunOptions {
            require_checkpoint: true,
            ..quiet()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("--resume: "), "{e}");
}

#[test]
fn zero_std_groups_are_skipped_or_replaced() {
    let root = tempfile::tempdir().unwrap();
    // Format alone on level 1: the model's completions are all well-formed, so every group's
    // rewards are equal.
    let only_format = [
        ("[rewards.accuracy]\nweight = 1.0\n", ""),
        ("[rewards.overlong]\nweight = 1.0\nbuffer = 8\n", ""),
        ("levels = [1, 2]", "levels = [1]"),
        ("steps = 3", "steps = 1"),
        ("max_new_tokens = 48", "max_new_tokens = 64"),
    ];
    let init = weights(&resolve_model_dir("builtin"));
    for (mode, drawn) in [("skip", 2), ("resample", 2 + 2 * 2)] {
        let out = root.path().join(mode);
        let zs = format!("zero_std = \"{mode}\"\nmax_resample_rounds = 2\n[train]");
        let mut edits = only_format.to_vec();
        edits.push(("[train]", &zs));
        edits.push(("temperature = 1.0", "temperature = 0.5"));
        let r = recipe(&out, &edits);
        run(&r, &quiet()).unwrap();
        let m = crate::train::metrics::read(&out.join("metrics.jsonl")).unwrap();
        let s = m.iter().find(|v| v.get("loss").is_some()).unwrap();
        assert_eq!(s["frac_reward_zero_std"], 1.0, "{s}");
        assert_eq!(s["groups_trained"], 0);
        assert_eq!(s["groups_drawn"], drawn, "{mode}");
        assert_eq!(s["loss"], 0.0);
        let after = weights(&out.join("checkpoints").join(step_dir_name(1)));
        for (name, t) in &init {
            assert!(t.equal(&after[name]), "{name} moved without a signal");
        }
    }
}

#[test]
fn micro_batches_group_completions_by_prompt() {
    // Two completions of prompt [10, 11, 12], one of [10, 11], a micro-batch size of 2.
    let row = |ids: Vec<i64>, prompt_len: usize, advantage: f64, in_loss: bool| Row {
        completion_len: ids.len() - prompt_len,
        ids,
        prompt_len,
        advantage,
        in_loss,
        prompt_routing: Vec::new(),
        routing: Vec::new(),
    };
    let rows = vec![
        row(vec![10, 11, 12, 20, 21], 3, 1.0, true),
        row(vec![10, 11, 30, 31, 32, 33], 2, -1.0, true),
        row(vec![10, 11, 12, 40, 41, 42], 3, 0.5, false),
    ];
    let mbs = make_micro_batches(&rows, 2, 1, Device::Cpu, None);
    let v = |t: &Tensor| Vec::<i64>::try_from(t.view([-1])).unwrap();
    let f = |t: &Tensor| Vec::<f32>::try_from(t.view([-1])).unwrap();
    // One micro-batch per prompt, in the order the prompts first appear.
    assert_eq!(mbs.len(), 2);
    let (a, b) = (&mbs[0], &mbs[1]);
    assert_eq!(v(&a.prompt), vec![10, 11, 12]);
    // Longest completion first; padding (id 1) past the shorter one's end.
    assert_eq!(v(&a.target), vec![40, 41, 42, 20, 21, 1]);
    assert_eq!(f(&a.mask), vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    assert_eq!(f(&a.adv), vec![0.5, 1.0]);
    assert_eq!(a.real, vec![true, true, true, true, true, false]);
    assert_eq!(v(&b.prompt), vec![10, 11]);
    assert_eq!(v(&b.target), vec![30, 31, 32, 33]);
    assert_eq!(f(&b.mask), vec![1.0; 4]);
    // A group larger than the micro-batch size splits, each part with the prompt.
    let three: Vec<Row> = (0..3)
        .map(|i| row(vec![7, 8, 50 + i, 60 + i], 2, 0.0, true))
        .collect();
    let parts = make_micro_batches(&three, 2, 1, Device::Cpu, None);
    assert_eq!(
        parts.iter().map(|m| m.target.size()[0]).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert!(parts.iter().all(|m| v(&m.prompt) == vec![7, 8]));
}

/// The prompt once with its cache repeated gives the logits, and expert loads, of every row
/// running its own whole sequence: on MLA + MoE (whose routing would show a misplaced position)
/// and on standard attention.
#[test]
fn a_shared_prompt_runs_once_with_the_same_result() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    for name in ["deepseek_v3_qlora", "qwen2"] {
        let model = Model::load(&fixtures.join(name), DType::F32, Device::Cpu).unwrap();
        let prompt: Vec<i64> = vec![3, 17, 42, 5, 9];
        let completions: [&[i64]; 3] = [&[11, 12, 13, 14], &[21, 22], &[31, 32, 33]];
        let rows: Vec<Row> = completions
            .iter()
            .map(|c| Row {
                ids: prompt.iter().chain(c.iter()).copied().collect(),
                prompt_len: prompt.len(),
                completion_len: c.len(),
                advantage: 0.0,
                in_loss: true,
                prompt_routing: Vec::new(),
                routing: Vec::new(),
            })
            .collect();
        let mbs = make_micro_batches(&rows, 8, 0, Device::Cpu, None);
        assert_eq!(mbs.len(), 1);
        let experts = model.config.moe.as_ref().map_or(0, |m| m.n_routed_experts);
        let mut shared = LoadCounter::new(experts);
        let watch = Watch {
            counter: Some(&mut shared),
            ..Default::default()
        };
        let got = tch::no_grad(|| model.logits(&completion_hidden(&model, &mbs[0], watch)));
        let want = tch::no_grad(|| whole_sequence_logits(&model, &mbs[0]));
        // Only real completion positions: padding differs (it follows other tokens).
        let real = mbs[0].mask.unsqueeze(-1);
        let d = ((&got - &want) * &real).abs().max().double_value(&[]);
        assert!(d < 1e-4, "{name}: logits differ by {d}");
        // Loads: every row's own prompt and completion, one row at a time.
        let mut separate = LoadCounter::new(experts);
        for r in &rows {
            let ids = Tensor::from_slice(&r.ids).view([1, -1]);
            let _ =
                tch::no_grad(|| model.forward(&ids, &mut model.new_cache(), &mut separate, false));
        }
        assert_eq!(shared.counts, separate.counts, "{name}");
        assert_eq!(shared.counts.is_empty(), experts == 0, "{name}");
    }
}

#[test]
fn grpo_runs_on_every_architecture_fixture() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("p.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"1+1?\", \"answer\": \"2\"}\n{\"prompt\": \"2+5?\", \"answer\": 7}\n",
    )
    .unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    for name in [
        "qwen2",
        "llama",
        "qwen3",
        "deepseek_v3_plain",
        "deepseek_v2_lite",
    ] {
        let dir = fixtures.join(name);
        let out = root.path().join(name);
        let init = format!("init = {:?}", dir.display().to_string());
        let path = format!("path = {:?}", data.display().to_string());
        let r = recipe(
            &out,
            &[
                ("init = \"builtin\"", &init),
                ("task = \"arithmetic\"\nlevels = [1, 2]", &path),
                ("max_new_tokens = 48", "max_new_tokens = 12"),
                ("prompts_per_step = 2", "prompts_per_step = 1"),
                ("steps = 3", "steps = 2"),
            ],
        );
        // The whole loop: rollouts, reference, μ = 2 updates, checkpoints, logs.
        let s = run(&r, &quiet()).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(s.steps_done, 2, "{name}");
        let m = crate::train::metrics::read(&out.join("metrics.jsonl")).unwrap();
        let steps: Vec<&Value> = m.iter().filter(|v| v.get("loss").is_some()).collect();
        assert_eq!(steps.len(), 2, "{name}");
        for v in &steps {
            for k in ["loss", "kl", "entropy", "reward", "grad_norm"] {
                assert!(
                    v[k].as_f64().is_some_and(f64::is_finite),
                    "{name}: {k} in {v}"
                );
            }
        }
        let ck = out.join("checkpoints").join(step_dir_name(2));
        let loaded = Model::load(&ck, DType::F32, Device::Cpu).unwrap();
        assert!(loaded.unused_weights.is_empty(), "{name}");
        let mut names: Vec<String> = loaded.vars.variables().into_keys().collect();
        names.sort();
        assert_eq!(
            weights(&ck).into_keys().collect::<Vec<_>>(),
            names,
            "{name}: the checkpoint holds the model's weights"
        );

        // A random model's completions all run out of tokens: equal rewards, no signal. With
        // advantages given, one update moves every trainable weight.
        let mut one = r.clone();
        one.grpo.iterations = 1;
        let mut t = Trainer::new(&one, &dir, &dir, root.path().join("x"), 0).unwrap();
        let before: Vec<(String, Tensor)> = t
            .opt
            .params
            .iter()
            .map(|p| (p.name.clone(), p.tensor.detach().copy()))
            .collect();
        let rows = rows_with(&t, &[1.0, -1.0, 0.5, -0.5]);
        let up = t.update(&rows, 1e-3);
        assert!(up.applied && up.grad_norm > 0.0, "{name}");
        for ((n, b), p) in before.iter().zip(&t.opt.params) {
            // A routed expert that no token of these four rows chose gets no gradient.
            let g = p.tensor.grad();
            let unrouted = n.contains(".mlp.experts.")
                && (!g.defined() || g.abs().max().double_value(&[]) == 0.0);
            assert_eq!(!b.equal(&p.tensor.detach()), !unrouted, "{name}: {n}");
        }
    }
}

#[test]
fn an_update_raises_the_likelihood_of_better_completions() {
    let dir = tempfile::tempdir().unwrap();
    let r = recipe(
        dir.path(),
        &[
            ("beta = 0.04", "beta = 0.0"),
            ("iterations = 2", "iterations = 1"),
            ("temperature = 1.0", "temperature = 3.0"),
            ("lr = 1e-4", "lr = 1e-3"),
            ("levels = [1, 2]", "levels = [3]"),
            ("max_new_tokens = 48", "max_new_tokens = 96"),
        ],
    );
    let init = resolve_model_dir("builtin");
    let mut t = Trainer::new(&r, &init, &init, dir.path().join("c"), 0).unwrap();
    let mut rows = rows_with(&t, &[0.0; 4]);
    // The first completion is "better", one that differs from it "worse", the rest neutral.
    let k = (1..4)
        .find(|&k| rows[k].ids != rows[0].ids)
        .expect("hot sampling gives different completions");
    rows[0].advantage = 1.0;
    rows[k].advantage = -1.0;
    let seq_logp = |t: &Trainer| -> Vec<f64> {
        let _g = tch::no_grad_guard();
        rows.iter()
            .map(|row| {
                let mb = make_micro_batches(std::slice::from_ref(row), 1, t.pad, Device::Cpu, None);
                let lp = completion_logprobs(&t.model, &mb[0], 3.0, HEAD_CHUNK_ELEMENTS);
                (lp * &mb[0].mask).sum(Kind::Double).double_value(&[])
            })
            .collect()
    };
    let before = seq_logp(&t);
    let up = t.update(&rows, 1e-5);
    assert!(up.applied);
    let after = seq_logp(&t);
    assert!(
        after[0] > before[0],
        "the better one: {before:?} -> {after:?}"
    );
    assert!(
        after[k] < before[k],
        "the worse one: {before:?} -> {after:?}"
    );
}

#[test]
fn lora_trains_only_adapted_weights_and_merges_back() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("l");
    let r = recipe(
        &out,
        &[
            ("steps = 3", "steps = 2"),
            ("iterations = 2", "iterations = 1"),
            ("levels = [1, 2]", "levels = [3]"),
            ("max_new_tokens = 48", "max_new_tokens = 96"),
            ("temperature = 1.0", "temperature = 1.6"),
            ("lr = 1e-4", "lr = 1e-3"),
            ("[train]", LORA),
        ],
    );
    run(&r, &quiet()).unwrap();
    let m = crate::train::metrics::read(&out.join("metrics.jsonl")).unwrap();
    assert!(m
        .iter()
        .any(|v| v["frac_reward_zero_std"].as_f64() < Some(1.0)));
    let ck = out.join("checkpoints").join(step_dir_name(2));
    let base_dir = resolve_model_dir("builtin");
    let (base, after) = (weights(&base_dir), weights(&ck));
    let targets = r.lora.as_ref().unwrap().target_modules.clone();
    let mut adapted = 0;
    for (name, t) in &base {
        let hit = crate::train::lora::targeted(name, &targets);
        assert_eq!(!t.equal(&after[name]), hit, "{name}");
        adapted += usize::from(hit);
    }
    // 4 layers × (q_b_proj, o_proj) + the dense MLP (3) + per MoE layer 8 experts × 3 and the
    // shared expert's 3.
    assert_eq!(adapted, 4 * 2 + 3 + 3 * (8 * 3 + 3));
    // PEFT files, and `merge` on the base gives the checkpoint's weights.
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(ck.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["peft_type"], "LORA");
    let model = Model::load(&base_dir, DType::F32, Device::Cpu).unwrap();
    let n = crate::train::lora::merge(&model, &ck).unwrap();
    assert_eq!(n, adapted);
    let vars = model.vars.variables();
    for (name, t) in &after {
        assert!(
            t.allclose(&vars[name], 1e-5, 1e-6, false),
            "{name}: merged base differs from the trained weights"
        );
    }
}

#[test]
fn workers_share_the_work_not_the_results() {
    let root = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for workers in [1, 3] {
        let out = root.path().join(format!("w{workers}"));
        let w = format!("temperature = 1.0\nworkers = {workers}");
        let r = recipe(
            &out,
            &[
                ("steps = 3", "steps = 1"),
                ("prompts_per_step = 2", "prompts_per_step = 4"),
                ("temperature = 1.0", &w),
                // Four micro-batches of four (micro_batch_size = 4): workers 0 and 1 take
                // two each, worker 2 none.
                ("levels = [1, 2]", "levels = [3]"),
                ("max_new_tokens = 48", "max_new_tokens = 96"),
                ("temperature = 1.0", "temperature = 1.6"),
            ],
        );
        run(&r, &quiet()).unwrap();
        let text = std::fs::read_to_string(out.join("rollouts.jsonl")).unwrap();
        let m = crate::train::metrics::read(&out.join("metrics.jsonl")).unwrap();
        let ck = weights(&out.join("checkpoints").join(step_dir_name(1)));
        runs.push((text, m, ck));
    }
    // The same rollouts (each group has its own seed, whichever thread draws it).
    assert_eq!(runs[0].0, runs[1].0);
    let step = |m: &Vec<Value>| m.iter().find(|v| v.get("loss").is_some()).unwrap().clone();
    let (a, b) = (&step(&runs[0].1), &step(&runs[1].1));
    assert_eq!(a["groups_trained"], b["groups_trained"]);
    assert!(a["groups_trained"].as_u64().unwrap() > 0, "{a}");
    // Float rounding of gradients summed in another order: relative to the size (a grad norm of
    // 4 differed by 1.4e-5).
    let close = |k: &str| {
        let (x, y) = (a[k].as_f64().unwrap(), b[k].as_f64().unwrap());
        (x - y).abs() <= 1e-5 * x.abs().max(1.0)
    };
    assert!(
        close("loss") && close("entropy") && close("grad_norm"),
        "{a}\n{b}"
    );
    // The gradient is summed per worker, then across workers: equal up to float rounding.
    let mut moved = 0;
    let w0 = weights(&resolve_model_dir("builtin"));
    for (name, t) in &runs[0].2 {
        assert!(t.allclose(&runs[1].2[name], 1e-5, 1e-7, false), "{name}");
        moved += usize::from(!t.equal(&w0[name]));
    }
    assert!(moved > 50);
}

/// The update as it runs (each prompt once, its cache repeated; the head and the loss three
/// positions at a time) gives the loss, KL, entropy, the recorded old log-probs and every
/// gradient of the plain computation above (whole sequences, every row its own prompt, all
/// logits at once), for each aggregation, at iteration 0 and at a later iteration whose policy
/// has moved (ratios away from 1); the reference pass gives the plain one's log-probs. Within
/// f32 rounding: the two differ in batch shapes and summation order.
#[test]
fn the_head_in_slices_matches_the_whole_batch_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let init = resolve_model_dir("builtin");
    for aggregation in ["dapo", "grpo", "dr_grpo"] {
        let mut r = recipe(dir.path(), &[]);
        r.grpo.loss = serde_json::from_value(json!(aggregation)).unwrap();
        let mut t = Trainer::new(&r, &init, &init, dir.path().join("c"), 0).unwrap();
        // A policy away from its reference, so the KL term and its gradient are not zero.
        nudge(&t.model, 11);
        let rows = rows_with(&t, &[1.0, -1.0, 0.5, -0.25]);
        let norm = t.normaliser(&rows);
        let cfg = t.loss_config();
        let temperature = t.r.generation.temperature as f64;
        let reference = t.reference.as_ref().expect("β > 0 keeps a reference");
        let (mut plain, mut sliced) = (t.prepare(&rows), t.prepare(&rows));
        let (b, _) = sliced[0].target.size2().unwrap();
        let slice3 = b * t.model.vocab_size() as i64 * 3;
        reference_pass(reference, &mut plain, temperature, HEAD_CHUNK_ELEMENTS);
        reference_pass(reference, &mut sliced, temperature, slice3);
        for (p, s) in plain.iter().zip(&sliced) {
            let whole = tch::no_grad(|| {
                whole_sequence_logits(reference, p)
                    .to_kind(Kind::Float)
                    .g_div_scalar(temperature)
                    .log_softmax(-1, Kind::Float)
                    .gather(2, &p.target.unsqueeze(-1), false)
                    .squeeze_dim(-1)
            });
            let d = ((s.reference.as_ref().unwrap() - &whole) * &p.mask)
                .abs()
                .max()
                .double_value(&[]);
            assert!(d < 1e-4, "{aggregation}: reference log-probs differ by {d}");
        }
        for it in 0..2 {
            if it == 1 {
                nudge(&t.model, 12);
            }
            t.opt.zero_grad();
            let (loss, kl, entropy) = plain_pass(&t, &mut plain, &norm, it);
            let want = gradients(&t);
            t.opt.zero_grad();
            let mut counter = LoadCounter::new(8);
            let objective = Objective {
                norm,
                loss: cfg,
                temperature,
                head_budget: slice3,
            };
            let got = accumulate(
                &t.model,
                &mut sliced,
                &objective,
                it,
                &mut counter,
                &mut Mismatch::default(),
            );
            // Relative 1e-4: the sums run over every token in f32, and libtorch's reductions
            // split differently with the thread count (1e-5 failed once under a parallel run).
            let close = |a: f64, b: f64, what: &str| {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{aggregation}, iteration {it}: {what} {a} vs {b}"
                )
            };
            close(got.loss, loss, "loss");
            close(got.kl_sum, kl, "KL sum");
            assert!(kl > 0.0, "the KL term is exercised");
            if it == 0 {
                close(got.entropy_sum, entropy, "entropy sum");
                for (p, s) in plain.iter().zip(&sliced) {
                    let d = ((p.old.as_ref().unwrap() - s.old.as_ref().unwrap()) * &p.mask)
                        .abs()
                        .max()
                        .double_value(&[]);
                    assert!(d < 1e-4, "{aggregation}: old log-probs differ by {d}");
                }
            }
            let got_grads = gradients(&t);
            let mut largest = 0f64;
            for (name, w) in &want {
                let scale = w.abs().max().double_value(&[]);
                largest = largest.max(scale);
                let d = (&got_grads[name] - w).abs().max().double_value(&[]);
                assert!(
                    d <= 1e-4 * (1.0 + scale),
                    "{aggregation}, iteration {it}: {name} differs by {d} (largest {scale})"
                );
            }
            assert!(largest > 0.0, "the gradients are not all zero");
        }
    }
}

/// Records the experts each call of a pass used, per layer, in token order.
#[derive(Default)]
struct UsedExperts {
    calls: Vec<(usize, Vec<i64>)>,
}

impl crate::model::Probe for UsedExperts {
    fn wants_routing(&self) -> bool {
        true
    }

    fn routing(&mut self, layer: usize, _tokens: usize, _k: usize, experts: &[i64], _w: &[f32]) {
        self.calls.push((layer, experts.to_vec()));
    }
}

/// With `routing_replay = "rollout"`, the update's pass sends every completion token through
/// the experts its rollout recorded — checked token for token against recorded experts that
/// were changed on purpose to ones the router would not pick, so a replay that did nothing
/// would fail. Without replay the same micro-batch routes on its own, and the mismatch says so.
#[test]
fn replay_sends_each_token_through_the_rollouts_experts() {
    let dir = tempfile::tempdir().unwrap();
    let init = resolve_model_dir("builtin");
    let mut r = recipe(dir.path(), &[]);
    r.grpo.routing_replay = RoutingReplay::Rollout;
    let t = Trainer::new(&r, &init, &init, dir.path().join("c"), 0).unwrap();
    let k = t.model.config.moe.as_ref().unwrap().top_k;
    let mut rows = rows_with(&t, &[1.0, -1.0, 0.5, -0.25]);
    assert!(
        rows.iter().all(|r| r.routing.len() == r.completion_len),
        "the rollout recorded every completion token's routing"
    );
    // A different set for every token: the next experts round the ring from the recorded ones.
    for row in &mut rows {
        for (i, token) in row.routing.iter_mut().enumerate() {
            for lr in token.iter_mut() {
                let a = (lr.experts[0] + 1 + i as u32 % 3) % 8;
                let b = (a + 1 + i as u32 % 5) % 8;
                lr.experts = vec![a, b];
            }
        }
    }
    let used_by = |replay: bool| -> (Vec<UsedExperts>, Vec<MicroBatch>, Mismatch) {
        let mut mbs = t.prepare(&rows);
        let mut seen = Vec::new();
        let mut m = Mismatch::default();
        for mb in &mut mbs {
            mb.replay = replay;
            let mut used = UsedExperts::default();
            let watch = Watch {
                mismatch: Some(&mut m),
                used: Some(&mut used),
                ..Default::default()
            };
            let _ = tch::no_grad(|| completion_hidden(&t.model, mb, watch));
            seen.push(used);
        }
        (seen, mbs, m)
    };
    // The rows of each micro-batch in its order (longest first within the prompt).
    let check = |replay: bool| -> (usize, usize) {
        let (seen, mbs, _) = used_by(replay);
        let (mut same, mut compared) = (0, 0);
        for (used, mb) in seen.iter().zip(&mbs) {
            let (b, tl) = mb.target.size2().unwrap();
            let targets = Vec::<i64>::try_from(mb.target.view([-1])).unwrap();
            for (layer, experts) in &used.calls {
                assert_eq!(experts.len(), (b * tl) as usize * k);
                for i in 0..b as usize {
                    // Which row is this: the one whose completion starts with these ids.
                    let len = mb.real[i * tl as usize..(i + 1) * tl as usize]
                        .iter()
                        .filter(|&&x| x)
                        .count();
                    let ids = &targets[i * tl as usize..i * tl as usize + len];
                    let j = rows
                        .iter()
                        .position(|r| &r.ids[r.prompt_len..] == ids)
                        .expect("a row of the batch");
                    for pos in 0..len {
                        let want: Vec<i64> = rows[j].routing[pos]
                            .iter()
                            .find(|lr| lr.layer == *layer)
                            .unwrap()
                            .experts
                            .iter()
                            .map(|&e| i64::from(e))
                            .collect();
                        let at = (i * tl as usize + pos) * k;
                        compared += 1;
                        same += usize::from(experts[at..at + k] == want[..]);
                    }
                }
            }
        }
        (same, compared)
    };
    let (same, compared) = check(true);
    assert!(compared > 100, "{compared}");
    assert_eq!(
        same, compared,
        "replayed: every token used its rollout's experts"
    );
    let (same_off, compared_off) = check(false);
    assert_eq!(compared_off, compared);
    assert!(
        same_off < compared_off / 2,
        "without replay the router picks for itself ({same_off} of {compared_off} matched the altered routing)"
    );
    // The router is still compared: the altered routing almost never matches its choice.
    let (_, _, m) = used_by(true);
    assert!(m.pooled().unwrap() > 0.5, "{:?}", m.by_layer);
    assert_eq!(m.by_layer.len(), t.model.moe_layers().len());
}

/// The gate weights under replay are still the current router's: with the routers trained,
/// a replayed pass gives the router weights a gradient.
#[test]
fn a_replayed_router_still_gets_a_gradient() {
    let dir = tempfile::tempdir().unwrap();
    let init = resolve_model_dir("builtin");
    let mut r = recipe(dir.path(), &[]);
    r.grpo.routing_replay = RoutingReplay::Rollout;
    r.model.train_router = true;
    r.grpo.beta = 0.0;
    let mut t = Trainer::new(&r, &init, &init, dir.path().join("c"), 0).unwrap();
    let rows = rows_with(&t, &[1.0, -1.0, 0.5, -0.25]);
    grad_norm_after_one_pass(&mut t, &rows);
    let grads = gradients(&t);
    let routers: Vec<&String> = grads
        .keys()
        .filter(|n| n.ends_with(".mlp.gate.weight"))
        .collect();
    assert_eq!(routers.len(), t.model.moe_layers().len());
    for name in routers {
        let g = grads[name].abs().max().double_value(&[]);
        assert!(g > 0.0, "{name} has no gradient under replay");
    }
}

/// μ = 4 at a high learning rate moves the policy between passes: the update's routers no
/// longer choose what the rollout chose, and `router/mismatch` (pooled and per layer) says so.
#[test]
fn router_drift_shows_as_mismatch_without_replay() {
    let dir = tempfile::tempdir().unwrap();
    let r = recipe(
        dir.path(),
        &[
            ("iterations = 2", "iterations = 4"),
            ("lr = 1e-4", "lr = 3e-3"),
        ],
    );
    run(&r, &quiet()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let steps: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("reward").is_some())
        .collect();
    assert!(!steps.is_empty());
    let worst = steps
        .iter()
        .map(|v| {
            v["router/mismatch"]
                .as_f64()
                .expect("every step reports it")
        })
        .fold(0.0, f64::max);
    assert!(worst > 0.0 && worst <= 1.0, "{worst}");
    for v in &steps {
        for layer in [1, 2, 3] {
            let s = v[format!("router/mismatch/layer_{layer}")]
                .as_f64()
                .unwrap();
            assert!((0.0..=1.0).contains(&s));
        }
    }
}

/// Replay needs routers: a dense model is refused, naming the key.
#[test]
fn replay_on_a_dense_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dense = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/qwen2");
    let mut r = recipe(dir.path(), &[]);
    r.model.init = dense.display().to_string();
    r.grpo.routing_replay = RoutingReplay::Rollout;
    let e = run(&r, &quiet()).unwrap_err().to_string();
    assert!(
        e.starts_with("grpo.routing_replay = \"rollout\": ") && e.contains("is a dense model"),
        "{e}"
    );
}

/// Rollouts sampled in bf16 and re-scored in f32 by the update: before the policy has moved
/// (μ = 1, first step) the update's routers already choose differently for some tokens, and
/// `router/mismatch` says so. Sampled in f32 it is exactly zero (the control). With replay, the
/// update's experts are the bf16 rollout's, so the step's gradient differs from the unreplayed one.
#[test]
fn a_bf16_rollout_routes_differently_from_the_f32_update() {
    let first_step = |dtype: &str, replay: RoutingReplay| -> Value {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recipe(dir.path(), &[("iterations = 2", "iterations = 1")]);
        r.generation.dtype = dtype.into();
        r.grpo.routing_replay = replay;
        r.train.steps = 1;
        run(&r, &quiet()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v.get("reward").is_some())
            .unwrap()
    };
    let mismatch = |v: &Value| {
        v["router/mismatch"]
            .as_f64()
            .expect("MoE policy reports it")
    };
    let f32_run = first_step("f32", RoutingReplay::Off);
    assert_eq!(mismatch(&f32_run), 0.0);
    let bf16_run = first_step("bf16", RoutingReplay::Off);
    let m = mismatch(&bf16_run);
    assert!(m > 0.0 && m < 0.5, "bf16 rollout, f32 update: mismatch {m}");
    let replayed = first_step("bf16", RoutingReplay::Rollout);
    assert_eq!(
        replayed["completions/mean_length"], bf16_run["completions/mean_length"],
        "the same seeds sample the same rollouts"
    );
    assert_ne!(
        replayed["grad_norm"], bf16_run["grad_norm"],
        "replay changed nothing"
    );
}

#[test]
fn an_unknown_rollout_precision_names_the_key() {
    let text = TEST_GRPO_RECIPE.replace(
        "temperature = 1.0\n",
        "temperature = 1.0\ndtype = \"int3\"\n",
    );
    let e = parse("g.toml", &text).expect_err("refused").to_string();
    assert!(
        e.contains("generation.dtype") && e.contains("\"int3\" is not a rollout precision"),
        "{e}"
    );
}
