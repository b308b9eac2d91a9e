//! From task problems to training batches.
//!
//! A sequence is the chat-templated prompt (earlier turns of the conversation, if any, then the
//! question, ending in `<｜Assistant｜><think>\n`), then the teacher's completion and
//! end-of-sentence. Only the completion is in the loss: earlier replies appear as the template
//! renders them for a later turn, an answer without its reasoning, and training on those would
//! teach the model to state answers it has not worked out. Batches are right-padded: with causal attention a
//! real token never attends to a pad after it, so no attention mask is needed; pads and the prompt
//! are simply left out of the loss.
//!
//! The problems of step `s` are a pure function of the recipe seed and `s`, so the data position
//! of a resumed run is its step.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

use super::task::{content_hash, Example, Split, Task};
use crate::text::TextCodec;

/// Target id that the loss ignores.
pub const IGNORE: i64 = -100;

/// One tokenised training sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Prompt ids, then completion ids and end-of-sentence.
    pub ids: Vec<u32>,
    /// How many of `ids` are the prompt.
    pub prompt_len: usize,
}

/// Tokenises an example asked after `earlier` turns exactly as inference will see it: the
/// conversation through the chat template (generation prompt included), the completion as the
/// model must generate it.
pub fn encode(
    codec: &TextCodec,
    earlier: &[Example],
    ex: &Example,
    eos: u32,
) -> Result<Encoded, String> {
    let prompt = codec
        .encode_chat(
            &super::conversation::messages(&super::conversation::answered(earlier), &ex.prompt),
            true,
        )
        .map_err(|e| e.to_string())?
        .ids;
    let mut ids = prompt.clone();
    ids.extend(
        codec
            .encode_raw(&ex.completion())
            .map_err(|e| e.to_string())?,
    );
    ids.push(eos);
    Ok(Encoded {
        prompt_len: prompt.len(),
        ids,
    })
}

/// A right-padded batch.
pub struct Batch {
    /// `[B, S]` int64.
    pub ids: Tensor,
    /// `[B, S]` int64: the next token where it is a completion token, else [`IGNORE`].
    pub targets: Tensor,
    /// One flag per `[B·S]` row: a real token, not padding.
    pub real: Vec<bool>,
    /// Positions that count in the loss.
    pub target_tokens: usize,
    /// Real tokens (prompt and completion).
    pub tokens: usize,
}

pub fn make_batch(seqs: &[&Encoded], pad: u32, device: Device) -> Batch {
    let b = seqs.len();
    let s = seqs.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut ids = vec![pad as i64; b * s];
    let mut targets = vec![IGNORE; b * s];
    let mut real = vec![false; b * s];
    let mut target_tokens = 0;
    let mut tokens = 0;
    for (r, e) in seqs.iter().enumerate() {
        for (t, &id) in e.ids.iter().enumerate() {
            ids[r * s + t] = id as i64;
            real[r * s + t] = true;
            tokens += 1;
            // Position t predicts token t+1; it counts when t+1 is part of the completion.
            if t + 1 < e.ids.len() && t + 1 >= e.prompt_len {
                targets[r * s + t] = e.ids[t + 1] as i64;
                target_tokens += 1;
            }
        }
    }
    let shape = [b as i64, s as i64];
    Batch {
        ids: Tensor::from_slice(&ids).view(shape).to_device(device),
        targets: Tensor::from_slice(&targets).view(shape).to_device(device),
        real,
        target_tokens,
        tokens,
    }
}

/// Cuts a batch of sequences into micro-batches of similar length (sorted, longest first), so
/// that short sequences are not padded to the longest of the whole batch.
pub fn micro_batches(seqs: &[Encoded], size: usize) -> Vec<Vec<&Encoded>> {
    let mut order: Vec<&Encoded> = seqs.iter().collect();
    order.sort_by_key(|e| std::cmp::Reverse(e.ids.len()));
    order.chunks(size.max(1)).map(<[_]>::to_vec).collect()
}

/// The problems of one step: a seeded draw of levels by weight, then one problem per level draw.
pub struct Sampler<'a> {
    pub task: &'a dyn Task,
    pub levels: Vec<u32>,
    /// Cumulative weights, normalised to end at 1.
    cumulative: Vec<f64>,
    pub seed: u64,
}

