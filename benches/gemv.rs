//! Decode-shaped matrix-vector products: libtorch's `linear` against `model::gemv` (CPU).
//!
//! `cargo bench --bench gemv [-- [--quick] [1] [2] [3] [4] [5] [6]]` prints these tables (all by
//! default):
//! 1. GB/s at M = 1 for the R1-Distill-Qwen-1.5B shapes, each product alone;
//! 2. the same right after a libtorch op that runs OpenMP-parallel, to show whether the two thread
//!    pools fight over the cores;
//! 3. time per call as M (rows of x) grows, to see where libtorch's matrix-matrix path wins;
//! 4. one decode-shaped step (28 layers of the 1.5B model plus lm_head, with the small libtorch ops
//!    in between) with the products by libtorch and by our kernels;
//! 5. the tiny benchmark model's f32 products at M = 8 (a GRPO group's decode step), weights in
//!    cache, where the cost of summing each accumulator's lanes shows;
//! 6. the block kernels (`model::quant`: Q8_0, Q4_0, Q4_K, Q6_K) at M = 1 and 4 for the 1.5B
//!    shapes, GB/s of quantized weight, AVX2 against AVX-512 where the CPU has both;
//!    `QUANT_FORMATS=Q4_K,Q6_K` and `QUANT_M=1,2,4,8,16` pick other formats and rows of x;
//! 7. the integer prefill kernels (`quant::int8`, `--prefill int8`) for Q4_0, Q4_K and Q6_K at
//!    M = 64 (`QUANT_M` picks others), billions of multiply-adds per second, VNNI against AVX2
//!    where the CPU has both (x rounded once outside the timing, as a layer's three products
//!    share nothing else).
//! 8. the float prefill kernels (`quant::float_gemm`, the default `--prefill exact`) for Q8_0,
//!    Q4_0, Q4_K and Q6_K at M = 64 (`QUANT_M` picks others), GFLOP/s, AVX2 against AVX-512 where
//!    the CPU has both, beside libtorch's f32 GEMM on the weight dequantized first (the float
//!    prefill before these kernels, and still the path where the CPU has no AVX2).
//!
//! "ours" runs on the default threads (libtorch's OpenMP pool where the process has one), "own
//! pool" on `model::gemv`'s own helper threads. Each weight is replicated until the copies exceed
//! the last-level cache and the calls cycle through them, so every product streams its weight from
//! memory as in a real decode step. Threads: libtorch's default (all cores) unless `THREADS=n`.
//! Each figure is the best of 7 rounds in which the candidates take turns, which copes with
//! other work on the machine but not with a machine that is never quiet: check the load.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};
use thinkbench::model::gemv;
use thinkbench::model::quant::{self, float_gemm, int8, Activations, Format, QuantMatrix};

const CPU: Device = Device::Cpu;
/// Copies of each weight add up to at least this many bytes (L3 here is 32 MiB).
const WORKING_SET: usize = 256 << 20;

const SHAPES: [(i64, i64, &str); 5] = [
    (8960, 1536, "MLP gate/up"),
    (1536, 8960, "MLP down"),
    (151936, 1536, "lm_head"),
    (1536, 1536, "q/o proj"),
    (256, 1536, "k/v proj"),
];

