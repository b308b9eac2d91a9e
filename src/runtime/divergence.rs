//! How far one model's next-token distributions lie from another's on the same tokens: the
//! per-token KL divergence `KL(P_reference ‖ P_candidate)` over the whole vocabulary, and whether
//! the two would pick the same most likely token. This is how a quantized model is judged against
//! its float original (`thinkbench eval --quant q4_0 --kl`), as llama.cpp's perplexity tool does
//! with `--kl-divergence`: accuracy alone hides a model that is right for the wrong reasons, and
//! the KL catches every change in the distribution, not only the ones that flip an answer.
//!
//! Both models read the sequence by teacher forcing, a chunk of positions at a time (each chunk
//! attends to the earlier ones through its own KV cache), so only one chunk's logits per model
//! exist at a time. Sums run in f64.

use tch::{Device, Kind, Tensor};

use crate::model::cache::KvCache;
use crate::model::Model;
use crate::runtime::generate::RoutingRecorder;
use crate::runtime::score::chunk_len;
use crate::runtime::GenerateError;

/// One predicted token's comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenDivergence {
    /// `Σ_v p_ref(v) · (log p_ref(v) − log p_cand(v))`, in nats.
    pub kl: f64,
    /// Both models' most likely next token is the same.
    pub same_top: bool,
}

/// [`TokenDivergence`]s of every completion token: position `i` of the sequence predicts token
/// `i + 1`, so the positions from the prompt's last to the completion's second-to-last count.
pub fn divergence(
    reference: &Model,
    candidate: &Model,
    prompt_ids: &[u32],
    completion_ids: &[u32],
) -> Result<Vec<TokenDivergence>, GenerateError> {
    let _no_grad = tch::no_grad_guard();
    let vocab = reference.vocab_size();
    if candidate.vocab_size() != vocab {
        return Err(GenerateError::VocabMismatch {
            a: vocab,
            b: candidate.vocab_size(),
        });
    }
    if prompt_ids.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let seq: Vec<i64> = prompt_ids
        .iter()
        .chain(completion_ids)
        .map(|&i| i as i64)
        .collect();
    if let Some(&id) = seq.iter().find(|&&id| id as usize >= vocab) {
        return Err(GenerateError::BadTokenId {
            id: id as u32,
            vocab,
        });
    }
    let (p, n) = (prompt_ids.len(), seq.len());
    let chunk = chunk_len(vocab);
    let mut caches = (reference.new_cache(), candidate.new_cache());
    let mut rec = RoutingRecorder::new(false);
    let mut out = Vec::with_capacity(completion_ids.len());
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        let ids = Tensor::from_slice(&seq[start..end]).view([1, (end - start) as i64]);
        let mut log_probs = |model: &Model, cache: &mut KvCache| {
            model
                .forward(&ids.to_device(model.device), cache, &mut rec, true)
                .to_device(Device::Cpu)
                .to_kind(Kind::Double)
                .view([(end - start) as i64, vocab as i64])
                .log_softmax(-1, Kind::Double)
        };
        let r = log_probs(reference, &mut caches.0);
        let c = log_probs(candidate, &mut caches.1);
        let wanted = start.max(p - 1)..end.min(n - 1);
        if !wanted.is_empty() {
            let rows = Tensor::arange_start(
                (wanted.start - start) as i64,
                (wanted.end - start) as i64,
                (Kind::Int64, Device::Cpu),
            );
            let (r, c) = (r.index_select(0, &rows), c.index_select(0, &rows));
            let kl = Vec::<f64>::try_from((r.exp() * (&r - &c)).sum_dim_intlist(
                [-1i64].as_slice(),
                false,
                Kind::Double,
            ))
            .expect("f64 sums");
            let same = Vec::<bool>::try_from(r.argmax(-1, false).eq_tensor(&c.argmax(-1, false)))
                .expect("bools");
            out.extend(
                kl.into_iter()
                    .zip(same)
                    .map(|(kl, same_top)| TokenDivergence { kl, same_top }),
            );
        }
        start = end;
    }
    Ok(out)
}

/// What a run of [`TokenDivergence`]s adds up to.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DivergenceSummary {
    pub tokens: usize,
    pub mean_kl: f64,
    pub median_kl: f64,
    pub p99_kl: f64,
    pub max_kl: f64,
    /// Share of tokens where both models' most likely next token is the same.
    pub same_top: f64,
}

