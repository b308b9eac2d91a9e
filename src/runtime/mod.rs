//! The inference runtime: sampling, the one decode loop, and re-scoring a finished sequence.
//! Emits plain data (`trace`), never a Tensor.

pub mod divergence;
pub mod engine;
pub mod generate;
pub mod sampling;
pub mod scheduler;
pub mod score;

pub use generate::{
    generate, generate_batch, generate_cached, Completion, Decoder, GenEvent, GenerateError,
    GenerateRequest, Generation, PrefixCache,
};
pub use sampling::{Sampler, SamplingParams};
pub use score::{score, ScoreOptions, ScoredTrace};
