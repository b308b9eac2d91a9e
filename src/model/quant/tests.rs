//! Formats against gguf-py's output (tests/fixtures/quant, from scripts/make_quant_fixtures.py),
//! and every kernel against an independent reference: the matrix dequantized by the scalar
//! [`dequantize_row`], then dot products in f64.

use std::path::PathBuf;

use half::f16;

use super::*;

// ---------------------------------------------------------------------------------------------
// Formats

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quant")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The manifest's `k`, and a check that the files hold `rows` rows of it.
fn fixture_k() -> usize {
    let manifest = String::from_utf8(fixture("manifest.txt")).unwrap();
    let value = |key: &str| -> usize {
        let line = manifest
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")));
        line.unwrap_or_else(|| panic!("manifest lacks {key}"))
            .parse()
            .unwrap()
    };
    let (k, rows) = (value("k"), value("rows"));
    assert_eq!(fixture("input.f32").len(), rows * k * 4);
    k
}

fn same_value(ours: f32, theirs: f32) -> bool {
    if theirs.is_nan() {
        return ours.is_nan();
    }
    ours == theirs || (ours - theirs).abs() <= 1e-6 * theirs.abs()
}

fn check_against_gguf(format: Format, name: &str) {
    let k = fixture_k();
    let x = f32s(&fixture("input.f32"));
    let bytes = quantize(format, &x).unwrap();
    let expected = fixture(&format!("{name}.bin"));
    assert_eq!(bytes.len(), expected.len());
    let per_block = format.block_bytes();
    for (b, (ours, theirs)) in bytes
        .chunks(per_block)
        .zip(expected.chunks(per_block))
        .enumerate()
    {
        let (row, block) = (b / (k / BLOCK), b % (k / BLOCK));
        assert_eq!(
            ours, theirs,
            "{name}: row {row}, block {block} differs from gguf-py"
        );
    }

    let mut values = vec![0.0; x.len()];
    dequantize_row(format, &expected, &mut values).unwrap();
    let theirs = f32s(&fixture(&format!("{name}.f32")));
    for (e, (&o, &t)) in values.iter().zip(&theirs).enumerate() {
        assert!(
            same_value(o, t),
            "{name}: value {e} (row {}): ours {o}, gguf-py {t}",
            e / k
        );
    }
    // The fixtures do hit the awkward cases they are meant to.
    assert!(theirs.iter().any(|v| v.is_nan()) && theirs.iter().any(|v| v.is_infinite()));
}

#[test]
fn q8_0_bytes_and_values_match_gguf_py() {
    check_against_gguf(Format::Q8_0, "q8_0");
}

#[test]
fn q4_0_bytes_and_values_match_gguf_py() {
    check_against_gguf(Format::Q4_0, "q4_0");
}

#[test]
fn zero_blocks_store_ggml_scales() {
    // Q8_0: d = 0/127 = +0. Q4_0: d = 0/−8 = −0.0 (f16 0x8000), all quants 8, for +0.0 and −0.0
    // blocks alike (ggml's running maximum starts at +0.0; gguf-py differs for the −0.0 block).
    for zero in [0.0f32, -0.0] {
        let x = [zero; BLOCK];
        let q8 = quantize(Format::Q8_0, &x).unwrap();
        assert_eq!(q8, [0u8; 34]);
        let q4 = quantize(Format::Q4_0, &x).unwrap();
        assert_eq!(q4[..2], [0x00, 0x80]);
        assert!(q4[2..].iter().all(|&b| b == 0x88));
        let mut back = [1.0f32; BLOCK];
        dequantize_row(Format::Q4_0, &q4, &mut back).unwrap();
        assert!(back.iter().all(|&v| v == 0.0));
    }
}

