//! thinkbench — a terminal workbench for studying R1-style reasoning models.
//!
//! Data flows one way:
//! - `model`   tensor math only (tch): config, checkpoint loading, one decoder for every architecture
//! - `gguf`    llama.cpp's GGUF files: header, metadata and tensors, dequantized (no tch)
//! - `text`    strings <-> token ids: tokenizer, chat template, streaming detokenisation, phases
//! - `backend` the plain messages between a running model and its callers (no tch, no HTTP)
//! - `remote`  a model behind an OpenAI-compatible server, as a chat backend (no tch)
//! - `engines` the one factory that starts a chat backend, local or remote
//! - `runtime` the decode loop, sampling and the per-token trace; emits plain data (no Tensor)
//! - `trace`   the plain per-token records every consumer reads
//! - `serve`   the OpenAI-compatible HTTP server over a `backend` (no tch)
//! - `session` saved conversations (JSON, atomic writes) with their per-token trace
//! - `app`     the workbench's state and `update(Action) -> Vec<Command>`; no I/O, no tch
//! - `ui`      draws `&App` with ratatui; nothing else
//! - `tui`, `runner` the terminal and the event loop that joins engine, app and screen
//! - `train`   recipes, tasks, the built-in model's tokenizer, SFT, evaluation, checkpoints
//! - `train_view` a run's files as plain rows for the Train tab: tailing, rollouts, launching
//! - `cli`     the commands
//! - `alloc`   the process's memory allocator (mimalloc, for libtorch as well)

pub mod alloc;
pub mod app;
pub mod backend;
pub mod cli;
pub mod engines;
pub mod export;
pub mod gguf;
pub mod model;
pub mod remote;
pub mod runner;
pub mod runtime;
pub mod serve;
pub mod session;
pub mod text;
pub mod trace;
pub mod train;
pub mod train_view;
pub mod tui;
pub mod ui;