impl DivergenceSummary {
    /// `None` for no tokens. Quantiles are nearest-rank (the smallest value with at least that
    /// share of the values at or below it).
    pub fn of(tokens: &[TokenDivergence]) -> Option<Self> {
        if tokens.is_empty() {
            return None;
        }
        let mut kl: Vec<f64> = tokens.iter().map(|t| t.kl).collect();
        kl.sort_by(f64::total_cmp);
        let n = kl.len();
        let rank = |q: f64| kl[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Self {
            tokens: n,
            mean_kl: kl.iter().sum::<f64>() / n as f64,
            median_kl: rank(0.5),
            p99_kl: rank(0.99),
            max_kl: kl[n - 1],
            same_top: tokens.iter().filter(|t| t.same_top).count() as f64 / n as f64,
        })
    }

    /// One line for a report.
    pub fn render(&self) -> String {
        format!(
            "KL per token over {} tokens: mean {:.5}, median {:.5}, p99 {:.5}, max {:.5} nats; \
             same top token {:.1}%",
            self.tokens,
            self.mean_kl,
            self.median_kl,
            self.p99_kl,
            self.max_kl,
            100.0 * self.same_top
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(kl: f64, same_top: bool) -> TokenDivergence {
        TokenDivergence { kl, same_top }
    }

    #[test]
    fn summary_quantiles_are_nearest_rank() {
        // 1..=100 shuffled: mean 50.5, median 50, p99 99, max 100; 75 of them agree.
        let tokens: Vec<_> = (1..=100)
            .map(|i| t(((i * 37) % 100 + 1) as f64, i % 4 != 0))
            .collect();
        let s = DivergenceSummary::of(&tokens).unwrap();
        assert_eq!(s.tokens, 100);
        assert!((s.mean_kl - 50.5).abs() < 1e-12);
        assert_eq!((s.median_kl, s.p99_kl, s.max_kl), (50.0, 99.0, 100.0));
        assert!((s.same_top - 0.75).abs() < 1e-12);
        let one = DivergenceSummary::of(&[t(0.25, false)]).unwrap();
        assert_eq!((one.median_kl, one.p99_kl, one.same_top), (0.25, 0.25, 0.0));
        assert!(DivergenceSummary::of(&[]).is_none());
    }

    /// Against the definition computed independently: both models over the whole sequence in
    /// one forward call without a cache, softmax and the KL sum written out over plain f64
    /// vectors. The candidate is the built-in model quantized to Q4_0, so the divergence is
    /// small but not zero; the chunked, cached path must give the same numbers.
    #[test]
    fn matches_the_definition_on_a_quantized_model() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/thinkbench-tiny");
        let dtype = crate::model::DType::F32;
        let float = Model::load(&dir, dtype, Device::Cpu).unwrap();
        let q4 = Model::load_quantized(
            &dir,
            dtype,
            Device::Cpu,
            Some(crate::model::quant::Format::Q4_0),
        )
        .unwrap();
        let prompt: Vec<u32> = (3..40).collect();
        let completion: Vec<u32> = (40..60).rev().collect();
        let got = divergence(&float, &q4, &prompt, &completion).unwrap();
        assert_eq!(got.len(), completion.len());

        let _g = tch::no_grad_guard();
        let all: Vec<i64> = prompt
            .iter()
            .chain(&completion)
            .map(|&i| i as i64)
            .collect();
        let ids = Tensor::from_slice(&all).view([1, all.len() as i64]);
        let logits = |m: &Model| {
            let mut rec = RoutingRecorder::new(false);
            let l = m.forward(&ids, &mut m.new_cache(), &mut rec, true);
            let v = float.vocab_size();
            Vec::<f64>::try_from(l.to_kind(Kind::Double).view([-1]))
                .unwrap()
                .chunks(v)
                .map(<[f64]>::to_vec)
                .collect::<Vec<_>>()
        };
        let (lf, lq) = (logits(&float), logits(&q4));
        let log_softmax = |row: &[f64]| {
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let z = row.iter().map(|x| (x - m).exp()).sum::<f64>().ln() + m;
            row.iter().map(|x| x - z).collect::<Vec<_>>()
        };
        let argmax = |row: &[f64]| {
            (0..row.len())
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap()
        };
        let mut total = 0.0;
        for (j, g) in got.iter().enumerate() {
            let pos = prompt.len() - 1 + j;
            let (a, b) = (log_softmax(&lf[pos]), log_softmax(&lq[pos]));
            let kl: f64 = a.iter().zip(&b).map(|(x, y)| x.exp() * (x - y)).sum();
            assert!(
                (g.kl - kl).abs() <= 1e-6 + 1e-3 * kl,
                "pos {pos}: {} vs {kl}",
                g.kl
            );
            assert_eq!(
                g.same_top,
                argmax(&lf[pos]) == argmax(&lq[pos]),
                "pos {pos}"
            );
            total += kl;
        }
        assert!(total > 0.0, "Q4_0 changes the distributions");
    }
}
