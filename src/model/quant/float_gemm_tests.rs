//! The float prefill's kernels (`float_gemm`): x's packing by hand, the SIMD kernels against the
//! portable one bit for bit, and the portable one against the f64 product of the weights as
//! the reference dequantizer gives them.

use super::float_gemm::{self, Kernel, PackedX, Weights, GROUP, X_TILE};
use super::tests::{random_matrix, random_x, Rng};
use super::{Format, QuantMatrix};

const FORMATS: [Format; 4] = [Format::Q8_0, Format::Q4_0, Format::Q4_K, Format::Q6_K];

/// `rows_on` over `groups`, output poisoned with NaN so that a value left unwritten shows.
fn product(kernel: Kernel, w: &Weights, x: &PackedX, groups: std::ops::Range<usize>) -> Vec<f32> {
    let mut out = vec![f32::NAN; w.n() * x.padded_m()];
    // SAFETY: `out` holds n·mp values, and only this call writes them.
    unsafe { float_gemm::rows_on(kernel, w, x, out.as_mut_ptr(), groups) };
    out
}

/// The weight in f32 by an independent path: the reference dequantizer, or `half`'s widening
/// one value at a time.
fn dense(w: &Weights) -> Vec<f32> {
    match *w {
        Weights::Quant(q) => q.dequantize(),
        Weights::Bf16 { w, .. } => w.iter().map(|v| v.to_f32()).collect(),
        Weights::F16 { w, .. } => w.iter().map(|v| v.to_f32()).collect(),
    }
}

/// Shapes that reach every edge: N short of a group and past one, K within one 256-column chunk,
/// past one (a short last chunk: 288 for the 32-blocks) and of several; M from one row to an odd
/// count of 16-row tiles, and past the 512-row block; every format, and bf16 and f16 weights.
fn cases(rng: &mut Rng, mut f: impl FnMut(&str, &Weights, &[f32], usize)) {
    for format in FORMATS {
        let ks: &[usize] = if format.is_k() {
            &[256, 768]
        } else {
            &[32, 288, 544]
        };
        for &k in ks {
            for n in [5, 12, 25] {
                let bytes = random_matrix(rng, format, n, k);
                let w = Weights::Quant(QuantMatrix::new(format, n, k, &bytes).unwrap());
                for m in [1, 16, 17, 47] {
                    f(format.name(), &w, &random_x(rng, m, k), m);
                }
            }
        }
    }
    // 16-bit weights: any k, so one that is no multiple of a block or a chunk.
    for (n, k) in [(7, 40), (25, 300)] {
        let values: Vec<f32> = (0..n * k).map(|_| rng.uniform() * 3.0).collect();
        let bf: Vec<half::bf16> = values.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let hf: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
        for (name, w) in [
            ("bf16", Weights::Bf16 { w: &bf, n, k }),
            ("f16", Weights::F16 { w: &hf, n, k }),
        ] {
            for m in [3, 33] {
                f(name, &w, &random_x(rng, m, k), m);
            }
        }
    }
    let (format, n, k, m) = (Format::Q4_0, 13, 64, 530);
    let bytes = random_matrix(rng, format, n, k);
    let w = Weights::Quant(QuantMatrix::new(format, n, k, &bytes).unwrap());
    f(format.name(), &w, &random_x(rng, m, k), m);
}

#[test]
fn packing_puts_each_value_where_the_kernels_read_it() {
    // x[i, e] = 100·i + e, 17 rows of 3: two tiles, the second holding row 16 and padding.
    let (m, k) = (17, 3);
    let x: Vec<f32> = (0..m * k).map(|v| (100 * (v / k) + v % k) as f32).collect();
    let p = PackedX::new(&x, m, k);
    assert_eq!(p.padded_m(), 32);
    assert_eq!(p.data.len(), 32 * 3);
    assert_eq!(p.data[0], 0.0); // tile 0, column 0, row 0
    assert_eq!(p.data[5], 500.0); // tile 0, column 0, row 5
    assert_eq!(p.data[X_TILE + 3], 301.0); // tile 0, column 1, row 3
    assert_eq!(p.data[3 * X_TILE + 2 * X_TILE], 1602.0); // tile 1, column 2, row 16
    assert_eq!(p.data[3 * X_TILE + 2 * X_TILE + 1], 0.0); // tile 1, column 2, padding row 17
}

