//! The one integration-test binary (every test binary links libtorch, so there is only one).

mod bad_input;
mod batching;
mod builtin;
mod cli;
mod common;
mod generation;
mod gguf;
mod gguf_quant;
mod grpo;
mod parity;
mod quant;
mod remote;
mod scoring;
mod serve;
mod text;
mod trl_rewards;
mod workbench;
