//! The integer prefill (`int8`): its kernels against its portable reference, bit for bit, and
//! its results against the exact float product within the bound x's rounding allows.

use super::int8::{self, Kernel, QuantizedX, Unpacked};
use super::tests::{random_matrix, random_x, reference, Rng};
use super::{Format, QuantMatrix};

const FORMATS: [Format; 3] = [Format::Q4_0, Format::Q4_K, Format::Q6_K];

/// `rows_on` over the whole matrix: the transposed, padded output.
fn product(kernel: Kernel, w: &QuantMatrix, x: &QuantizedX, bias: Option<&[f32]>) -> Vec<f32> {
    let mut out = vec![f32::NAN; w.n() * x.padded_m()];
    // SAFETY: `out` holds n·mp values, and only this call writes them.
    unsafe { int8::rows_on(kernel, w, x, bias, out.as_mut_ptr(), 0..w.n()) };
    out
}

/// N not a multiple of the 4-row tile, M from one row to past two 32-row x tiles.
fn cases(rng: &mut Rng, mut f: impl FnMut(Format, &QuantMatrix, &[f32], usize, Option<&[f32]>)) {
    for format in FORMATS {
        for (n, k) in [(1, 256), (11, 512), (6, 2816)] {
            let bytes = random_matrix(rng, format, n, k);
            let w = QuantMatrix::new(format, n, k, &bytes).unwrap();
            let bias: Vec<f32> = (0..n).map(|_| rng.uniform() * 3.0).collect();
            for (j, m) in [1, 7, 17, 32, 33, 64].into_iter().enumerate() {
                let xs = random_x(rng, m, k);
                let b = (j % 2 == 1).then_some(bias.as_slice());
                f(format, &w, &xs, m, b);
            }
        }
    }
}

#[test]
fn integer_kernels_equal_the_portable_reference_bit_for_bit() {
    let kernels: Vec<Kernel> = [Kernel::Vnni, Kernel::Avx2]
        .into_iter()
        .filter(|k| k.runs_here())
        .collect();
    if kernels.is_empty() {
        eprintln!("skipped: this CPU runs neither integer kernel");
    }
    cases(&mut Rng(11), |format, w, xs, m, bias| {
        let x = QuantizedX::new(xs, m, w.k());
        let want = product(Kernel::Portable, w, &x, bias);
        for &kernel in &kernels {
            let got = product(kernel, w, &x, bias);
            for (e, (g, r)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == r.to_bits(),
                    "{kernel:?} {format:?} n={} k={} m={m}: out_t[{e}] = {g}, reference {r}",
                    w.n(),
                    w.k()
                );
            }
        }
    });
}

/// How far the integer product of `w` and `xs` (`m` rows) may be from the exact one, per output
/// `[i·n + r]`: x's rounding, `|x − dx·qx| ≤ dx/2` per value, moves it by at most
/// `Σ |w|·dx/2`; f32's own rounding of the sums adds a little more.
pub(crate) fn rounding_tolerance(w: &QuantMatrix, xs: &[f32], m: usize) -> Vec<f64> {
    let (n, k) = (w.n(), w.k());
    let x = QuantizedX::new(xs, m, k);
    let mut un = Unpacked::default();
    un.fill(w.format(), k, w.bytes(), w.bytes().len() / n);
    let l = un.l;
    let mut tol = vec![0.0; m * n];
    for r in 0..n {
        for i in 0..m {
            let (mut bound, mut size) = (0.0f64, 0.0f64);
            for e in 0..k {
                let (u, b) = (r * (k / l) + e / l, e / 32);
                let sq = (un.s[u] as f64 * un.q[r * k + e] as f64).abs();
                let w = un.s[u] as f64 * un.q[r * k + e] as f64 - un.o[u] as f64;
                bound += w.abs() * x.d[b * x.mp + i] as f64 / 2.0;
                size += sq * xs[i * k + e].abs() as f64;
                if e % l == 0 {
                    let sum = if l == 32 { &x.sums32 } else { &x.sums16 };
                    size += (un.o[u] as f64 * sum[(e / l) * x.mp + i] as f64).abs();
                }
            }
            tol[i * n + r] = bound * (1.0 + 1e-6) + 1e-4 * size + 1e-6;
        }
    }
    tol
}