fn main() {
    thinkbench::model::cpu::cap_libraries_too();
    if let Some(t) = std::env::var("THREADS").ok().and_then(|t| t.parse().ok()) {
        tch::set_num_threads(t);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut sections: Vec<u32> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if sections.is_empty() {
        sections = vec![1, 2, 3, 4, 5, 6];
    }
    let min_time = Duration::from_millis(if quick { 400 } else { 1200 });
    if !gemv::cpu_supported() {
        println!("this CPU has neither AVX2+FMA+F16C nor AVX-512: model::gemv is inactive, nothing to compare");
        return;
    }
    let _g = tch::no_grad_guard();
    println!(
        "kernels: {} (THINKBENCH_ISA=avx2 selects the AVX2 ones on an AVX-512 machine); threads: libtorch {}; default pool for our kernels: {}",
        gemv::isa().name(),
        tch::get_num_threads(),
        gemv::threading_name()
    );
    for s in sections {
        match s {
            1 => alone(min_time),
            2 => after_parallel_op(min_time),
            3 => rows_of_x(min_time),
            4 => decode_step(Duration::from_secs(if quick { 6 } else { 20 })),
            5 => small_f32(min_time),
            6 => quantized(min_time),
            7 => integer_prefill(min_time),
            8 => float_prefill(min_time),
            _ => eprintln!("no section {s}"),
        }
    }
}

fn torch(x: &Tensor, w: &Tensor) -> Tensor {
    x.linear::<Tensor>(w, None)
}

/// Our kernels on the default threads.
fn ours(x: &Tensor, w: &Tensor) -> Tensor {
    gemv::set_own_pool(false);
    gemv::try_linear(x, w, None).expect("kernel applies")
}

/// Our kernels on our own pool.
fn own(x: &Tensor, w: &Tensor) -> Tensor {
    gemv::set_own_pool(true);
    let y = gemv::try_linear(x, w, None).expect("kernel applies");
    gemv::set_own_pool(false);
    y
}

fn alone(min_time: Duration) {
    println!("\n## 1. M = 1, alone: GB/s of weight streamed");
    println!("| N×K | what | bf16 libtorch | bf16 ours | bf16 ours, own pool | bf16 ours, 1 thread | f16 libtorch | f16 ours | f32 libtorch | f32 ours |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let threads = tch::get_num_threads();
    for &(n, k, what) in &SHAPES {
        let b = Weights::new(n, k, Kind::BFloat16);
        let x = Tensor::randn([1, k], (Kind::BFloat16, CPU));
        let r = race(
            min_time,
            &mut [
                &mut |i| b.call(i, |w| torch(&x, w)),
                &mut |i| b.call(i, |w| ours(&x, w)),
                &mut |i| b.call(i, |w| own(&x, w)),
                &mut |i| {
                    tch::set_num_threads(1);
                    b.call(i, |w| ours(&x, w));
                    tch::set_num_threads(threads);
                },
            ],
        );
        drop(b);
        // f16 and f32, libtorch against ours (the lm_head's copies would not fit in memory).
        let other = |kind: Kind| {
            if n * k > 8960 * 1536 {
                return "– | –".to_string();
            }
            let f = Weights::new(n, k, kind);
            let xf = Tensor::randn([1, k], (kind, CPU));
            let r = race(
                min_time,
                &mut [&mut |i| f.call(i, |w| torch(&xf, w)), &mut |i| {
                    f.call(i, |w| ours(&xf, w))
                }],
            );
            format!("{:.1} | {:.1}", f.gbps(r[0]), f.gbps(r[1]))
        };
        let f16s = other(Kind::Half);
        let f32s = other(Kind::Float);
        let g = |s: f64| (n * k * 2) as f64 / s / 1e9;
        println!(
            "| {n}×{k} | {what} | {:.1} | {:.1} | {:.1} | {:.1} | {f16s} | {f32s} |",
            g(r[0]),
            g(r[1]),
            g(r[2]),
            g(r[3])
        );
    }
}

fn after_parallel_op(min_time: Duration) {
    println!(
        "\n## 2. M = 1, bf16, each product right after an OpenMP-parallel libtorch op: µs per call"
    );
    println!("(op: `a * b` on 65536 bf16 elements, above libtorch's grain size, so it runs on every thread;");
    println!(" GB/s in sequence = weight bytes / (op + product − op alone))");
    println!("| N×K | op alone | libtorch alone | ours alone | op + libtorch | op + ours | op + ours, own pool | GB/s in sequence: libtorch / ours / own pool |");
    println!("|---|---|---|---|---|---|---|---|");
    let a = Tensor::randn([65536], (Kind::BFloat16, CPU));
    let c = Tensor::randn([65536], (Kind::BFloat16, CPU));
    let op = || drop(black_box(&a * &c));
    for &(n, k, _) in &SHAPES {
        let b = Weights::new(n, k, Kind::BFloat16);
        let x = Tensor::randn([1, k], (Kind::BFloat16, CPU));
        let r = race(
            min_time,
            &mut [
                &mut |_| op(),
                &mut |i| b.call(i, |w| torch(&x, w)),
                &mut |i| b.call(i, |w| ours(&x, w)),
                &mut |i| {
                    op();
                    b.call(i, |w| torch(&x, w))
                },
                &mut |i| {
                    op();
                    b.call(i, |w| ours(&x, w))
                },
                &mut |i| {
                    op();
                    b.call(i, |w| own(&x, w))
                },
            ],
        );
        let us = |s: f64| s * 1e6;
        println!(
            "| {n}×{k} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} / {:.1} / {:.1} |",
            us(r[0]),
            us(r[1]),
            us(r[2]),
            us(r[3]),
            us(r[4]),
            us(r[5]),
            b.gbps(r[3] - r[0]),
            b.gbps(r[4] - r[0]),
            b.gbps(r[5] - r[0])
        );
    }
}

fn rows_of_x(min_time: Duration) {
    println!("\n## 3. Rows of x (M): µs per call, libtorch / ours (– where ours declines)");
    println!("| M | bf16 8960×1536 libtorch | ours | bf16 1536×8960 libtorch | ours | f32 8960×1536 libtorch | ours |");
    println!("|---|---|---|---|---|---|---|");
    let weights = [
        Weights::new(8960, 1536, Kind::BFloat16),
        Weights::new(1536, 8960, Kind::BFloat16),
        Weights::new(8960, 1536, Kind::Float),
    ];
    for m in [1i64, 2, 4, 8, 12, 16, 24, 32, 64] {
        print!("| {m} |");
        for w in &weights {
            let x = Tensor::randn([m, w.k], (w.kind, CPU));
            if gemv::try_linear(&x, &w.copies[0], None).is_some() {
                let r = race(
                    min_time,
                    &mut [&mut |i| w.call(i, |w| torch(&x, w)), &mut |i| {
                        w.call(i, |w| ours(&x, w))
                    }],
                );
                print!(" {:.0} | {:.0} |", r[0] * 1e6, r[1] * 1e6);
            } else {
                let r = race(min_time, &mut [&mut |i| w.call(i, |w| torch(&x, w))]);
                print!(" {:.0} | – |", r[0] * 1e6);
            }
        }
        println!();
    }
}

/// The GRPO benchmark's rollouts: the tiny deepseek_v3's products in f32, 8 rows (a group),
/// weights warm in cache as they are between decode steps.
fn small_f32(min_time: Duration) {
    println!("\n## 5. Tiny-model f32 products, M = 8, weights in cache: µs per call and GFLOP/s");
    println!("| N×K | libtorch µs | ours µs | ours GFLOP/s |");
    println!("|---|---|---|---|");
    let m = 8i64;
    for (n, k) in [
        (64i64, 128i64),
        (192, 64),
        (48, 128),
        (256, 32),
        (128, 128),
        (256, 128),
        (128, 256),
        (1024, 128),
        (16, 128),
    ] {
        let w = Tensor::randn([n, k], (Kind::Float, CPU));
        let x = Tensor::randn([m, k], (Kind::Float, CPU));
        let r = race(
            min_time,
            &mut [&mut |_| drop(black_box(torch(&x, &w))), &mut |_| {
                drop(black_box(ours(&x, &w)))
            }],
        );
        let gf = 2.0 * (m * n * k) as f64 / r[1] / 1e9;
        println!(
            "| {n}×{k} | {:.2} | {:.2} | {gf:.1} |",
            r[0] * 1e6,
            r[1] * 1e6
        );
    }
}

fn decode_step(min_time: Duration) {
    println!(
        "\n## 4. A decode-shaped step: 28 layers of R1-Distill-Qwen-1.5B + lm_head, bf16, M = 1"
    );
    let model = FakeModel::new();
    // None: libtorch; Some(own): our kernels on our own pool (true) or the default threads.
    let mut candidates: Vec<(&str, Option<bool>)> =
        vec![("libtorch", None), ("ours, own pool", Some(true))];
    gemv::set_own_pool(false);
    if gemv::threading_name() == "openmp" {
        candidates.push(("ours, OpenMP pool", Some(false)));
    }
    let mut steppers: Vec<Box<dyn FnMut(usize) + '_>> = candidates
        .iter()
        .map(|&(_, own)| {
            let model = &model;
            Box::new(move |_| {
                gemv::set_enabled(own.is_some());
                gemv::set_own_pool(own == Some(true));
                model.step()
            }) as Box<dyn FnMut(usize)>
        })
        .collect();
    let mut refs: Vec<&mut dyn FnMut(usize)> = steppers
        .iter_mut()
        .map(|f| &mut **f as &mut dyn FnMut(usize))
        .collect();
    let r = race(min_time, &mut refs);
    gemv::set_enabled(true);
    gemv::set_own_pool(false);
    println!("| products by | time per step | steps/s | weight GB/s |");
    println!("|---|---|---|---|");
    for ((label, _), s) in candidates.iter().zip(r) {
        println!(
            "| {label} | {:.1} ms | {:.2} | {:.1} |",
            s * 1e3,
            1.0 / s,
            model.bytes as f64 / s / 1e9
        );
    }
}

/// The formats section 6 measures: all, or those named in `QUANT_FORMATS` (comma-separated).
fn quant_formats() -> Vec<Format> {
    let all = [Format::Q8_0, Format::Q4_0, Format::Q4_K, Format::Q6_K];
    match std::env::var("QUANT_FORMATS") {
        Ok(names) => all
            .into_iter()
            .filter(|f| names.split(',').any(|n| n.eq_ignore_ascii_case(f.name())))
            .collect(),
        Err(_) => all.to_vec(),
    }
}

/// The rows of x a section measures: those listed in `QUANT_M` (comma-separated), or `default`
/// (section 6: 1 and 4, decode; sections 7 and 8: 64, a short prompt).
fn rows_of_x_from_env(default: &[usize]) -> Vec<usize> {
    std::env::var("QUANT_M")
        .map(|ms| {
            ms.split(',')
                .filter_map(|m| m.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|_| default.to_vec())
}

fn quantized(min_time: Duration) {
    println!("\n## 6. Block kernels: GB/s of quantized weight streamed, by ISA");
    let isas: Vec<quant::Isa> = [quant::Isa::Avx2, quant::Isa::Avx512]
        .into_iter()
        .filter(|isa| isa.runs_here())
        .collect();
    if isas.is_empty() {
        println!("this CPU runs neither the AVX2 nor the AVX-512 block kernels");
        return;
    }
    let names: Vec<&str> = isas.iter().map(|isa| isa.name()).collect();
    let (formats, ms) = (quant_formats(), rows_of_x_from_env(&[1, 4]));
    print!("| N×K | what |");
    let mut columns = 0;
    for &format in &formats {
        for &m in &ms {
            for name in &names {
                print!(" {} M={m} {name} |", format.name());
                columns += 1;
            }
        }
    }
    println!("\n|---|---|{}", "---|".repeat(columns));
    for &(n, k, what) in &SHAPES {
        let (n, k) = (n as usize, k as usize);
        print!("| {n}×{k} | {what} |");
        for &format in &formats {
            let w = QuantWeights::new(format, n, k);
            for &m in &ms {
                let xs = bench_x(m, k);
                let x = Activations::new(&xs, m, k).expect("whole blocks");
                let mut out = vec![0.0f32; m * n];
                let dst = OutPtr(out.as_mut_ptr());
                let mut calls: Vec<Box<dyn FnMut(usize) + '_>> = isas
                    .iter()
                    .map(|&isa| {
                        let (w, x, dst) = (&w, &x, &dst);
                        Box::new(move |i: usize| w.call(i, isa, x, dst)) as Box<dyn FnMut(usize)>
                    })
                    .collect();
                for s in race_boxed(min_time, &mut calls) {
                    print!(" {:.1} |", w.bytes() as f64 / s / 1e9);
                }
                drop(calls);
                black_box(&out);
            }
        }
        println!();
    }
}

fn integer_prefill(min_time: Duration) {
    println!("\n## 7. Integer prefill kernels: GMAC/s (weight rows × x rows × K per second)");
    let kernels: Vec<int8::Kernel> = [int8::Kernel::Avx2, int8::Kernel::Vnni]
        .into_iter()
        .filter(|k| k.runs_here())
        .collect();
    if kernels.is_empty() {
        println!("this CPU runs neither integer kernel");
        return;
    }
    let ms = rows_of_x_from_env(&[64]);
    let formats = [Format::Q4_0, Format::Q4_K, Format::Q6_K];
    print!("| N×K | what |");
    for format in formats {
        for &m in &ms {
            for kernel in &kernels {
                print!(" {} M={m} {kernel:?} |", format.name());
            }
        }
    }
    println!(
        "\n|---|---|{}",
        "---|".repeat(formats.len() * ms.len() * kernels.len())
    );
    for &(n, k, what) in SHAPES.iter().filter(|s| s.0 != 151936) {
        let (n, k) = (n as usize, k as usize);
        print!("| {n}×{k} | {what} |");
        for format in formats {
            let w = QuantWeights::new(format, n, k);
            for &m in &ms {
                let xs = bench_x(m, k);
                let x = int8::QuantizedX::new(&xs, m, k);
                let mut out = vec![0.0f32; n * x.padded_m()];
                let dst = OutPtr(out.as_mut_ptr());
                let mut calls: Vec<Box<dyn FnMut(usize) + '_>> = kernels
                    .iter()
                    .map(|&kernel| {
                        let (w, x, dst) = (&w, &x, &dst);
                        Box::new(move |i: usize| {
                            let q = w.matrix(i);
                            gemv::parallel_rows(n, w.bytes(), &|r| {
                                // SAFETY: `out` holds n·mp f32s for the whole call; each row
                                // range has one thread.
                                unsafe { int8::rows_on(kernel, &q, x, None, dst.0, r) }
                            });
                        }) as Box<dyn FnMut(usize)>
                    })
                    .collect();
                for s in race_boxed(min_time, &mut calls) {
                    print!(" {:.1} |", (n * m * k) as f64 / s / 1e9);
                }
                drop(calls);
                black_box(&out);
            }
        }
        println!();
    }
}

fn float_prefill(min_time: Duration) {
    println!("\n## 8. Float prefill kernels: GFLOP/s (2 × weight rows × x rows × K per second)");
    let kernels: Vec<float_gemm::Kernel> = [float_gemm::Kernel::Avx2, float_gemm::Kernel::Avx512]
        .into_iter()
        .filter(|k| k.runs_here())
        .collect();
    let ms = rows_of_x_from_env(&[64]);
    let formats = [Format::Q8_0, Format::Q4_0, Format::Q4_K, Format::Q6_K];
    print!("| N×K | what |");
    for format in formats {
        for &m in &ms {
            print!(" {} M={m} libtorch |", format.name());
            for kernel in &kernels {
                print!(" {kernel:?} |");
            }
        }
    }
    for &m in &ms {
        print!(" bf16 M={m} libtorch bf16 |");
        for kernel in &kernels {
            print!(" {kernel:?} |");
        }
    }
    println!(
        "\n|---|---|{}",
        "---|".repeat((formats.len() + 1) * ms.len() * (1 + kernels.len()))
    );
    for &(n, k, what) in SHAPES.iter().filter(|s| s.0 != 151936) {
        let (n, k) = (n as usize, k as usize);
        print!("| {n}×{k} | {what} |");
        for format in formats {
            let w = QuantWeights::new(format, n, k);
            for &m in &ms {
                let xs = bench_x(m, k);
                let x_t = Tensor::from_slice(&xs).view([m as i64, k as i64]);
                let dense = Tensor::empty([n as i64, k as i64], (Kind::Float, CPU));
                let x = float_gemm::PackedX::new(&xs, m, k);
                let mut out = vec![0.0f32; n * x.padded_m()];
                let dst = OutPtr(out.as_mut_ptr());
                let (w, x, dst, x_t, dense) = (&w, &x, &dst, &x_t, &dense);
                let mut calls: Vec<Box<dyn FnMut(usize) + '_>> = vec![Box::new(move |i: usize| {
                    let q = w.matrix(i);
                    // SAFETY: `dense` is n·k f32s that only this call writes.
                    let d = unsafe {
                        std::slice::from_raw_parts_mut(dense.data_ptr() as *mut f32, n * k)
                    };
                    let rows = |r: std::ops::Range<usize>| {
                        let row_bytes = q.bytes().len() / n;
                        let out = &d[r.start * k..r.end * k];
                        // SAFETY: each row range has one thread; `out` is its rows of `dense`.
                        let out = unsafe {
                            std::slice::from_raw_parts_mut(out.as_ptr() as *mut f32, out.len())
                        };
                        let bytes = &q.bytes()[r.start * row_bytes..r.end * row_bytes];
                        quant::dequantize_fast(format, bytes, out).expect("whole rows");
                    };
                    gemv::parallel_rows(n, n * k * 4, &rows);
                    let _ = black_box(x_t.mm(&dense.tr()));
                })];
                for &kernel in &kernels {
                    calls.push(Box::new(move |i: usize| {
                        let q = w.matrix(i);
                        gemv::parallel_rows(n.div_ceil(float_gemm::GROUP), n * k * 4, &|g| {
                            // SAFETY: `out` holds n·mp f32s for the whole call; each range of
                            // groups has one thread.
                            unsafe {
                                float_gemm::rows_on(
                                    kernel,
                                    &float_gemm::Weights::Quant(q),
                                    x,
                                    dst.0,
                                    g,
                                )
                            }
                        });
                    }));
                }
                for s in race_boxed(min_time, &mut calls) {
                    print!(" {:.1} |", 2.0 * (n * m * k) as f64 / s / 1e9);
                }
                drop(calls);
                black_box(&out);
            }
        }
        // bf16 weights: libtorch's own GEMM in bf16 (x rounded to bf16, as a bf16 model's is)
        // against our kernels on the same values, widened a panel at a time.
        let w16 = Weights::new(n as i64, k as i64, Kind::BFloat16);
        for &m in &ms {
            let x16 = Tensor::from_slice(&bench_x(m, k))
                .view([m as i64, k as i64])
                .to_kind(Kind::BFloat16);
            let xs = Vec::<f32>::try_from(x16.to_kind(Kind::Float).flatten(0, -1)).expect("f32");
            let x = float_gemm::PackedX::new(&xs, m, k);
            let mut out = vec![0.0f32; n * x.padded_m()];
            let dst = OutPtr(out.as_mut_ptr());
            let (w16, x, dst, x16) = (&w16, &x, &dst, &x16);
            let mut calls: Vec<Box<dyn FnMut(usize) + '_>> = vec![Box::new(move |i: usize| {
                w16.call(i, |w| x16.linear::<Tensor>(w, None))
            })];
            for &kernel in &kernels {
                calls.push(Box::new(move |i: usize| {
                    let t = &w16.copies[i % w16.copies.len()];
                    // SAFETY: a contiguous bf16 tensor of n·k values, alive and unwritten.
                    let w = unsafe {
                        std::slice::from_raw_parts(t.data_ptr() as *const half::bf16, n * k)
                    };
                    let w = float_gemm::Weights::Bf16 { w, n, k };
                    gemv::parallel_rows(n.div_ceil(float_gemm::GROUP), n * k * 4, &|g| {
                        // SAFETY: as for the quantized weights above.
                        unsafe { float_gemm::rows_on(kernel, &w, x, dst.0, g) }
                    });
                }));
            }
            for s in race_boxed(min_time, &mut calls) {
                print!(" {:.1} |", 2.0 * (n * m * k) as f64 / s / 1e9);
            }
            drop(calls);
            black_box(&out);
        }
        println!();
    }
}