#[test]
fn rounding_follows_ggml() {
    // Q8_0 with amax 127: d = 1, and x.5 rounds away from zero (not to even).
    let mut x = [0.0f32; BLOCK];
    x[..6].copy_from_slice(&[127.0, 2.5, -2.5, 0.5, -0.5, 3.5]);
    let q = quantize(Format::Q8_0, &x).unwrap();
    assert_eq!(f16::from_le_bytes([q[0], q[1]]), f16::ONE);
    let qs: Vec<i8> = q[2..8].iter().map(|&b| b as i8).collect();
    assert_eq!(qs, [127, 3, -3, 1, -1, 4]);

    // Q4_0 with max −8: d = 1, q = min(15, trunc(x + 8.5)).
    let mut x = [0.0f32; BLOCK];
    x[..5].copy_from_slice(&[-8.0, 7.5, 7.0, -0.5, -7.9]);
    x[16..19].copy_from_slice(&[0.49, 0.5, -7.5]);
    let q = quantize(Format::Q4_0, &x).unwrap();
    assert_eq!(f16::from_le_bytes([q[0], q[1]]), f16::ONE);
    let lo: Vec<u8> = q[2..7].iter().map(|b| b & 0x0f).collect();
    let hi: Vec<u8> = q[2..5].iter().map(|b| b >> 4).collect();
    assert_eq!(lo, [0, 15, 15, 8, 0]);
    assert_eq!(hi, [8, 9, 1]);
}

#[test]
fn sizes_are_checked() {
    assert_eq!(
        Format::Q8_0.row_bytes(33),
        Err(QuantError::NotWholeBlocks { k: 33, block: 32 })
    );
    assert_eq!(Format::Q4_0.row_bytes(64), Ok(36));
    assert!(matches!(
        QuantMatrix::new(Format::Q8_0, 2, 48, &[0; 102]),
        Err(QuantError::NotWholeBlocks { k: 48, block: 32 })
    ));
    assert!(matches!(
        QuantMatrix::new(Format::Q4_0, 2, 64, &[0; 71]),
        Err(QuantError::Size {
            expected: 72,
            got: 71,
            ..
        })
    ));
    assert!(matches!(
        Activations::new(&[0.0; 40], 1, 40),
        Err(QuantError::NotWholeBlocks { k: 40, block: 32 })
    ));
    assert!(matches!(
        Activations::new(&[0.0; 64], 3, 32),
        Err(QuantError::Size { .. })
    ));
    assert!(quantize(Format::Q4_0, &[0.0; 31]).is_err());
    assert!(dequantize_row(Format::Q8_0, &[0; 34], &mut [0.0; 64]).is_err());

    let bytes = vec![0u8; 3 * 36];
    let w = QuantMatrix::new(Format::Q4_0, 3, 64, &bytes).unwrap();
    let xs = [0.0f32; 128];
    let x = Activations::new(&xs, 2, 64).unwrap();
    assert!(matvec(&w, &x, None, &mut [0.0; 6]).is_ok());
    assert!(matvec(&w, &x, None, &mut [0.0; 5]).is_err());
    assert!(matvec(&w, &x, Some(&[0.0; 2]), &mut [0.0; 6]).is_err());
    let short = Activations::new(&xs[..96], 3, 32).unwrap();
    assert!(matvec(&w, &short, None, &mut [0.0; 9]).is_err());

    // The K formats: 256-weight super-blocks, and no quantizer.
    assert_eq!(Format::Q4_K.row_bytes(512), Ok(288));
    assert_eq!(Format::Q6_K.row_bytes(256), Ok(210));
    assert_eq!(
        Format::Q6_K.row_bytes(288),
        Err(QuantError::NotWholeBlocks { k: 288, block: 256 })
    );
    assert!(matches!(
        QuantMatrix::new(Format::Q4_K, 1, 128, &[0; 72]),
        Err(QuantError::NotWholeBlocks { k: 128, block: 256 })
    ));
    for f in [Format::Q4_K, Format::Q6_K] {
        assert_eq!(quantize(f, &[0.0; 256]), Err(QuantError::NoQuantizer(f)));
        assert_eq!(
            quantize_row(f, &[0.0; 256], &mut vec![0; f.block_bytes()]),
            Err(QuantError::NoQuantizer(f))
        );
        assert!(QuantError::NoQuantizer(f).to_string().contains(f.name()));
    }
}

