//! Training: the built-in model's recipe pieces, shared by SFT and GRPO.
//!
//! - `recipe`     recipes/*.toml -> typed structs; errors name the file and the key
//! - `task`       problems with checkable answers, teacher traces, graders (`arithmetic`)
//! - `tokenizer`  a byte-level BPE trained on the task corpus, with R1's special tokens and template
//! - `init`       a new deepseek_v3 model: config.json and random weights under HF names
//! - `conversation` earlier question/answer turns before a problem (SFT data, `eval --turns`)
//! - `data`       problems -> tokenised, right-padded batches with the loss mask
//! - `optim`      AdamW on tensors (state saved and resumed exactly), clipping, the LR schedule
//! - `balance`    auxiliary-loss-free expert balancing (router-bias nudges) and load statistics
//! - `checkpoint` hub-layout model folders written atomically; trainer state for resume
//! - `metrics`    the JSONL metrics log
//! - `run_dir`    a run's output folder: claimed for one recipe; the files every checkpoint carries
//! - `run_skeleton` a run's set-up, SFT's and GRPO's: process settings, the claimed run folder, resume
//!   point, optimiser state, logs
//! - `sft`        the supervised loop
//! - `rewards`    rule-based rewards behind one trait and a registry (accuracy, format, DAPO's overlong
//!   penalty)
//! - `advantage`  group-relative advantages (TRL's exact formula)
//! - `head`       the LM head and loss a slice of positions at a time (the logits' memory)
//! - `loss`       the clipped surrogate, k3 KL and the grpo / dapo / dr_grpo aggregations
//! - `problems`   GRPO's prompts: a task's levels or a JSONL file, drawn by step
//! - `rollout`    G completions per prompt through the one decode loop
//! - `lora`       LoRA adapters merged into the weights; PEFT files; merging
//! - `grpo`       the GRPO loop
//! - `eval`       accuracy / format / reasoning length / expert load through the one decode loop
//!
//! No `tch::Tensor` leaves this module: callers get plain data (reports, summaries).

pub mod advantage;
pub mod balance;
pub mod checkpoint;
pub mod conversation;
pub mod data;
pub mod eval;
pub mod grpo;
mod head;
pub mod init;
pub mod lora;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod overrides;
pub mod problems;
pub mod progress;
pub mod recipe;
pub mod rewards;
pub mod rollout;
pub mod run_dir;
pub mod run_skeleton;
pub mod sft;
pub mod shape_stats;
pub mod step_loop;
pub mod task;
pub mod tokenizer;
