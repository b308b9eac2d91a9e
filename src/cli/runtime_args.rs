//! The options every command that runs a model shares — where it runs, in what precision, on how
//! many CPU threads — parsed in one place so each flag fails with the same message everywhere.

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::Device;

use crate::model::qlinear::Prefill;
use crate::model::quant::Format;
use crate::model::{parse_device, parse_quant, DType};

#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// CPU threads for libtorch (default: all cores).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Store the linear layers block-quantized as llama.cpp does: q8_0 or q4_0 (CPU only).
    #[arg(long)]
    pub quant: Option<String>,
    /// How prompts run against 4- and 6-bit weights (Q4_0, Q4_K, Q6_K): exact (f32 against the
    /// stored weights, as decode) or int8 (activations rounded to 8 bits as llama.cpp does:
    /// about twice as fast on AVX2 and AVX-512 CPUs, log-probs move by a few hundredths).
    #[arg(long, default_value = "exact", value_parser = parse_prefill)]
    pub prefill: Prefill,
}

impl RuntimeArgs {
    /// Sets libtorch's thread count and the prefill, and parses `--dtype` and `--device`.
    pub fn apply(&self) -> Result<(DType, Device)> {
        self.apply_prefill();
        if let Some(t) = self.threads {
            if t < 1 {
                bail!("--threads must be at least 1");
            }
            tch::set_num_threads(t);
        }
        let dtype = DType::parse(&self.dtype)
            .with_context(|| format!("--dtype {}: expected f32, bf16 or f16", self.dtype))?;
        Ok((dtype, parse_device(&self.device)?))
    }

    /// Sets `--prefill` for the whole process (commands whose engine applies the rest itself).
    pub fn apply_prefill(&self) {
        crate::model::qlinear::set_prefill(self.prefill);
    }

    /// `--quant`, parsed.
    pub fn quant(&self) -> Result<Option<Format>> {
        Ok(self.quant.as_deref().map(parse_quant).transpose()?)
    }
}

/// The flags' own defaults, for commands that build their arguments in code.
impl Default for RuntimeArgs {
    fn default() -> Self {
        Self {
            device: "cpu".into(),
            dtype: "f32".into(),
            threads: None,
            quant: None,
            prefill: Prefill::Exact,
        }
    }
}

fn parse_prefill(s: &str) -> Result<Prefill, String> {
    Prefill::parse(s).ok_or_else(|| format!("expected exact or int8, not {s:?}"))
}
