//! Decode-shaped matrix-vector products: libtorch's `linear` against `model::gemv` (CPU).
//!
//! `cargo bench --bench gemv` prints four tables:
//! 1. GB/s at M = 1 for the R1-Distill-Qwen-1.5B shapes, each product alone;
//! 2. the same with a libtorch op that runs OpenMP-parallel right before each product, and that
//!    op's own time, to show the two thread pools do not fight over the cores;
//! 3. time per call as M (rows of x) grows, to see where libtorch's matrix-matrix path wins;
//! 4. one decode-shaped step (28 layers of the 1.5B model plus lm_head, with the small elementwise
//!    ops in between) with the kernels off and on.
//!
//! Each weight is replicated until the copies exceed the last-level cache, and the calls cycle
//! through the copies, so every product streams its weight from memory as a real decode step does.
//! Threads: libtorch's default (all cores) unless `THREADS=n` is set.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};
use thinkbench::model::gemv;

const CPU: Device = Device::Cpu;
/// Copies of each weight add up to at least this many bytes (L3 here is 32 MiB).
const WORKING_SET: usize = 256 << 20;

fn main() {
    if let Some(t) = std::env::var("THREADS").ok().and_then(|t| t.parse().ok()) {
        tch::set_num_threads(t);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let min_time = Duration::from_millis(if quick { 150 } else { 500 });
    if !gemv::cpu_supported() {
        println!("this CPU lacks AVX512-BF16: model::gemv is inactive, nothing to compare");
        return;
    }
    let _g = tch::no_grad_guard();
    println!("threads: libtorch {}", tch::get_num_threads());

    let shapes: [(i64, i64, &str); 5] = [
        (8960, 1536, "MLP gate/up"),
        (1536, 8960, "MLP down"),
        (151936, 1536, "lm_head"),
        (1536, 1536, "q/o proj"),
        (256, 1536, "k/v proj"),
    ];

    println!("\n## 1. M = 1, bf16, alone (GB/s of weight streamed)");
    println!("| N×K | what | libtorch | ours | ours, 1 thread | f32 libtorch | f32 ours |");
    println!("|---|---|---|---|---|---|---|");
    for &(n, k, what) in &shapes {
        let b = Weights::new(n, k, Kind::BFloat16);
        let x = Tensor::randn([1, k], (Kind::BFloat16, CPU));
        let torch = b.gbps(min_time, |w| x.linear::<Tensor>(w, None));
        let ours = b.gbps(min_time, |w| gemv::try_linear(&x, w, None).expect("kernel applies"));
        let threads = tch::get_num_threads();
        tch::set_num_threads(1);
        let ours1 = b.gbps(min_time, |w| gemv::try_linear(&x, w, None).expect("kernel applies"));
        tch::set_num_threads(threads);
        drop(b);
        let (f32_torch, f32_ours) = if n * k <= 8960 * 1536 {
            let f = Weights::new(n, k, Kind::Float);
            let xf = Tensor::randn([1, k], (Kind::Float, CPU));
            let t = f.gbps(min_time, |w| xf.linear::<Tensor>(w, None));
            let o = f.gbps(min_time, |w| gemv::try_linear(&xf, w, None).expect("kernel applies"));
            (format!("{t:.1}"), format!("{o:.1}"))
        } else {
            ("–".into(), "–".into())
        };
        println!("| {n}×{k} | {what} | {torch:.1} | {ours:.1} | {ours1:.1} | {f32_torch} | {f32_ours} |");
    }

    println!("\n## 2. M = 1, bf16, each product right after an OpenMP-parallel libtorch op");
    println!("(op: `a * b` on 65536 bf16 elements, above libtorch's grain size, so it runs on all threads)");
    println!("| N×K | libtorch GB/s | ours GB/s | op alone µs | op after libtorch µs | op after ours µs |");
    println!("|---|---|---|---|---|---|");
    let a = Tensor::randn([65536], (Kind::BFloat16, CPU));
    let c = Tensor::randn([65536], (Kind::BFloat16, CPU));
    let op = || black_box(&a * &c);
    let op_alone = per_call(min_time, |_| {
        op();
    });
    for &(n, k, _) in &shapes {
        let b = Weights::new(n, k, Kind::BFloat16);
        let x = Tensor::randn([1, k], (Kind::BFloat16, CPU));
        let (torch, op_t) = b.interleaved(min_time, &op, |w| x.linear::<Tensor>(w, None));
        let (ours, op_o) = b.interleaved(min_time, &op, |w| gemv::try_linear(&x, w, None).expect("kernel applies"));
        println!(
            "| {n}×{k} | {torch:.1} | {ours:.1} | {:.1} | {:.1} | {:.1} |",
            op_alone * 1e6,
            op_t * 1e6,
            op_o * 1e6
        );
    }

    println!("\n## 3. Rows of x (M): µs per call, libtorch / ours (bf16; f32 for the last column pair)");
    let ms = [1i64, 2, 3, 4, 6, 8, 12, 16, 24, 32];
    print!("| M |");
    for &(n, k, _) in &shapes[..2] {
        print!(" {n}×{k} libtorch | ours |");
    }
    println!(" f32 8960×1536 libtorch | ours |");
    println!("|---|---|---|---|---|---|---|");
    let w_up = Weights::new(8960, 1536, Kind::BFloat16);
    let w_down = Weights::new(1536, 8960, Kind::BFloat16);
    let w_f32 = Weights::new(8960, 1536, Kind::Float);
    for &m in &ms {
        print!("| {m} |");
        for (w, kind) in [(&w_up, Kind::BFloat16), (&w_down, Kind::BFloat16), (&w_f32, Kind::Float)] {
            let x = Tensor::randn([m, w.k], (kind, CPU));
            let t = w.per_call(min_time, |w| x.linear::<Tensor>(w, None));
            let o = match gemv::try_linear(&x, &w.copies[0], None) {
                Some(_) => format!("{:.0}", w.per_call(min_time, |w| gemv::try_linear(&x, w, None).unwrap()) * 1e6),
                None => "(libtorch)".into(),
            };
            print!(" {:.0} | {o} |", t * 1e6);
        }
        println!();
    }
    drop((w_up, w_down, w_f32));

    println!("\n## 4. A decode-shaped step: 28 layers of R1-Distill-Qwen-1.5B + lm_head, bf16, M = 1");
    let model = FakeModel::new();
    let mut row = |label: &str, on: bool| {
        gemv::set_enabled(on);
        let s = per_call(Duration::from_secs(if quick { 2 } else { 5 }), |_| model.step());
        println!(
            "| {label} | {:.1} ms | {:.2} tok/s | {:.1} GB/s |",
            s * 1e3,
            1.0 / s,
            model.bytes as f64 / s / 1e9
        );
    };
    println!("| kernels | time per step | steps/s | weight GB/s |");
    println!("|---|---|---|---|");
    row("libtorch", false);
    row("ours", true);
    gemv::set_enabled(true);
}

/// Copies of one `[n, k]` weight, together larger than the last-level cache.
struct Weights {
    copies: Vec<Tensor>,
    k: i64,
    bytes: usize,
}

impl Weights {
    fn new(n: i64, k: i64, kind: Kind) -> Self {
        let bytes = (n * k) as usize * kind.elt_size_in_bytes();
        let count = WORKING_SET.div_ceil(bytes).max(1);
        let copies = (0..count).map(|_| Tensor::randn([n, k], (Kind::Float, CPU)).to_kind(kind) * 0.02).collect();
        Self { copies, k, bytes }
    }

    /// Seconds per call of `f`, cycling through the copies.
    fn per_call(&self, min_time: Duration, mut f: impl FnMut(&Tensor) -> Tensor) -> f64 {
        per_call(min_time, |i| {
            black_box(f(&self.copies[i % self.copies.len()]));
        })
    }

    fn gbps(&self, min_time: Duration, f: impl FnMut(&Tensor) -> Tensor) -> f64 {
        self.bytes as f64 / self.per_call(min_time, f) / 1e9
    }

    /// GB/s of `f` and µs of `op`, each timed on its own, when they alternate.
    fn interleaved(&self, min_time: Duration, op: &dyn Fn() -> Tensor, mut f: impl FnMut(&Tensor) -> Tensor) -> (f64, f64) {
        let (mut t_f, mut t_op, mut calls) = (Duration::ZERO, Duration::ZERO, 0u32);
        for i in 0..self.copies.len().min(8) {
            op();
            black_box(f(&self.copies[i]));
        }
        let start = Instant::now();
        while start.elapsed() < min_time || calls < 10 {
            let w = &self.copies[calls as usize % self.copies.len()];
            let t0 = Instant::now();
            black_box(op());
            let t1 = Instant::now();
            black_box(f(w));
            t_f += t1.elapsed();
            t_op += t1 - t0;
            calls += 1;
        }
        (self.bytes as f64 * calls as f64 / t_f.as_secs_f64() / 1e9, t_op.as_secs_f64() / calls as f64)
    }
}

/// Seconds per call: best of three runs of at least `min_time / 3` each, after a warm-up.
fn per_call(min_time: Duration, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..3 {
        f(i);
    }
    let mut best = f64::INFINITY;
    let mut i = 0;
    for _ in 0..3 {
        let (start, mut calls) = (Instant::now(), 0);
        while start.elapsed() < min_time / 3 || calls < 3 {
            f(i);
            i += 1;
            calls += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / calls as f64);
    }
    best
}

/// Random weights shaped like R1-Distill-Qwen-1.5B (3.1 GB of bf16), run through the products and
/// the small elementwise ops of one decode step. Attention is reduced to a product with a 512-long
/// cache; the point is the mix of libtorch ops and matrix-vector products.
struct FakeModel {
    layers: Vec<[(Tensor, Option<Tensor>); 7]>,
    lm_head: Tensor,
    cache: Tensor,
    bytes: usize,
}

impl FakeModel {
    fn new() -> Self {
        let (h, kv, inter) = (1536, 256, 8960);
        let lin = |n: i64, k: i64, bias: bool| {
            let w = Tensor::empty([n, k], (Kind::BFloat16, CPU)).fill_(0.01);
            (w, bias.then(|| Tensor::zeros([n], (Kind::BFloat16, CPU))))
        };
        let layers: Vec<_> = (0..28)
            .map(|_| {
                [
                    lin(h, h, true),
                    lin(kv, h, true),
                    lin(kv, h, true),
                    lin(h, h, false),
                    lin(inter, h, false),
                    lin(inter, h, false),
                    lin(h, inter, false),
                ]
            })
            .collect();
        let lm_head = Tensor::empty([151936, h], (Kind::BFloat16, CPU)).fill_(0.01);
        let bytes = layers.iter().flatten().map(|(w, _)| w.numel() * 2).sum::<usize>() + lm_head.numel() * 2;
        let cache = Tensor::randn([12, 128, 512], (Kind::BFloat16, CPU));
        Self { layers, lm_head, cache, bytes }
    }

    fn step(&self) {
        let lin = |x: &Tensor, (w, b): &(Tensor, Option<Tensor>)| {
            gemv::try_linear(x, w, b.as_ref()).unwrap_or_else(|| x.linear(w, b.as_ref()))
        };
        let norm = |x: &Tensor| {
            let xf = x.to_kind(Kind::Float);
            (&xf * (xf.square().mean_dim(-1, true, Kind::Float) + 1e-6).rsqrt()).to_kind(Kind::BFloat16)
        };
        let mut h = Tensor::randn([1, 1, 1536], (Kind::BFloat16, CPU));
        for l in &self.layers {
            let x = norm(&h);
            let q = lin(&x, &l[0]);
            let _k = lin(&x, &l[1]);
            let _v = lin(&x, &l[2]);
            let scores = q.view([12, 1, 128]).matmul(&self.cache).softmax(-1, Kind::Float);
            let att = scores.to_kind(Kind::BFloat16).matmul(&self.cache.transpose(1, 2)).view([1, 1, 1536]);
            h = h + lin(&att, &l[3]);
            let x = norm(&h);
            let f = lin(&(lin(&x, &l[4]).silu() * lin(&x, &l[5])), &l[6]);
            h = h + f;
        }
        black_box(lin(&norm(&h), &(self.lm_head.shallow_clone(), None)));
    }
}