/// Against the float product of the dequantized weights (f64), within
/// [`rounding_tolerance`].
#[test]
fn integer_product_is_the_float_one_up_to_x_rounding() {
    let kernel = Kernel::detect().unwrap_or(Kernel::Portable);
    cases(&mut Rng(12), |format, w, xs, m, bias| {
        let (n, k) = (w.n(), w.k());
        let x = QuantizedX::new(xs, m, k);
        let got = product(kernel, w, &x, bias);
        let (want, _) = reference(w, xs, m, bias);
        let tol = rounding_tolerance(w, xs, m);
        for r in 0..n {
            for i in 0..m {
                let (g, want, tol) = (got[r * x.mp + i] as f64, want[i * n + r], tol[i * n + r]);
                assert!(
                    (g - want).abs() <= tol,
                    "{kernel:?} {format:?} n={n} k={k} m={m}: out[{i}, {r}] = {g}, exact {want}, \
                     bound {tol:e}"
                );
            }
        }
        // The padding rows hold the bias alone.
        for r in 0..n {
            for i in m..x.mp {
                assert_eq!(got[r * x.mp + i], bias.map_or(0.0, |b| b[r]));
            }
        }
    });
}

#[test]
fn x_rounds_as_llama_cpp_q8_0_but_keeps_its_scale_in_f32() {
    // One block: max |x| = 2.54 → d = 0.02; 0.01 is exactly half a step (ties to even: 0),
    // 0.03 is 1.5 steps (to 2), −2.54 is −127.
    let mut xs = vec![0.0f32; 32];
    xs[0] = -2.54;
    xs[1] = 0.01;
    xs[2] = 0.03;
    xs[3] = 1.0;
    let x = QuantizedX::new(&xs, 1, 32);
    assert_eq!(x.padded_m(), 32);
    let d = 2.54f32 / 127.0;
    assert_eq!(x.d[0], d);
    let q: Vec<i8> = (0..4).map(|e| x.q[x.q_at(0, e)] as i8).collect();
    let round = |v: f32| (v * (1.0 / d)).round_ties_even() as i8;
    assert_eq!(q, vec![-127, round(0.01), round(0.03), round(1.0)]);
    assert_eq!(round(1.0), 50);
    // The sums are of the rounded values: d·(−127 + 0 + 2 + 50).
    assert_eq!(x.sums32[0], d * (-127 + round(0.01) as i32 + 2 + 50) as f32);
    assert_eq!(round(0.03), 2);
    assert_eq!(x.sums16[0], x.sums32[0]);
    assert_eq!(x.sums16[x.mp], 0.0);
    // The layout: element 4 of row 0 is group 1, after group 0 of all 32 rows of the tile;
    // row 32's element 0 opens the second tile, after the first tile's 8 groups.
    let mut xs2 = vec![0.0f32; 33 * 32];
    xs2[4] = 1.0;
    xs2[33 * 32 - 32] = -1.0;
    let x2 = QuantizedX::new(&xs2, 33, 32);
    assert_eq!((x2.q_at(0, 4), x2.q_at(32, 0)), (32 * 4, 8 * 32 * 4));
    assert_eq!(x2.q[32 * 4] as i8, 127);
    assert_eq!(x2.q[8 * 32 * 4] as i8, -127);
}

/// The AVX2 rounding of x (what runs on every x86 CPU we support) against the portable loop,
/// bit for bit: quants, scales and sums, on values that include exact ties and zero blocks.
#[test]
fn x_rounding_by_avx2_equals_the_portable_loop() {
    let mut rng = Rng(13);
    let (m, k) = (5, 512);
    let mut xs = random_x(&mut rng, m, k);
    // Block 1 of row 0 all zero; block 2 of row 1 with ties (max 1.27: a step of 0.01).
    xs[32..64].fill(0.0);
    for (e, v) in xs[k + 64..k + 96].iter_mut().enumerate() {
        *v = [1.27, 0.005, -0.015, 0.025][e % 4];
    }
    let (fast, portable) = (
        QuantizedX::new(&xs, m, k),
        QuantizedX::new_portable(&xs, m, k),
    );
    assert_eq!(fast.q, portable.q, "quants");
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&fast.d), bits(&portable.d), "scales");
    assert_eq!(bits(&fast.sums16), bits(&portable.sums16), "sums of 16");
    assert_eq!(bits(&fast.sums32), bits(&portable.sums32), "sums of 32");
}