impl<'a> Sampler<'a> {
    pub fn new(task: &'a dyn Task, levels: &[u32], weights: Option<&[f64]>, seed: u64) -> Self {
        let w: Vec<f64> = match weights {
            Some(w) => w.to_vec(),
            None => vec![1.0; levels.len()],
        };
        let total: f64 = w.iter().sum();
        let mut acc = 0.0;
        let cumulative = w
            .iter()
            .map(|x| {
                acc += x / total;
                acc
            })
            .collect();
        Self {
            task,
            levels: levels.to_vec(),
            cumulative,
            seed,
        }
    }

    /// The `n` training problems of step `step` (a stream of its own: the same for the same seed
    /// and step, whatever happened before).
    pub fn step(&self, step: u64, n: usize) -> Vec<Example> {
        let mut rng = StdRng::seed_from_u64(content_hash(&[self.seed, 0x5F7, step]));
        (0..n)
            .map(|_| {
                let level = self.level(rng.random());
                self.task.sample(&mut rng, level, Split::Train)
            })
            .collect()
    }

    /// The level a uniform draw `u` in [0, 1) picks, by weight.
    pub fn level(&self, u: f64) -> u32 {
        let i = self
            .cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.levels.len() - 1);
        self.levels[i]
    }
}

/// Next-token cross-entropy summed over the counted positions of `logits [B,S,V]`.
pub fn loss_sum(logits: &Tensor, targets: &Tensor) -> Tensor {
    let v = logits.size()[2];
    logits
        .to_kind(Kind::Float)
        .view([-1, v])
        .cross_entropy_loss::<Tensor>(
            &targets.reshape([-1]),
            None,
            tch::Reduction::Sum,
            IGNORE,
            0.0,
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::task::arithmetic::Arithmetic;

    #[test]
    fn targets_cover_exactly_the_completion() {
        let a = Encoded {
            ids: vec![0, 5, 6, 7, 8, 1],
            prompt_len: 3,
        };
        let b = Encoded {
            ids: vec![0, 5, 9, 1],
            prompt_len: 2,
        };
        let batch = make_batch(&[&a, &b], 1, Device::Cpu);
        let t: Vec<i64> = Vec::try_from(batch.targets.view([-1])).unwrap();
        let x = IGNORE;
        // a: positions 2,3,4 predict 7, 8, 1 (the completion and eos).
        // b: positions 1,2 predict 9, 1; the rest is padding.
        assert_eq!(t, vec![x, x, 7, 8, 1, x, x, 9, 1, x, x, x]);
        assert_eq!(batch.target_tokens, 5);
        assert_eq!(batch.tokens, 10);
        let ids: Vec<i64> = Vec::try_from(batch.ids.view([-1])).unwrap();
        assert_eq!(ids, vec![0, 5, 6, 7, 8, 1, 0, 5, 9, 1, 1, 1]);
        assert_eq!(
            batch.real,
            [
                [true; 6].as_slice(),
                &[true, true, true, true, false, false]
            ]
            .concat()
        );
    }

    #[test]
    fn micro_batches_group_similar_lengths() {
        let seqs: Vec<Encoded> = [3usize, 9, 4, 8]
            .iter()
            .map(|&n| Encoded {
                ids: vec![0; n],
                prompt_len: 1,
            })
            .collect();
        let mb = micro_batches(&seqs, 2);
        let lens: Vec<Vec<usize>> = mb
            .iter()
            .map(|m| m.iter().map(|e| e.ids.len()).collect())
            .collect();
        assert_eq!(lens, vec![vec![9, 8], vec![4, 3]]);
    }

    #[test]
    fn a_step_draws_the_same_problems_whatever_came_before() {
        let s = Sampler::new(&Arithmetic, &[1, 2, 3], Some(&[0.0, 1.0, 1.0]), 9);
        let a = s.step(5, 16);
        assert_eq!(a, s.step(5, 16));
        assert_ne!(a, s.step(6, 16));
        assert!(a.iter().all(|e| e.level == 2 || e.level == 3));
    }

    #[test]
    fn loss_counts_only_targets() {
        // Uniform logits over 4 tokens: each counted position costs ln 4.
        let logits = Tensor::zeros([1, 3, 4], (Kind::Float, Device::Cpu));
        let targets = Tensor::from_slice(&[2i64, IGNORE, 3]).view([1, 3]);
        let l = loss_sum(&logits, &targets).double_value(&[]);
        assert!((l - 2.0 * 4f64.ln()).abs() < 1e-6);
    }
}