/// The output of a quantized product, written by the threads of `gemv::parallel_rows`.
struct OutPtr(*mut f32);
// SAFETY: each thread writes the outputs of its own rows only (`quant::matvec_rows_on`'s contract).
unsafe impl Sync for OutPtr {}

/// Copies of one random quantized matrix, as many as exceed the last-level cache ([`Weights`]).
struct QuantWeights {
    copies: Vec<Vec<u8>>,
    format: Format,
    n: usize,
    k: usize,
}

impl QuantWeights {
    fn new(format: Format, n: usize, k: usize) -> Self {
        let bytes = n * format.row_bytes(k).expect("whole blocks");
        let count = WORKING_SET.div_ceil(bytes).max(1);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let copies = (0..count)
            .map(|_| {
                let mut v = vec![0u8; bytes];
                for block in v.chunks_exact_mut(format.block_bytes()) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Quant bytes of any value, and small f16 scales (about 0.004) where the
                    // format keeps its `d` (and Q4_K its `dmin`).
                    for (j, q) in block.iter_mut().enumerate() {
                        *q = (seed >> (j % 8 * 8)) as u8 ^ j as u8;
                    }
                    let scales: &[usize] = match format {
                        Format::Q8_0 | Format::Q4_0 => &[0],
                        Format::Q4_K => &[0, 2],
                        Format::Q6_K => &[208],
                    };
                    for &p in scales {
                        block[p] = seed as u8;
                        block[p + 1] = 0x1c;
                    }
                }
                v
            })
            .collect();
        Self {
            copies,
            format,
            n,
            k,
        }
    }

    fn bytes(&self) -> usize {
        self.copies[0].len()
    }

    /// Copy `i` (cycling).
    fn matrix(&self, i: usize) -> QuantMatrix<'_> {
        let bytes = &self.copies[i % self.copies.len()];
        QuantMatrix::new(self.format, self.n, self.k, bytes).expect("sizes")
    }

    /// One product with copy `i` (cycling) on `isa`'s kernels, split by rows as a decode step does.
    fn call(&self, i: usize, isa: quant::Isa, x: &Activations, out: &OutPtr) {
        let w = self.matrix(i);
        gemv::parallel_rows(self.n, self.bytes(), &|r| {
            // SAFETY: `out` holds m·n f32s for the whole call; each row range has one thread.
            unsafe { quant::matvec_rows_on(isa, &w, x, None, out.0, r) }
        });
    }
}