const ALL: [Format; 4] = [Format::Q8_0, Format::Q4_0, Format::Q4_K, Format::Q6_K];

/// The word-at-a-time unpacking of Q4_K's twelve scale bytes (the SIMD kernels') against the
/// byte-by-byte one (the dequantizer's, checked against gguf-py), over random bytes.
#[test]
fn k_scales_unpack_both_ways_alike() {
    let mut rng = Rng(5);
    for _ in 0..1000 {
        let packed: Vec<u8> = (0..12).map(|_| rng.next() as u8).collect();
        let (sc, mn) = kblocks::k_scales_mins(&packed);
        for j in 0..8 {
            let (s, m) = kblocks::k_scale_min(&packed, j);
            assert_eq!(
                (f32::from(sc[j]), f32::from(mn[j])),
                (s, m),
                "{packed:?} pair {j}"
            );
        }
    }
}

/// The prefill path's vectorized dequantizer against the scalar one (checked against gguf-py),
/// bit for bit, over random blocks holding every quant and scale byte; and the same error for
/// sizes that do not fit.
#[test]
fn fast_dequantizer_gives_the_reference_values_bit_for_bit() {
    let mut rng = Rng(11);
    for isa in isas() {
        for format in ALL {
            let k = 3 * format.block_len();
            let bytes = random_matrix(&mut rng, format, 7, k);
            let mut want = vec![0f32; 7 * k];
            dequantize_row(format, &bytes, &mut want).unwrap();
            let mut got = vec![f32::NAN; 7 * k];
            dequantize_on(isa, format, &bytes, &mut got).unwrap();
            for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{isa:?} {format:?} weight {e}: {g} vs {w}"
                );
            }
            let short = &bytes[..bytes.len() - 1];
            assert_eq!(
                dequantize_on(isa, format, short, &mut got).unwrap_err(),
                dequantize_row(format, short, &mut want).unwrap_err()
            );
        }
    }
    // The process's choice is one of them.
    let bytes = random_matrix(&mut rng, Format::Q4_K, 1, 256);
    let (mut want, mut got) = (vec![0f32; 256], vec![f32::NAN; 256]);
    dequantize_row(Format::Q4_K, &bytes, &mut want).unwrap();
    dequantize_fast(Format::Q4_K, &bytes, &mut got).unwrap();
    assert_eq!(got, want);
}

