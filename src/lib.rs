//! thinkbench — a terminal workbench for studying R1-style reasoning models.
//!
//! Data flows one way:
//! - `model`   tensor math only (tch): config, checkpoint loading, one decoder for every architecture
//! - `text`    strings <-> token ids: tokenizer, chat template, streaming detokenisation, phases
//! - `runtime` the decode loop, sampling and the per-token trace; emits plain data (no Tensor)
//! - `trace`   the plain per-token records every consumer reads
//! - `cli`     the non-interactive commands

pub mod cli;
pub mod model;
pub mod runtime;
pub mod text;
pub mod trace;