#[test]
fn float_kernels_equal_the_portable_reference_bit_for_bit() {
    let kernels: Vec<Kernel> = [Kernel::Avx512, Kernel::Avx2]
        .into_iter()
        .filter(|k| k.runs_here())
        .collect();
    if kernels.is_empty() {
        eprintln!("skipped: this CPU runs neither float kernel");
    }
    cases(&mut Rng(21), |format, w, xs, m| {
        let x = PackedX::new(xs, m, w.k());
        let groups = 0..w.n().div_ceil(GROUP);
        let want = product(Kernel::Portable, w, &x, groups.clone());
        for &kernel in &kernels {
            let got = product(kernel, w, &x, groups.clone());
            for (e, (g, r)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == r.to_bits(),
                    "{kernel:?} {format} n={} k={} m={m}: out_t[{e}] = {g}, reference {r}",
                    w.n(),
                    w.k()
                );
            }
        }
    });
}

/// The product of `w` as the reference dequantizer gives it, in f64, and per output the bound
/// on f32 summation one term at a time: `k·ε·Σ|x·w|` (Higham's γ_k, first order). The decode
/// kernels' tighter `√K` tolerance assumes their several partial sums; one running sum per
/// output, which is what a GEMM's register tile keeps, drifts further with a large sum.
fn reference(w: &Weights, xs: &[f32], m: usize) -> (Vec<f64>, Vec<f64>) {
    let (n, k) = (w.n(), w.k());
    let dense = dense(w);
    let (mut sums, mut tols) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for r in 0..n {
            let products = xs[i * k..][..k].iter().zip(&dense[r * k..][..k]);
            let (s, size) = products.fold((0.0f64, 0.0f64), |(s, size), (&a, &b)| {
                let p = a as f64 * b as f64;
                (s + p, size + p.abs())
            });
            sums[i * n + r] = s;
            tols[i * n + r] = k as f64 * f32::EPSILON as f64 * size;
        }
    }
    (sums, tols)
}

#[test]
fn float_product_matches_the_dequantized_weight_in_f64() {
    cases(&mut Rng(22), |format, w, xs, m| {
        let x = PackedX::new(xs, m, w.k());
        let (n, mp) = (w.n(), x.padded_m());
        let got = product(Kernel::Portable, w, &x, 0..n.div_ceil(GROUP));
        let (want, tol) = reference(w, xs, m);
        for i in 0..mp {
            for r in 0..n {
                let g = got[r * mp + i] as f64;
                if i >= m {
                    assert_eq!(g, 0.0, "{format}: padding row {i}, weight row {r}");
                    continue;
                }
                let (want, tol) = (want[i * n + r], tol[i * n + r]);
                assert!(
                    (g - want).abs() <= tol,
                    "{format} n={n} k={} m={m} [{i}, {r}]: {g} vs {want} (tolerance {tol})",
                    w.k()
                );
            }
        }
    });
}

#[test]
fn a_range_of_groups_writes_its_rows_and_no_others() {
    // What a thread of the prefill is given: groups 1..3 of a 30-row matrix (rows 12..30, the
    // last group short).
    let (format, n, k, m) = (Format::Q4_0, 30, 64, 20);
    let mut rng = Rng(23);
    let bytes = random_matrix(&mut rng, format, n, k);
    let w = Weights::Quant(QuantMatrix::new(format, n, k, &bytes).unwrap());
    let xs = random_x(&mut rng, m, k);
    let x = PackedX::new(&xs, m, k);
    let mp = x.padded_m();
    let whole = product(Kernel::Portable, &w, &x, 0..3);
    for kernel in [Kernel::Portable, Kernel::Avx512, Kernel::Avx2] {
        if !kernel.runs_here() {
            continue;
        }
        let part = product(kernel, &w, &x, 1..3);
        for (e, (p, full)) in part.iter().zip(&whole).enumerate() {
            if e < GROUP * mp {
                assert!(p.is_nan(), "{kernel:?}: row {} written", e / mp);
            } else {
                assert_eq!(p.to_bits(), full.to_bits(), "{kernel:?}: out_t[{e}]");
            }
        }
    }
}