#[test]
fn empty_shapes() {
    for isa in isas() {
        for format in ALL {
            let k = format.block_len();
            // No x rows, no weight rows: nothing to write.
            let bytes = vec![0u8; 3 * format.block_bytes()];
            let w = QuantMatrix::new(format, 3, k, &bytes).unwrap();
            let x = Activations::new(&[], 0, k).unwrap();
            // SAFETY: m = 0, so `out` is never written.
            unsafe { matvec_rows_on(isa, &w, &x, None, std::ptr::null_mut(), 0..3) };
            let none = QuantMatrix::new(format, 0, k, &[]).unwrap();
            let ones = vec![1.0; 2 * k];
            let x = Activations::new(&ones, 2, k).unwrap();
            assert!(matvec(&none, &x, None, &mut []).is_ok());
            // K = 0: every sum is empty, and the outputs are the bias.
            let w = QuantMatrix::new(format, 2, 0, &[]).unwrap();
            let x = Activations::new(&[], 3, 0).unwrap();
            let mut out = [f32::NAN; 6];
            // SAFETY: `out` holds m·n = 6 elements, and only this call writes them.
            unsafe { matvec_rows_on(isa, &w, &x, Some(&[1.0, 2.0]), out.as_mut_ptr(), 0..2) };
            assert_eq!(out, [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
        }
    }
}

#[test]
fn ggml_type_numbers() {
    for f in ALL {
        assert_eq!(Format::from_ggml_type(f.ggml_type()), Some(f));
    }
    assert_eq!(Format::Q4_K.ggml_type(), 12);
    assert_eq!(Format::Q6_K.ggml_type(), 14);
    assert_eq!(Format::from_ggml_type(1), None); // F16
}

// ---------------------------------------------------------------------------------------------
// Kernels

/// splitmix64: small, seeded, the same everywhere.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [−1, 1).
    pub(super) fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Random blocks as a GGUF file could hold them: every quant byte value (Q8_0's −128 too, which
/// the quantizer never writes; every 6-bit scale and min of Q4_K, every i8 scale of Q6_K) and f16
/// scales of either sign over four orders of magnitude.
pub(super) fn random_matrix(rng: &mut Rng, format: Format, n: usize, k: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n * format.row_bytes(k).unwrap()];
    for block in bytes.chunks_exact_mut(format.block_bytes()) {
        for q in block.iter_mut() {
            *q = rng.next() as u8;
        }
        // Where the f16 scales are: Q8_0 / Q4_0 `d`, Q4_K `d` and `dmin`, Q6_K `d` (last).
        let at: &[usize] = match format {
            Format::Q8_0 | Format::Q4_0 => &[0],
            Format::Q4_K => &[0, 2],
            Format::Q6_K => &[208],
        };
        for &p in at {
            let d = rng.uniform() * 10f32.powf(rng.uniform() * 2.0 - 2.0);
            block[p..p + 2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        }
    }
    bytes
}

/// x values of mixed sign and a spread of sizes; some rows are offset so that Σx is large next
/// to the products, which Q4_0's `Σq·x − 8·Σx` has to survive.
pub(super) fn random_x(rng: &mut Rng, m: usize, k: usize) -> Vec<f32> {
    (0..m * k)
        .map(|e| {
            let offset = if (e / k) % 3 == 2 { 1.5 } else { 0.0 };
            (rng.uniform() + offset) * 4f32.powf(rng.uniform())
        })
        .collect()
}

/// The reference: `w` dequantized by the scalar format code, products and sums in f64. Returns
/// the sums and, per output, the tolerance `16·ε·√K·max|x·w|` (plus the bias's own rounding).
pub(super) fn reference(
    w: &QuantMatrix,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let (n, k) = (w.n(), w.k());
    let dense = w.dequantize();
    let (mut sums, mut tols) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for r in 0..n {
            let (xr, wr) = (&x[i * k..][..k], &dense[r * k..][..k]);
            let (mut s, mut big) = (0.0f64, 0.0f64);
            for (&a, &b) in xr.iter().zip(wr) {
                let p = a as f64 * b as f64;
                s += p;
                big = big.max(p.abs());
            }
            let b = bias.map_or(0.0, |b| b[r] as f64);
            sums[i * n + r] = s + b;
            tols[i * n + r] = 16.0 * f32::EPSILON as f64 * ((k as f64).sqrt() * big + b.abs());
        }
    }
    (sums, tols)
}

fn assert_close(got: &[f32], want: &[f64], tol: &[f64], what: &str) {
    for (e, ((&g, &w), &t)) in got.iter().zip(want).zip(tol).enumerate() {
        assert!(
            (g as f64 - w).abs() <= t,
            "{what}: out[{e}] = {g}, reference {w}, tolerance {t:e}"
        );
    }
}

/// Every shape the brief names, on one ISA: N odd and not a multiple of any tile, K from one
/// block to the MLP's 8960, M from 1 to 9 and 16 (every x-tile remainder; the K formats every M
/// up to 17 at every K: K chunks of 16/M super-blocks, down to one, end at a different place
/// in the row for each M), bias or not. The largest N runs with fewer (K, M) pairs to keep the
/// f64 reference quick.
fn kernels_match_reference(isa: Isa) {
    let mut rng = Rng(7);
    for format in ALL {
        for n in [1, 3, 7, 33, 1000] {
            let ks: &[usize] = if n == 1000 {
                &[64, 256, 1536]
            } else {
                &[32, 64, 256, 1536, 8960]
            };
            // K formats: 256 to 8960 (35 super-blocks); the others: all but 256 (as before).
            let ks = ks
                .iter()
                .filter(|&&k| k % format.block_len() == 0 && (format.is_k() || k != 256));
            for &k in ks {
                let bytes = random_matrix(&mut rng, format, n, k);
                let w = QuantMatrix::new(format, n, k, &bytes).unwrap();
                let bias: Vec<f32> = (0..n).map(|_| rng.uniform() * 3.0).collect();
                let ms: &[usize] = if n == 1000 {
                    &[1, 2, 4, 5, 9, 16]
                } else if format.is_k() {
                    &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
                } else {
                    &[1, 2, 3, 4, 5, 6, 7, 8, 9, 16]
                };
                for &m in ms {
                    let xs = random_x(&mut rng, m, k);
                    let x = Activations::new(&xs, m, k).unwrap();
                    for b in [None, Some(bias.as_slice())] {
                        let (want, tol) = reference(&w, &xs, m, b);
                        let mut out = vec![f32::NAN; m * n];
                        // SAFETY: `out` holds m·n elements, and only this call writes them.
                        unsafe { matvec_rows_on(isa, &w, &x, b, out.as_mut_ptr(), 0..n) };
                        let what =
                            format!("{isa:?} {format:?} n={n} k={k} m={m} bias={}", b.is_some());
                        assert_close(&out, &want, &tol, &what);
                    }
                }
            }
        }
    }
}

/// Every instruction set this CPU runs, best first (the scalar kernels run everywhere), whatever
/// `THINKBENCH_ISA` says: an AVX-512 machine tests the AVX2 kernels too.
fn isas() -> Vec<Isa> {
    [Isa::Avx512, Isa::Avx2, Isa::Scalar]
        .into_iter()
        .filter(|isa| isa.runs_here())
        .collect()
}

/// Runs the reference check on `isa`, or says that this CPU cannot.
fn kernels_match_reference_if_here(isa: Isa) {
    if isa.runs_here() {
        kernels_match_reference(isa);
    } else {
        eprintln!("skipped: this CPU cannot run the {} kernels", isa.name());
    }
}

#[test]
fn avx512_kernels_match_reference() {
    kernels_match_reference_if_here(Isa::Avx512);
}

#[test]
fn avx2_kernels_match_reference() {
    kernels_match_reference_if_here(Isa::Avx2);
}

#[test]
fn scalar_kernels_match_reference() {
    kernels_match_reference(Isa::Scalar);
}

#[test]
#[cfg(target_arch = "x86_64")]
fn the_best_isa_is_picked() {
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    let avx512 = avx2 && is_x86_feature_detected!("avx512f");
    assert_eq!(Isa::Avx2.runs_here(), avx2);
    assert_eq!(Isa::Avx512.runs_here(), avx512);
    let want = if avx512 && !crate::model::cpu::capped_at_avx2() {
        Isa::Avx512
    } else if avx2 {
        Isa::Avx2
    } else {
        Isa::Scalar
    };
    assert_eq!(Isa::detect(), want);
}

/// Disjoint row ranges written by concurrent threads, the way a caller splits a product: each
/// range fills exactly its own outputs, with boundaries off the tile grid.
#[test]
fn row_ranges_write_only_their_rows() {
    struct Out(*mut f32);
    // SAFETY: the threads below write disjoint elements and the buffer outlives the scope.
    unsafe impl Sync for Out {}

    let mut rng = Rng(11);
    let n = 203;
    for isa in isas() {
        for format in ALL {
            let k = if format.is_k() { 512 } else { 96 };
            let bytes = random_matrix(&mut rng, format, n, k);
            let w = QuantMatrix::new(format, n, k, &bytes).unwrap();
            let bias: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
            // 37: more x rows than the scalar kernel sums in one pass (16).
            for m in [1, 2, 3, 6, 37] {
                let xs = random_x(&mut rng, m, k);
                let x = Activations::new(&xs, m, k).unwrap();
                let (want, tol) = reference(&w, &xs, m, Some(&bias));

                // One sub-range alone: everything outside it stays untouched.
                let mut out = vec![f32::NAN; m * n];
                // SAFETY: `out` holds m·n elements, and only this call writes them.
                unsafe { matvec_rows_on(isa, &w, &x, Some(&bias), out.as_mut_ptr(), 5..38) };
                for (e, v) in out.iter().enumerate() {
                    assert_eq!((5..38).contains(&(e % n)), !v.is_nan(), "m={m} out[{e}]");
                }

                let bounds = [0, 1, 6, 7, 50, 51, 130, 203];
                let mut out = vec![f32::NAN; m * n];
                let ptr = Out(out.as_mut_ptr());
                std::thread::scope(|s| {
                    for pair in bounds.windows(2) {
                        let (ptr, w, x, bias) = (&ptr, &w, &x, &bias);
                        s.spawn(move || {
                            // SAFETY: the ranges are disjoint, so each element has one writer.
                            unsafe {
                                matvec_rows_on(isa, w, x, Some(bias), ptr.0, pair[0]..pair[1])
                            }
                        });
                    }
                });
                assert_close(
                    &out,
                    &want,
                    &tol,
                    &format!("{isa:?} {format:?} m={m} in ranges"),
                );
            }
        }
    }
}

/// Scales that are powers of two, small integer quants and small integer x: every product and
/// partial sum is exact in f32, so each kernel must give the exact result whatever its order of
/// summation; a misplaced quant, scale or offset cannot hide inside the tolerance.
#[test]
fn exact_small_integer_products() {
    let n = 5;
    // Every x-tile kind: one row, two (both by block sums), three, and four plus two.
    for (isa, m) in isas()
        .into_iter()
        .flat_map(|isa| [(isa, 1), (isa, 2), (isa, 3), (isa, 6)])
    {
        for format in ALL {
            let k = if format.is_k() { 512 } else { 256 };
            let mut bytes = vec![0u8; n * format.row_bytes(k).unwrap()];
            for (b, block) in bytes.chunks_exact_mut(format.block_bytes()).enumerate() {
                let d = if b % 2 == 0 { 0.5f32 } else { -0.25 };
                let d = f16::from_f32(d).to_le_bytes();
                match format {
                    Format::Q8_0 | Format::Q4_0 => {
                        block[..2].copy_from_slice(&d);
                        for (j, q) in block[2..].iter_mut().enumerate() {
                            let v = (b * 31 + j * 7) % 16;
                            *q = match format {
                                Format::Q8_0 => (v as i8 - 8) as u8,
                                _ => (v | ((v * 5 + b) % 16) << 4) as u8,
                            };
                        }
                    }
                    // Every byte a pattern (all 6-bit scales and mins, all nibbles), then the
                    // two f16 scales: w = d·sc·q − dmin·m, multiples of 1/16 below 2^9.
                    Format::Q4_K => {
                        for (j, q) in block.iter_mut().enumerate() {
                            *q = ((b * 29 + j * 13) % 256) as u8;
                        }
                        block[..2].copy_from_slice(&d);
                        block[2..4].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
                    }
                    // All 6-bit quants; small scales of both signs keep every sum exact.
                    Format::Q6_K => {
                        for (j, q) in block.iter_mut().enumerate() {
                            *q = ((b * 29 + j * 13) % 256) as u8;
                        }
                        for (j, sc) in block[192..208].iter_mut().enumerate() {
                            *sc = (((b + j * 5) % 16) as i8 - 8) as u8;
                        }
                        block[208..].copy_from_slice(&d);
                    }
                }
            }
            let w = QuantMatrix::new(format, n, k, &bytes).unwrap();
            let dense = w.dequantize();
            let xs: Vec<f32> = (0..m * k).map(|e| ((e * 5) % 9) as f32 - 4.0).collect();
            let x = Activations::new(&xs, m, k).unwrap();
            let mut out = vec![0.0; m * n];
            // SAFETY: `out` holds m·n elements, and only this call writes them.
            unsafe { matvec_rows_on(isa, &w, &x, None, out.as_mut_ptr(), 0..n) };
            for i in 0..m {
                for r in 0..n {
                    let (xr, wr) = (&xs[i * k..][..k], &dense[r * k..][..k]);
                    let want: f32 = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
                    assert_eq!(out[i * n + r], want, "{isa:?} {format:?} m={m} i={i} r={r}");
                }
            }
        }
    }
}
