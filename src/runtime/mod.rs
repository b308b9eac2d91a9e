//! The inference runtime: sampling and the one decode loop. Emits plain data (`trace`), never a
//! Tensor.

pub mod engine;
pub mod generate;
pub mod sampling;

pub use generate::{
    generate, generate_cached, Completion, GenEvent, GenerateError, GenerateRequest, Generation,
    PrefixCache,
};
pub use sampling::{Sampler, SamplingParams};
