//! The inference runtime: sampling and the one decode loop. Emits plain data (`trace`), never a
//! Tensor.

pub mod generate;
pub mod sampling;

pub use generate::{generate, Completion, GenEvent, GenerateError, GenerateRequest, Generation};
pub use sampling::{Sampler, SamplingParams};