/// Deterministic activations in [-1, 1) for `m` rows of `k`.
fn bench_x(m: usize, k: usize) -> Vec<f32> {
    (0..m * k)
        .map(|e| ((e * 7919) % 200) as f32 / 100.0 - 1.0)
        .collect()
}

/// [`race`] over boxed candidates.
fn race_boxed(min_time: Duration, calls: &mut [Box<dyn FnMut(usize) + '_>]) -> Vec<f64> {
    let mut refs: Vec<&mut dyn FnMut(usize)> = calls
        .iter_mut()
        .map(|c| c.as_mut() as &mut dyn FnMut(usize))
        .collect();
    race(min_time, &mut refs)
}

/// Best seconds per call of each candidate over 7 rounds in which they take turns (the best round
/// is the one least disturbed by whatever else runs on the machine).
fn race(min_time: Duration, candidates: &mut [&mut dyn FnMut(usize)]) -> Vec<f64> {
    const ROUNDS: u32 = 7;
    let slot = min_time / ROUNDS / candidates.len() as u32;
    let mut best = vec![f64::INFINITY; candidates.len()];
    let mut i = 0;
    for c in candidates.iter_mut() {
        for _ in 0..3 {
            c(i);
            i += 1;
        }
    }
    for _ in 0..ROUNDS {
        for (b, c) in best.iter_mut().zip(candidates.iter_mut()) {
            let (start, mut calls) = (Instant::now(), 0);
            while start.elapsed() < slot || calls < 2 {
                c(i);
                i += 1;
                calls += 1;
            }
            *b = b.min(start.elapsed().as_secs_f64() / calls as f64);
        }
    }
    best
}

/// Copies of one `[n, k]` weight, together larger than the last-level cache.
struct Weights {
    copies: Vec<Tensor>,
    k: i64,
    kind: Kind,
    bytes: usize,
}

impl Weights {
    fn new(n: i64, k: i64, kind: Kind) -> Self {
        let bytes = (n * k) as usize * kind.elt_size_in_bytes();
        let count = WORKING_SET.div_ceil(bytes).max(1);
        let copies = (0..count)
            .map(|_| Tensor::randn([n, k], (Kind::Float, CPU)).to_kind(kind) * 0.02)
            .collect();
        Self {
            copies,
            k,
            kind,
            bytes,
        }
    }

    /// Calls `f` on copy `i` (cycling), discarding the result.
    fn call(&self, i: usize, f: impl FnOnce(&Tensor) -> Tensor) {
        drop(black_box(f(&self.copies[i % self.copies.len()])));
    }

    fn gbps(&self, seconds_per_call: f64) -> f64 {
        self.bytes as f64 / seconds_per_call / 1e9
    }
}

/// Constant weights shaped like R1-Distill-Qwen-1.5B (3.1 GB of bf16), run through the products
/// and the small libtorch ops of one decode step. Attention is reduced to two products with a
/// 512-long cache; the point is the mix of libtorch ops and matrix-vector products.
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
        let bytes = layers
            .iter()
            .flatten()
            .map(|(w, _)| w.numel() * 2)
            .sum::<usize>()
            + lm_head.numel() * 2;
        let cache = Tensor::randn([12, 128, 512], (Kind::BFloat16, CPU));
        Self {
            layers,
            lm_head,
            cache,
            bytes,
        }
    }

    /// One step, the products going through `try_linear` (which falls back to libtorch when off).
    fn step(&self) {
        let lin = |x: &Tensor, (w, b): &(Tensor, Option<Tensor>)| {
            gemv::try_linear(x, w, b.as_ref()).unwrap_or_else(|| x.linear(w, b.as_ref()))
        };
        let norm = |x: &Tensor| {
            let xf = x.to_kind(Kind::Float);
            (&xf * (xf.square().mean_dim(-1, true, Kind::Float) + 1e-6).rsqrt())
                .to_kind(Kind::BFloat16)
        };
        let mut h = Tensor::randn([1, 1, 1536], (Kind::BFloat16, CPU));
        for l in &self.layers {
            let x = norm(&h);
            let q = lin(&x, &l[0]);
            let _k = lin(&x, &l[1]);
            let _v = lin(&x, &l[2]);
            let scores = q
                .view([12, 1, 128])
                .matmul(&self.cache)
                .softmax(-1, Kind::Float);
            let att = scores
                .to_kind(Kind::BFloat16)
                .matmul(&self.cache.transpose(1, 2))
                .view([1, 1, 1536]);
            h += lin(&att, &l[3]);
            let x = norm(&h);
            h += lin(&(lin(&x, &l[4]).silu() * lin(&x, &l[5])), &l[6]);
        }
        drop(black_box(lin(
            &norm(&h),
            &(self.lm_head.shallow_clone(), None),
        )));
    }
}
